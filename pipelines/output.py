"""What ``MRRestorationPipeline.__call__`` returns: the restorations as PIL images, numpy or
torch (``output_type``), their spread for an ensemble, and each image's degradation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .degradation import ImageDegradation

__all__ = [
    "MRRestorationPipelineOutput",
    "NonFiniteOutputError",
    "check_finite_samples",
    "format_images",
    "pipeline_output",
]


class NonFiniteOutputError(ValueError):
    """Sampling produced NaN or infinite values: nothing is returned for the image."""


def check_finite_samples(
    samples: torch.Tensor, num_samples: int, image_numbers: list[int] | None = None
) -> None:
    """Raises :class:`NonFiniteOutputError` naming the images (input order) any of whose
    ``num_samples`` samples (rows ``i*K .. i*K+K-1`` of ``samples``) hold NaN or inf.

    Checked once per batch after the last step (one host sync), never per step: an image
    with NaN would otherwise come back as an all-black PNG."""
    finite = torch.isfinite(samples).flatten(1).all(1).view(-1, num_samples).all(1).tolist()
    numbers = image_numbers if image_numbers is not None else list(range(len(finite)))
    bad = [n for n, ok in zip(numbers, finite, strict=True) if not ok]
    if bad:
        raise NonFiniteOutputError(
            f"the restoration of image {', '.join(map(str, bad))} (input order, from 0) holds"
            " NaN or infinite values, so none is returned. Causes: weights that are not"
            " finite, a callback_on_step_end that returned non-finite latents or mu, or a"
            " float16 overflow (load the network in float32)."
        )


@dataclass
class MRRestorationPipelineOutput(ImagePipelineOutput):
    """Output of :class:`MRRestorationPipeline`.

    Attributes:
        images: the restorations (with ``num_samples > 1``: the per-pixel mean of each
            image's samples), as ``output_type`` says.
        uncertainty: with ``num_samples > 1``, the per-pixel standard deviation of each
            image's samples (Bessel-corrected), in the same layout and ``output_type`` as
            ``images`` (values in [0, 1] intensity units; as PIL, std 1.0 is white);
            ``None`` for a single sample.
        degradation: per input image (input order), the degradation type the network was
            given: the one detected by the pipeline's ``degradation_encoder`` (the most
            probable), or the one forced with ``degradation=``. ``None`` for a pipeline
            without a degradation encoder.
        degradation_probability: per input image, the encoder's probability of that type.
            For a forced type this is still the encoder's own estimate (it runs anyway), so
            a low value says the encoder would have chosen another type.
        degradation_probabilities: per input image, ``{type: probability}`` over all the
            encoder's types (they sum to 1).
    """

    uncertainty: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None
    degradation: list[str] | None = None
    degradation_probability: list[float] | None = None
    degradation_probabilities: list[dict[str, float]] | None = None


def format_images(restored: list[torch.Tensor], output_type: str) -> Any:
    """``[C, H, W]`` images in [0, 1] as PIL images, a numpy or a torch batch (or a list
    of per-image arrays where the sizes differ)."""
    same_size = len({tuple(r.shape) for r in restored}) == 1
    if output_type == "pt":
        return torch.stack(restored) if same_size else restored
    arrays = [r.permute(1, 2, 0).cpu().numpy() for r in restored]
    if output_type == "np":
        return np.stack(arrays) if same_size else arrays
    return [DiffusionPipeline.numpy_to_pil(a[None])[0] for a in arrays]


def pipeline_output(
    restored: list[torch.Tensor],
    spread: list[torch.Tensor | None],
    output_type: str,
    num_samples: int,
    reports: list[ImageDegradation] | None = None,
) -> MRRestorationPipelineOutput:
    """The restorations (and, for ``num_samples`` > 1, their spread) as ``output_type``,
    with each image's degradation where the model has a degradation encoder."""
    return MRRestorationPipelineOutput(
        images=format_images(restored, output_type),
        uncertainty=None if num_samples == 1 else format_images(spread, output_type),
        degradation=None if reports is None else [r.name for r in reports],
        degradation_probability=None if reports is None else [r.probability for r in reports],
        degradation_probabilities=None if reports is None else [
            r.probabilities for r in reports],
    )
