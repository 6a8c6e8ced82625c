"""How good a model's x0 estimate is at each time t of the forward process.

A sampler calls the network at every t it visits, and its last steps are at small t. This
measures the network alone there: each held-out crop (``held_out_crops.photo_crops``,
realistic degradations) is noised to ``x_t = scheduler.add_noise(x0, noise, t, mu)`` from its
clean version (docs/math.md#forward-process), the network (given the true degradation type
where it is degradation-aware) predicts x0, and the PSNR of that prediction (clamped to
[0, 1]) against the clean crop is averaged over the crops. Noise for time ``t`` comes from
seed ``t``, so every model sees the same ``x_t``.

    python benchmarks/x0_per_t.py --model v4=diffusers_mrs/default_model \
        --model "my model=runs/my_model/pipeline-final" --threads 1

Outputs (``--out``, default ``benchmarks/results/``): ``x0_per_t.json`` and ``x0_per_t.md``.
Section: docs/training_data.md#v4-and-the-training-curve.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_result
from held_out_crops import photo_crops, require_held_out_photos
from recorded import script_command

from diffusers_mrs.metrics import psnr
from diffusers_mrs.training.objective import predict_x0

RESULTS = Path(__file__).resolve().parent / "results"
TIMES = (100.0, 70.0, 50.0, 30.0, 20.0, 10.0, 5.0, 2.0)


@torch.no_grad()
def x0_psnr_at(pipe: Any, lq: torch.Tensor, gt: torch.Tensor, kind: str, t: float,
               sampler_start: bool = False) -> float:
    """Mean PSNR (dB) of the network's x0 estimate from ``x_t`` noised from ``gt`` at ``t``;
    with ``sampler_start``, from the pipeline's own start (``prepare_latents``: ``mu +
    init_noise_sigma * noise``) at ``t``, which lacks the forward process's
    ``alpha_T (x0 - mu)``."""
    noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(int(t)))
    times = torch.full((gt.shape[0],), float(t))
    if sampler_start:
        x_t = pipe.prepare_latents(lq, None, noise=noise)
    else:
        x_t = pipe.scheduler.add_noise(gt, noise, times, mu=lq)
    extra = {}
    if getattr(pipe, "degradation_encoder", None) is not None:
        extra["degradation_context"] = pipe.degradation_encoder.context_for([kind] * len(gt))
    out = pipe.unet(x_t, times, lq, **extra).sample
    x0 = predict_x0(pipe.scheduler, out, x_t, times, lq).clamp(0.0, 1.0)
    return float(np.mean(psnr(x0, gt)))


def measure(models: dict[str, str], kinds: Sequence[str], photos: Any,
            args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per model and kind: the PSNR of the x0 estimate at every time of ``TIMES``, on
    crops of the held-out ``photos``."""
    from diffusers_mrs import MRRestorationPipeline

    crops = {k: photo_crops(photos, k, args.crops, args.crop, args.seed) for k in kinds}
    rows = []
    for name, path in models.items():
        pipe = MRRestorationPipeline.from_pretrained(path)
        steps = int(pipe.scheduler.config.num_train_timesteps)
        for kind, (lq, gt) in crops.items():
            row = {"model": name, "path": path, "kind": kind, "num_train_timesteps": steps,
                   "psnr": {str(t): x0_psnr_at(pipe, lq, gt, kind, t) for t in TIMES}}
            row["sampler_start"] = x0_psnr_at(pipe, lq, gt, kind, float(steps), True)
            rows.append(row)
            print(rows[-1], flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    """``x0_per_t.md``: the setting and one row per model and kind."""
    m = result["meta"]
    times = [str(t) for t in m["times"]]
    steps = sorted({r["num_train_timesteps"] for r in result["rows"]})
    lines = [f"PSNR (dB) of the network's x0 estimate from x_t, noised at time t (of T ="
             f" {', '.join(map(str, steps))}) from the clean crop, on {m['crops']} random"
             f" {m['crop']} px crop(s) of each held-out photograph; last column: from the"
             f" samplers' start mu + sigma_T noise at t = T instead. Command: `{m['command']}`.",
             "", "| kind | model | " + " | ".join(f"t = {float(t):g}" for t in times)
             + " | sampler start |", "|---|---|" + "---|" * (len(times) + 1)]
    for r in sorted(result["rows"], key=lambda r: r["kind"]):
        cells = " | ".join(f"{r['psnr'][t]:.2f}" for t in times)
        lines.append(f"| {r['kind']} | {r['model']} | {cells} | {r['sampler_start']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_models(items: Sequence[str]) -> dict[str, str]:
    """``NAME=FOLDER`` items as an ordered dict; ``SystemExit`` on a malformed one."""
    models: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model {item!r}: expected NAME=FOLDER")
        if name in models:
            raise SystemExit(f"--model: the name {name!r} is given twice")
        models[name] = path
    return models


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="NAME=FOLDER of a pipeline folder; repeat for several")
    p.add_argument("--kinds", nargs="+", default=["noise", "lowlight"])
    p.add_argument("--photos", default=None,
                   help="photo cache folder (default: examples/fetch_training_photos.py's)")
    p.add_argument("--crops", type=int, default=2, help="crops per held-out photo")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    models = parse_models(args.model)
    if args.crops < 1 or args.crop < 16:
        raise SystemExit("--crops must be >= 1 and --crop >= 16")
    photos = require_held_out_photos(args.photos)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = measure(models, args.kinds, photos, args)
    meta = {"times": list(TIMES), "crops": args.crops, "crop": args.crop, "seed": args.seed,
            "command": script_command(__file__, argv)}
    result = {"meta": meta, "rows": rows}
    write_result(args.out, "x0_per_t", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
