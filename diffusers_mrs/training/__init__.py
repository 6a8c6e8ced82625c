"""Training MR diffusion restoration models with accelerate.

- :mod:`.config`: :class:`TrainingConfig`, every option, and the command line built from it;
- :mod:`.architectures`: the network a run builds (``--architecture unet`` or ``nafnet``)
  and the checks of its options;
- :mod:`.objective`: training times, targets, x0 estimates and losses;
- :mod:`.trainer`: :class:`Trainer` (setup, train_step, validate, checkpoint, finish) and
  :func:`train`; :mod:`.loop`: its epochs and the work after each optimiser step;
- :mod:`.checkpoint`: resumable checkpoints, safetensors and JSON only (earlier versions'
  pickles read with ``weights_only=True`` and rewritten); :mod:`.run_state`: the network,
  optimiser, LR schedule and random states in them; :mod:`.portable_state`: nested states
  as safetensors + JSON; :mod:`.export_checkpoint`: a pickle-free copy of a checkpoint;
- :mod:`.degradation_aware`: the network and a degradation encoder trained together;
- :mod:`.device`: TF32 and pinned memory; :mod:`.extras`: the ``[train]`` packages;
- :mod:`.arguments`: the command line built from a dataclass;
- :mod:`.validation`: held-out restorations through the pipeline, scored by
  :mod:`diffusers_mrs.metrics`;
- :mod:`.trackers`: the built-in ``jsonl`` tracker for accelerate.

``examples/train_mr_diffusion.py`` is the command-line wrapper (:func:`main`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import TrainingConfig, build_parser, parse_args
from .extras import require_training_packages
from .objective import (
    LOSS_TYPES,
    LOSS_WEIGHTINGS,
    PREDICTION_TYPES,
    check_loss_names,
    denoising_loss,
    from_sampler_start,
    predict_x0,
    sample_timesteps,
    schedule_alpha_sigma,
    training_loss,
    training_target,
    x0_loss_weight,
)
from .trainer import Trainer, train
from .validation import evaluate

__all__ = [
    "LOSS_TYPES",
    "LOSS_WEIGHTINGS",
    "PREDICTION_TYPES",
    "Trainer",
    "TrainingConfig",
    "build_parser",
    "check_loss_names",
    "denoising_loss",
    "evaluate",
    "from_sampler_start",
    "main",
    "parse_args",
    "predict_x0",
    "sample_timesteps",
    "schedule_alpha_sigma",
    "train",
    "training_loss",
    "training_target",
    "x0_loss_weight",
]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``examples/train_mr_diffusion.py``: parse the flags (``--help`` needs
    only the base install), then train; without the ``[train]`` extra, exits with one line
    naming ``pip install -e ".[train]"``."""
    config = parse_args(argv)
    try:
        require_training_packages()
    except ImportError as err:
        raise SystemExit(f"error: {err}") from None
    train(config)
