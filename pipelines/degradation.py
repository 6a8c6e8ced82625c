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

DA-CLIP models condition the network the same way, with two vectors from their
``image_encoder`` (:meth:`ConditioningMixin.encode_image`) in place of the degradation
context. This module is the network's conditioning: it checks the argument (before any
network work), runs the encoders once per batch and turns their output into the network's
contexts (:class:`Contexts`) and a per-image report; the pipeline does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch

from .network import NetworkMixin

__all__ = [
    "AUTO",
    "ConditioningMixin",
    "Contexts",
    "DegradationEstimate",
    "ImageDegradation",
    "check_degradation",
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

    @classmethod
    def in_input_order(
        cls, estimates: Sequence[DegradationEstimate], groups: Sequence[Sequence[int]]
    ) -> DegradationEstimate:
        """One estimate of all images from the estimates of their batches: ``estimates[g]``
        holds the images ``groups[g]`` (input indices), the result holds them in input order."""
        order = [k for indices in groups for k in indices]
        rows = sorted(range(len(order)), key=order.__getitem__)
        names = [name for estimate in estimates for name in estimate.names]
        probabilities = torch.cat([estimate.probabilities for estimate in estimates])
        context = torch.cat([estimate.context for estimate in estimates])
        return cls(estimates[0].types, [names[r] for r in rows], probabilities[rows],
                   context[rows])

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


@dataclass(frozen=True)
class Contexts:
    """Per-image conditioning vectors of the network, ``[B, D]`` each (DA-CLIP's two, or
    only the degradation context of a degradation-aware model)."""

    image: torch.Tensor | None
    degradation: torch.Tensor
    #: DA-CLIP's degradation names (an encoder that stores them), for the output
    estimate: DegradationEstimate | None = None

    def repeat_interleave(self, repeats: int) -> Contexts:
        """The contexts of a batch whose items are each repeated ``repeats`` times."""
        return Contexts(
            None if self.image is None else self.image.repeat_interleave(repeats, dim=0),
            self.degradation.repeat_interleave(repeats, dim=0),
        )

    def unet_kwargs(self, batch: int) -> dict[str, torch.Tensor]:
        """Keyword arguments of the network for a batch of ``batch`` items. A tiled call
        stacks the tiles position-major (item ``k * B + b`` is tile ``k`` of image ``b``,
        :func:`~diffusers_mrs.pipelines.tiling.tiled_model_output`), so the contexts are
        tiled the same way."""
        per_image = self.degradation.shape[0]
        if batch % per_image:
            raise ValueError(f"a batch of {batch} is not a whole number of {per_image} images")
        reps = batch // per_image
        kwargs = {"degradation_context": self.degradation.repeat(reps, 1)}
        if self.image is not None:
            kwargs["image_context"] = self.image.repeat(reps, 1)
        return kwargs


class ConditioningMixin(NetworkMixin):
    """The network's contexts from the pipeline's ``image_encoder`` (DA-CLIP) or
    ``degradation_encoder``, computed once per batch of degraded images ``mu``."""

    image_encoder: Any
    feature_extractor: Any
    degradation_encoder: Any

    @property
    def supported_degradations(self) -> list[str] | None:
        """The degradations this model claims to restore: its ``degradation_encoder``'s types
        without ``"clean"`` (an undegraded photo, which the encoder also recognises), in the
        encoder's order; ``None`` for a model without a degradation encoder. Any of the
        encoder's types, ``"clean"`` included, may be forced with ``degradation=``."""
        encoder = getattr(self, "degradation_encoder", None)
        if encoder is None:
            return None
        return [d for d in encoder.config.degradations if d != "clean"]

    def _estimate_degradation(
        self, mu: torch.Tensor, forced: Sequence[str | None] | None = None
    ) -> DegradationEstimate | None:
        """The degradation encoder on one batch ``mu`` (``[B, 3, H, W]`` in [0, 1]) with the
        checked types ``forced`` (per image, ``None``: detect); ``None`` without an encoder."""
        encoder = getattr(self, "degradation_encoder", None)
        if encoder is None:
            return None
        forced = [None] * mu.shape[0] if forced is None else list(forced)
        return estimate_degradation(encoder, mu, forced)

    def _degradation_contexts(self, estimate: DegradationEstimate) -> Contexts:
        """The network's contexts from a degradation estimate (in the network's dtype)."""
        return Contexts(None, estimate.context.to(self._unet_dtype()))

    def encode_image(self, mu: torch.Tensor) -> Contexts | None:
        """The network's contexts of one batch of degraded images ``mu`` (``[B, C, H, W]`` in
        [0, 1], as the sampler holds them): DA-CLIP's two, or a degradation-aware model's
        detected degradation context, or ``None`` for a network without contexts.

        As DA-CLIP prepares them: the image is turned into 8 bits by truncation
        (``uint8(x * 255)``, in float32), then the feature extractor resizes the short side
        to 224 (bicubic), centre-crops 224 x 224 and normalises with CLIP's mean and std.
        The encoder then runs once on the whole batch.

        A sampling stage (like ``prepare_latents``), called once per batch of same-size
        images: a subclass overrides it to hand the network other contexts. To read images
        as ``__call__`` does (paths, PIL, numpy, ...), use :meth:`detect_degradation`.
        """
        if self.image_encoder is None:
            estimate = self._estimate_degradation(mu)
            return None if estimate is None else self._degradation_contexts(estimate)
        pixels = (mu.detach().float().clamp(0, 1) * 255).to(torch.uint8)
        pil = [PIL.Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in pixels]
        pixel_values = self.feature_extractor(images=pil, return_tensors="pt").pixel_values
        encoder_dtype = getattr(self.image_encoder, "dtype", torch.float32)
        out = self.image_encoder(pixel_values.to(device=mu.device, dtype=encoder_dtype))
        dtype = self._unet_dtype()  # the contexts only feed the network
        estimate = daclip_degradation_estimate(self.image_encoder, out)
        return Contexts(out[0].to(dtype), out[1].to(dtype), estimate)
