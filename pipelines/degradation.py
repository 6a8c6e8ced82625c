"""The ``degradation=`` argument of a degradation-aware pipeline: detected or forced types.

A degradation-aware pipeline has a ``degradation_encoder``
(:class:`~diffusers_mrs.MRDegradationEncoder`) that looks at each degraded image ``mu`` and
gives the probabilities ``p_k(mu)`` of its degradation types (``"clean"`` among them for an
undegraded photo) and the network's context (docs/math.md#degradation-context):

    auto (detected):   c = sum_k p_k(mu) e_k,   reported type  argmax_k p_k(mu)
    forced type k:     c = e_k                  (``degradation_encoder.context_for``)

where ``e_k`` are the encoder's ``type_embeddings``. Either way the encoder runs once per
image (before the ``num_samples`` repeats and the tiles), and the reported probability of
the type is the encoder's ``p_k(mu)``, also for a forced type: a low value says the encoder
would not have chosen it.

This module checks the argument (before any network work) and turns one batch's encoder
output into contexts and a per-image report; the pipeline does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "AUTO",
    "DegradationEstimate",
    "ImageDegradation",
    "check_degradation",
    "check_encoder_image_sizes",
    "daclip_degradation_estimate",
    "estimate_degradation",
    "per_image_degradations",
]

#: The ``degradation=`` value (same as ``None``) that lets the encoder detect the type.
AUTO = "auto"
#: Smallest image side the encoder accepts (:class:`~diffusers_mrs.MRDegradationEncoder`).
MIN_ENCODER_SIZE = 8


def check_degradation(
    degradation: str | Sequence[str | None] | None, encoder: Any
) -> str | list[str | None] | None:
    """Validates ``degradation=`` against the pipeline's ``degradation_encoder`` (or ``None``).

    Returns ``None`` (detect every image), one type name (forced for every image) or a list
    (one entry per image, ``None`` meaning detect that image). ``"auto"`` is ``None``.

    Raises:
        ValueError: a type is given to a pipeline without a degradation encoder; a name the
            encoder does not know (the message lists the known types); a value that is
            neither a string, ``None`` nor a list of them.
    """
    if degradation is None or degradation == AUTO:
        return None
    if isinstance(degradation, str):
        names: list[str | None] = [degradation]
    elif isinstance(degradation, (list, tuple)):
        names = [None if d == AUTO else d for d in degradation]
    else:
        raise ValueError(
            "`degradation` must be None, 'auto', a type name or a list with one per image, got"
            f" {type(degradation).__name__}."
        )
    if encoder is None:
        raise ValueError(
            f"`degradation={degradation!r}`: this model is not degradation-aware (the pipeline"
            " has no `degradation_encoder`), so it cannot be told the degradation type."
        )
    known = list(encoder.config.degradations)
    for name in names:
        if name is not None and (not isinstance(name, str) or name not in known):
            raise ValueError(
                f"unknown degradation {name!r}; this model knows {known} (or 'auto' to detect"
                " it)."
            )
    return names[0] if isinstance(degradation, str) else names


def check_encoder_image_sizes(images: Sequence[torch.Tensor]) -> None:
    """The degradation encoder needs images of at least :data:`MIN_ENCODER_SIZE` pixels a side
    (``ValueError`` naming the image otherwise)."""
    for k, img in enumerate(images):
        if min(img.shape[-2:]) < MIN_ENCODER_SIZE:
            name = f"image[{k}]" if len(images) > 1 else "image"
            raise ValueError(
                f"{name} is {img.shape[-1]} x {img.shape[-2]} px; the degradation encoder needs"
                f" at least {MIN_ENCODER_SIZE} x {MIN_ENCODER_SIZE}."
            )


def per_image_degradations(
    checked: str | list[str | None] | None, num_images: int
) -> list[str | None]:
    """The checked argument as one entry per image (``None``: detect that image).

    Raises:
        ValueError: a list whose length is not the number of images.
    """
    if checked is None or isinstance(checked, str):
        return [checked] * num_images
    if len(checked) != num_images:
        raise ValueError(
            f"got {len(checked)} degradation types for {num_images} image(s); pass one per"
            " image, a single type for all, or None/'auto' to detect them."
        )
    return list(checked)


@dataclass(frozen=True)
class ImageDegradation:
    """What the output reports for one image: the type used, the encoder's probability of
    it, and the probabilities of all types."""

    name: str
    probability: float
    probabilities: dict[str, float]


@dataclass(frozen=True)
class DegradationEstimate:
    """One batch through the degradation encoder.

    Attributes:
        types: the encoder's type names (the columns of ``probabilities``).
        names: per image, the type used: the forced one, else the most probable.
        probabilities: ``[B, len(types)]`` float32 on the CPU, the encoder's softmax.
        context: ``[B, context_dim]``, the network's ``degradation_context`` (the encoder's
            dtype, on the device of the images).
    """

    types: list[str]
    names: list[str]
    probabilities: torch.Tensor
    context: torch.Tensor

    def per_image(self) -> list[ImageDegradation]:
        """The report of every image of the batch, in batch order."""
        reports = []
        for name, row in zip(self.names, self.probabilities.tolist(), strict=True):
            probabilities = dict(zip(self.types, map(float, row), strict=True))
            reports.append(ImageDegradation(name, probabilities[name], probabilities))
        return reports


def estimate_degradation(
    encoder: Any, mu: torch.Tensor, forced: Sequence[str | None]
) -> DegradationEstimate:
    """Runs ``encoder`` once on ``mu`` (``[B, 3, H, W]`` in [0, 1]) and builds every image's
    context: ``type_embeddings[k]`` where ``forced[i]`` names type ``k``, else the encoder's
    probability-weighted mix (module docstring). The context is returned on ``mu``'s device."""
    out = encoder(mu.to(encoder.dtype))
    probabilities = out.probabilities.detach().float().cpu()
    types = list(encoder.config.degradations)
    context = out.degradation_context
    picked = [i for i, name in enumerate(forced) if name is not None]
    if picked:
        context = context.clone()
        named = encoder.context_for([forced[i] for i in picked])
        context[picked] = named.to(device=context.device, dtype=context.dtype)
    detected = probabilities.argmax(dim=1).tolist()
    names = [name if name is not None else types[k] for name, k in zip(forced, detected,
                                                                       strict=True)]
    return DegradationEstimate(types, names, probabilities, context.to(mu.device))


def daclip_degradation_estimate(encoder: Any, out: Any) -> DegradationEstimate | None:
    """DA-CLIP's degradation names of a batch, from the image encoder's output ``out``:
    the most probable of ``encoder.config.degradation_names`` per image (DA-CLIP's
    ``softmax(100 d @ T^T)``, :mod:`diffusers_mrs.models.daclip_text`); ``None`` for an
    encoder that stores no names."""
    probabilities = getattr(out, "degradation_probabilities", None)
    names = getattr(getattr(encoder, "config", None), "degradation_names", None)
    if probabilities is None or not names:
        return None
    probabilities = probabilities.detach().float().cpu()
    detected = [names[k] for k in probabilities.argmax(dim=1).tolist()]
    return DegradationEstimate(list(names), detected, probabilities, out.degradation_embeds)
