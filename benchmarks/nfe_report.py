"""The NFE benchmark's written outputs: ``results.json`` and the ``results.md`` tables."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nfe_plan import NFE_LIST


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
    tmp.write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)


def _from_jsonable(obj: Any) -> Any:
    """Inverse of :func:`_jsonable`: ``"inf"``, ``"-inf"`` and ``"nan"`` strings as floats."""
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


def read_json(path: Path) -> dict[str, Any]:
    """The results :func:`write_json` wrote, non-finite floats restored."""
    return _from_jsonable(json.loads(path.read_text(encoding="utf-8")))


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


def _sampling_text(meta: dict[str, Any]) -> str:
    draws, samples = int(meta.get("draws", 1)), int(meta.get("samples", 1))
    text = f" x {draws} draws (independent noise)" if draws > 1 else ""
    if samples > 1:
        text += f"; every output is the mean of {samples} samples (`num_samples={samples}`)"
    return text


def _paired_delta(results: dict[str, Any], a: tuple[str, int], b: tuple[str, int]) -> str:
    """``delta +x.xx +- se dB``: mean and standard error of the per-image PSNR differences
    of run ``a`` minus run ``b`` (their spread is the samplers' noise, so the error bar says
    how far the benchmark's own randomness moves the delta)."""
    runs = [results["methods"][k]["runs"][str(n)]["per_image"]["psnr"] for k, n in (a, b)]
    diff = np.asarray(runs[0], dtype=float) - np.asarray(runs[1], dtype=float)
    se = diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else float("nan")
    return f"delta {diff.mean():+.2f} +- {se:.2f} dB"


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _distance(results: dict[str, Any], key: str, nfe: int, kind: str = "average"
              ) -> float | None:
    """The run's RMS distance to the converged ODE solution, if it was measured."""
    run = results["methods"].get(key, {}).get("runs", {}).get(str(nfe))
    return None if run is None or "ode_distance" not in run else run["ode_distance"][kind]


def ode_method_keys(results: dict[str, Any]) -> list[str]:
    """The PF-ODE solvers of the results: MR Sampler ODE variants and MR UniPC."""
    return [k for k in results["methods"] if k.startswith(("mrs-ode-", "unipc-"))]


def distance_table(results: dict[str, Any], keys: Sequence[str], kind: str) -> str:
    """Rows NFE, columns methods, cells the RMS distance to the converged ODE solution in
    8-bit levels (x 255); the smallest of each row in bold."""
    methods = results["methods"]
    nfes = sorted({int(n) for k in keys for n in methods[k]["runs"]}, reverse=True)
    rows = []
    for nfe in nfes:
        cells = [_distance(results, k, nfe, kind) for k in keys]
        best = min((c for c in cells if c is not None), default=None)
        row = [str(nfe)]
        for c in cells:
            text = _fmt(None if c is None else 255 * c)
            row.append(f"**{text}**" if c is not None and c == best and len(keys) > 1 else text)
        rows.append(row)
    return markdown_table(["NFE"] + [methods[k]["label"] for k in keys], rows)


def _negative_distance(results: dict[str, Any], key: str, nfe: int) -> float | None:
    d = _distance(results, key, nfe)
    return None if d is None else -d


def _best(results: dict[str, Any], prefix: str, nfe: int, score: Any) -> tuple[float, str] | None:
    """(score, key) of the method whose key starts with ``prefix`` that maximises ``score``."""
    cands = [(v, k) for k in results["methods"] if k.startswith(prefix)
             if (v := score(results, k, nfe)) is not None]
    return max(cands) if cands else None


def _unipc_vs_mrs_lines(results: dict[str, Any], nfe: int, margin: float, ratio: float
                        ) -> list[str]:
    """Best MR UniPC vs best MR Sampler ODE at ``nfe``: PSNR (>= + ``margin`` dB) and the
    distance to the converged ODE (<= ``ratio`` x)."""
    label = lambda k: results["methods"][k]["label"]  # noqa: E731
    uni, mrs = (_best(results, p, nfe, _psnr) for p in ("unipc-", "mrs-ode-"))
    if uni is None or mrs is None:
        return []
    paired = _paired_delta(results, (uni[1], nfe), (mrs[1], nfe))
    lines = [f"- Best UniPC @{nfe} ({label(uni[1])}) vs best MRS-ODE @{nfe} ({label(mrs[1])}):"
             f" {uni[0]:.2f} vs {mrs[0]:.2f} dB ({paired}); >= +{margin} dB:"
             f" {_check(uni[0] >= mrs[0] + margin)}"]
    near = [_best(results, p, nfe, _negative_distance) for p in ("unipc-", "mrs-ode-")]
    if None not in near:
        (du, ku), (dm, km) = ((-v, k) for v, k in near)
        lines.append(f"- Closest UniPC @{nfe} ({label(ku)}) vs closest MRS-ODE @{nfe}"
                     f" ({label(km)}) to the converged ODE: {255 * du:.2f} vs {255 * dm:.2f}"
                     f" (x 1/255); ratio {du / dm:.2f} <= {ratio}: {_check(du <= ratio * dm)}")
    return lines


def unipc_lines(results: dict[str, Any]) -> list[str]:
    """Issue 24's targets: best MR UniPC vs best MR Sampler ODE at NFE 5 (PSNR >= +0.3 dB,
    distance to the converged ODE <= 0.6x) and 10 (no worse), and the best UniPC @5 within
    0.3 dB of posterior (IR-SDE) @100."""
    lines = _unipc_vs_mrs_lines(results, 5, 0.3, 0.6) + _unipc_vs_mrs_lines(results, 10, 0, 1)
    uni5, post = _best(results, "unipc-", 5, _psnr), _psnr(results, "posterior-irsde", 100)
    if uni5 is not None and post is not None:
        paired = _paired_delta(results, (uni5[1], 5), ("posterior-irsde", 100))
        lines.append(f"- Best UniPC @5 vs posterior (IR-SDE) @100: {uni5[0]:.2f} vs {post:.2f}"
                     f" dB ({paired}); within 0.3 dB (20x): {_check(uni5[0] >= post - 0.3)}")
    return lines


def _faithful_and_collapse_lines(results: dict[str, Any]) -> list[str]:
    """The faithful second-order SDE @10 within 0.2 dB of its @100; posterior sampling @10
    more than 1 dB under its @100 (where both were run)."""
    lines = []
    faithful = [_psnr(results, "mrs-sde-data-2", n) for n in (10, 100)]
    if None not in faithful:
        delta = faithful[0] - faithful[1]
        paired = _paired_delta(results, ("mrs-sde-data-2", 10), ("mrs-sde-data-2", 100))
        lines.append(
            f"- Faithful second-order SDE (MRS-SDE-d-2) @10 vs its @100: {faithful[0]:.2f} vs"
            f" {faithful[1]:.2f} dB ({paired}); within 0.2 dB: {_check(delta >= -0.2)}"
        )
    post, post10 = (_psnr(results, "posterior-irsde", n) for n in (100, 10))
    if post is not None and post10 is not None:
        lines.append(
            f"- Posterior (IR-SDE) @10 vs its @100: {post10:.2f} vs {post:.2f} dB (delta"
            f" {post10 - post:+.2f} dB); collapses (more than 1 dB lower):"
            f" {_check(post10 < post - 1)}"
        )
    return lines


def targets_summary(results: dict[str, Any]) -> str:
    """How the fast-sampling targets fare (MRS@10 within 0.2 dB of MRS@100, MRS@5 within
    0.5 dB; the best MRS@10 / @5 within 0.2 dB of posterior sampling@100), average PSNR."""
    lines = [
        "## Fast-sampling targets",
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
        paired = "delta –" if ok is None else _paired_delta(
            results, ("mrs-default", nfe), ("mrs-default", 100))
        lines.append(
            f"- MRS default @{nfe} vs @100: {_fmt(val)} vs {_fmt(ref)} dB"
            f" ({paired}); within {tol} dB: {_check(ok)}"
        )
    lines += _faithful_and_collapse_lines(results)
    post = _psnr(results, "posterior-irsde", 100)
    mrs_keys = [k for k in results["methods"] if k.startswith("mrs-")]
    for nfe, speedup in ((10, "10x"), (5, "20x")):
        cands = [(v, k) for k in mrs_keys if (v := _psnr(results, k, nfe)) is not None]
        if cands and post is not None:
            val, key = max(cands)
            label = results["methods"][key]["label"]
            paired = _paired_delta(results, (key, nfe), ("posterior-irsde", 100))
            lines.append(
                f"- Best MRS @{nfe} ({label}) vs posterior (IR-SDE) @100: {val:.2f} vs"
                f" {post:.2f} dB ({paired}); within 0.2 dB ({speedup}):"
                f" {_check(val >= post - 0.2)}"
            )
        else:
            lines.append(f"- Best MRS @{nfe} vs posterior (IR-SDE) @100: n/a (not run)")
    lines += unipc_lines(results)
    lines += ["", "Input vs output PSNR (dB) per degradation:", "", input_output_table(results)]
    lines += ["", *shape_summary(results)]
    return "\n".join(lines)


def input_output_table(results: dict[str, Any]) -> str:
    """Per degradation: the input's PSNR and the main methods' (gain in brackets)."""
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
    headers = ["degradation", "input"] + [
        f"{results['methods'][k]['label']} @{n}" for k, n in cols
    ]
    return markdown_table(headers, rows)


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
        {int(n) for k in methods if k.startswith("mrs-") and k != "mrs-default"
         for n in methods[k]["runs"]},
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
            lines.append(f"- MRS-{alg.upper()} data minus noise parameterization (mean over"
                         " orders): " + ", ".join(parts))
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
            lines.append(f"- {methods[key]['label']} minus posterior (IR-SDE) @100: "
                         + ", ".join(parts))
    return lines


def distance_section(results: dict[str, Any]) -> list[str]:
    """``## Distance to the converged ODE solution`` (average over all images), where the
    ODE solvers' ``ode_distance`` was measured."""
    keys = [k for k in ode_method_keys(results)
            if any("ode_distance" in r for r in results["methods"][k]["runs"].values())]
    ref = results["meta"].get("ode_reference")
    if not keys or ref is None:
        return []
    return ["## Distance to the converged ODE solution", "",
            f"RMS difference (8-bit levels) to {ref['scheduler']}"
            f" `{json.dumps(ref['overrides'], sort_keys=True)}` at NFE {ref['nfe']} from the"
            " same latents; average over all images; smallest per row in bold.", "",
            distance_table(results, keys, "average"), ""]


def markdown_report(results: dict[str, Any]) -> str:
    """``results.md``: header, targets, then per-degradation tables like the paper's."""
    meta = results["meta"]
    main_keys = [k for k in ("posterior-irsde", "posterior-jump", "em-irsde", "em-jump",
                             "mrs-default", "x0-estimate") if k in results["methods"]]
    variant_keys = [k for k in results["methods"] if k.startswith("mrs-") and k != "mrs-default"]
    unipc_keys = [k for k in results["methods"] if k.startswith("unipc-")]
    out = [
        "# Restoration quality vs NFE",
        "",
        f"Model `{meta['model']}` ({meta['prediction_type']}, T = {meta['num_train_timesteps']});"
        f" {meta['num_images']} images: {meta['crop']}x{meta['crop']} centre crops of the"
        f" held-out photos ({', '.join(meta['photos'])}) x {len(meta['kinds'])} degradations"
        f" ({', '.join(meta['kinds'])}){_sampling_text(meta)}, nominal parameters,"
        f" seed {meta['seed']}."
        f" PSNR (dB) / SSIM against the clean crops (scikit-image, data range 1). Every run"
        f" restores all images in one batch from the same seeded noise; {meta['device']},"
        f" {meta['threads']} thread(s); {meta['total_seconds'] / 60:.1f} min in all.",
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
            out += ["MR Sampler variants (SDE/ODE, d = data, n = noise parameterization,"
                    " order):", "", quality_table(results, variant_keys, kind), ""]
        if unipc_keys:
            out += ["MR UniPC (B(h), order; n = noise parameterization, else data;"
                    " x = the exact single weight):", "",
                    quality_table(results, unipc_keys, kind), ""]
    out += distance_section(results)
    all_keys = main_keys + variant_keys + unipc_keys
    if all_keys:
        out += ["## Seconds per image", "",
                f"Wall time of the batched run / {meta['num_images']} images.", "",
                timing_table(results, all_keys), ""]
    return "\n".join(out)

