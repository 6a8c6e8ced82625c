"""Posterior ensembles on the bundled example images: the mean of K samples vs one sample.

For every image in ``examples/images`` with a known clean reference (the crop of the
held-out photo it was made from, :mod:`example_images`), restores it K times as single
samples (K seeds, one batch) and once as an ensemble (``num_samples=K``), and prints PSNR (dB, from
:mod:`diffusers_mrs.metrics`) of the input, the single samples (mean over the K seeds and
the range), and the ensemble mean; and, as a calibration check, the RMS error of the
ensemble mean against the RMS of its predicted std (for a calibrated posterior
``E[(x - mean)^2] = (1 + 1/K) std^2``) (docs/math.md#ensembles).

    python benchmarks/ensemble_gain.py --samples 8 --steps 10 --threads 2
    python benchmarks/ensemble_gain.py --samples 8 --steps 10 --threads 2 --solver-order 2
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    p.add_argument("--samples", type=int, default=8, help="K")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--images", nargs="*", default=None, help="file names (default: all)")
    p.add_argument("--solver-order", type=int, default=None,
                   help="the MR Sampler's order (default: the model's; 2 = faithful samples)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    pipe = MRRestorationPipeline.from_pretrained(args.model)
    if args.solver_order is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config,
                                                          solver_order=args.solver_order)
    pipe.set_progress_bar_config(disable=True)
    k = args.samples
    order = getattr(pipe.scheduler.config, "solver_order", None)
    print(f"{type(pipe.scheduler).__name__} (solver_order {order}), {args.steps} steps, K = {k};"
          " PSNR in dB")
    print(f"{'image':<20} {'input':>6} {'1 sample (range)':>22} {f'mean of {k}':>10}"
          f" {'gain':>6} {'RMS err':>8} {'RMS std':>8} {'s':>6}")
    gains = []
    names = args.images or sorted(p.name for p in EXAMPLES_DIR.glob("*.png"))
    paths = [EXAMPLES_DIR / n for n in names]
    for path in paths:
        r = measure(pipe, *load_pair(path), k, args.steps)
        # an image returned unchanged (a clean photo) has infinite PSNR and no gain
        finite = np.isfinite(r["single_mean"])
        gains.append(r["ensemble"] - r["single_mean"] if finite else float("nan"))
        print(f"{path.name:<20} {r['input']:6.2f} {r['single_mean']:7.2f}"
              f" ({r['single_min']:5.2f}-{r['single_max']:5.2f}) {r['ensemble']:10.2f}"
              f" {gains[-1]:+6.2f} {r['rms_error']:8.4f} {r['rms_std']:8.4f} {r['seconds']:6.1f}")
    print(f"mean gain of the {k}-sample mean over one sample: {np.nanmean(gains):+.2f} dB"
          " (images returned unchanged left out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
