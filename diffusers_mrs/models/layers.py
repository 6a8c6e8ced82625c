"""Network layers shared by the model families (the IR-SDE U-Net, Refusion's NAFNet).

The math of each layer is in its docstring; ``docs/kernels.md`` explains how the channel
normalisation is computed.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelLayerNorm"]


class ChannelLayerNorm(nn.Module):
    """Layer normalisation across channels of an NCHW tensor, learned gain, no bias.

    The gain keeps the original's ``[1, C, 1, 1]`` shape so checkpoints map unchanged.
    Statistics are always computed in (at least) float32 with epsilon 1e-5, which is the
    original's float32 behaviour. (The original switches to epsilon 1e-3 in half
    precision; for weights trained in float32 that moves float16/bfloat16 outputs by
    ~10% of their range, against ~0.1% when normalising in float32 as done here.)
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, num_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` over its channel dimension.

        ``d = x - mean_c(x)``, ``y = d / sqrt(mean_c(d^2) + eps) * weight``: the biased
        variance as the mean of squared deviations, computed after the mean (two plain
        reductions over channels), which equals ``torch.var_mean`` to rounding and is
        several times faster on NCHW tensors, where ``var_mean`` over dim 1 is slow
        (``docs/kernels.md``).
        """
        xf = x if x.dtype == torch.float64 else x.float()
        deviation = xf - xf.mean(dim=1, keepdim=True)
        var = deviation.square().mean(dim=1, keepdim=True)
        normed = deviation * torch.rsqrt(var + self.eps)
        return (normed * self.weight.to(xf.dtype)).to(x.dtype)
