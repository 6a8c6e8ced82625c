"""How far a perfect low-light restoration turns hues: the reference for the hue measure.

Issue 25 measures colour fidelity on real low-light photographs by the hue angle between
output and input (``real_photo_metrics.hue_angles``). On synthetic low light the clean
photograph is known, so the measure can be taken of the truth itself: the clean crop
against its degraded input. That is what a perfect restoration scores, the floor no model
can go under. Two things raise it above 0: the input's sensor noise, which turns the hue of
dark pixels at random, and the exposure's gamma, which is applied per channel. The
low-pass hue (both images blurred by a Gaussian of sigma 3 px first) averages the noise
away.

For each low-light setting (:data:`SETTINGS`: fixed parameters, or drawn from the training
distribution), on ``--crops`` random 128 px crops of each held-out photograph, it gives the
median and 90th percentile of the hue angle, per pixel and low-pass, of the clean crop
against the input; with ``--model``, also of the model's one sample (type forced to low
light, 10 steps, seed ``i`` for crop ``i``) against the input, and the sample's PSNR.

    python benchmarks/hue_reference.py                     # the truth only, seconds
    python benchmarks/hue_reference.py --model diffusers_mrs/default_model --threads 1

Outputs (``--out``, default ``benchmarks/results/``): ``hue_reference.json`` and
``hue_reference.md``. Section: docs/training_data.md#the-measures.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_result
from held_out_crops import held_out_photos, photo_crops, require_held_out_photos
from real_photo_metrics import LOW_PASS_SIGMA, blur_pair, hue_angles
from recorded import script_command

from diffusers_mrs.metrics import psnr

RESULTS = Path(__file__).resolve().parent / "results"
_NO_CAST = (1.0, 1.0, 1.0)
#: Low-light settings: a name and fixed parameters, or ``None`` for parameters drawn per crop
#: from the training distribution (colour cast included).
SETTINGS: dict[str, dict[str, Any] | None] = {
    "nominal": {"gain": 0.2, "gamma": 1.4, "color_gain": _NO_CAST, "shot_noise": 2e-3,
                "read_std": 2.0 / 255.0},
    "nominal, no sensor noise": {"gain": 0.2, "gamma": 1.4, "color_gain": _NO_CAST,
                                 "shot_noise": 0.0, "read_std": 0.0},
    "gain only (gamma 1), no sensor noise": {"gain": 0.2, "gamma": 1.0, "color_gain": _NO_CAST,
                                             "shot_noise": 0.0, "read_std": 0.0},
    "darkest and noisiest": {"gain": 0.08, "gamma": 1.8, "color_gain": _NO_CAST,
                             "shot_noise": 1e-2, "read_std": 4.0 / 255.0},
    "brightest and least noisy": {"gain": 0.4, "gamma": 1.0, "color_gain": _NO_CAST,
                                  "shot_noise": 2e-4, "read_std": 0.5 / 255.0},
    "drawn from the training distribution": None,
}


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy().astype(np.float64)


def angle_stats(outputs: torch.Tensor, inputs: torch.Tensor) -> dict[str, float]:
    """Median and 90th percentile (degrees) of the hue angles of ``outputs`` against
    ``inputs`` (``N x 3 x H x W`` in [0, 1]) over all crops' pixels with signal, per pixel
    and after a Gaussian blur of :data:`LOW_PASS_SIGMA` px of both (``*_low_pass``)."""
    pairs = [(_hwc(o), _hwc(i)) for o, i in zip(outputs, inputs, strict=True)]
    pixel = np.concatenate([hue_angles(o, i) for o, i in pairs])
    low_pass = np.concatenate([hue_angles(*blur_pair(o, i, LOW_PASS_SIGMA)) for o, i in pairs])
    return {"median": float(np.median(pixel)), "p90": float(np.percentile(pixel, 90)),
            "median_low_pass": float(np.median(low_pass)),
            "p90_low_pass": float(np.percentile(low_pass, 90))}


def restore_lowlight(pipe: Any, lq: torch.Tensor, steps: int) -> torch.Tensor:
    """One sample per crop, type forced to low light, crop ``i`` from seed ``i``."""
    seeds = [torch.Generator().manual_seed(i) for i in range(len(lq))]
    return pipe(image=lq, num_inference_steps=steps, generator=seeds, output_type="pt",
                degradation="lowlight").images


def measure(args: argparse.Namespace, pipe: Any | None) -> list[dict[str, Any]]:
    """One row per setting: the truth's hue angles against the input, and the model's."""
    photos = held_out_photos(args.photos)
    rows = []
    for name, params in SETTINGS.items():
        lq, gt = photo_crops(photos, "lowlight", args.crops, args.crop, args.seed, params)
        row: dict[str, Any] = {"setting": name, "params": params, "crops": len(lq),
                               "input_psnr": float(np.mean(psnr(lq, gt))),
                               "truth": angle_stats(gt, lq)}
        if pipe is not None:
            out = restore_lowlight(pipe, lq, args.steps).float().cpu()
            row["model"] = {**angle_stats(out, lq), "psnr": float(np.mean(psnr(out, gt)))}
        rows.append(row)
        print(row, flush=True)
    return rows


def _cells(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "- | -"
    return (f"{stats['median']:.2f} / {stats['p90']:.2f} |"
            f" {stats['median_low_pass']:.2f} / {stats['p90_low_pass']:.2f}")


def markdown(result: dict[str, Any]) -> str:
    """``hue_reference.md``: the setting and one table row per low-light setting."""
    m = result["meta"]
    model = (f" and of one sample of {m['model_name']} ({m['steps']} steps, type forced to"
             " low light)") if m["model"] else ""
    lines = [f"Hue angle against the degraded input (median / p90, degrees; per pixel with input"
             f" max channel >= 0.06, and low-pass: both blurred by a Gaussian of sigma"
             f" {LOW_PASS_SIGMA:g} px) of the clean crop (the truth: a perfect restoration){model};"
             f" {m['crops']} random {m['crop']} px crop(s) of each held-out photograph."
             f" Command: `{m['command']}` ({m['seconds'] / 60:.1f} min).", "",
             "| low-light setting | input PSNR (dB) | truth: per pixel | truth: low-pass |"
             " model: per pixel | model: low-pass | model PSNR (dB) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        model_psnr = f"{r['model']['psnr']:.2f}" if "model" in r else "-"
        lines.append(f"| {r['setting']} | {r['input_psnr']:.2f} | {_cells(r['truth'])} |"
                     f" {_cells(r.get('model'))} | {model_psnr} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None,
                   help="pipeline folder of a low-light model (default: the truth only)")
    p.add_argument("--name", default=None, help="the model's name in the table")
    p.add_argument("--photos", default=None,
                   help="photo cache folder (default: examples/fetch_training_photos.py's)")
    p.add_argument("--crops", type=int, default=2, help="crops per held-out photo")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


def check_args(args: argparse.Namespace) -> None:
    """One clear error for a setting that cannot run, before anything is loaded."""
    if args.crops < 1 or args.steps < 1:
        raise SystemExit("--crops and --steps must be >= 1")
    if args.crop < 16:
        raise SystemExit("--crop must be >= 16")


def load_model(path: str | None) -> Any | None:
    """The pipeline at ``path`` (None without one); it must restore low light."""
    if path is None:
        return None
    from diffusers_mrs import MRRestorationPipeline

    pipe = MRRestorationPipeline.from_pretrained(path)
    encoder = getattr(pipe, "degradation_encoder", None)
    if encoder is None or "lowlight" not in encoder.degradations:
        raise SystemExit(f"{path}: not a degradation-aware model that restores low light")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    require_held_out_photos(args.photos)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    pipe = load_model(args.model)
    start = time.perf_counter()
    rows = measure(args, pipe)
    meta = {"model": args.model, "model_name": args.name or (
                Path(args.model).name if args.model else None),
            "crops": args.crops, "crop": args.crop, "steps": args.steps, "seed": args.seed,
            "seconds": time.perf_counter() - start,
            "command": script_command(__file__, argv)}
    result = {"meta": meta, "rows": rows}
    write_result(args.out, "hue_reference", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
