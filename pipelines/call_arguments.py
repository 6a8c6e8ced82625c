"""The arguments of ``MRRestorationPipeline.__call__``: checked before any sampling, then
bundled into the settings every size group samples with.

The images themselves are read and checked in one pass by
:func:`diffusers_mrs.image_io.prepare_images`, told what this pipeline's models need
(:meth:`CallArgumentsMixin._image_requirements`); this module checks everything else: the
step count, timesteps, output type, tiles, callback (and what it returns at each step),
ensemble size, degradation types, and generators and initial latents against the number
and size of the images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from diffusers_mrs.image_io import check_finite_in

from .degradation import (
    MIN_ENCODER_SIZE,
    DegradationEstimate,
    check_degradation,
    per_image_degradations,
)
from .ensemble import check_num_samples
from .network import NetworkMixin
from .noise import noise_on_cpu
from .tiling import normalize_tile_args

__all__ = ["OUTPUT_TYPES", "CallArgumentsMixin", "SamplingSettings", "StepCallback", "TileSettings"]

StepCallback = Callable[..., dict[str, Any]] | PipelineCallback | MultiPipelineCallbacks

OUTPUT_TYPES = ("pil", "np", "pt")



def clean_rows(
    estimate: DegradationEstimate | None, sampling: SamplingSettings
) -> list[bool] | None:
    """Per image of a batch, whether it is returned as it is: its type (detected or forced)
    is ``"clean"`` and ``keep_clean`` is on. The posterior of an undegraded image given
    itself is the image (docs/math.md#degradation-context)."""
    if estimate is None or not sampling.keep_clean:
        return None
    return [name == "clean" for name in estimate.names]


def size_groups(images: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of same-size images, one list per size, in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for idx, img in enumerate(images):
        groups.setdefault(tuple(img.shape[-2:]), []).append(idx)
    return list(groups.values())


@dataclass(frozen=True)
class TileSettings:
    """Tiled network evaluation: tile and overlap ``(h, w)``, tile crops per network call."""

    size: tuple[int, int]
    overlap: tuple[int, int]
    batch_size: int


@dataclass(frozen=True)
class SamplingSettings:
    """The settings of one ``__call__`` that every size group samples with."""

    num_inference_steps: int
    timesteps: Sequence[float] | None
    num_samples: int
    latents: torch.Tensor | None
    tiling: TileSettings | None
    callback: StepCallback | None
    callback_inputs: Sequence[str]
    #: ``degradation=`` checked: None (detect), one type, or a list (one per image, ``None``
    #: entries detected); after the images are read, always one entry per image.
    degradation: str | Sequence[str | None] | None = None
    #: return images of type ``"clean"`` as they are, without sampling
    keep_clean: bool = True
    #: draw all noise on the CPU up front (:mod:`~diffusers_mrs.pipelines.noise`); resolved
    #: from ``cpu_noise=`` and the generator's device once the images are read
    cpu_noise: bool = False


class CallArgumentsMixin(NetworkMixin):
    """Checks of ``__call__``'s arguments (each in one place) and the settings they make."""

    _callback_tensor_inputs: list[str]
    degradation_encoder: Any

    def check_inputs(
        self,
        num_inference_steps: int,
        timesteps: Sequence[float] | None,
        output_type: str,
        tile_size: int | tuple[int, int] | None,
        tile_overlap: int | tuple[int, int] | None,
        tile_batch_size: int,
        callback_on_step_end_tensor_inputs: Sequence[str] | None,
    ) -> None:
        """Validates the non-image arguments (raises ``ValueError``)."""
        if timesteps is None and (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, (int, np.integer))
            or num_inference_steps < 1
        ):
            raise ValueError(
                f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}."
            )
        if timesteps is not None and len(timesteps) == 0:
            raise ValueError("`timesteps` must not be empty.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if tile_size is not None:
            normalize_tile_args(tile_size, tile_overlap)
        if (
            isinstance(tile_batch_size, bool)
            or not isinstance(tile_batch_size, int)
            or tile_batch_size < 1
        ):
            raise ValueError(
                f"`tile_batch_size` must be a positive integer, got {tile_batch_size!r}."
            )
        bad = [k for k in callback_on_step_end_tensor_inputs or ()
               if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` {bad} are not among"
                f" {self._callback_tensor_inputs}."
            )

    def check_images_in_dtype(self, images: Sequence[torch.Tensor]) -> None:
        """The images must stay finite in the network's dtype (e.g. > 65504 overflows float16):
        checked after the cast, so sampling never starts from inf and returns NaN."""
        check_finite_in(images, self._unet_dtype())

    def check_latents(
        self, latents: torch.Tensor | None, images: Sequence[torch.Tensor], num_samples: int
    ) -> torch.Tensor | None:
        """``latents`` (the initial states x_T) must be a finite tensor of shape
        ``[len(images) * num_samples, C, H, W]`` (samples of image ``i`` at ``i*K + k``);
        it needs images of one size."""
        if latents is None:
            return None
        if not isinstance(latents, torch.Tensor):
            raise ValueError(f"`latents` must be a torch.Tensor, got {type(latents).__name__}.")
        sizes = {tuple(img.shape) for img in images}
        if len(sizes) != 1:
            raise ValueError("`latents` needs images of one size (got several sizes).")
        expected = (len(images) * num_samples, *next(iter(sizes)))
        if tuple(latents.shape) != expected:
            raise ValueError(
                f"`latents` must have shape {list(expected)} (images x num_samples, C, H, W), "
                f"got {list(latents.shape)}."
            )
        if not bool(torch.isfinite(latents).all()):
            raise ValueError("`latents` contains NaN or infinite values.")
        return latents

    @staticmethod
    def check_generators(
        generator: torch.Generator | list[torch.Generator] | None, batch_size: int
    ) -> None:
        """``generator`` is None, a ``torch.Generator`` or a list of one per image."""
        items = generator if isinstance(generator, list) else [generator]
        bad = [g for g in items if not isinstance(g, torch.Generator)]
        if generator is not None and bad:
            raise ValueError(
                "`generator` must be a torch.Generator (e.g. torch.Generator().manual_seed(0))"
                f" or a list of one per image, got {type(bad[0]).__name__} {bad[0]!r:.40}."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for {batch_size} images; pass one"
                " generator per image, or a single generator."
            )

    def _image_requirements(self) -> dict[str, Any]:
        """What this pipeline's models need of its images, as
        :func:`~diffusers_mrs.image_io.prepare_images` takes it: the network's channels and
        dtype, and the degradation encoder's smallest side."""
        needs: dict[str, Any] = {"channels": self._unet_channels(), "dtype": self._unet_dtype()}
        if getattr(self, "degradation_encoder", None) is not None:
            needs.update(min_side=MIN_ENCODER_SIZE, min_side_for="the degradation encoder")
        return needs

    def _sampling_settings(
        self,
        num_inference_steps: int,
        timesteps: Sequence[float] | None,
        num_samples: int,
        output_type: str,
        tile_size: int | tuple[int, int] | None,
        tile_overlap: int | tuple[int, int] | None,
        tile_batch_size: int,
        callback: StepCallback | None,
        callback_inputs: Sequence[str] | None,
        degradation: str | Sequence[str | None] | None = None,
        keep_clean: bool = True,
    ) -> SamplingSettings:
        """Checks every non-image argument of ``__call__`` and bundles the sampling settings."""
        if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
            callback_inputs = callback.tensor_inputs
        if callback_inputs is None:
            callback_inputs = ["latents"]
        self.check_inputs(num_inference_steps, timesteps, output_type, tile_size, tile_overlap,
                          tile_batch_size, callback_inputs)
        num_samples = check_num_samples(num_samples)
        checked = check_degradation(degradation, getattr(self, "degradation_encoder", None))
        tiling = None
        if tile_size is not None:
            tiling = TileSettings(*normalize_tile_args(tile_size, tile_overlap), tile_batch_size)
        return SamplingSettings(
            num_inference_steps, timesteps, num_samples, None, tiling, callback, callback_inputs,
            checked, bool(keep_clean),
        )

    def _settings_for_images(
        self,
        sampling: SamplingSettings,
        images: Sequence[torch.Tensor],
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        cpu_noise: bool = False,
    ) -> SamplingSettings:
        """Checks the generators, initial latents and degradation types against the (read)
        images; returns the settings with the checked latents, where the noise is drawn
        (:func:`~diffusers_mrs.pipelines.noise.noise_on_cpu`) and, for a degradation-aware
        model, one degradation entry per image."""
        self.check_generators(generator, len(images))
        cpu_noise = noise_on_cpu(cpu_noise, generator, self._execution_device)
        checked = self.check_latents(latents, images, sampling.num_samples)
        degradation = sampling.degradation
        if getattr(self, "degradation_encoder", None) is not None:
            degradation = per_image_degradations(degradation, len(images))
        return replace(sampling, latents=checked, degradation=degradation, cpu_noise=cpu_noise)

    def _run_callback(
        self,
        sampling: SamplingSettings,
        i: int,
        t: torch.Tensor,
        latents: torch.Tensor,
        mu: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Calls ``callback_on_step_end``; it may replace ``latents`` and ``mu``."""
        tensors = {"latents": latents, "mu": mu}
        callback_kwargs = {k: tensors[k] for k in sampling.callback_inputs}
        outputs = sampling.callback(self, i, t, callback_kwargs)
        if outputs is None:
            return latents, mu
        if not isinstance(outputs, dict):
            raise TypeError(
                "callback_on_step_end must return a dict (tensor name -> tensor, e.g."
                f" {{'latents': latents}}) or None, got {type(outputs).__name__}."
            )
        new_latents, new_mu = outputs.get("latents", latents), outputs.get("mu", mu)
        for name, new, old in (("latents", new_latents, latents), ("mu", new_mu, mu)):
            if not isinstance(new, torch.Tensor) or new.shape != old.shape:
                raise ValueError(
                    f"callback_on_step_end returned {name!r} as {type(new).__name__}"
                    f" {tuple(getattr(new, 'shape', ()))}; expected a tensor of shape"
                    f" {tuple(old.shape)}."
                )
        return new_latents, new_mu
