"""Restoration quality against the number of network evaluations (NFE): the paper's tables.

For every degradation (``noise``, ``blur``, ``lowlight``, ``jpeg``) of centre crops of the
held-out photographs (``diffusers_mrs.data`` validation split, never trained on), this
restores the degraded images with

* the MR Sampler (``MRSamplerScheduler``): ``sde``/``ode`` x ``data``/``noise``
  parameterization x solver order 1-3, and "MRS default" (the pipeline's own scheduler config);
* MR UniPC (``MRUniPCScheduler``, PF-ODE predictor-corrector): B(h) ``bh1``/``bh2`` x order 1-3;
* posterior sampling (``MRPosteriorScheduler``): ``step_mode="irsde"`` (the IR-SDE code: one
  grid step per visit, collapses at low NFE) and ``step_mode="jump"`` (moves to the next
  visited time);
* Euler-Maruyama (``MREulerMaruyamaScheduler``), ``irsde`` and ``jump``;

at NFE 100, 50, 20, 10, 5, 4, 3, 2, and measures PSNR and SSIM (:mod:`diffusers_mrs.metrics`)
against the clean crops, the seconds per image and (``--ode-reference-nfe``) the RMS distance
to the converged PF-ODE solution from the same latents. Every scheduler is built with
``Cls.from_config(pipe.scheduler.config, **overrides)``, so all share the model's noise
schedule and ``prediction_type``. Runs that are the same computation (posterior/EM ``irsde``
and ``jump`` at NFE = T; "MRS default" and the variant with its settings) are computed once.

The jobs live in sibling modules: ``nfe_plan.py`` (methods and cells), ``nfe_run.py`` (data,
restorations, metrics), ``nfe_report.py`` (``results.json``, ``results.md``) and
``nfe_plots.py`` (figures); this script only reads the command line and calls them.

Outputs (``--out``, default ``benchmarks/results/``): ``results.json`` (every number),
``results.md`` (tables like the paper's, rows NFE, columns methods, per degradation and on
average, and how the fast-sampling targets fare), ``psnr_vs_nfe.png`` (the paper's Figure 2)
and ``grid.png`` (one example per degradation: degraded | posterior@100 | posterior@10 |
MRS@10 | MRS@5 | clean).

    python benchmarks/nfe_quality.py                       # default model, default plan
    python benchmarks/nfe_quality.py --dry-run             # print the plan and the ETA only
    python benchmarks/nfe_quality.py --model PIPELINE_DIR --methods 'posterior-*,mrs-default' \\
        --nfes 10,5 --crop 32 --threads 1 --out /tmp/bench
    python benchmarks/nfe_quality.py --methods 'mrs-ode-*,unipc-*,posterior-irsde' \\
        --nfes 2,3,4,5,6,8,10,20,100 --ode-reference-nfe 500   # + distance to the ODE limit
    python benchmarks/nfe_quality.py --report-only          # rewrite results.md and the plot
                                                           # from an existing results.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from nfe_plan import (
    NFE_LIST,
    ODE_REFERENCE,
    Method,
    build_methods,
    plan_runs,
    scheduler_class,
    select_methods,
    unique_evaluations,
)
from nfe_plots import plot_grid, plot_ode_distance, plot_psnr_vs_nfe
from nfe_report import markdown_report, read_json, targets_summary, write_json
from nfe_run import (
    BenchData,
    SweepState,
    describe_device,
    load_data,
    load_pipeline,
    ode_reference,
    results_dict,
    run_sweep,
    seconds_per_forward,
)

from diffusers_mrs.timestep_schedules import TIMESTEP_SPACINGS

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def write_outputs(
    state: SweepState,
    methods: Sequence[Method],
    data: BenchData,
    meta: dict[str, Any],
    out_dir: Path,
    figures: bool = True,
    grid_photo: str | None = None,
) -> dict[str, Any]:
    """Writes results.json, results.md and (``figures``) psnr_vs_nfe.png,
    ode_distance_vs_nfe.png (where distances were measured) and grid.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = results_dict(state, methods, data, meta)
    write_json(results, out_dir / "results.json")
    (out_dir / "results.md").write_text(markdown_report(results) + "\n", encoding="utf-8")
    if figures:
        plot_psnr_vs_nfe(results, out_dir / "psnr_vs_nfe.png")
        plot_ode_distance(results, out_dir / "ode_distance_vs_nfe.png")
        plot_grid(data, state.grid_images, out_dir / "grid.png", photo=grid_photo)
    return results


def rewrite_report(out_dir: Path) -> int:
    """``--report-only``: results.md and the plots again from ``results.json``."""
    path = out_dir / "results.json"
    if not path.is_file():
        print(f"error: {path} does not exist; run the benchmark first", file=sys.stderr)
        return 2
    results = read_json(path)
    (out_dir / "results.md").write_text(markdown_report(results) + "\n", encoding="utf-8")
    plot_psnr_vs_nfe(results, out_dir / "psnr_vs_nfe.png")
    plot_ode_distance(results, out_dir / "ode_distance_vs_nfe.png")
    print(f"wrote {out_dir}/results.md and the plots from {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="pipeline folder (default: the model shipped in the package)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--crop", type=int, default=64, help="centre-crop size (default 64)")
    p.add_argument("--kinds", default="noise,blur,lowlight,jpeg",
                   help="comma-separated degradations")
    p.add_argument("--methods", default=None,
                   help="comma-separated method keys or globs, e.g. 'posterior-*,mrs-default'"
                        " (default: all; see --list-methods)")
    p.add_argument("--nfes", default=None,
                   help="comma-separated NFEs for every selected method (default: per-method"
                        " plan; baselines only at NFE <= T)")
    p.add_argument("--full", action="store_true",
                   help=f"every method at every NFE of {NFE_LIST} (about 2.5x the default)")
    p.add_argument("--seed", type=int, default=0, help="data and noise seed")
    p.add_argument("--draws", type=int, default=1,
                   help="samples per image (independent noise): averages over draws x images")
    p.add_argument("--samples", type=int, default=1,
                   help="K > 1: score the mean of K posterior samples per image (an ensemble,"
                        " num_samples=K) instead of one sample")
    p.add_argument("--ode-reference-nfe", type=int, default=0,
                   help="N > 0: also score every run's ode_distance, its RMS distance to the"
                        " converged PF-ODE solution (MR Sampler ODE, data, order 2, at N steps,"
                        " same latents), e.g. 500 (default 0: off)")
    p.add_argument("--timestep-spacing", default=None,
                   help="replace the model's timestep_spacing (e.g. logsnr, linspace) before"
                        " planning, to compare time grids (default: the model's own)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--grid-photo", default="flower",
                   help="photo of the image grid (default: flower, the most detailed crop)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the ETA, then exit")
    p.add_argument("--list-methods", action="store_true", help="list the method keys and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite results.md and psnr_vs_nfe.png from OUT/results.json, run nothing")
    return p


def _int_list(text: str | None) -> list[int] | None:
    return None if not text else [int(x) for x in text.replace(" ", ",").split(",") if x]


def build_meta(
    args: argparse.Namespace, pipe: Any, data: BenchData, per_forward: float, evals: int
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
        "draws": args.draws,
        "samples": args.samples,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "device": describe_device(args.device),
        "torch": torch.__version__,
        "seconds_per_forward": per_forward,
        "network_evaluations": evals,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_seconds": 0.0,
    }


def run(args: argparse.Namespace) -> int:
    """Plans, prints the ETA, runs the sweep and writes the outputs (see :func:`main`)."""
    for name in ("draws", "samples"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.timestep_spacing and args.timestep_spacing not in TIMESTEP_SPACINGS:
        print(f"error: --timestep-spacing: timestep_spacing must be one of"
              f" {TIMESTEP_SPACINGS}, got {args.timestep_spacing!r}", file=sys.stderr)
        return 2
    if args.ode_reference_nfe < 0:
        print(f"error: --ode-reference-nfe must be >= 0, got {args.ode_reference_nfe}",
              file=sys.stderr)
        return 2
    methods = select_methods(build_methods(), args.methods)
    nfes = _int_list(args.nfes) or (list(NFE_LIST) if args.full else None)
    try:
        pipe = load_pipeline(args.model, args.device)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.timestep_spacing:
        pipe.scheduler = type(pipe.scheduler).from_config(
            pipe.scheduler.config, timestep_spacing=args.timestep_spacing)
    runs = plan_runs(methods, pipe.scheduler.config, nfes)
    data = load_data(args.kinds.split(","), args.crop, args.seed, args.draws)

    evals = unique_evaluations(runs) + args.ode_reference_nfe
    T = int(pipe.scheduler.config["num_train_timesteps"])
    batch = data.lq.repeat(args.samples, 1, 1, 1)  # each image K times in one batch
    per_forward = seconds_per_forward(pipe.unet, batch, T)
    print(f"{len(runs)} cells, {len({r.key for r in runs})} distinct runs, {evals} network"
          f" evaluations of a batch of {batch.shape[0]} images"
          f" ({data.lq.shape[-1]}x{data.lq.shape[-2]}), {torch.get_num_threads()} thread(s):"
          f" {per_forward:.3f} s per evaluation -> ETA {evals * per_forward / 60:.1f} min"
          " (+ metrics)")
    if args.dry_run:
        for m in methods:
            print(f"  {m.key:18s} NFE {[r.nfe for r in runs if r.method is m]}")
        return 0

    meta = build_meta(args, pipe, data, per_forward, evals)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    reference = None
    if args.ode_reference_nfe > 0:
        reference = ode_reference(pipe, data, args.ode_reference_nfe, args.seed, args.samples)
        meta["ode_reference"] = {"scheduler": scheduler_class(ODE_REFERENCE.family).__name__,
                                 "overrides": dict(ODE_REFERENCE.overrides),
                                 "nfe": args.ode_reference_nfe}

    def save_partial(state: SweepState) -> None:
        meta["total_seconds"] = time.perf_counter() - start
        write_json(results_dict(state, methods, data, meta), args.out / "results.json")

    state = run_sweep(pipe, data, runs, seed=args.seed, progress=not args.no_progress,
                      on_run_done=save_partial, samples=args.samples, reference=reference)
    meta["total_seconds"] = time.perf_counter() - start
    results = write_outputs(state, methods, data, meta, args.out, grid_photo=args.grid_photo)
    print(targets_summary(results))
    print(f"done in {meta['total_seconds'] / 60:.1f} min; wrote {args.out}/results.json,"
          " results.md, psnr_vs_nfe.png, grid.png")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; returns the exit code. Torch threads and diffusers' log level are
    restored afterwards (the script is also called in-process by the tests)."""
    args = build_parser().parse_args(argv)
    if args.report_only:
        return rewrite_report(args.out)
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
