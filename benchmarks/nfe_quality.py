"""Restoration quality against the number of network evaluations (NFE): the paper's tables.

For every degradation (``noise``, ``blur``, ``lowlight``, ``jpeg``) of centre crops of the
held-out photographs (``diffusers_mrs.data`` validation split, never trained on), this
restores the degraded images with

* the MR Sampler (``MRSamplerScheduler``): ``sde``/``ode`` x ``data``/``noise``
  parameterization x solver order 1-3, and "MRS default" (the pipeline's own scheduler config);
* posterior sampling (``MRPosteriorScheduler``): ``step_mode="irsde"`` (the IR-SDE code: one
  grid step per visit, collapses at low NFE) and ``step_mode="jump"`` (moves to the next
  visited time);
* Euler-Maruyama (``MREulerMaruyamaScheduler``), ``irsde`` and ``jump``;

at NFE 100, 50, 20, 10, 5, 4, 3, 2, and measures PSNR and SSIM (scikit-image, data range 1)
against the clean crops, and the seconds per image. Every scheduler is built with
``Cls.from_config(pipe.scheduler.config, **overrides)``, so all share the model's noise
schedule and ``prediction_type``. One (method, NFE) run restores all images x degradations
as one batch through the pipeline (``output_type="pt"``); every run starts from the same
per-image seeded noise. Runs that are the same computation (posterior/EM ``irsde`` and
``jump`` at NFE = T; "MRS default" and the variant with its settings) are computed once.

Outputs (``--out``, default ``benchmarks/results/``): ``results.json`` (every number),
``results.md`` (tables like the paper's, rows NFE, columns methods, per degradation and on
average, and a summary of the targets of issue 4), ``psnr_vs_nfe.png`` (the paper's
Figure 2) and ``grid.png`` (one example per degradation: degraded | posterior@100 |
posterior@10 | MRS@10 | MRS@5 | clean).

    python benchmarks/nfe_quality.py                       # default model, default plan
    python benchmarks/nfe_quality.py --dry-run             # print the plan and the ETA only
    python benchmarks/nfe_quality.py --model PIPELINE_DIR --methods 'posterior-*,mrs-default' \\
        --nfes 10,5 --crop 32 --threads 1 --out /tmp/bench

LPIPS and FID are not computed unless their weights are already on disk (a one-line message
says so); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

NFE_LIST: tuple[int, ...] = (100, 50, 20, 10, 5, 4, 3, 2)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

#: (method key, NFE) pairs shown in the image grid, with their column titles.
GRID_COLUMNS: tuple[tuple[str, int, str], ...] = (
    ("posterior-irsde", 100, "posterior@100"),
    ("posterior-irsde", 10, "posterior@10"),
    ("mrs-default", 10, "MRS@10"),
    ("mrs-default", 5, "MRS@5"),
)


# ----------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """One sampler configuration of the benchmark.

    Attributes:
        key: command-line id, e.g. ``"mrs-sde-data-2"`` or ``"posterior-irsde"``.
        label: column title, e.g. ``"MRS-SDE-d-2"`` (the paper's naming).
        family: ``"mrs"``, ``"posterior"`` or ``"em"`` (which scheduler class).
        overrides: config overrides passed to ``from_config``.
        default_nfes: the NFE values of the default plan.
        fixed_nfes: run ``default_nfes`` even when the command line names other NFEs.
    """

    key: str
    label: str
    family: str
    overrides: tuple[tuple[str, Any], ...] = ()
    default_nfes: tuple[int, ...] = NFE_LIST
    fixed_nfes: bool = False


def build_methods() -> list[Method]:
    """Every method, in the order the default plan runs them (most important first)."""
    baselines_em = (100, 50, 20, 10, 5)
    methods = [
        Method("posterior-irsde", "Posterior (IR-SDE)", "posterior", (("step_mode", "irsde"),)),
        Method("mrs-default", "MRS default", "mrs"),
        Method("posterior-jump", "Posterior (jump)", "posterior", (("step_mode", "jump"),)),
        Method("em-irsde", "EM (IR-SDE)", "em", (("step_mode", "irsde"),), baselines_em),
        Method("em-jump", "EM (jump)", "em", (("step_mode", "jump"),), baselines_em),
        # One network evaluation at t = T: the network's x0 estimate, i.e. its posterior-mean
        # (MMSE) estimate of the clean image. Not a sample: a posterior sample's squared error
        # is twice the MMSE in expectation (PSNR 3.01 dB lower) for a perfect model.
        Method(
            "x0-estimate",
            "x0 estimate (1 NFE)",
            "mrs",
            (
                ("algorithm_type", "ode"),
                ("parameterization", "data"),
                ("solver_order", 1),
                ("final_sigmas_type", "zero"),
            ),
            (1,),
            fixed_nfes=True,
        ),
    ]
    for algorithm in ("sde", "ode"):
        for param in ("data", "noise"):
            for order in (1, 2, 3):
                methods.append(
                    Method(
                        key=f"mrs-{algorithm}-{param}-{order}",
                        label=f"MRS-{algorithm.upper()}-{param[0]}-{order}",
                        family="mrs",
                        overrides=(
                            ("algorithm_type", algorithm),
                            ("parameterization", param),
                            ("solver_order", order),
                        ),
                        default_nfes=(20, 10, 5),
                    )
                )
    return methods


def select_methods(methods: Sequence[Method], patterns: str | None) -> list[Method]:
    """The methods whose key matches one of the comma-separated glob ``patterns`` (all if None).

    Raises:
        ValueError: a pattern matches no method.
    """
    if not patterns:
        return list(methods)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    for p in pats:
        if not any(fnmatch.fnmatchcase(m.key, p) for m in methods):
            raise ValueError(f"--methods: {p!r} matches none of {[m.key for m in methods]}")
    return [m for m in methods if any(fnmatch.fnmatchcase(m.key, p) for p in pats)]


def scheduler_class(family: str) -> type:
    """The scheduler class of a method family."""
    from diffusers_mrs import MREulerMaruyamaScheduler, MRPosteriorScheduler, MRSamplerScheduler

    return {
        "mrs": MRSamplerScheduler,
        "posterior": MRPosteriorScheduler,
        "em": MREulerMaruyamaScheduler,
    }[family]


def make_scheduler(base_config: Any, method: Method) -> Any:
    """``Cls.from_config(base_config, **overrides)``: shares the model's schedule and target."""
    return scheduler_class(method.family).from_config(base_config, **dict(method.overrides))


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Run:
    """One cell of the tables: a method at one NFE; ``key`` identifies the computation."""

    method: Method
    nfe: int
    key: str


def computation_key(scheduler: Any, nfe: int, num_train_timesteps: int) -> str:
    """A key equal for runs that compute the same thing (same class, config and NFE).

    At NFE = T the grid baselines visit every integer time and both step modes step t -> t-1,
    so ``irsde`` and ``jump`` coincide there.
    """
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    if "step_mode" in config and nfe == num_train_timesteps:
        config["step_mode"] = "irsde"
    payload = {"class": type(scheduler).__name__, "config": config, "nfe": nfe}
    return json.dumps(payload, sort_keys=True, default=str)


def plan_runs(
    methods: Sequence[Method],
    base_config: Any,
    nfes: Sequence[int] | None = None,
) -> list[Run]:
    """Every (method, NFE) cell: ``nfes`` for all methods, else each method's default NFEs.

    Baselines only run at NFE <= T (they visit integer times of the training grid).
    """
    T = int(base_config["num_train_timesteps"])
    runs = []
    for method in methods:
        sched = make_scheduler(base_config, method)
        chosen = method.default_nfes if method.fixed_nfes or not nfes else nfes
        for nfe in sorted(chosen, reverse=True):
            if method.family != "mrs" and nfe > T:
                continue
            runs.append(Run(method, int(nfe), computation_key(sched, int(nfe), T)))
    return runs


def unique_evaluations(runs: Sequence[Run]) -> int:
    """Network evaluations of the plan, each distinct computation counted once."""
    return sum({r.key: r.nfe for r in runs}.values())


# ----------------------------------------------------------------------------- data
@dataclass
class BenchData:
    """The benchmark images: degraded ``lq`` and clean ``gt`` ``N x 3 x H x W`` in [0, 1]."""

    lq: torch.Tensor
    gt: torch.Tensor
    kinds: list[str]
    photos: list[str]

    @property
    def kind_names(self) -> list[str]:
        """The degradation kinds, in first-appearance order."""
        return list(dict.fromkeys(self.kinds))


def load_data(kinds: Sequence[str], crop: int, seed: int) -> BenchData:
    """Centre crops of the held-out photos, each degraded by each kind (nominal, seeded)."""
    from diffusers_mrs.training import make_validation_set

    lq, gt, labels = make_validation_set(kinds=tuple(kinds), crop=crop, seed=seed)
    kinds_of = [lab.split("/", 1)[0] for lab in labels]
    photos = [lab.split("/", 1)[1] for lab in labels]
    return BenchData(lq=lq, gt=gt, kinds=kinds_of, photos=photos)


# ----------------------------------------------------------------------------- sampling
def load_pipeline(model: str | None, device: str) -> Any:
    """The pipeline folder ``model`` (or the default model shipped in the package)."""
    from diffusers_mrs import MRRestorationPipeline

    pipe = MRRestorationPipeline.from_pretrained(model)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def restore(
    pipe: Any, scheduler: Any, lq: torch.Tensor, nfe: int, seed: int
) -> tuple[torch.Tensor, float]:
    """Restores the batch ``lq`` with ``scheduler`` at ``nfe`` steps; returns (images, seconds).

    Image ``i`` gets its own generator seeded ``seed + i``, so the initial noise is the same for
    every method.
    """
    pipe.scheduler = scheduler
    generators = [torch.Generator().manual_seed(seed + i) for i in range(lq.shape[0])]
    start = time.perf_counter()
    out = pipe(image=lq, num_inference_steps=nfe, generator=generators, output_type="pt").images
    return out.float().cpu(), time.perf_counter() - start


@torch.no_grad()
def seconds_per_forward(
    unet: torch.nn.Module, lq: torch.Tensor, num_train_timesteps: int = 100, repeats: int = 2
) -> float:
    """Median time of one network evaluation on the whole batch (after one warm-up call)."""
    param = next(unet.parameters())
    x = lq.to(device=param.device, dtype=param.dtype)
    t = torch.full((x.shape[0],), 0.5 * num_train_timesteps, device=x.device)
    times = []
    for i in range(repeats + 1):
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        unet(x, t, mu=x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def describe_device(device: str) -> str:
    """A short description of where the benchmark runs."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()})"


# ----------------------------------------------------------------------------- metrics
def image_metrics(images: torch.Tensor, gt: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-image PSNR (dB) and SSIM of ``images`` against ``gt`` (scikit-image, data range 1)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnrs, ssims = [], []
    for x, y in zip(images, gt, strict=True):
        a = x.clamp(0, 1).permute(1, 2, 0).double().numpy()
        b = y.permute(1, 2, 0).double().numpy()
        psnrs.append(float(peak_signal_noise_ratio(b, a, data_range=1.0)))
        ssims.append(float(structural_similarity(b, a, data_range=1.0, channel_axis=-1)))
    return psnrs, ssims


def summarize(values: Sequence[float], kinds: Sequence[str]) -> dict[str, float]:
    """Mean of per-image ``values`` per degradation kind, and ``"average"`` over all images."""
    arr = np.asarray(values, dtype=np.float64)
    kinds_arr = np.asarray(kinds)
    out = {k: float(arr[kinds_arr == k].mean()) for k in dict.fromkeys(kinds)}
    out["average"] = float(arr.mean())
    return out


def metric_record(images: torch.Tensor, data: BenchData) -> dict[str, Any]:
    """PSNR/SSIM of ``images`` vs the clean crops: per kind, average and per image."""
    psnrs, ssims = image_metrics(images, data.gt)
    return {
        "psnr": summarize(psnrs, data.kinds),
        "ssim": summarize(ssims, data.kinds),
        "per_image": {"psnr": psnrs, "ssim": ssims},
    }


def perceptual_metrics_note() -> str:
    """Why LPIPS and FID are not reported (their weights are never downloaded here)."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    have_lpips = importlib.util.find_spec("lpips") is not None
    lpips_weights = any(hub.glob("alexnet-*.pth")) or any(hub.glob("vgg16-*.pth"))
    fid_weights = any(hub.glob("*inception*"))
    if have_lpips and lpips_weights and fid_weights:  # pragma: no cover - not on this machine
        return "LPIPS/FID weights are on disk but not wired in this script; not reported."
    return (
        "LPIPS/FID skipped: their network weights are not on disk"
        f" (lpips package {'found' if have_lpips else 'not installed'},"
        f" no AlexNet/VGG/Inception checkpoint in {hub}) and nothing is downloaded."
    )


# ----------------------------------------------------------------------------- the sweep
@dataclass
class SweepState:
    """What a sweep accumulates: per-run records and the outputs the grid needs."""

    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    grid_images: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)


def run_sweep(
    pipe: Any,
    data: BenchData,
    runs: Sequence[Run],
    seed: int = 0,
    progress: bool = True,
    on_run_done: Any = None,
) -> SweepState:
    """Runs the plan; identical computations run once and are copied (``same_as``).

    Args:
        pipe: the pipeline (its scheduler is swapped per run and restored at the end).
        data: the benchmark images.
        runs: the plan, from :func:`plan_runs`.
        seed: noise seed (image ``i`` uses ``seed + i``).
        progress: show a tqdm bar (in network evaluations, one update per run).
        on_run_done: optional callback ``f(state)`` after every run (incremental saving).
    """
    from tqdm.auto import tqdm

    base_scheduler = pipe.scheduler
    state = SweepState()
    computed: dict[str, tuple[str, dict[str, Any], torch.Tensor]] = {}
    bar = tqdm(total=unique_evaluations(runs), unit="NFE", desc="runs", disable=not progress)
    n = data.lq.shape[0]
    try:
        for cell in runs:
            name = f"{cell.method.key}@{cell.nfe}"
            if cell.key in computed:
                first, record, images = computed[cell.key]
                record = {**record, "same_as": first}
            else:
                bar.set_postfix_str(name)
                scheduler = make_scheduler(base_scheduler.config, cell.method)
                images, seconds = restore(pipe, scheduler, data.lq, cell.nfe, seed)
                record = {**metric_record(images, data), "seconds_per_image": seconds / n}
                computed[cell.key] = (name, record, images)
                bar.update(cell.nfe)
            state.records.setdefault(cell.method.key, {})[cell.nfe] = record
            if any(cell.method.key == k and cell.nfe == v for k, v, _ in GRID_COLUMNS):
                state.grid_images[(cell.method.key, cell.nfe)] = images
            if on_run_done is not None:
                on_run_done(state)
    finally:
        bar.close()
        pipe.scheduler = base_scheduler
    return state


# ----------------------------------------------------------------------------- results
def results_dict(
    state: SweepState,
    methods: Sequence[Method],
    data: BenchData,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Everything as one JSON-able dict: ``meta``, ``input`` and ``methods``."""
    return {
        "meta": meta,
        "input": metric_record(data.lq, data),
        "images": [f"{k}/{p}" for k, p in zip(data.kinds, data.photos, strict=True)],
        "methods": {
            m.key: {
                "label": m.label,
                "scheduler": scheduler_class(m.family).__name__,
                "overrides": dict(m.overrides),
                "runs": {
                    str(nfe): rec for nfe, rec in sorted(state.records[m.key].items(), reverse=True)
                },
            }
            for m in methods
            if m.key in state.records
        },
    }


def _jsonable(obj: Any) -> Any:
    """``obj`` with non-finite floats as strings (``"-inf"``), so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(results: dict[str, Any], path: Path) -> None:
    """Writes ``results`` as indented strict JSON (atomically: temp file, then rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    tmp.replace(path)


def _psnr(results: dict[str, Any], key: str, nfe: int, kind: str = "average") -> float | None:
    run = results["methods"].get(key, {}).get("runs", {}).get(str(nfe))
    return None if run is None else run["psnr"][kind]


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def quality_table(results: dict[str, Any], keys: Sequence[str], kind: str) -> str:
    """Rows NFE, columns methods, cells ``PSNR / SSIM``; a first row ``input`` holds the
    degraded input's (in the first column). The best PSNR of each NFE row is in bold.
    """
    methods = results["methods"]
    nfes = sorted({int(n) for k in keys for n in methods[k]["runs"]}, reverse=True)
    inp = results["input"]
    input_cell = f"{inp['psnr'][kind]:.2f} / {inp['ssim'][kind]:.3f}"
    rows = [["input", input_cell] + [""] * (len(keys) - 1)]
    for nfe in nfes:
        cells = [methods[k]["runs"].get(str(nfe)) for k in keys]
        best = max((c["psnr"][kind] for c in cells if c is not None), default=None)
        row = [str(nfe)]
        for c in cells:
            if c is None:
                row.append("–")
                continue
            text = f"{c['psnr'][kind]:.2f} / {c['ssim'][kind]:.3f}"
            row.append(f"**{text}**" if c["psnr"][kind] == best and len(keys) > 1 else text)
        rows.append(row)
    return markdown_table(["NFE"] + [methods[k]["label"] for k in keys], rows)


def timing_table(results: dict[str, Any], keys: Sequence[str]) -> str:
    """Rows NFE, columns methods, cells seconds per image (of the batched run)."""
    methods = results["methods"]
    nfes = sorted({int(n) for k in keys for n in methods[k]["runs"]}, reverse=True)
    rows = []
    for nfe in nfes:
        cells = [methods[k]["runs"].get(str(nfe)) for k in keys]
        rows.append([str(nfe)] + [_fmt(c and c["seconds_per_image"], 3) for c in cells])
    return markdown_table(["NFE"] + [methods[k]["label"] for k in keys], rows)


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def targets_summary(results: dict[str, Any]) -> str:
    """The targets of issue 4, computed from the results (average PSNR unless stated)."""
    lines = [
        "## Targets (issue 4)",
        "",
        "Average PSNR over all images; delta = left minus right; a target is met when delta"
        " >= -tolerance (being better counts).",
        "",
    ]
    ref = _psnr(results, "mrs-default", 100)
    for nfe, tol in ((10, 0.2), (5, 0.5)):
        val = _psnr(results, "mrs-default", nfe)
        delta = None if val is None or ref is None else val - ref
        ok = None if delta is None else delta >= -tol
        lines.append(
            f"- MRS default @{nfe} vs @100: {_fmt(val)} vs {_fmt(ref)} dB"
            f" (delta {_fmt(delta)} dB); within {tol} dB: {_check(ok)}"
        )
    post = _psnr(results, "posterior-irsde", 100)
    mrs_keys = [k for k in results["methods"] if k.startswith("mrs-")]
    for nfe, speedup in ((10, "10x"), (5, "20x")):
        cands = [(v, k) for k in mrs_keys if (v := _psnr(results, k, nfe)) is not None]
        if cands and post is not None:
            val, key = max(cands)
            label = results["methods"][key]["label"]
            lines.append(
                f"- Best MRS @{nfe} ({label}) vs posterior (IR-SDE) @100: {val:.2f} vs"
                f" {post:.2f} dB (delta {val - post:+.2f}); within 0.2 dB ({speedup}):"
                f" {_check(val >= post - 0.2)}"
            )
        else:
            lines.append(f"- Best MRS @{nfe} vs posterior (IR-SDE) @100: n/a (not run)")
    lines += ["", "Input vs output PSNR (dB) per degradation:", ""]
    kinds = [k for k in results["input"]["psnr"] if k != "average"] + ["average"]
    cols = [("mrs-default", 10), ("mrs-default", 5), ("posterior-irsde", 100), ("x0-estimate", 1)]
    cols = [(k, n) for k, n in cols if _psnr(results, k, n) is not None]
    rows = []
    for kind in kinds:
        inp = results["input"]["psnr"][kind]
        row = [kind, f"{inp:.2f}"]
        for k, n in cols:
            out = _psnr(results, k, n, kind)
            row.append(f"{out:.2f} ({out - inp:+.2f})")
        rows.append(row)
    headers = ["degradation", "input"] + [f"{results['methods'][k]['label']} @{n}" for k, n in cols]
    lines.append(markdown_table(headers, rows))
    lines += ["", *shape_summary(results)]
    return "\n".join(lines)


def shape_summary(results: dict[str, Any]) -> list[str]:
    """The paper's shape: baselines collapse at low NFE, noise-param MRS degrades there."""
    lines = ["### Shape (average PSNR, dB)", ""]
    methods = results["methods"]
    for key in ("posterior-irsde", "em-irsde", "posterior-jump"):
        ref = _psnr(results, key, 100)
        if key not in methods or ref is None:
            continue
        drops = [
            f"@{n}: {v - ref:+.2f}"
            for n in NFE_LIST[1:]
            if (v := _psnr(results, key, n)) is not None
        ]
        lines.append(f"- {methods[key]['label']} vs its @100 ({ref:.2f}): " + ", ".join(drops))
    variant_nfes = sorted(
        {
            int(n)
            for k in methods
            if k.startswith("mrs-") and k != "mrs-default"
            for n in methods[k]["runs"]
        },
        reverse=True,
    )
    for alg in ("sde", "ode"):
        parts = []
        for nfe in variant_nfes:
            d = [_psnr(results, f"mrs-{alg}-data-{o}", nfe) for o in (1, 2, 3)]
            e = [_psnr(results, f"mrs-{alg}-noise-{o}", nfe) for o in (1, 2, 3)]
            pairs = [(a, b) for a, b in zip(d, e, strict=True) if a is not None and b is not None]
            if pairs:
                gap = float(np.mean([a - b for a, b in pairs]))
                parts.append(f"@{nfe}: {gap:+.2f}")
        if parts:
            lines.append(
                f"- MRS-{alg.upper()} data minus noise parameterization (mean over"
                " orders): " + ", ".join(parts)
            )
    post = _psnr(results, "posterior-irsde", 100)
    if post is not None:
        for order in (1, 2, 3):
            key = f"mrs-sde-data-{order}"
            if key not in methods:
                continue
            parts = [
                f"@{n}: {v - post:+.2f}"
                for n in sorted(map(int, methods[key]["runs"]), reverse=True)
                if (v := _psnr(results, key, n)) is not None
            ]
            lines.append(
                f"- {methods[key]['label']} minus posterior (IR-SDE) @100: " + ", ".join(parts)
            )
    return lines


def markdown_report(results: dict[str, Any]) -> str:
    """``results.md``: header, targets, then per-degradation tables like the paper's."""
    meta = results["meta"]
    main_keys = [
        k
        for k in (
            "posterior-irsde",
            "posterior-jump",
            "em-irsde",
            "em-jump",
            "mrs-default",
            "x0-estimate",
        )
        if k in results["methods"]
    ]
    variant_keys = [k for k in results["methods"] if k.startswith("mrs-") and k != "mrs-default"]
    out = [
        "# Restoration quality vs NFE",
        "",
        f"Model `{meta['model']}` ({meta['prediction_type']}, T = {meta['num_train_timesteps']});"
        f" {meta['num_images']} images: {meta['crop']}x{meta['crop']} centre crops of the"
        f" held-out photos ({', '.join(meta['photos'])}) x {len(meta['kinds'])} degradations"
        f" ({', '.join(meta['kinds'])}), nominal parameters, seed {meta['seed']}."
        f" PSNR (dB) / SSIM against the clean crops (scikit-image, data range 1). Every run"
        f" restores all images in one batch from the same seeded noise; {meta['device']},"
        f" {meta['threads']} thread(s); {meta['total_seconds'] / 60:.1f} min in all.",
        "",
        f"{meta['perceptual_note']}",
        "",
        "MRS default = the pipeline's scheduler config: "
        f"`{json.dumps(meta['default_scheduler'], sort_keys=True)}`.",
        "Posterior/EM (IR-SDE) apply the one-grid-step update at each visited time (the IR-SDE"
        " code); (jump) moves to the next visited time. A cell computed once for several"
        " methods (same computation) is listed in `results.json` as `same_as`.",
        "",
        targets_summary(results),
        "",
        "![PSNR vs NFE](psnr_vs_nfe.png)",
        "",
        "![examples](grid.png)",
        "",
    ]
    kinds = [k for k in results["input"]["psnr"] if k != "average"] + ["average"]
    for kind in kinds:
        title = "Average over all degradations" if kind == "average" else f"Degradation: {kind}"
        out += [f"## {title}", "", "PSNR / SSIM; best PSNR per row in bold.", ""]
        if main_keys:
            out += [quality_table(results, main_keys, kind), ""]
        if variant_keys:
            out += [
                "MR Sampler variants (SDE/ODE, d = data, n = noise parameterization, order):",
                "",
                quality_table(results, variant_keys, kind),
                "",
            ]
    all_keys = main_keys + variant_keys
    if all_keys:
        out += [
            "## Seconds per image",
            "",
            f"Wall time of the batched run / {meta['num_images']} images.",
            "",
            timing_table(results, all_keys),
            "",
        ]
    return "\n".join(out)


# ----------------------------------------------------------------------------- figures
def _style(key: str) -> dict[str, Any]:
    """Line style of a method in the PSNR-vs-NFE plot."""
    fixed = {
        "mrs-default": {"color": "black", "lw": 2.6, "marker": "o", "zorder": 5},
        "posterior-irsde": {"color": "tab:red", "lw": 2.0, "ls": "--", "marker": "x"},
        "posterior-jump": {"color": "tab:red", "lw": 1.4, "ls": ":", "marker": "x"},
        "em-irsde": {"color": "tab:orange", "lw": 2.0, "ls": "--", "marker": "+"},
        "em-jump": {"color": "tab:orange", "lw": 1.4, "ls": ":", "marker": "+"},
        "x0-estimate": {"color": "tab:brown", "lw": 0, "marker": "*", "ms": 11, "zorder": 6},
    }
    if key in fixed:
        return fixed[key]
    _, alg, param, order = key.split("-")
    color = {
        ("sde", "data"): "tab:blue",
        ("sde", "noise"): "tab:green",
        ("ode", "data"): "tab:purple",
        ("ode", "noise"): "tab:olive",
    }[(alg, param)]
    return {
        "color": color,
        "lw": 1.0,
        "ls": "-" if alg == "sde" else "-.",
        "marker": {"1": "o", "2": "s", "3": "^"}[order],
        "ms": 3,
        "alpha": 0.85,
    }


def plot_psnr_vs_nfe(results: dict[str, Any], path: Path) -> None:
    """The paper's Figure 2: PSNR against NFE (log x), a panel per degradation + average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in results["input"]["psnr"] if k != "average"] + ["average"]
    ncols = 3
    nrows = math.ceil((len(kinds) + 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    flat = axes.ravel()
    for ax, kind in zip(flat, kinds, strict=False):
        for key, m in results["methods"].items():
            pts = sorted((int(n), r["psnr"][kind]) for n, r in m["runs"].items())
            if pts:
                ax.plot(*zip(*pts, strict=True), label=m["label"], **_style(key))
        ax.axhline(
            results["input"]["psnr"][kind], color="gray", ls=":", lw=1.2, label="degraded input"
        )
        ax.set_xscale("log")
        ticks = sorted({int(n) for m in results["methods"].values() for n in m["runs"]})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(kind)
        ax.set_xlabel("NFE")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    handles, labels = flat[0].get_legend_handles_labels()
    for ax in flat[len(kinds) :]:
        ax.axis("off")
    flat[len(kinds)].legend(handles, labels, loc="center", fontsize=7, ncol=2, frameon=False)
    fig.suptitle("PSNR vs NFE (" + results["meta"]["model_short"] + ")")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grid(
    data: BenchData,
    grid_images: dict[tuple[str, int], torch.Tensor],
    path: Path,
    photo: str | None = None,
) -> None:
    """One example per degradation: degraded | posterior@100 | posterior@10 | MRS@10 |
    MRS@5 | clean, PSNR under each image; a column whose run was not in the plan is blank.
    ``photo`` defaults to flower (the most detailed centre crop), else the first photo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if photo not in data.photos:
        photo = "flower" if "flower" in data.photos else data.photos[0]
    rows = [i for i, p in enumerate(data.photos) if p == photo]
    cols: list[tuple[str, torch.Tensor | None]] = [("degraded", data.lq)]
    cols += [(title, grid_images.get((k, n))) for k, n, title in GRID_COLUMNS]
    cols.append(("clean", data.gt))
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(1.9 * len(cols), 2.1 * len(rows)), squeeze=False
    )
    for r, idx in enumerate(rows):
        for c, (title, images) in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(data.kinds[idx], fontsize=9)
            if images is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=8)
                continue
            img = images[idx].clamp(0, 1)
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            if title != "clean":
                psnr, _ = image_metrics(img[None], data.gt[idx : idx + 1])
                ax.set_xlabel(f"{psnr[0]:.2f} dB", fontsize=8)
    fig.suptitle(f"{photo}: one example per degradation (PSNR vs clean)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def write_outputs(
    state: SweepState,
    methods: Sequence[Method],
    data: BenchData,
    meta: dict[str, Any],
    out_dir: Path,
    figures: bool = True,
    grid_photo: str | None = None,
) -> dict[str, Any]:
    """Writes results.json, results.md and (``figures``) psnr_vs_nfe.png and grid.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = results_dict(state, methods, data, meta)
    write_json(results, out_dir / "results.json")
    (out_dir / "results.md").write_text(markdown_report(results) + "\n", encoding="utf-8")
    if figures:
        plot_psnr_vs_nfe(results, out_dir / "psnr_vs_nfe.png")
        plot_grid(data, state.grid_images, out_dir / "grid.png", photo=grid_photo)
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", default=None, help="pipeline folder (default: the model shipped in the package)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--crop", type=int, default=64, help="centre-crop size (default 64)")
    p.add_argument(
        "--kinds", default="noise,blur,lowlight,jpeg", help="comma-separated degradations"
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated method keys or globs, e.g. 'posterior-*,mrs-default'"
        " (default: all; see --list-methods)",
    )
    p.add_argument(
        "--nfes",
        default=None,
        help="comma-separated NFEs for every selected method (default: per-method"
        " plan; baselines only at NFE <= T)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help=f"every method at every NFE of {NFE_LIST} (about 2.5x the default)",
    )
    p.add_argument("--seed", type=int, default=0, help="data and noise seed")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--grid-photo",
        default="flower",
        help="photo of the image grid (default: flower, the most detailed crop)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and the ETA, then exit")
    p.add_argument("--list-methods", action="store_true", help="list the method keys and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _int_list(text: str | None) -> list[int] | None:
    return None if not text else [int(x) for x in text.replace(" ", ",").split(",") if x]


def build_meta(
    args: argparse.Namespace,
    pipe: Any,
    data: BenchData,
    per_forward: float,
    evals: int,
    note: str,
) -> dict[str, Any]:
    """The ``meta`` block of ``results.json``: model, data, machine, timing."""
    config = pipe.scheduler.config
    return {
        "model": args.model or "diffusers_mrs default model",
        "model_short": Path(args.model).name if args.model else "default model",
        "prediction_type": config["prediction_type"],
        "num_train_timesteps": int(config["num_train_timesteps"]),
        "default_scheduler": {
            "class": type(pipe.scheduler).__name__,
            **{k: v for k, v in dict(config).items() if not k.startswith("_")},
        },
        "crop": data.lq.shape[-1],
        "kinds": data.kind_names,
        "photos": list(dict.fromkeys(data.photos)),
        "num_images": data.lq.shape[0],
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "device": describe_device(args.device),
        "torch": torch.__version__,
        "seconds_per_forward": per_forward,
        "network_evaluations": evals,
        "perceptual_note": note,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_seconds": 0.0,
    }


def run(args: argparse.Namespace) -> int:
    """Plans, prints the ETA, runs the sweep and writes the outputs (see :func:`main`)."""
    methods = select_methods(build_methods(), args.methods)
    nfes = _int_list(args.nfes) or (list(NFE_LIST) if args.full else None)
    try:
        pipe = load_pipeline(args.model, args.device)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runs = plan_runs(methods, pipe.scheduler.config, nfes)
    data = load_data(args.kinds.split(","), args.crop, args.seed)

    evals = unique_evaluations(runs)
    T = int(pipe.scheduler.config["num_train_timesteps"])
    per_forward = seconds_per_forward(pipe.unet, data.lq, T)
    print(
        f"{len(runs)} cells, {len({r.key for r in runs})} distinct runs, {evals} network"
        f" evaluations of a batch of {data.lq.shape[0]} images"
        f" ({data.lq.shape[-1]}x{data.lq.shape[-2]}), {torch.get_num_threads()} thread(s):"
        f" {per_forward:.3f} s per evaluation -> ETA {evals * per_forward / 60:.1f} min"
        " (+ metrics)"
    )
    note = perceptual_metrics_note()
    print(note)
    if args.dry_run:
        for m in methods:
            print(f"  {m.key:18s} NFE {[r.nfe for r in runs if r.method is m]}")
        return 0

    meta = build_meta(args, pipe, data, per_forward, evals, note)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def save_partial(state: SweepState) -> None:
        meta["total_seconds"] = time.perf_counter() - start
        write_json(results_dict(state, methods, data, meta), args.out / "results.json")

    state = run_sweep(
        pipe, data, runs, seed=args.seed, progress=not args.no_progress, on_run_done=save_partial
    )
    meta["total_seconds"] = time.perf_counter() - start
    results = write_outputs(state, methods, data, meta, args.out, grid_photo=args.grid_photo)
    print(targets_summary(results))
    print(
        f"done in {meta['total_seconds'] / 60:.1f} min; wrote {args.out}/results.json,"
        " results.md, psnr_vs_nfe.png, grid.png"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; returns the exit code. Torch threads and diffusers' log level are
    restored afterwards (the script is also called in-process by the tests)."""
    args = build_parser().parse_args(argv)
    if args.list_methods:
        for m in build_methods():
            print(f"{m.key:18s} {m.label:20s} default NFEs {list(m.default_nfes)}")
        return 0
    from diffusers.utils import logging as dlogging

    threads, verbosity = torch.get_num_threads(), dlogging.get_verbosity()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dlogging.set_verbosity_error()  # from_config warns about the other schedulers' keys
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)
        dlogging.set_verbosity(verbosity)


if __name__ == "__main__":
    raise SystemExit(main())
