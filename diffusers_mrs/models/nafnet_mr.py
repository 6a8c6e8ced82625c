"""Refusion's conditional NAFNet, rewritten as a diffusers model.

Refusion (Luo et al., 2023) replaces IR-SDE's U-Net by a NAFNet (Chen et al., 2022)
conditioned on the timestep: ``MRNAFNetModel`` sees ``concat(x_t - mu, mu)``, like
:class:`~diffusers_mrs.MRUNet2DModel`, and returns a prediction shaped like ``x_t``.

Layout, for base width ``w`` and ``n = len(enc_blk_nums)`` levels:

* ``conv_in``: 3x3 convolution from ``2 * in_channels`` to ``w`` channels;
* ``time_embedding``: ``w`` sinusoidal features, Linear to ``8 w``, a simple gate (the
  product of the two halves), Linear to ``4 w``;
* ``down_blocks[i]``: ``enc_blk_nums[i]`` NAF blocks at ``w 2^i`` channels, whose output is
  kept as a skip, then ``downsamplers[i]``, a 2x2 stride-2 convolution doubling the width;
* ``mid_blocks``: ``middle_blk_num`` NAF blocks at ``w 2^n`` channels;
* ``upsamplers[i]`` (1x1 convolution without bias to twice the channels, then pixel shuffle
  by 2, halving the width), plus the matching skip, then ``up_blocks[i]``;
* ``conv_out``: 3x3 convolution to ``out_channels``; no residual connection to the input.

A NAF block (:class:`MRNAFBlock`) modulates its two layer-normalised branches with the
timestep embedding. The input is padded with zeros on the right and bottom to a multiple
of ``2^n`` (:attr:`MRNAFNetModel.pad_multiple`) and the output cropped back, so any size is
accepted. Parameter names map one to one onto Refusion's checkpoints; see
:mod:`diffusers_mrs.models.nafnet_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .checkpoint_io import IRSDECheckpointMixin
from .embeddings import timestep_batch, timestep_features
from .layers import ChannelLayerNorm
from .nafnet_checkpoint import (
    NAFNetCheckpointError,
    convert_nafnet_state_dict,
    infer_nafnet_config,
    nafnet_original_names,
)
from .outputs import MRUNet2DOutput
from .padding import pad_to_multiple

__all__ = ["MRNAFBlock", "MRNAFNetModel"]


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's activation: split the channels (last dim for 2-d, dim 1 otherwise) in
    two halves and multiply them."""
    a, b = x.chunk(2, dim=1)
    return a * b


class NAFTimestepEmbedding(nn.Module):
    """``linear_2(gate(linear_1(sinusoidal(t))))``: ``num_features`` sinusoidal features,
    ``2 * embed_dim`` hidden units gated to ``embed_dim``."""

    def __init__(self, num_features: int, embed_dim: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.linear_1 = nn.Linear(num_features, 2 * embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Map timesteps ``[B]`` to embeddings ``[B, embed_dim]``."""
        feats = timestep_features(timesteps, self.num_features, self.linear_1.weight.dtype)
        return self.linear_2(simple_gate(self.linear_1(feats)))


class MRNAFBlock(nn.Module):
    """NAFNet block with timestep modulation (Refusion's ``NAFBlock``).

    With ``(shift_1, scale_1, shift_2, scale_2) = time_emb_proj(gate(temb))``:
    ``h = norm1(x) (1 + scale_1) + shift_1``, ``h = gate(conv2(conv1(h)))`` (1x1, then
    depthwise 3x3, doubling then halving the width), ``h = conv3(h * channel_attention(
    mean_hw(h)))``, ``y = x + beta h``; then ``h = norm2(y) (1 + scale_2) + shift_2``,
    ``out = y + gamma conv5(gate(conv4(h)))``.
    """

    def __init__(self, channels: int, temb_channels: int) -> None:
        super().__init__()
        inner = 2 * channels
        self.time_emb_proj = nn.Linear(temb_channels // 2, 4 * channels)
        self.norm1 = ChannelLayerNorm(channels)
        self.conv1 = nn.Conv2d(channels, inner, 1)
        self.conv2 = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        self.channel_attention = nn.Conv2d(inner // 2, inner // 2, 1)
        self.conv3 = nn.Conv2d(inner // 2, channels, 1)
        self.norm2 = ChannelLayerNorm(channels)
        self.conv4 = nn.Conv2d(channels, inner, 1)
        self.conv5 = nn.Conv2d(inner // 2, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` ``[B, C, H, W]`` with embedding ``temb`` ``[B, D]``."""
        modulation = self.time_emb_proj(simple_gate(temb))[:, :, None, None]
        shift_1, scale_1, shift_2, scale_2 = modulation.chunk(4, dim=1)
        h = self.norm1(x) * (scale_1 + 1) + shift_1
        h = simple_gate(self.conv2(self.conv1(h)))
        h = self.conv3(h * self.channel_attention(h.mean(dim=(2, 3), keepdim=True)))
        y = x + h * self.beta
        h = self.norm2(y) * (scale_2 + 1) + shift_2
        h = self.conv5(simple_gate(self.conv4(h)))
        return y + h * self.gamma


class MRNAFUpsample(nn.Module):
    """1x1 convolution (no bias) to twice the channels, then 2x pixel shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C / 2, 2H, 2W]``."""
        return F.pixel_shuffle(self.conv(x), 2)


def _blocks(count: int, channels: int, temb_channels: int) -> nn.ModuleList:
    return nn.ModuleList([MRNAFBlock(channels, temb_channels) for _ in range(count)])


class MRNAFNetModel(ModelMixin, ConfigMixin, IRSDECheckpointMixin):
    r"""Refusion's conditional NAFNet for mean-reverting diffusion image restoration.

    Called as ``model(sample, timestep, mu)``, like :class:`~diffusers_mrs.MRUNet2DModel`,
    and returns :class:`~diffusers_mrs.models.MRUNet2DOutput` (``.sample``).

    Args:
        in_channels: channels of ``sample`` and of ``mu`` (the first convolution sees twice
            as many).
        out_channels: channels of the prediction (Refusion: ``in_channels``).
        width: base width; level ``i`` has ``width * 2**i`` channels. Even, >= 4 (it is
            also the number of sinusoidal timestep features).
        enc_blk_nums: NAF blocks per encoder level (Refusion: ``[1, 1, 1, 28]``).
        middle_blk_num: NAF blocks at the bottleneck (1).
        dec_blk_nums: NAF blocks per decoder level, deepest first (``[1, 1, 1, 1]``); as
            many levels as ``enc_blk_nums``.
        upscale: accepted for Refusion option files, which pass it but never use it; only
            ``1``.
    """

    # Refusion pads with zeros (right, bottom); the tiled pipeline pads the same way.
    pad_mode = "constant"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 64,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
        middle_blk_num: int = 1,
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
        upscale: int = 1,
    ) -> None:
        super().__init__()
        _check_config(width, enc_blk_nums, dec_blk_nums, upscale)
        temb_channels = 4 * width
        self.time_embedding = NAFTimestepEmbedding(width, temb_channels)
        self.conv_in = nn.Conv2d(2 * in_channels, width, 3, padding=1)
        widths = [width * 2**i for i in range(len(enc_blk_nums) + 1)]
        self.down_blocks = nn.ModuleList(
            [_blocks(n, widths[i], temb_channels) for i, n in enumerate(enc_blk_nums)]
        )
        self.downsamplers = nn.ModuleList(
            [nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(len(enc_blk_nums))]
        )
        self.mid_blocks = _blocks(middle_blk_num, widths[-1], temb_channels)
        levels = len(dec_blk_nums)
        self.upsamplers = nn.ModuleList([MRNAFUpsample(widths[levels - i]) for i in range(levels)])
        self.up_blocks = nn.ModuleList(
            [_blocks(n, widths[levels - 1 - i], temb_channels) for i, n in enumerate(dec_blk_nums)]
        )
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    @property
    def pad_multiple(self) -> int:
        """Inputs are zero-padded (right, bottom) to a multiple of this: ``2**levels``."""
        return 2 ** len(self.config.enc_blk_nums)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: float | int | torch.Tensor,
        mu: torch.Tensor,
        return_dict: bool = True,
    ) -> MRUNet2DOutput | tuple[torch.Tensor]:
        """Predict from the state ``sample`` at ``timestep`` given the condition ``mu``.

        Args:
            sample: current state x_t, ``[B, in_channels, H, W]``; any ``H``, ``W``.
            timestep: time in training units (0..T): a Python number, a 0-dim tensor or a
                tensor with one entry per batch item.
            mu: the degraded image, same shape as ``sample``.
            return_dict: return an :class:`MRUNet2DOutput` rather than a tuple.

        Returns:
            The prediction, ``[B, out_channels, H, W]``, in the parameters' dtype.
        """
        if mu.shape != sample.shape:
            raise ValueError(f"mu must have the shape of sample: {mu.shape} vs {sample.shape}.")
        batch, _, height, width = sample.shape
        dtype = self.conv_in.weight.dtype
        sample, mu = sample.to(dtype), mu.to(dtype)
        temb = self.time_embedding(timestep_batch(timestep, batch, sample.device))

        x = pad_to_multiple(torch.cat([sample - mu, mu], dim=1), self.pad_multiple, self.pad_mode)
        x = self.conv_in(x)
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsamplers, strict=True):
            for block in blocks:
                x = block(x, temb)
            skips.append(x)
            x = down(x)
        for block in self.mid_blocks:
            x = block(x, temb)
        for up, blocks in zip(self.upsamplers, self.up_blocks, strict=True):
            x = up(x) + skips.pop()
            for block in blocks:
                x = block(x, temb)
        x = self.conv_out(x)[..., :height, :width]
        if not return_dict:
            return (x,)
        return MRUNet2DOutput(sample=x)

    # Refusion checkpoint format (IRSDECheckpointMixin hooks): width and block counts are
    # inferred from the shapes, every name and shape is checked before allocation.
    _irsde_infer_config = staticmethod(infer_nafnet_config)
    _irsde_convert_state_dict = staticmethod(convert_nafnet_state_dict)
    _irsde_original_names = staticmethod(nafnet_original_names)
    _irsde_error = NAFNetCheckpointError


def _check_config(
    width: int, enc_blk_nums: Sequence[int], dec_blk_nums: Sequence[int], upscale: int
) -> None:
    if upscale != 1:
        raise ValueError(
            f"upscale={upscale} is not supported: ConditionalNAFNet ignores this option and "
            "always returns the input resolution; use upscale=1."
        )
    if width < 4 or width % 2:
        raise ValueError(f"width must be an even number >= 4, got {width}.")
    if len(enc_blk_nums) != len(dec_blk_nums):
        raise ValueError(
            f"enc_blk_nums {list(enc_blk_nums)} and dec_blk_nums {list(dec_blk_nums)} must "
            "have the same number of levels."
        )
