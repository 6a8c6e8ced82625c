"""The restoration settings the command line and the web demo both offer, defined once.

- the sampler names (:data:`SCHEDULERS`: ``mrs``, ``unipc``, ``posterior``, ``euler``) and the
  scheduler built from a model's own config (:func:`scheduler_from_config`);
- the degradation choice of degradation-aware models: ``auto`` (detect it) or one of the
  encoder's types (:func:`degradation_types`, :func:`forced_degradation`);
- the smallest useful tile (:data:`MIN_TILE_SIZE`);
- the device of a seeded generator (:func:`seeded_generator`).

Imports torch and the schedulers only when a function runs, so the command line's
``--help`` stays fast.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AUTO_DEGRADATION",
    "MIN_TILE_SIZE",
    "SCHEDULERS",
    "degradation_types",
    "forced_degradation",
    "scheduler_class",
    "scheduler_from_config",
    "seeded_generator",
]

#: Sampler names -> the scheduler class of :mod:`diffusers_mrs` they stand for.
SCHEDULERS: dict[str, str] = {
    "mrs": "MRSamplerScheduler",
    "unipc": "MRUniPCScheduler",
    "posterior": "MRPosteriorScheduler",
    "euler": "MREulerMaruyamaScheduler",
}

#: Smallest tile size: smaller tiles fall under ~45 dB PSNR against the untiled result on
#: the default model (measured by ``benchmarks/seam_cost.py``;
#: docs/guide/tiling.md#the-smallest-useful-tile).
MIN_TILE_SIZE = 96

#: The degradation choice that lets the model's encoder detect the type per image.
AUTO_DEGRADATION = "auto"


def scheduler_class(name: str) -> type:
    """The scheduler class of a sampler name (a key of :data:`SCHEDULERS`)."""
    import diffusers_mrs

    return getattr(diffusers_mrs, SCHEDULERS[name])


def scheduler_from_config(config: Any, name: str, **overrides: Any) -> Any:
    """A fresh scheduler of sampler ``name`` built from a model's scheduler ``config`` (so the
    model's settings carry over), with ``overrides`` applied."""
    return scheduler_class(name).from_config(config, **overrides)


def degradation_types(pipe: Any) -> list[str] | None:
    """Every degradation type of the pipeline's ``degradation_encoder`` (``clean``
    included), or ``None`` for a pipeline that is not degradation-aware."""
    encoder = getattr(pipe, "degradation_encoder", None)
    return None if encoder is None else list(encoder.config.degradations)


def forced_degradation(choice: str | None) -> str | None:
    """The pipeline's ``degradation`` argument for a user's choice: ``None`` (detect it) for
    ``auto`` or no choice, else the forced type."""
    return None if choice in (None, "", AUTO_DEGRADATION) else choice


def seeded_generator(device: Any, seed: int) -> Any:
    """A ``torch.Generator`` seeded with ``seed``: on ``device`` if it is a CUDA device, on
    the CPU otherwise."""
    import torch

    generator_device = device if torch.device(device).type == "cuda" else "cpu"
    return torch.Generator(generator_device).manual_seed(seed)
