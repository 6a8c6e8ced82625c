"""The attention layers of :class:`~diffusers_mrs.models.unet_mr.MRUNet2DModel`.

IR-SDE's residual, pre-normalised linear ("channel") attention and full softmax attention
over pixels, and DA-CLIP's cross-attention transformer to the image context; the formula of
each is in its docstring, the chunked CPU kernel of the linear one in ``docs/kernels.md``.
Parameter names are the original's, so checkpoints map one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from .layers import ChannelLayerNorm
from .linear_attention import linear_attention_chunked, pixel_chunk, use_chunked_kernel

__all__ = ["MRAttention", "MRContextTransformer", "MRLinearAttention", "make_attention"]


class _PixelAttention(nn.Module):
    """Shared layout of both attentions: a pre-norm, a 1x1 qkv projection and a 1x1 output
    projection over ``heads`` heads of ``dim_head`` channels (the original's names)."""

    def __init__(self, channels: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.norm = ChannelLayerNorm(channels)
        self.to_qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.to_out = nn.Conv2d(inner, channels, 1)


class MRLinearAttention(_PixelAttention):
    """Residual, pre-normalised linear attention (the original's "channel attention").

    Per head, queries are softmax-normalised over their feature dimension and keys over
    positions; a ``dim_head x dim_head`` context ``k v^T`` (with ``v`` averaged over the
    positions) is applied to the queries, so the cost is linear in the number of pixels:
    ``out = (d_head^-1/2 / N) (softmax_N(k) v^T)^T softmax_d(q)`` per head.
    The projected result is normalised again (``out_norm``) and added to the input.
    """

    def __init__(self, channels: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__(channels, heads, dim_head)
        self.out_norm = ChannelLayerNorm(channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``x + out_norm(attention(norm(x)))`` (``context`` is not used).

        CPU inference on images larger than one chunk runs the chunked kernel of
        :mod:`~diffusers_mrs.models.linear_attention` (the same formula, ``docs/kernels.md``).
        """
        xn = self.norm(x)
        chunk = pixel_chunk(x.shape[0], self.heads * self.dim_head)
        if use_chunked_kernel(x, chunk):
            w_qkv = self.to_qkv.weight.flatten(1)
            out = linear_attention_chunked(
                xn, w_qkv, self.to_out.weight.flatten(1), self.to_out.bias, self.heads, chunk
            )
        else:
            out = self.to_out(self._attend(xn))
        return self.out_norm(out) + x

    def _attend(self, xn: torch.Tensor) -> torch.Tensor:
        """``(d_head^-1/2 / N) (softmax_N(k) v^T)^T softmax_d(q)`` per head, whole image."""
        b, _, height, width = xn.shape
        n = height * width
        qkv = self.to_qkv(xn).reshape(b, 3, self.heads, self.dim_head, n)
        q, k, v = qkv.unbind(dim=1)  # each [B, heads, dim_head, N]
        # The query scale and the 1/N of v's mean are applied to the small d x d context,
        # not to the [dim_head, N] tensors: the same product, two fewer passes over pixels.
        context = torch.matmul(k.softmax(dim=-1), v.transpose(-1, -2))  # [B, heads, d_k, d_v]
        context = context * (self.dim_head**-0.5 / n)
        out = torch.matmul(context.transpose(-1, -2), q.softmax(dim=-2))  # [B, heads, d_v, N]
        return out.reshape(b, self.heads * self.dim_head, height, width)


class MRAttention(_PixelAttention):
    """Residual, pre-normalised multi-head softmax self-attention over pixels.

    This is the original's full ``Attention`` (used in the middle of some IR-SDE
    networks), computed with :func:`torch.nn.functional.scaled_dot_product_attention`, so
    the ``N x N`` attention matrix is never materialised by the fused kernels.
    """

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``x + attention(norm(x))`` (``context`` is not used)."""
        b, _, height, width = x.shape
        n = height * width
        qkv = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, self.dim_head, n)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each [B, heads, N, dim_head]
        out = F.scaled_dot_product_attention(q, k, v)  # default scale: dim_head ** -0.5
        out = out.transpose(-1, -2).reshape(b, self.heads * self.dim_head, height, width)
        return self.to_out(out) + x


class MRContextTransformer(nn.Module):
    """DA-CLIP's residual, pre-normalised cross-attention transformer block.

    ``out = x + h + proj_out(block(proj_in(group_norm(h)), context))`` with
    ``h = norm(x)`` (a channel layer norm): the original wraps a spatial transformer, which
    has its own residual connection, in a pre-norm residual, hence the two sums. The
    transformer is diffusers' :class:`~diffusers.Transformer2DModel` (group norm with 32
    groups, 1x1 projections, one block of self-attention, cross-attention to the image
    context and a GEGLU feed-forward), with ``channels // head_dim`` heads of ``head_dim``
    channels; the context is a single token per image (``[B, 1, context_dim]``).
    """

    def __init__(self, channels: int, context_dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.transformer = Transformer2DModel(
            num_attention_heads=channels // head_dim,
            attention_head_dim=head_dim,
            in_channels=channels,
            cross_attention_dim=context_dim,
            norm_num_groups=32,
            activation_fn="geglu",
            attention_bias=False,
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``x + transformer(norm(x), context)`` (the transformer adds its input)."""
        if context is None:
            raise ValueError("this attention layer attends to the image context; pass one.")
        h = self.norm(x)
        return x + self.transformer(h, encoder_hidden_states=context[:, None], return_dict=False)[0]


def make_attention(
    kind: str, channels: int, heads: int, dim_head: int, context_dim: int | None
) -> nn.Module:
    """``"linear"``, ``"full"`` or ``"transformer"`` attention at ``channels`` channels."""
    if kind == "transformer":
        assert context_dim is not None
        return MRContextTransformer(channels, context_dim)
    if kind == "full":
        return MRAttention(channels, heads, dim_head)
    return MRLinearAttention(channels, heads, dim_head)
