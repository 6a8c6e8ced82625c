"""The restoration settings the command line and the web demo both offer, defined once.

- the sampler names (:data:`SCHEDULERS`: ``mrs``, ``unipc``, ``posterior``, ``euler``) and the
  scheduler built from a model's own config (:func:`scheduler_from_config`);
- the degradation choice of degradation-aware models: ``auto`` (detect it) or one of the
  encoder's types (:func:`degradation_types`, :func:`forced_degradation`);
- the smallest useful tile (:data:`MIN_TILE_SIZE`);
- the device of a seeded generator (:func:`seeded_generator`): the sampling device, or the
  CPU for CPU-reproducible noise;
- TensorFloat-32 for float32 on CUDA, set explicitly (:func:`set_tf32`, :func:`tf32_mode`).

Imports torch and the schedulers only when a function runs, so the command line's
``--help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "AUTO_DEGRADATION",
    "MIN_TILE_SIZE",
    "SCHEDULERS",
    "degradation_label",
    "degradation_types",
    "forced_degradation",
    "scheduler_class",
    "scheduler_from_config",
    "seeded_generator",
    "set_tf32",
    "tf32_enabled",
    "tf32_mode",
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


def degradation_label(name: str, forced: bool, types: list[str] | None) -> str:
    """How the CLI and the demo name a degradation-aware model's finding: the type, except
    that an undegraded verdict the user did not force reads ``no supported degradation found
    (noise, lowlight)``, naming the types the model restores: a rainy or hazy photo is not
    "clean", the model only finds none of its own types in it."""
    if name != "clean" or forced or not types:
        return name
    supported = [t for t in types if t != "clean"]
    return f"no supported degradation found ({', '.join(supported)})"


def forced_degradation(choice: str | None) -> str | None:
    """The pipeline's ``degradation`` argument for a user's choice: ``None`` (detect it) for
    ``auto`` or no choice, else the forced type."""
    return None if choice in (None, "", AUTO_DEGRADATION) else choice


def seeded_generator(device: Any, seed: int, cpu_noise: bool = False) -> Any:
    """A ``torch.Generator`` seeded with ``seed`` on the sampling ``device``, so the pipeline
    draws every step's noise there without a copy; on the CPU with ``cpu_noise`` (the
    pipeline then draws all noise up front on the CPU: a CPU run's images on any device) or
    where the device has no generator of its own.

    One seed gives one set of images per generator device: a CUDA generator draws other
    numbers than the CPU's (docs: reproducibility)."""
    import torch

    device = torch.device(device)
    if cpu_noise or device.type == "cpu":
        return torch.Generator("cpu").manual_seed(seed)
    try:
        return torch.Generator(device).manual_seed(seed)
    except RuntimeError:  # a device type without generators: CPU noise
        return torch.Generator("cpu").manual_seed(seed)


def set_tf32(enabled: bool) -> None:
    """TensorFloat-32 for float32 matrix products and cuDNN convolutions on CUDA (Ampere and
    later): on (``True``, ~10 significant bits, faster) or off (``False``, IEEE float32).
    Sets ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``
    (the flags other libraries read too); no effect on the CPU."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def tf32_enabled() -> bool:
    """Whether CUDA convolutions in float32 may use TensorFloat-32 (torch's default: yes,
    through cuDNN; matrix products: no)."""
    import torch

    return bool(torch.backends.cudnn.allow_tf32)


@contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """:func:`set_tf32` for the ``with`` block; torch's earlier settings come back after."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    set_tf32(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
