"""The options of a training run, and the command line that fills them.

:class:`TrainingConfig` is the one list of options; :func:`build_parser` turns it into
``--flags`` (:mod:`.arguments`: types, choices and help come from the dataclass fields), so a
flag exists exactly when a field does.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..data import DEGRADATION_KINDS, TRAINING_KINDS
from .arguments import dataclass_parser, parse_into


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class TrainingConfig:
    """Every option of a training run (the command-line flags have the same names)."""

    output_dir: str = "runs/mr-diffusion"
    # ---- data
    train_data: str = field(default="bundled", metadata=_help(
        '"bundled" (the training split of the bundled photos, degraded on the fly), "photos"'
        " or photos:DIR (the photographs of examples/fetch_training_photos.py, degraded by the"
        " realistic model, validated on their held-out split: docs/training_data.md) or the"
        " root of an IR-SDE paired folder (ROOT/LQ/*.png, ROOT/GT/*.png)"))
    kinds: list[str] = field(default_factory=lambda: list(DEGRADATION_KINDS), metadata=_help(
        "degradations of the bundled data, each entry equally likely (list one twice to draw it"
        " twice as often; \"clean\" is the undegraded photo)", choices=TRAINING_KINDS))
    randomize_degradations: bool = True
    realistic_ranges: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "JSON dict replacing ranges of the realistic degradation model (photos only;"
        " docs/training_data.md#degradation-model), e.g. '{\"color_gain\": [1, 1]}' for"
        " low light without a colour cast"))
    patch_size: int = 64
    train_batch_size: int = 8
    dataloader_num_workers: int = 0
    # ---- model (the network: training/architectures.py)
    architecture: Literal["unet", "nafnet"] = field(default="unet", metadata=_help(
        '"unet": IR-SDE\'s U-Net (MRUNet2DModel; --nf, --depth); "nafnet": Refusion\'s NAFNet'
        " (MRNAFNetModel; its size in --unet_kwargs)"))
    nf: int = field(default=16, metadata=_help("base width of the U-Net (unet only)"))
    depth: int = field(default=3, metadata=_help("levels of the U-Net (unet only)"))
    unet_kwargs: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "JSON dict of network arguments, merged over the architecture's defaults: unet"
        ' {"attention_heads": 1, "attention_head_dim": 16} (with nf 16 and depth 3 the shipped'
        ' default model\'s network), nafnet {"width": 16, "enc_blk_nums": [1, 1, 1, 1],'
        ' "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1, 1]}'))
    # ---- degradation-aware model (a degradation encoder trained with the network)
    degradation_aware: bool = field(default=False, metadata=_help(
        "train an MRDegradationEncoder with the network: the types are --kinds (in order of"
        " first appearance), the network is told each pair's type through the encoder's"
        " context (added to its time embedding), the encoder learns it by cross-entropy"))
    type_loss_weights: dict[str, float] = field(default_factory=dict, metadata=_help(
        'JSON dict type -> weight of its denoising loss (1 if absent), e.g. \'{"lowlight": 0.3}\''
        "; weights that depend on the type alone keep each type's posterior unbiased"))
    classifier_loss_weight: float = 0.1
    context_dim: int = 16
    encoder_width: int = 16
    # ---- scheduler (MRSamplerScheduler) and objective
    num_train_timesteps: int = 100
    theta_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_sigma: float = field(default=50.0 / 255.0, metadata=_help(
        "stationary std in [0, 1] units (IR-SDE's 50/255 = 0.196; the shipped model: 10/255)"))
    eps: float = 0.005
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "v_prediction"
    timestep_sampling: Literal["discrete", "continuous"] = "discrete"
    loss_type: Literal["mse", "l1"] = "mse"
    loss_space: Literal["target", "x0"] = field(default="x0", metadata=_help(
        '"target": compare network outputs with their targets; "x0": compare the implied x0'
        " estimates with the clean image (the restoration objective, docs/math.md"
        "#training-objective)"))
    sampler_start_fraction: float = field(default=0.0, metadata=_help(
        "fraction of each batch trained at t = T from the samplers' start mu + sigma_T noise,"
        " without the forward process's alpha_T (x0 - mu) that no sampler has (docs/math.md"
        "#sampler-start)"))
    x0_weight_cap: float = field(default=1.0, metadata=_help(
        "with loss_space x0: weight each sample's loss by min(1 / c_t^2, cap), c_t = sigma_t /"
        " max_sigma; 1 keeps the x0 loss, a large cap approaches the v_prediction target loss"
        " (docs/math.md#training-objective)"))
    loss_weighting: Literal["none", "sqrt", "relative"] = field(default="none", metadata=_help(
        '"relative" divides each sample\'s loss by that of its degraded input, "sqrt" by its'
        ' square root; both bias the learned posterior towards mu, "none" does not'))
    # ---- optimisation
    learning_rate: float = 3e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_weight_decay: float = 0.0
    lr_scheduler: Literal["cosine", "constant", "linear", "cosine_with_restarts"] = "cosine"
    lr_warmup_steps: int = 100
    max_train_steps: int = 1000
    max_minutes: float | None = field(default=None, metadata=_help(
        "wall-clock budget of the whole run (over resumes); with a cosine or linear LR the decay"
        " follows max(step / max_train_steps, elapsed / max_minutes)"))
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    use_ema: bool = True
    ema_decay: float = 0.999
    ema_power: float = 0.75
    # ---- checkpoints and logs
    checkpointing_steps: int | None = 500
    checkpointing_minutes: float | None = None
    checkpoints_total_limit: int | None = field(default=3, metadata=_help(
        "checkpoints kept in OUTPUT/checkpoints (accelerate deletes the oldest)"))
    resume_from_checkpoint: str | None = field(default=None, metadata=_help(
        "a checkpoint folder, or 'latest'", aliases=["--resume"]))
    init_weights: str | None = field(default=None, metadata=_help(
        "start from these network weights (a pipeline folder with unet/, or a model folder);"
        " fresh optimiser, LR schedule and EMA; --resume wins when a checkpoint exists"))
    report_to: str = field(default="jsonl", metadata=_help(
        'accelerate tracker(s), comma-separated: "jsonl" (OUTPUT/logs/<run>/metrics.jsonl,'
        ' built in), "tensorboard", "wandb", ... (when installed), or "none"'))
    log_every: int = 10
    # ---- validation
    validation_steps: int | None = 500
    validation_minutes: float | None = None
    validation_num_inference_steps: int = 10
    validation_crop: int = 128
    validation_kinds: list[str] = field(
        default_factory=lambda: list(DEGRADATION_KINDS),
        metadata=_help("degradations of the validation crops", choices=TRAINING_KINDS),
    )
    # ---- misc
    seed: int = 0
    cpu: bool = field(default=False, metadata=_help("train on the CPU even if a GPU is there"))
    num_threads: int | None = None
    allow_tf32: bool = field(default=False, metadata=_help(
        "let float32 matmuls and convolutions use TF32 on Ampere and later GPUs (faster, 10-bit"
        " mantissa); off: float32 is IEEE float32 (torch's own default would run cuDNN"
        " convolutions in TF32); mixed precision is unaffected"))
    save_pipeline: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the options."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def build_parser() -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one ``--flag`` per :class:`TrainingConfig` field
    (:func:`.arguments.dataclass_parser`: ``--resume`` is an alias of
    ``--resume_from_checkpoint``; optional numbers accept ``none``; ``--unet_kwargs`` and
    ``--type_loss_weights`` take JSON)."""
    return dataclass_parser(
        TrainingConfig, "Train an MR diffusion (IR-SDE) restoration model with accelerate.")


def parse_args(argv: Sequence[str] | None = None) -> TrainingConfig:
    """Parse command-line flags into a :class:`TrainingConfig`."""
    return parse_into(TrainingConfig, build_parser(), argv)
