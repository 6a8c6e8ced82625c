"""Posterior ensembles on the bundled example images: the mean of K samples vs one sample.

For every image in ``examples/images`` with a known clean reference (the crop of the
held-out photo it was made from, :mod:`example_images`), restores it K times as single
samples (K seeds, one batch) and once as an ensemble (``num_samples=K``), and prints PSNR (dB, from
:mod:`diffusers_mrs.metrics`) of the input, the single samples (mean over the K seeds and
the range), and the ensemble mean; and, as a calibration check, the RMS error of the
ensemble mean against the RMS of its predicted std (for a calibrated posterior
``E[(x - mean)^2] = (1 + 1/K) std^2``) (docs/math.md#ensembles).

``--solver-order 1 2`` runs both samplers, one after the other; ``--record`` writes the
table (a row per image and sampler) as the ``ensemble_bundled`` entry of
``results/recorded.json`` (:mod:`recorded`).

    python benchmarks/ensemble_gain.py --samples 8 --steps 10 --threads 2
    python benchmarks/ensemble_gain.py --samples 8 --steps 10 --threads 2 --solver-order 1 2 \\
        --record
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from example_images import EXAMPLES, EXAMPLES_DIR, clean_reference
from PIL import Image
from recorded import add_record_option, record_table, script_command

from diffusers_mrs import MRRestorationPipeline
from diffusers_mrs.metrics import psnr


def to_chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()


def load_pair(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(degraded, clean)`` as ``[3, H, W]`` float tensors in [0, 1]."""
    if path.name not in EXAMPLES:
        raise SystemExit(f"no clean reference known for {path.name}; add it to "
                         "benchmarks/example_images.py")
    lq = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return to_chw(lq), to_chw(clean_reference(path.name))


def measure(pipe, lq: torch.Tensor, gt: torch.Tensor, k: int, steps: int) -> dict[str, float]:
    """PSNRs of K single samples and of the K-sample ensemble, and the calibration numbers."""
    singles = pipe([lq] * k, num_inference_steps=steps, output_type="pt",
                   generator=[torch.Generator().manual_seed(s) for s in range(k)]).images
    single = psnr(singles, gt[None].expand(k, -1, -1, -1))
    start = time.perf_counter()
    ens = pipe(lq, num_inference_steps=steps, num_samples=k, output_type="pt",
               generator=torch.Generator().manual_seed(1000))
    seconds = time.perf_counter() - start
    err = (ens.images[0] - gt).square().mean().sqrt().item()
    return {
        "input": psnr(lq[None], gt[None])[0],
        "single_mean": float(np.mean(single)),
        "single_min": float(np.min(single)),
        "single_max": float(np.max(single)),
        "ensemble": psnr(ens.images, gt[None])[0],
        "rms_error": err,
        "rms_std": ens.uncertainty[0].square().mean().sqrt().item(),
        "seconds": seconds,
    }


def gain(result: dict[str, float]) -> float:
    """PSNR of the ensemble mean less the single samples' mean; NaN for an image returned
    unchanged (a clean photo: infinite PSNR, no gain)."""
    if not np.isfinite(result["single_mean"]):
        return float("nan")
    return result["ensemble"] - result["single_mean"]


def ensemble_columns(k: int) -> list[str]:
    """The recorded table's columns for ``K = k``."""
    return ["image", "sampler", "input", f"1 sample: mean of {k} seeds (range)",
            f"mean of {k} samples", "gain", "RMS error of the mean", "RMS predicted std"]


def ensemble_row(image: str, sampler: str, result: dict[str, float]) -> list[str]:
    """One recorded row from :func:`measure`'s ``result``: PSNRs to 0.01 dB, RMS to 1e-4."""
    r = result
    return [image, sampler, f"{r['input']:.2f}",
            f"{r['single_mean']:.2f} ({r['single_min']:.2f}-{r['single_max']:.2f})",
            f"{r['ensemble']:.2f}", f"{gain(r):+.2f}", f"{r['rms_error']:.4f}",
            f"{r['rms_std']:.4f}"]


def sampler_label(order: int | None, model_order: int | None) -> str:
    """``default (order N)`` for the model's own order, ``faithful (order 2)`` for the
    second order (faithful samples), else ``order N``."""
    if order is None or order == model_order:
        return f"default (order {model_order})"
    return "faithful (order 2)" if order == 2 else f"order {order}"


def ensemble_setting(args: argparse.Namespace, unchanged: Sequence[str] = ()) -> str:
    """The recorded entry's setting (model, images, steps, K, threads, and the images
    returned unchanged, which the table leaves out)."""
    images = ", ".join(args.images) if args.images else "the bundled sample images"
    threads = f", {args.threads} CPU threads" if args.threads > 0 else ""
    left_out = f"; returned unchanged, left out: {', '.join(unchanged)}" if unchanged else ""
    return (f"{args.model or 'default model'}, {images}, {args.steps} steps, "
            f"K = {args.samples}{threads}; PSNR in dB{left_out}")


def run_sampler(pipe, paths: Sequence[Path], k: int, steps: int,
                label: str) -> tuple[list[list[str]], list[str]]:
    """Measures every image with ``pipe``'s scheduler and prints a line each and the mean
    gain; returns the recorded rows (:func:`ensemble_row`) and, left out of them, the
    names of the images returned unchanged (no gain)."""
    order = getattr(pipe.scheduler.config, "solver_order", None)
    print(f"{label}: {type(pipe.scheduler).__name__} (solver_order {order}), {steps} steps, "
          f"K = {k}; PSNR in dB")
    print(f"{'image':<20} {'input':>6} {'1 sample (range)':>22} {f'mean of {k}':>10}"
          f" {'gain':>6} {'RMS err':>8} {'RMS std':>8} {'s':>6}")
    rows, gains, unchanged = [], [], []
    for path in paths:
        r = measure(pipe, *load_pair(path), k, steps)
        gains.append(gain(r))
        if np.isfinite(gains[-1]):
            rows.append(ensemble_row(path.stem, label, r))
        else:
            unchanged.append(path.stem)
        print(f"{path.name:<20} {r['input']:6.2f} {r['single_mean']:7.2f}"
              f" ({r['single_min']:5.2f}-{r['single_max']:5.2f}) {r['ensemble']:10.2f}"
              f" {gains[-1]:+6.2f} {r['rms_error']:8.4f} {r['rms_std']:8.4f} {r['seconds']:6.1f}")
    print(f"mean gain of the {k}-sample mean over one sample: {np.nanmean(gains):+.2f} dB"
          " (images returned unchanged left out)")
    return rows, unchanged


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    p.add_argument("--samples", type=int, default=8, help="K")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--images", nargs="*", default=None, help="file names (default: all)")
    p.add_argument("--solver-order", type=int, nargs="+", default=None,
                   help="the MR Sampler's order, one run each (default: the model's; "
                        "2 = faithful samples)")
    add_record_option(p, "ensemble_bundled")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    orders = args.solver_order or [None]
    if len(set(orders)) != len(orders):
        p.error(f"--solver-order: each order once, got {orders}")
    names = args.images or sorted(path.name for path in EXAMPLES_DIR.glob("*.png"))
    if unknown := [n for n in names if n not in EXAMPLES]:
        p.error(f"no clean reference known for {', '.join(unknown)}; add it to "
                "benchmarks/example_images.py")
    paths = [EXAMPLES_DIR / n for n in names]
    pipe = MRRestorationPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    model_scheduler = pipe.scheduler
    model_order = getattr(model_scheduler.config, "solver_order", None)
    rows, unchanged = [], []
    for order in orders:
        if order is not None:
            pipe.scheduler = type(model_scheduler).from_config(model_scheduler.config,
                                                               solver_order=order)
        label = sampler_label(order, model_order)
        sampler_rows, sampler_unchanged = run_sampler(pipe, paths, args.samples, args.steps,
                                                      label)
        rows += sampler_rows
        unchanged += [name for name in sampler_unchanged if name not in unchanged]
    if args.record:
        stems = [path.stem for path in paths]
        rows.sort(key=lambda row: stems.index(row[0]))  # by image, then sampler (stable)
        record_table("ensemble_bundled", ensemble_columns(args.samples), rows,
                     script_command(__file__, argv), ensemble_setting(args, unchanged))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
