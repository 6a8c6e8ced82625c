"""Which network gives the most restoration quality per CPU-hour: each trained for the same time.

Every listed configuration (``--configs``, from :data:`CONFIGS`: the U-Net at the shipped
default model's shape, Refusion's NAFNet, smaller variants) is trained from scratch, one
after another, for the same wall-clock budget (``--minutes``, the trainer's ``max_minutes``)
on ``--threads`` threads, with the same data and objective: the bundled training photos
degraded on the fly (``--kinds``, default noise and low light), the default model's patch
size (64) and batch (8), v-prediction, continuous t, MSE on the x0 estimate, ``max_sigma``
10/255, AdamW 3e-4 with a cosine decay over the time budget, EMA. Each trained pipeline
(EMA weights) then restores random ``--crop`` px crops of the held-out photos (``chelsea``,
``coffee``, ``flower``: ``bundled_crops`` of ``held_out_crops.py``) with the MR Sampler
scheduler it was saved with, ``--steps`` steps, one posterior sample per crop.

Per configuration: parameters, training steps done, seconds per step, seconds per network
forward on one 256 px image, the training loss over the run's last 10 %, PSNR of input and
output per degradation and its gain, and the mean gain per CPU-hour of training
(``gain / (train seconds * threads / 3600)``). With equal budgets the last ranks as the gain
does, so the runs keep a checkpoint every ``--checkpoint-minutes`` and (unless
``--no-curve``) each checkpoint's EMA weights restore ``--curve-crops`` crops per photo: the
gain against training time, to see whether the ranking moves as training goes on.

The runs live in ``--work-dir/<config>`` (default ``~/.cache/diffusers-mrs/arch``, outside
the repository); a rerun skips finished runs, resumes interrupted ones from their latest
checkpoint, and refuses a folder whose run was started with other settings. ``--dry-run``
prints the plan. The outputs list the configurations of this invocation: to add one to a
finished study, run again with all of them (finished runs are only evaluated again).

    python benchmarks/arch_per_cpu_hour.py --minutes 10 --threads 2

Outputs (``--out``, default ``benchmarks/results/``): ``arch_per_cpu_hour.json`` and
``arch_per_cpu_hour.md``.
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that spin while waiting slow every step down; must be set
# before torch is imported (as examples/train_mr_diffusion.py does).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from default_model_eval import one_sample
from held_out_crops import bundled_crops
from nfe_run import seconds_per_forward
from tqdm.auto import tqdm

from diffusers_mrs.metrics import psnr
from diffusers_mrs.training import TrainingConfig
from diffusers_mrs.training.architectures import (
    checkpoint_network,
    network_class,
    network_kwargs,
)
from diffusers_mrs.training.trainer import list_checkpoints

RESULTS = Path(__file__).resolve().parent / "results"
WORK_DIR = Path.home() / ".cache" / "diffusers-mrs" / "arch"
#: name -> the TrainingConfig fields that choose the network (``unet-nf16``: the default model's).
CONFIGS: dict[str, dict[str, Any]] = {
    "unet-nf16": {"architecture": "unet", "nf": 16, "depth": 3},
    "nafnet-w16": {"architecture": "nafnet", "unet_kwargs": {"width": 16}},
    "unet-nf8": {"architecture": "unet", "nf": 8, "depth": 3},
    "nafnet-w8": {"architecture": "nafnet", "unet_kwargs": {"width": 8}},
    "nafnet-w32": {"architecture": "nafnet", "unet_kwargs": {"width": 32}},
    "nafnet-w16-deep": {"architecture": "nafnet", "unet_kwargs": {
        "width": 16, "enc_blk_nums": [2, 2, 4, 8], "middle_blk_num": 2,
        "dec_blk_nums": [2, 2, 2, 2]}},
}
DEFAULT_CONFIGS = "unet-nf16,nafnet-w16,unet-nf8"
MAX_STEPS = 10**7  # the time budget ends the runs
#: The shipped default model's objective (its model card: v1's training settings).
OBJECTIVE = {"prediction_type": "v_prediction", "timestep_sampling": "continuous",
             "loss_space": "x0", "loss_type": "mse", "loss_weighting": "none",
             "max_sigma": 10.0 / 255.0, "num_train_timesteps": 100, "learning_rate": 3e-4,
             "lr_scheduler": "cosine"}


def training_config(name: str, args: argparse.Namespace) -> TrainingConfig:
    """The options of configuration ``name``'s run: its network, the shared data, objective
    and budget; every checkpoint kept (one each ``--checkpoint-minutes``), validation only at
    the end."""
    return TrainingConfig(
        output_dir=str(args.work_dir / name), **CONFIGS[name], **OBJECTIVE,
        kinds=list(args.kinds), patch_size=args.patch_size, train_batch_size=args.batch_size,
        max_minutes=args.minutes, max_train_steps=args.max_steps, seed=args.seed,
        checkpointing_steps=None, checkpointing_minutes=args.checkpoint_minutes,
        checkpoints_total_limit=None, resume_from_checkpoint="latest", validation_steps=None,
        validation_kinds=list(args.kinds), validation_crop=min(64, args.crop),
        validation_num_inference_steps=args.steps, num_threads=args.threads, cpu=True)


def _as_json(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def run_state(cfg: TrainingConfig) -> str:
    """``"new"``, ``"resume"`` or ``"done"``; ``SystemExit`` when the folder holds a run
    started with other options (never overwritten)."""
    folder = Path(cfg.output_dir)
    recorded = folder / "training_config.json"
    if not recorded.is_file():
        if folder.exists() and any(folder.iterdir()):
            raise SystemExit(f"{folder} exists and is not a run of this benchmark: pass another"
                             " --work-dir or remove it")
        return "new"
    saved, wanted = json.loads(recorded.read_text()), _as_json(cfg.to_dict())
    differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if differ:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in differ)
        raise SystemExit(f"{folder} holds a run with other settings ({changes}): pass another"
                         " --work-dir, the same options, or remove it")
    final = folder / "final_metrics.json"
    if final.is_file() and (folder / "pipeline" / "model_index.json").is_file():
        summary = json.loads(final.read_text())
        if (summary["step"] >= cfg.max_train_steps
                or summary["train_seconds"] >= 60 * cfg.max_minutes - 0.1):
            return "done"
    return "resume"


def train_run(cfg: TrainingConfig) -> dict[str, Any]:
    """Train (or resume) one run unless it is done; its ``final_metrics.json``."""
    from diffusers_mrs.training import train

    if run_state(cfg) != "done":
        train(cfg)
    return json.loads((Path(cfg.output_dir) / "final_metrics.json").read_text())


def final_training_loss(folder: Path, fraction: float = 0.1) -> float:
    """Mean training loss (x0 MSE) over the last ``fraction`` of the run's logged values."""
    from diffusers_mrs.training.trackers import read_jsonl_log

    log = folder / "logs" / "train" / "metrics.jsonl"
    losses = [r["loss"] for r in read_jsonl_log(log) if "loss" in r] if log.is_file() else []
    if not losses:
        return float("nan")
    return float(np.mean(losses[-max(1, round(fraction * len(losses))):]))


def forward_seconds(unet: torch.nn.Module, size: int, repeats: int) -> float:
    """Median seconds of one forward on a ``1 x 3 x size x size`` input (after a warm-up;
    ``nfe_run.seconds_per_forward``)."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return seconds_per_forward(unet, x, repeats=repeats)


def restoration_psnr(pipe: Any, kinds: Sequence[str], args: argparse.Namespace
                     ) -> dict[str, dict[str, float]]:
    """Per kind: mean PSNR of the input and of one sample per held-out crop, and the gain
    (crop ``i`` draws its noise from seed ``i``, as ``default_model_eval.one_sample``)."""
    out = {}
    for kind in kinds:
        lq, gt = bundled_crops(kind, args.crops, args.crop, args.seed)
        restored = one_sample(pipe, lq, args.steps)
        p_in, p_out = float(np.mean(psnr(lq, gt))), float(np.mean(psnr(restored, gt)))
        out[kind] = {"input": p_in, "output": p_out, "gain": p_out - p_in}
    return out


def learning_curve(cfg: TrainingConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per kept checkpoint: steps, training minutes and the PSNR gain of its EMA weights on
    ``--curve-crops`` crops per photo (the run's scheduler, ``--steps`` steps)."""
    from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler

    folder = Path(cfg.output_dir)
    scheduler = MRSamplerScheduler.from_pretrained(folder / "pipeline", subfolder="scheduler")
    few = argparse.Namespace(**{**vars(args), "crops": args.curve_crops})
    points = []
    for ckpt in tqdm(list_checkpoints(folder / "checkpoints"), desc="checkpoints", leave=False):
        network, counters = checkpoint_network(folder, ckpt)
        pipe = MRRestorationPipeline(unet=network, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        quality = restoration_psnr(pipe, args.kinds, few)
        points.append({"checkpoint": ckpt.name, "step": int(counters["step"]),
                       "train_minutes": float(counters["train_seconds"]) / 60.0,
                       "gain": {k: q["gain"] for k, q in quality.items()},
                       "mean_gain": float(np.mean([q["gain"] for q in quality.values()]))})
    return points


def measure(name: str, cfg: TrainingConfig, summary: dict[str, Any],
            args: argparse.Namespace) -> dict[str, Any]:
    """One configuration's row: its network, training pace and restoration quality."""
    from diffusers_mrs import MRRestorationPipeline

    pipe = MRRestorationPipeline.from_pretrained(Path(cfg.output_dir) / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    quality = restoration_psnr(pipe, args.kinds, args)
    steps, seconds = int(summary["step"]), float(summary["train_seconds"])
    cpu_hours = seconds * args.threads / 3600.0
    mean_gain = float(np.mean([q["gain"] for q in quality.values()]))
    return {
        "config": name, "network": type(pipe.unet).__name__,
        "network_config": _as_json(network_kwargs(cfg)),
        "parameters": sum(p.numel() for p in pipe.unet.parameters()),
        "steps": steps, "train_seconds": seconds, "seconds_per_step": seconds / max(steps, 1),
        "samples_seen": steps * cfg.train_batch_size,
        "final_train_loss": final_training_loss(Path(cfg.output_dir)),
        f"seconds_per_forward_{args.forward_size}px": forward_seconds(
            pipe.unet, args.forward_size, args.forward_repeats),
        "psnr": quality, "mean_gain": mean_gain, "cpu_hours": cpu_hours,
        "gain_per_cpu_hour": mean_gain / cpu_hours if cpu_hours > 0 else float("nan"),
        "curve": learning_curve(cfg, args) if args.curve else [],
    }


def markdown(rows: Sequence[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    """``arch_per_cpu_hour.md``: the command, the settings and one row per configuration."""
    fwd = f"seconds_per_forward_{args.forward_size}px"
    kinds = list(args.kinds)
    cap = f" or {args.max_steps} steps" if args.max_steps < MAX_STEPS else ""
    lines = [
        f"Command: `{command}`", "",
        f"Each network trained from scratch for {args.minutes:g} min{cap} on {args.threads}"
        " thread(s)"
        f" (kinds {', '.join(kinds)}; {args.patch_size} px patches, batch {args.batch_size});"
        f" PSNR of one sample per crop on {args.crops} random {args.crop} px crops of each"
        f" held-out photo, MR Sampler, {args.steps} steps. PSNR cells: input -> output (gain),"
        " dB; gain per CPU-hour: the mean gain over the kinds / (train seconds x threads);"
        " loss: the training loss (x0 MSE) over the last 10 % of the run.", "",
        "| config | network | parameters | steps | s/step | s per "
        f"{args.forward_size} px forward | loss | " + " | ".join(kinds)
        + " | mean gain (dB) | gain per CPU-hour (dB) |",
        "|---|---|---|---|---|---|---|" + "---|" * len(kinds) + "---|---|",
    ]
    for r in rows:
        cells = [f"{r['psnr'][k]['input']:.2f} -> {r['psnr'][k]['output']:.2f}"
                 f" ({r['psnr'][k]['gain']:+.2f})" for k in kinds]
        lines.append(
            f"| {r['config']} | {r['network']} | {r['parameters']:,} | {r['steps']} |"
            f" {r['seconds_per_step']:.2f} | {r[fwd]:.3f} | {r['final_train_loss']:.4g} | "
            + " | ".join(cells)
            + f" | {r['mean_gain']:+.2f} | {r['gain_per_cpu_hour']:+.1f} |")
    return "\n".join(lines + curve_lines(rows, args)) + "\n"


def curve_lines(rows: Sequence[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """The learning-curve table: mean PSNR gain of each checkpoint, by training minutes."""
    if not any(r["curve"] for r in rows):
        return []
    lines = ["", f"Mean PSNR gain (dB) of the EMA weights at each checkpoint ({args.curve_crops}"
             " crops per held-out photo and kind): minutes of training: gain.", "",
             "| config | checkpoints |", "|---|---|"]
    for r in rows:
        cells = ", ".join(f"{p['train_minutes']:.1f} min ({p['step']} steps): {p['mean_gain']:+.2f}"
                          for p in r["curve"])
        lines.append(f"| {r['config']} | {cells} |")
    return lines


def plan(names: Sequence[str], args: argparse.Namespace) -> list[str]:
    """The dry run's lines: each run's network, size, folder state and training command."""
    lines = []
    for name in names:
        cfg = training_config(name, args)
        kwargs = network_kwargs(cfg)
        net = network_class(cfg.architecture)(**kwargs)
        count = sum(p.numel() for p in net.parameters())
        lines.append(f"{name}: {type(net).__name__} {json.dumps(kwargs)} ({count:,} parameters);"
                     f" {cfg.output_dir}: {run_state(cfg)}")
    budget = len(names) * args.minutes
    lines.append(f"training: {len(names)} x {args.minutes:g} min = {budget:g} min on"
                 f" {args.threads} thread(s), one run after another, then the evaluations")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget per config")
    p.add_argument("--max-steps", type=int, default=MAX_STEPS,
                   help="end a run after this many steps too (tests)")
    p.add_argument("--kinds", nargs="+", default=["noise", "lowlight"])
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint-minutes", type=float, default=2.5,
                   help="a checkpoint (kept, a point of the curve) every this many minutes")
    p.add_argument("--no-curve", dest="curve", action="store_false",
                   help="do not evaluate the checkpoints (the learning curve)")
    p.add_argument("--curve-crops", type=int, default=2,
                   help="held-out crops per photo and kind at each checkpoint")
    p.add_argument("--crops", type=int, default=4, help="held-out crops per photo and kind")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="sampling steps of the evaluation")
    p.add_argument("--forward-size", type=int, default=256)
    p.add_argument("--forward-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=WORK_DIR)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--dry-run", action="store_true", help="print the plan, do nothing")
    args = p.parse_args(argv)
    args.names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in args.names if n not in CONFIGS]
    if unknown or not args.names:
        p.error(f"--configs: unknown {unknown}; known: {', '.join(CONFIGS)}")
    if args.minutes <= 0 or args.threads < 1:
        p.error("--minutes must be > 0 and --threads >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/arch_per_cpu_hour.py", *argv])
    for line in plan(args.names, args):  # also refuses a conflicting folder before any work
        print(line, flush=True)
    if args.dry_run:
        return 0
    torch.set_num_threads(args.threads)
    rows = []
    for name in tqdm(args.names, desc="configs"):
        cfg = training_config(name, args)
        rows.append(measure(name, cfg, train_run(cfg), args))
        r = rows[-1]
        tqdm.write(f"{name}: {r['steps']} steps in {r['train_seconds']:.0f} s, mean gain"
                   f" {r['mean_gain']:+.2f} dB ({r['gain_per_cpu_hour']:+.1f} dB per CPU-hour)")
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"command": command, "settings": _as_json({**vars(args), "objective": OBJECTIVE}),
              "torch": torch.__version__, "rows": rows}
    (args.out / "arch_per_cpu_hour.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "arch_per_cpu_hour.md").write_text(markdown(rows, args, command))
    print(markdown(rows, args, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
