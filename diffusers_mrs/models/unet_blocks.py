"""The building blocks of :class:`~diffusers_mrs.models.unet_mr.MRUNet2DModel`.

The timestep embedding, the residual block, DA-CLIP's degradation prompt, and the encoder,
middle and decoder levels that hold them (with an attention layer of
:mod:`~diffusers_mrs.models.unet_attention`). The formula of each is in its docstring;
parameter names are the original's, so checkpoints map one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import timestep_features

__all__ = [
    "MRDegradationEmbedding",
    "MRDownBlock",
    "MRMidBlock",
    "MRResnetBlock",
    "MRTimestepEmbedding",
    "MRUpBlock",
]


class MRTimestepEmbedding(nn.Module):
    """Sinusoidal features followed by a two-layer GELU MLP."""

    def __init__(self, num_features: int, embed_dim: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.linear_1 = nn.Linear(num_features, embed_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Map timesteps of shape ``[B]`` to embeddings of shape ``[B, embed_dim]``."""
        feats = timestep_features(timesteps, self.num_features, self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(feats)))


class MRResnetBlock(nn.Module):
    """Two 3x3 convolutions with SiLU, timestep scale/shift after the first one.

    ``out = silu(conv2(silu(conv1(x) * (1 + scale) + shift))) + shortcut(x)``, where
    ``(scale, shift)`` come from ``time_emb_proj(silu(temb))`` and ``shortcut`` is a 1x1
    convolution when the width changes (identity otherwise). Convolutions have no bias.
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int) -> None:
        super().__init__()
        self.time_emb_proj = nn.Linear(temb_channels, 2 * out_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.conv_shortcut: nn.Module
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        else:
            self.conv_shortcut = nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` ``[B, C_in, H, W]`` with embedding ``temb`` ``[B, D]``."""
        scale, shift = self.time_emb_proj(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.conv1(x) * (scale + 1) + shift)
        h = F.silu(self.conv2(h))
        return h + self.conv_shortcut(x)


class MRDegradationEmbedding(nn.Module):
    """DA-CLIP's degradation prompt, added to the time embedding.

    ``linear_out(softmax(linear_2(silu(linear_1(c))), dim=1) * prompt)`` for a degradation
    context ``c`` of shape ``[B, context_dim]``; ``prompt`` is a learned ``[1, D]`` vector
    (the original's ``text_mlp``, ``prompt`` and ``prompt_mlp``).
    """

    def __init__(self, context_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.prompt = nn.Parameter(torch.rand(1, embed_dim))
        self.linear_1 = nn.Linear(context_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)
        self.linear_out = nn.Linear(embed_dim, embed_dim)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """Map ``[B, context_dim]`` to ``[B, embed_dim]``."""
        weights = torch.softmax(self.linear_2(self.act(self.linear_1(context))), dim=1)
        return self.linear_out(weights * self.prompt)


class MRDownBlock(nn.Module):
    """One encoder level: two residual blocks, attention, then ``out_conv``.

    ``out_conv`` halves the resolution (4x4, stride 2, with bias) when ``downsample``,
    otherwise it is a 3x3 convolution without bias; either way it maps ``in_channels`` to
    ``out_channels``. ``attention`` works at ``in_channels`` (linear attention, or DA-CLIP's
    context transformer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        downsample: bool,
        attention: nn.Module,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [MRResnetBlock(in_channels, in_channels, temb_channels) for _ in range(2)]
        )
        self.attention = attention
        self.downsample = downsample
        if downsample:
            self.out_conv = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)
        else:
            self.out_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(output, skip_0, skip_1)``."""
        skip_0 = self.resnets[0](x, temb)
        skip_1 = self.attention(self.resnets[1](skip_0, temb), context)
        return self.out_conv(skip_1), skip_0, skip_1


class MRUpBlock(nn.Module):
    """One decoder level: two skip-concatenating residual blocks, attention, ``out_conv``.

    The block works at ``out_channels`` (the width of the matching encoder level's output);
    ``out_conv`` maps back to ``in_channels``, preceded by 2x nearest-neighbour upsampling
    when ``upsample`` (3x3 with bias), or a bias-free 3x3 convolution on the shallowest
    level. The residual blocks see ``out_channels + in_channels`` channels (one skip each).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        upsample: bool,
        attention: nn.Module,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                MRResnetBlock(out_channels + in_channels, out_channels, temb_channels)
                for _ in range(2)
            ]
        )
        self.attention = attention
        self.upsample = upsample
        self.out_conv = nn.Conv2d(out_channels, in_channels, 3, padding=1, bias=upsample)

    def forward(
        self,
        x: torch.Tensor,
        skip_0: torch.Tensor,
        skip_1: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Consume the matching encoder skips (``skip_1`` first, as they were pushed)."""
        x = self.resnets[0](torch.cat([x, skip_1], dim=1), temb)
        x = self.resnets[1](torch.cat([x, skip_0], dim=1), temb)
        x = self.attention(x, context)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.out_conv(x)


class MRMidBlock(nn.Module):
    """Bottleneck: residual block, attention (linear, full or transformer), residual block."""

    def __init__(self, channels: int, temb_channels: int, attention: nn.Module) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [MRResnetBlock(channels, channels, temb_channels) for _ in range(2)]
        )
        self.attention = attention

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the three layers in order."""
        x = self.resnets[0](x, temb)
        x = self.attention(x, context)
        return self.resnets[1](x, temb)
