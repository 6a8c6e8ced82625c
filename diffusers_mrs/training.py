"""Training MR diffusion restoration models with accelerate.

One function, :func:`train`, driven by a :class:`TrainingConfig` (``examples/train_mr_diffusion.py``
is the command-line wrapper; :func:`parse_args` builds the config from ``argv``). It trains an
:class:`~diffusers_mrs.MRUNet2DModel` on ``(lq, gt)`` pairs, ``lq`` being the MR diffusion's
``mu``:

* data: the bundled photographs degraded on the fly
  (:class:`~diffusers_mrs.data.DegradedPatchDataset`) or an IR-SDE paired folder ``ROOT/LQ``,
  ``ROOT/GT`` (:class:`~diffusers_mrs.data.PairedFolderDataset`);
* forward process: ``x_t = scheduler.add_noise(gt, noise, t, mu=lq)`` with ``t`` uniform on the
  integers ``1..T`` (as IR-SDE) or on ``[0, T]`` (``timestep_sampling="continuous"``);
* target by ``prediction_type``: ``epsilon`` -> noise, ``sample`` -> ``gt``, ``v_prediction`` ->
  ``scheduler.get_velocity(gt, noise, t, mu=lq)`` (docs/math.md#prediction-types; v is EDM-style
  preconditioning with ``sigma_data = max_sigma``, which keeps the x0 estimate good at every t);
* MSE or L1 loss, AdamW, cosine/constant LR with warmup, gradient clipping, EMA of the weights,
  mixed precision and gradient accumulation through :class:`accelerate.Accelerator`;
* resumable checkpoints (``accelerator.save_state`` in ``OUTPUT/checkpoints/checkpoint-STEP``,
  last K kept; ``resume_from_checkpoint="latest"``), periodic validation PSNR on the held-out
  photographs (restored with the MR sampler), CSV/JSONL logs, and at the end a complete
  pipeline folder ``OUTPUT/pipeline`` (EMA weights, safetensors) loadable with
  ``MRRestorationPipeline.from_pretrained``.

Multi-process training is supported: data are sharded by the prepared dataloader, time-based
decisions are taken on the main process and broadcast. On GPUs use ``accelerate launch
--num_processes N``; on a CPU-only machine use ``accelerate launch --multi_gpu --num_processes N``
(or ``torchrun --nproc_per_node N``): several processes without a GPU select gloo DDP on the CPU
(``accelerate launch --cpu`` alone starts a single process).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import (
    DEGRADATION_KINDS,
    DegradedPatchDataset,
    PairedFolderDataset,
    bundled_photos,
    degrade,
)

__all__ = [
    "TrainingConfig",
    "build_parser",
    "make_validation_set",
    "parse_args",
    "predict_x0",
    "psnr",
    "restore",
    "sample_timesteps",
    "schedule_alpha_sigma",
    "train",
    "training_target",
]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@dataclass
class TrainingConfig:
    """Every option of :func:`train` (the command-line flags have the same names)."""

    output_dir: str = "runs/mr-diffusion"
    # ---- data
    train_data: str = "bundled"
    """``"bundled"`` (the training split of the bundled photos, degraded on the fly) or the
    root of an IR-SDE paired folder (``ROOT/LQ/*.png``, ``ROOT/GT/*.png``)."""
    kinds: tuple[str, ...] = DEGRADATION_KINDS
    """Degradations of the bundled data, each entry equally likely (list one twice to draw
    it twice as often)."""
    randomize_degradations: bool = True
    patch_size: int = 64
    train_batch_size: int = 8
    dataloader_num_workers: int = 0
    # ---- model (MRUNet2DModel)
    nf: int = 16
    depth: int = 3
    unet_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"attention_heads": 1, "attention_head_dim": 16}
    )
    """Extra ``MRUNet2DModel`` arguments. The defaults (nf 16, depth 3, one 16-dim attention
    head) are the shipped default model: 2.2 M parameters, ~9 MB in float32."""
    # ---- scheduler (MRSamplerScheduler) and objective
    num_train_timesteps: int = 100
    theta_schedule: str = "cosine"
    max_sigma: float = 50.0 / 255.0
    eps: float = 0.005
    prediction_type: str = "v_prediction"
    timestep_sampling: str = "discrete"
    loss_type: str = "mse"
    #: "target": the loss compares network outputs with their targets (v, eps or x0);
    #: "x0": it compares the implied x0 estimates with the clean image, i.e. the target loss
    #: weighted by how much an output error moves x0 (for v: (sigma/max_sigma)^2). That is
    #: the restoration (PSNR) objective; the plain v loss spends itself on the unpredictable
    #: noise at small t and learns the restoration at large t slowly.
    loss_space: str = "x0"
    #: "none": every pixel of every sample counts the same; "relative": each sample's loss is
    #: divided by that of its degraded input (``d(mu, x0)``, floored), so the loss is 1 for a
    #: network that returns ``mu``; "sqrt": divided by its square root, half way between.
    #: Without weighting the low-light samples (input MSE ~0.14) outweigh JPEG ones (~0.002)
    #: 70 to 1 and the network learns little but brightening; "relative" turns that around.
    #: The price: a weight that depends on the clean image changes what is learned from the
    #: posterior mean to a weighted one, which favours explanations close to ``mu`` (see
    #: ``training_loss``). Measured on the default model (README): fine-tuning with "relative"
    #: then "sqrt" gained +3.9 dB on noise, but some low-light samples came out not brightened
    #: at all (read as clean dark scenes), so the default stays "none".
    loss_weighting: str = "none"
    # ---- optimisation
    learning_rate: float = 3e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 100
    max_train_steps: int = 1000
    max_minutes: float | None = None
    """Wall-clock budget of the whole run (cumulative over resumes): training stops (final
    checkpoint, validation and pipeline) when it is spent. With ``lr_scheduler`` ``cosine`` or
    ``linear`` the decay follows ``max(step / max_train_steps, elapsed / max_minutes)``, so the
    learning rate reaches its end whichever budget runs out first (a shared, busy CPU)."""
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    use_ema: bool = True
    ema_decay: float = 0.999
    ema_power: float = 0.75
    # ---- checkpoints and logs
    checkpointing_steps: int | None = 500
    checkpointing_minutes: float | None = None
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None
    init_weights: str | None = None
    """Start from these network weights (a pipeline folder with ``unet/``, or a model folder)
    instead of a fresh network; its architecture replaces ``nf``/``depth``/``unet_kwargs``.
    Optimiser, LR schedule and EMA start fresh (fine-tuning); ``resume_from_checkpoint``
    wins over it when a checkpoint exists."""
    log_every: int = 10
    # ---- validation
    validation_steps: int | None = 500
    validation_minutes: float | None = None
    validation_num_inference_steps: int = 10
    validation_crop: int = 128
    validation_kinds: tuple[str, ...] = DEGRADATION_KINDS
    # ---- misc
    seed: int = 0
    cpu: bool = False
    """Train on the CPU even if a GPU is there."""
    num_threads: int | None = None
    save_pipeline: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the options."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ----------------------------------------------------------------------------------------------
# Objective helpers (docs/math.md#forward-process, docs/math.md#training-objective)
# ----------------------------------------------------------------------------------------------
def schedule_alpha_sigma(
    scheduler: Any, timesteps: torch.Tensor, ref: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t and sigma_t of ``scheduler`` at ``timesteps`` (shape ``[B]``), as ``B x 1 x 1 x 1``.

    Read off ``scheduler.add_noise`` (``x_t = alpha x0 + (1 - alpha) mu + sigma noise``), so it
    only relies on the public scheduler API.
    """
    b = timesteps.shape[0]
    one = torch.ones((b,) + (1,) * (ref.ndim - 1), dtype=torch.float32, device=ref.device)
    zero = torch.zeros_like(one)
    t = timesteps.to(ref.device)
    alpha = scheduler.add_noise(one, zero, t, mu=zero)
    sigma = scheduler.add_noise(zero, one, t, mu=zero)
    return alpha, sigma


def sample_timesteps(
    batch_size: int,
    num_train_timesteps: int,
    mode: str = "discrete",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training times, float32 ``[B]``: uniform integers ``1..T`` or continuous ``U(0, T]``."""
    if mode == "discrete":
        t = torch.randint(1, num_train_timesteps + 1, (batch_size,), generator=generator)
        return t.to(device=device, dtype=torch.float32)
    if mode == "continuous":
        u = torch.rand((batch_size,), generator=generator)
        return ((1.0 - u) * num_train_timesteps).clamp(min=1e-3).to(device=device)
    raise ValueError(f"timestep_sampling must be 'discrete' or 'continuous', got {mode!r}")


def training_target(
    scheduler: Any,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    mu: torch.Tensor,
    prediction_type: str | None = None,
) -> torch.Tensor:
    """The regression target of the network for ``prediction_type`` (default: the scheduler's).

    ``epsilon`` -> ``noise``; ``sample`` -> ``x0``; ``v_prediction`` ->
    ``scheduler.get_velocity(x0, noise, t, mu=mu)``
    (``= max_sigma alpha eps - (sigma / max_sigma) (x0 - mu)``).
    """
    ptype = prediction_type or scheduler.config.prediction_type
    if ptype == "epsilon":
        return noise
    if ptype == "sample":
        return x0
    if ptype == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps, mu=mu)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {ptype!r}")


def predict_x0(
    scheduler: Any,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    mu: torch.Tensor,
    prediction_type: str | None = None,
) -> torch.Tensor:
    """The x0 estimate implied by a network output (docs/math.md#prediction-types),
    differentiable.

    epsilon: ``x0 = mu + (y_t - sigma eps) / alpha``; sample: the output itself;
    v_prediction: ``x0 = mu + alpha y_t - (sigma / max_sigma) v``. The scheduler's
    ``predict_original_sample`` does the conversion; ``prediction_type`` overrides its own.
    """
    if prediction_type not in (None, scheduler.config.prediction_type):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
            )
        scheduler = type(scheduler).from_config(scheduler.config, prediction_type=prediction_type)
    return scheduler.predict_original_sample(model_output, timesteps, x_t, mu=mu)


LOSS_TYPES = ("mse", "l1")
#: ``loss_weighting`` -> the power of the degraded input's loss that divides each sample's loss.
LOSS_WEIGHTINGS = {"none": 0.0, "sqrt": 0.5, "relative": 1.0}


def check_loss_names(loss_type: str, weighting: str) -> None:
    """Raises ``ValueError`` naming the argument if either name is unknown."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(
            f"loss_weighting must be one of {tuple(LOSS_WEIGHTINGS)}, got {weighting!r}"
        )


def training_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    x0: torch.Tensor,
    loss_type: str = "mse",
    weighting: str = "none",
    floor: float = 1e-4,
) -> torch.Tensor:
    """Mean per-sample loss ``d(pred, target)``, ``d`` the squared (``mse``) or absolute
    (``l1``) error averaged over ``C x H x W``.

    ``weighting="relative"`` divides each sample's loss by ``max(d(mu, x0), floor)``, the loss
    of returning the degraded input, so degradations of very different strength weigh the
    same: ``-10 log10`` of the relative MSE is the PSNR gain over the input.
    ``weighting="sqrt"`` divides by the square root of that, a compromise that keeps strong
    degradations from being neglected.

    Both weights depend on the clean image, so for a given input the minimiser is no longer
    the posterior mean ``E[x0 | mu]`` but ``E[w x0 | mu] / E[w | mu]`` with
    ``w = d(mu, x0)^-p``: the sampler then draws from the posterior reweighted by ``w``, and
    where one input has several explanations (a dark photo: a clean dark scene, or a
    low-light shot) the one closest to ``mu`` gains by the ratio of their input losses.
    ``"none"`` is the unbiased choice.
    """
    check_loss_names(loss_type, weighting)

    def per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a.float() - b.float()
        return (diff.square() if loss_type == "mse" else diff.abs()).flatten(1).mean(1)

    loss = per_sample(pred, target)
    if LOSS_WEIGHTINGS[weighting]:
        loss = loss / per_sample(mu, x0).clamp_min(floor) ** LOSS_WEIGHTINGS[weighting]
    return loss.mean()


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (``B x C x H x W`` in [0, 1]), computed after clipping ``x``."""
    mse = ((x.clamp(0, 1) - y) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


@torch.no_grad()
def restore(
    unet: torch.nn.Module,
    scheduler: Any,
    mu: torch.Tensor,
    num_inference_steps: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Restore a batch with the MR sampler: ``x_T = mu + init_noise_sigma z``, then ``step``.

    A plain loop over the public scheduler API (``set_timesteps``, ``timesteps``,
    ``init_noise_sigma``, ``step``), so validation does not depend on the pipeline. A fresh
    scheduler is built from ``scheduler.config`` so the caller's state is untouched.
    """
    sched = type(scheduler).from_config(scheduler.config)
    sched.set_timesteps(num_inference_steps, device=mu.device)
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(0)
    noise = torch.randn(mu.shape, generator=generator, dtype=torch.float32).to(mu.device)
    x = mu + float(sched.init_noise_sigma) * noise
    for t in sched.timesteps:
        tb = t.to(mu.device).float().expand(mu.shape[0])
        out = unet(x, tb, mu).sample
        x = sched.step(out, t, x, mu=mu, generator=generator).prev_sample
    return x.clamp(0, 1)


def make_validation_set(
    kinds: Sequence[str] = DEGRADATION_KINDS, crop: int = 128, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Centre crops of the held-out photos (``bundled_photos("val")``), degraded nominally.

    Each whole photo is degraded with the nominal parameters (``randomize=False``, seeded by
    ``(seed, photo, kind)``), then both images are centre-cropped to ``crop`` pixels.

    Returns:
        ``(lq, gt, labels)``: float32 ``N x 3 x crop x crop`` tensors and ``"kind/photo"`` labels,
        ``N = len(kinds) * 3``.
    """
    lqs, gts, labels = [], [], []
    for pi, (name, img) in enumerate(bundled_photos("val").items()):
        h, w = img.shape[:2]
        c = min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        for ki, kind in enumerate(kinds):
            lq = degrade(img, kind, np.random.default_rng([seed, pi, ki]), randomize=False)
            for lst, im in ((lqs, lq), (gts, img)):
                patch = im[top : top + c, left : left + c].transpose(2, 0, 1)
                lst.append(torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)))
            labels.append(f"{kind}/{name}")
    return torch.stack(lqs), torch.stack(gts), labels


@torch.no_grad()
def evaluate(
    unet: torch.nn.Module,
    scheduler: Any,
    lq: torch.Tensor,
    gt: torch.Tensor,
    labels: Sequence[str],
    num_inference_steps: int = 10,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, float]:
    """Validation metrics: PSNR of the degraded input, of the MR-sampler restoration at
    ``num_inference_steps``, and of the one-shot x0 estimate at ``t = T`` (from the prior),
    overall and per degradation kind."""
    was_training = unet.training
    unet.eval()
    g = torch.Generator().manual_seed(seed)
    outs, x0s = [], []
    T = int(scheduler.config.num_train_timesteps)
    for i in range(0, lq.shape[0], batch_size):
        mu = lq[i : i + batch_size]
        outs.append(restore(unet, scheduler, mu, num_inference_steps, generator=g))
        t = torch.full((mu.shape[0],), float(T))
        z = torch.randn(mu.shape, generator=g)
        _, sigma = schedule_alpha_sigma(scheduler, t, mu)
        x_t = mu + sigma * z  # the prior at t = T (alpha_T x0 is negligible)
        x0s.append(predict_x0(scheduler, unet(x_t, t, mu).sample, x_t, t, mu))
    if was_training:
        unet.train()
    out, x0 = torch.cat(outs), torch.cat(x0s)
    p_in, p_out, p_x0 = psnr(lq, gt), psnr(out, gt), psnr(x0, gt)
    metrics: dict[str, float] = {
        "psnr_in": p_in.mean().item(),
        "psnr_out": p_out.mean().item(),
        "psnr_x0_T": p_x0.mean().item(),
    }
    kinds = sorted({lab.split("/")[0] for lab in labels})
    for k in kinds:
        idx = torch.tensor([lab.split("/")[0] == k for lab in labels])
        metrics[f"{k}/psnr_in"] = p_in[idx].mean().item()
        metrics[f"{k}/psnr_out"] = p_out[idx].mean().item()
    return metrics


# ----------------------------------------------------------------------------------------------
# Checkpoint helpers
# ----------------------------------------------------------------------------------------------
class _TrainState:
    """Loop counters saved with each checkpoint (registered with the accelerator)."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.train_seconds = 0.0  # wall-clock seconds spent in the loop, over all resumes

    def state_dict(self) -> dict[str, float]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "train_seconds": self.train_seconds,
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.step = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))


_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def _due(step: int, every_steps: int | None, seconds_since: float,
         every_minutes: float | None) -> bool:
    """Whether a periodic task (checkpoint, validation) is due: every N steps and/or every
    M minutes since it last ran."""
    by_steps = bool(every_steps) and step % every_steps == 0
    by_time = every_minutes is not None and seconds_since >= 60 * every_minutes
    return by_steps or by_time


def _list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _resolve_resume(resume: str, ckpt_root: Path) -> Path | None:
    if resume == "latest":
        ckpts = _list_checkpoints(ckpt_root)
        return ckpts[-1] if ckpts else None
    path = Path(resume)
    if not path.is_dir():
        path = ckpt_root / resume
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {resume!r} not found (looked in {ckpt_root})")
    return path


def _save_pipeline(unet: torch.nn.Module, scheduler: Any, out_dir: Path) -> None:
    """``MRRestorationPipeline(unet, scheduler).save_pretrained(out_dir)``, safetensors."""
    from .pipelines import MRRestorationPipeline

    pipe = MRRestorationPipeline(unet=unet, scheduler=scheduler)
    pipe.save_pretrained(out_dir, safe_serialization=True)


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------
def _default_classes() -> tuple[type, type]:
    """``(MRUNet2DModel, MRSamplerScheduler)``."""
    from .models.unet_mr import MRUNet2DModel
    from .scheduling_mr_sampler import MRSamplerScheduler

    return MRUNet2DModel, MRSamplerScheduler


def train(
    config: TrainingConfig,
    model_cls: type | None = None,
    scheduler_cls: type | None = None,
) -> Path:
    """Train (or resume training) an MR diffusion restoration model.

    Args:
        config: the options (see :class:`TrainingConfig`).
        model_cls: the network class (default :class:`diffusers_mrs.MRUNet2DModel`), built as
            ``model_cls(in_channels=3, out_channels=3, nf=..., depth=..., **unet_kwargs)``.
        scheduler_cls: the scheduler class (default :class:`diffusers_mrs.MRSamplerScheduler`).

    Returns:
        The output directory. It holds ``train_log.csv`` (step, loss, lr, timing),
        ``val_log.jsonl`` (validation PSNRs), ``training_config.json``, ``checkpoints/``
        and, at the end, ``pipeline/`` (EMA weights) and ``final_metrics.json``.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, broadcast, set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    if config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}")
    if config.max_train_steps < 1:
        raise ValueError(f"max_train_steps must be at least 1, got {config.max_train_steps}")
    check_loss_names(config.loss_type, config.loss_weighting)
    if model_cls is None or scheduler_cls is None:
        default_model, default_sched = _default_classes()
        model_cls = model_cls or default_model
        scheduler_cls = scheduler_cls or default_sched

    out_dir = Path(config.output_dir)
    ckpt_root = out_dir / "checkpoints"
    # Several processes but no GPU (``accelerate launch --multi_gpu --num_processes N`` or
    # ``torchrun`` on a CPU machine): accelerate only sets up gloo DDP when told it is on CPU.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=config.cpu or multi_cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        project_config=ProjectConfiguration(project_dir=str(out_dir)),
    )
    is_main = accelerator.is_main_process
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "training_config.json").write_text(
            json.dumps(config.to_dict(), indent=2) + "\n"
        )
    set_seed(config.seed)  # identical initial weights on every process

    # ---- model, scheduler, EMA, optimiser
    if config.init_weights:
        init = Path(config.init_weights)
        sub = "unet" if (init / "unet").is_dir() else None
        unet = model_cls.from_pretrained(str(init), subfolder=sub)
    else:
        unet = model_cls(
            in_channels=3, out_channels=3, nf=config.nf, depth=config.depth, **config.unet_kwargs
        )
    scheduler = scheduler_cls(
        num_train_timesteps=config.num_train_timesteps,
        theta_schedule=config.theta_schedule,
        max_sigma=config.max_sigma,
        eps=config.eps,
        prediction_type=config.prediction_type,
    )
    n_params = sum(p.numel() for p in unet.parameters())
    ema = None
    if config.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=config.ema_decay,
            use_ema_warmup=True,
            power=config.ema_power,
            model_cls=model_cls,
            model_config=unet.config,
        )
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
    )
    # progress[0]: fraction of the run done, max(step / max_train_steps, time / max_minutes),
    # updated every step (identical on all processes); drives the time-aware decay.
    progress = [0.0]
    state = _TrainState()
    timed_decay = config.max_minutes is not None and config.lr_scheduler in ("cosine", "linear")
    if timed_decay:

        def lr_factor(_: int) -> float:
            warm = 1.0
            if config.lr_warmup_steps:
                warm = min(1.0, (state.step + 1) / config.lr_warmup_steps)
            p = min(1.0, progress[0])
            if config.lr_scheduler == "cosine":
                return warm * 0.5 * (1.0 + math.cos(math.pi * p))
            return warm * (1.0 - p)

        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    else:
        lr_name = config.lr_scheduler
        if lr_name == "constant" and config.lr_warmup_steps > 0:
            lr_name = "constant_with_warmup"
        lr_scheduler = get_scheduler(
            lr_name,
            optimizer=optimizer,
            num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=config.max_train_steps * accelerator.num_processes,
        )

    # ---- data
    micro = config.train_batch_size * accelerator.num_processes
    if config.train_data == "bundled":
        per_epoch = micro * config.gradient_accumulation_steps * 1000
        dataset: Any = DegradedPatchDataset(
            list(bundled_photos("train").values()),
            patch_size=config.patch_size,
            kinds=config.kinds,
            length=per_epoch,
            seed=config.seed,
            randomize=config.randomize_degradations,
        )
    else:
        dataset = PairedFolderDataset(
            config.train_data, patch_size=config.patch_size, augment=True, seed=config.seed
        )
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.train_batch_size,
        shuffle=False,  # items are already random functions of (seed, epoch, index)
        drop_last=True,
        num_workers=config.dataloader_num_workers,
    )
    if len(dataset) < micro:
        raise ValueError(
            f"the dataset has {len(dataset)} items, fewer than one global batch ({micro})"
        )

    unet, optimizer, dataloader, lr_scheduler = accelerator.prepare(
        unet, optimizer, dataloader, lr_scheduler
    )
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    # ---- resume
    if config.resume_from_checkpoint:
        path = _resolve_resume(config.resume_from_checkpoint, ckpt_root)
        if path is None:
            accelerator.print("resume_from_checkpoint='latest': no checkpoint yet, starting fresh")
        else:
            accelerator.print(f"resuming from {path}")
            accelerator.load_state(str(path))
    else:
        set_seed(config.seed + accelerator.process_index)  # different noise per process
    if ema is not None:
        ema.to(accelerator.device)

    val_data = make_validation_set(config.validation_kinds, config.validation_crop, config.seed)

    def run_validation() -> dict[str, float] | None:
        metrics = None
        if is_main:
            model = accelerator.unwrap_model(unet)
            if ema is not None:
                ema.store(model.parameters())
                ema.copy_to(model.parameters())
            metrics = evaluate(
                model,
                scheduler,
                *val_data,
                num_inference_steps=config.validation_num_inference_steps,
                seed=config.seed,
            )
            if ema is not None:
                ema.restore(model.parameters())
            metrics = {"step": state.step, **metrics}
            with open(out_dir / "val_log.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            accelerator.print(
                f"[val step {state.step}] PSNR in {metrics['psnr_in']:.2f} dB -> "
                f"MRS@{config.validation_num_inference_steps} {metrics['psnr_out']:.2f} dB "
                f"(x0 at T: {metrics['psnr_x0_T']:.2f} dB) | "
                + " ".join(
                    f"{k}: {metrics[f'{k}/psnr_in']:.2f}->{metrics[f'{k}/psnr_out']:.2f}"
                    for k in config.validation_kinds
                )
            )
        accelerator.wait_for_everyone()
        return metrics

    def save_checkpoint() -> None:
        path = ckpt_root / f"checkpoint-{state.step}"
        accelerator.save_state(str(path))
        if is_main and config.checkpoints_total_limit:
            for old in _list_checkpoints(ckpt_root)[: -config.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def flag(value: bool) -> bool:
        """The main process's decision, on every process."""
        if accelerator.num_processes == 1:
            return value
        t = torch.tensor([1 if value else 0], device=accelerator.device)
        return bool(broadcast(t, from_process=0).item())

    # ---- loop
    log_path = out_dir / "train_log.csv"
    if is_main and not log_path.exists():
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(["step", "loss", "lr", "elapsed_s", "sec_per_step"])
    if is_main:
        accelerator.print(
            f"training {type(accelerator.unwrap_model(unet)).__name__} ({n_params / 1e6:.3f} M "
            f"params, {config.prediction_type}) for {config.max_train_steps} steps, "
            f"global batch {micro * config.gradient_accumulation_steps}, "
            f"{accelerator.num_processes} process(es), from step {state.step}"
        )
    pbar = tqdm(
        total=config.max_train_steps,
        initial=state.step,
        disable=not accelerator.is_local_main_process,
        desc="train",
        dynamic_ncols=True,
    )
    t_start = time.time()
    seconds_before = state.train_seconds  # spent by earlier runs (resume)
    t_last_ckpt = t_last_val = t_last_log = t_start

    def update_progress(now: float) -> None:
        spent = seconds_before + (now - t_start)
        frac = state.step / config.max_train_steps
        if config.max_minutes:
            frac = max(frac, spent / (60.0 * config.max_minutes))
        if accelerator.num_processes > 1:  # the main process's clock decides
            frac = broadcast(torch.tensor([frac], device=accelerator.device), from_process=0)
            frac = float(frac.item())
        state.train_seconds = spent
        progress[0] = frac

    update_progress(t_start)
    step_at_last_log = state.step
    loss_sum, loss_n = 0.0, 0
    T = config.num_train_timesteps
    done = state.step >= config.max_train_steps or (
        config.max_minutes is not None and progress[0] >= 1.0
    )
    unet.train()
    while not done:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(state.epoch)
        skip = state.batch_in_epoch
        loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        for batch_i, (lq, gt) in enumerate(loader, start=skip):
            with accelerator.accumulate(unet):
                noise = torch.randn_like(gt)
                t = sample_timesteps(gt.shape[0], T, config.timestep_sampling, device=gt.device)
                x_t = scheduler.add_noise(gt, noise, t, mu=lq)
                pred = unet(x_t, t, lq).sample
                if config.loss_space == "x0":
                    pred, target = predict_x0(scheduler, pred, x_t, t, lq), gt
                else:
                    target = training_target(scheduler, gt, noise, t, lq)
                loss = training_loss(pred, target, lq, gt, config.loss_type,
                                     config.loss_weighting)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float().item()
            loss_n += 1
            state.batch_in_epoch = batch_i + 1
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(accelerator.unwrap_model(unet).parameters())
            state.step += 1
            pbar.update(1)
            now = time.time()
            update_progress(now)

            if state.step % config.log_every == 0 or state.step == config.max_train_steps:
                mean = accelerator.gather(
                    torch.tensor([loss_sum / max(loss_n, 1)], device=accelerator.device)
                ).mean().item()
                loss_sum, loss_n = 0.0, 0
                lr = lr_scheduler.get_last_lr()[0]
                sps = (now - t_last_log) / max(state.step - step_at_last_log, 1)
                t_last_log, step_at_last_log = now, state.step
                pbar.set_postfix(loss=f"{mean:.4g}", lr=f"{lr:.2e}", s_per_step=f"{sps:.2f}")
                if is_main:
                    with open(log_path, "a", newline="") as f:
                        csv.writer(f).writerow(
                            [state.step, f"{mean:.6g}", f"{lr:.6g}",
                             f"{state.train_seconds:.1f}", f"{sps:.4f}"]
                        )

            last = state.step >= config.max_train_steps
            out_of_time = config.max_minutes is not None and progress[0] >= 1.0
            want_ckpt = flag(_due(state.step, config.checkpointing_steps, now - t_last_ckpt,
                                  config.checkpointing_minutes))
            want_val = flag(_due(state.step, config.validation_steps, now - t_last_val,
                                 config.validation_minutes))
            if want_val and not last:
                run_validation()
                t_last_val = time.time()
            if want_ckpt or last or out_of_time:
                if state.batch_in_epoch >= len(dataloader):
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                save_checkpoint()
                t_last_ckpt = time.time()
            if last or out_of_time:
                if out_of_time and not last:
                    accelerator.print(f"max_minutes spent at step {state.step}")
                done = True
                break
        else:
            if state.batch_in_epoch:  # (a checkpoint at the epoch's end already moved on)
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    pbar.close()

    # ---- final validation and pipeline
    final = run_validation()
    accelerator.wait_for_everyone()
    if is_main and config.save_pipeline:
        model = accelerator.unwrap_model(unet)
        final_unet = model_cls.from_config(model.config)
        final_unet.load_state_dict(model.state_dict())
        if ema is not None:
            ema.copy_to(final_unet.parameters())
        final_unet = final_unet.to("cpu", dtype=torch.float32).eval()
        _save_pipeline(final_unet, scheduler, out_dir / "pipeline")
        accelerator.print(f"saved pipeline to {out_dir / 'pipeline'}")
    if is_main:
        summary = {
            "step": state.step,
            "train_seconds": round(state.train_seconds, 1),
            "num_parameters": n_params,
            "validation": final,
        }
        (out_dir / "final_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out_dir


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def _str2bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if v.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def _optional(kind: type) -> Any:
    def conv(v: str) -> Any:
        return None if v.lower() in ("none", "null", "") else kind(v)

    return conv


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per :class:`TrainingConfig` field."""
    parser = argparse.ArgumentParser(
        description="Train an MR diffusion (IR-SDE) restoration model with accelerate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = TrainingConfig()
    choices: dict[str, Sequence[str]] = {
        "prediction_type": PREDICTION_TYPES,
        "timestep_sampling": ("discrete", "continuous"),
        "loss_type": LOSS_TYPES,
        "loss_space": ("target", "x0"),
        "loss_weighting": tuple(LOSS_WEIGHTINGS),
        "theta_schedule": ("cosine", "linear", "constant"),
        "lr_scheduler": ("cosine", "constant", "linear", "cosine_with_restarts"),
        "mixed_precision": ("no", "fp16", "bf16"),
    }
    for f in dataclasses.fields(TrainingConfig):
        default = getattr(defaults, f.name)
        flag = f"--{f.name}"
        if f.name in ("kinds", "validation_kinds"):
            parser.add_argument(flag, nargs="+", default=list(default), choices=DEGRADATION_KINDS)
        elif f.name == "unet_kwargs":
            parser.add_argument(flag, type=json.loads, default=dict(default),
                                help="JSON dict of extra MRUNet2DModel arguments")
        elif f.name == "max_sigma":
            parser.add_argument(flag, type=float, default=default,
                                help="stationary std in [0, 1] units (50/255 = 0.196)")
        elif isinstance(default, bool):
            parser.add_argument(flag, type=_str2bool, default=default)
        elif f.type in ("int | None",):
            parser.add_argument(flag, type=_optional(int), default=default)
        elif f.type in ("float | None",):
            parser.add_argument(flag, type=_optional(float), default=default)
        elif f.type in ("str | None",):
            parser.add_argument(flag, type=_optional(str), default=default,
                                help="a checkpoint folder, or 'latest'"
                                if f.name == "resume_from_checkpoint" else None)
        else:
            kind = type(default)
            parser.add_argument(flag, type=kind, default=default, choices=choices.get(f.name))
    return parser


def parse_args(argv: Sequence[str] | None = None) -> TrainingConfig:
    """Parse command-line flags into a :class:`TrainingConfig` (``--resume`` is an alias of
    ``--resume_from_checkpoint``)."""
    parser = build_parser()
    parser.add_argument("--resume", dest="resume_from_checkpoint", type=_optional(str),
                        default=argparse.SUPPRESS, help="alias of --resume_from_checkpoint")
    ns = vars(parser.parse_args(argv))
    for k in ("kinds", "validation_kinds"):
        ns[k] = tuple(ns[k])
    return TrainingConfig(**ns)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``examples/train_mr_diffusion.py``."""
    train(parse_args(argv))

