"""How much a restoration depends on the sampler's noise: the default pipeline at one NFE,
repeated with several noise seeds on the NFE benchmark's images (same degraded inputs).

Prints, per degradation, the input PSNR, the mean output PSNR over the seeds, and the worst
single image (its mean over the seeds); PSNR from :mod:`diffusers_mrs.metrics`.

    python benchmarks/seed_spread.py --nfe 10 --seeds 8 --threads 2
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from nfe_run import load_data, load_pipeline, restore

from diffusers_mrs.metrics import mean_per_group, psnr


def seed_table(psnrs: np.ndarray, inputs: Sequence[float], kinds: Sequence[str]) -> list[str]:
    """Rows ``kind: input -> mean over seeds (worst image)`` from ``psnrs[seed, image]``."""
    per_image = psnrs.mean(axis=0)
    mean_in, mean_out = mean_per_group(inputs, kinds), mean_per_group(per_image, kinds)
    rows = []
    for kind in mean_out:
        idx = [i for i, k in enumerate(kinds) if k == kind or kind == "average"]
        rows.append(f"{kind:>9}: {mean_in[kind]:6.2f} -> {mean_out[kind]:6.2f} dB"
                    f" (worst image {per_image[idx].min():6.2f} dB)")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--seeds", type=int, default=8, help="noise seeds 0..N-1 (x 1000 + image)")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, "cpu")
    data = load_data(["noise", "blur", "lowlight", "jpeg"], args.crop, seed=0)
    psnrs = np.array([psnr(restore(pipe, pipe.scheduler, data.lq, args.nfe, 1000 * s)[0],
                           data.gt) for s in range(args.seeds)])
    print(f"NFE {args.nfe}, {args.seeds} noise seeds, {data.lq.shape[0]} images "
          f"({args.crop}x{args.crop}):")
    print("\n".join(seed_table(psnrs, psnr(data.lq, data.gt), data.kinds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
