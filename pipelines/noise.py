"""Where the sampling noise is drawn: on the sampling device (the default), or on the CPU
for results that do not depend on the device's random number generator.

Device noise: a generator on the sampling device (or none: the device's default generator)
draws every step's noise on the device inside ``scheduler.step``; nothing is copied and the
host never waits.

CPU noise (``cpu_noise=True``, or a CPU generator handed to a pipeline on another device):
drawing on the CPU inside every step would copy each step's noise to the device with a
blocking copy. Instead :func:`draw_cpu_noise` draws, once per batch of images and before
the first step, the start noise and the noise of every step that takes noise, in the order
a run on the CPU draws them (the same generator calls with the same shapes), into pinned
host memory; :meth:`CpuNoise.step_noise` then copies one step's noise at a time with
``non_blocking=True``, and the pipeline hands it to ``step`` as ``variance_noise``. So the
noise equals a CPU run's noise draw for draw, and the images equal a CPU run's up to the
device's arithmetic. It holds every step's noise of the batch in host memory (steps x the
batch's size in float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["CpuNoise", "draw_cpu_noise", "generator_devices", "noise_on_cpu", "noisy_steps"]

Generators = torch.Generator | list[torch.Generator] | None


def generator_devices(generator: Generators) -> set[str]:
    """The device types of ``generator`` (one or a list); empty for ``None``."""
    if generator is None:
        return set()
    generators = generator if isinstance(generator, list) else [generator]
    return {torch.device(g.device).type for g in generators}


def noise_on_cpu(cpu_noise: Any, generator: Generators, device: torch.device) -> bool:
    """Whether the noise is drawn on the CPU up front: asked for (``cpu_noise=True``), or
    implied by a CPU generator on a non-CPU sampling device. A generator on another device
    than the CPU or the sampling device is refused (one clear error before sampling)."""
    if not isinstance(cpu_noise, bool):
        raise ValueError(f"`cpu_noise` must be True or False, got {cpu_noise!r}.")
    kinds = generator_devices(generator)
    foreign = kinds - {"cpu", torch.device(device).type}
    if foreign or (cpu_noise and kinds - {"cpu"}):
        where = "the CPU" if cpu_noise else f"the CPU or the sampling device ({device})"
        raise ValueError(
            f"`generator` lives on {sorted(kinds)}; with these settings it must live on {where}"
            " (docs: reproducibility)."
        )
    return cpu_noise or (bool(kinds) and torch.device(device).type != "cpu")


def noisy_steps(scheduler: Any, num_steps: int) -> list[bool]:
    """For each of the ``num_steps`` steps, whether ``scheduler.step`` draws noise there:
    read off the solver coefficients of this package's schedulers (``noise != 0``); every
    step for a scheduler without them."""
    coefficients = getattr(scheduler, "_coefficients", None)
    if not isinstance(coefficients, Sequence) or len(coefficients) != num_steps:
        return [True] * num_steps
    return [getattr(c, "noise", 1.0) != 0.0 for c in coefficients]


@dataclass
class CpuNoise:
    """Noise drawn on the CPU up front: the start noise (``None`` when the caller gives the
    initial latents) and per step the noise (``None`` where the step draws none), in pinned
    host memory when the sampling device is CUDA."""

    start: torch.Tensor | None
    steps: list[torch.Tensor | None]
    device: torch.device

    def start_noise(self) -> torch.Tensor:
        """The start noise on the sampling device."""
        if self.start is None:
            raise ValueError("no start noise was drawn (the initial latents were given).")
        return self.start.to(self.device, non_blocking=True)

    def step_noise(self, index: int) -> torch.Tensor | None:
        """Step ``index``'s noise on the sampling device, copied without waiting; ``None``
        where the step draws none."""
        noise = self.steps[index]
        return None if noise is None else noise.to(self.device, non_blocking=True)


def draw_cpu_noise(
    shape: tuple[int, ...],
    generator: Generators,
    device: torch.device,
    start_dtype: torch.dtype,
    step_dtype: torch.dtype,
    steps: Sequence[bool],
    with_start: bool = True,
) -> CpuNoise:
    """Draws on the CPU, in a CPU run's order, the start noise (``start_dtype``, when
    ``with_start``) and then one ``step_dtype`` noise tensor of ``shape`` per step where
    ``steps`` is true, with the calls ``randn_tensor`` makes in the sampling loop."""
    pin = torch.device(device).type == "cuda" and torch.cuda.is_available()

    def draw(dtype: torch.dtype) -> torch.Tensor:
        noise = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=dtype)
        return noise.pin_memory() if pin else noise

    start = draw(start_dtype) if with_start else None
    return CpuNoise(start, [draw(step_dtype) if noisy else None for noisy in steps],
                    torch.device(device))
