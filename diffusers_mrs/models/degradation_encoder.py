"""A small degradation encoder: which degradation an image has, and its context vector.

The default model's counterpart of DA-CLIP's controller tower (docs/math.md#degradation-context):
a few strided convolutions look at the degraded image ``mu`` and pool it into statistics that
do not depend on its size (the mean, standard deviation and maximum of every feature map and
of the image's channels, and the log of the median and of the mean absolute Laplacian of
each channel, a robust noise level: noise shows in the high-pass statistics, low light in
the largest intensity), and a
linear head turns them into logits over the model's degradation types (for example
``("noise", "lowlight", "clean")``). The degradation context that the restoration network
adds to its time embedding is the probability-weighted mix of one learned vector per type,

    c(mu) = sum_k p_k(mu) e_k,    p = softmax(logits),

so a confident prediction hands the network the same vector as naming the type
(:meth:`MRDegradationEncoder.context_for`), which is what it was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

__all__ = ["MRDegradationEncoder", "MRDegradationEncoderOutput"]


@dataclass
class MRDegradationEncoderOutput(BaseOutput):
    """Output of :class:`MRDegradationEncoder`.

    Args:
        logits: unnormalised scores, ``[B, num_types]`` (order: ``config.degradations``).
        probabilities: their softmax, ``[B, num_types]``.
        degradation_context: ``probabilities @ type_embeddings``, ``[B, context_dim]``.
    """

    logits: torch.Tensor
    probabilities: torch.Tensor
    degradation_context: torch.Tensor


class MRDegradationEncoder(ModelMixin, ConfigMixin):
    """Classifies the degradation of an image and produces the restoration network's context.

    Args:
        degradations: the type names, in the order of the logits (``"clean"`` for an
            undegraded image).
        context_dim: length of the context vector (the network's ``context_dim``).
        width: channels of the first convolution (doubled at each of the three levels).

    Input: images ``[B, 3, H, W]`` in ``[0, 1]``, any size of at least 8 x 8.
    """

    @register_to_config
    def __init__(
        self,
        degradations: Sequence[str] = ("noise", "lowlight", "clean"),
        context_dim: int = 16,
        width: int = 16,
    ) -> None:
        super().__init__()
        names = list(degradations)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"need at least two distinct degradation names, got {names}")
        widths = [width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        channels = 3
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(channels, w, 3, stride=stride, padding=1), nn.GELU()]
            channels = w
        self.features = nn.Sequential(*layers)
        # mean, std and max of every feature map and of the image's channels; two
        # high-pass statistics per channel
        self.head = nn.Sequential(
            nn.Linear(3 * (channels + 3) + 6, 4 * width), nn.GELU(),
            nn.Linear(4 * width, len(names)),
        )
        laplacian = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
        self.register_buffer("laplacian", laplacian.expand(3, 1, 3, 3).clone(), persistent=False)
        self.type_embeddings = nn.Parameter(torch.randn(len(names), context_dim))

    @property
    def degradations(self) -> list[str]:
        """The type names, in the order of the logits."""
        return list(self.config.degradations)

    def forward(
        self, images: torch.Tensor, return_dict: bool = True
    ) -> MRDegradationEncoderOutput | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, probabilities and the context of ``images`` (``[B, 3, H, W]`` in [0, 1])."""
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[-2:]) < 8:
            raise ValueError(
                f"expected RGB images [B, 3, H, W] of at least 8 x 8, got {tuple(images.shape)}"
            )
        x = images.to(self.type_embeddings.dtype)
        feats = self.features(2.0 * x - 1.0)
        stats = [t.flatten(2) for t in (x, feats)]
        high = nn.functional.conv2d(x, self.laplacian.to(x.dtype), groups=3).abs().flatten(2)
        pooled = torch.cat(
            [torch.cat([s.mean(-1), s.std(-1), s.amax(-1)], dim=1) for s in stats]
            + [torch.log(high.median(-1).values + 1e-4), torch.log(high.mean(-1) + 1e-4)],
            dim=1,
        )
        logits = self.head(pooled)
        probabilities = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
        context = probabilities @ self.type_embeddings
        if not return_dict:
            return logits, probabilities, context
        return MRDegradationEncoderOutput(logits, probabilities, context)

    def index_of(self, degradation: str) -> int:
        """The position of ``degradation`` in :attr:`degradations`; ``ValueError`` naming the
        known types otherwise."""
        if degradation not in self.config.degradations:
            raise ValueError(
                f"unknown degradation {degradation!r}; this model knows {self.degradations}"
            )
        return self.degradations.index(degradation)

    def context_for(self, degradations: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """The context of named types (or type indices): ``type_embeddings[k]``, ``[B, D]``."""
        if not isinstance(degradations, torch.Tensor):
            degradations = torch.tensor([self.index_of(d) for d in degradations])
        return self.type_embeddings[degradations.to(self.type_embeddings.device).long()]
