"""The IR-SDE / DA-CLIP conditional U-Net, rewritten as a diffusers model.

`MRUNet2DModel` reproduces the network that IR-SDE (Luo et al., 2023) and the MR Sampler
paper train for image restoration (`ConditionalUNet` in the IR-SDE code base): a U-Net
whose input is the noisy state *relative to* the degraded image, stacked with the degraded
image itself, i.e. ``concat(x_t - mu, mu)`` along channels. Its output has the shape of
``x_t``; what it means (noise, clean image or velocity) is decided by the scheduler's
``prediction_type``, not by the network.

Layout, for ``depth`` levels and base width ``nf`` (level ``i`` has ``nf * 2**i`` channels
in IR-SDE; DA-CLIP sets the widths per level with ``ch_mult``):

* ``conv_in``: 7x7 convolution (no bias) from ``2 * in_channels`` to ``nf`` channels;
* ``time_embedding``: sinusoidal features of the timestep (``nf`` of them), then
  Linear -> GELU -> Linear to ``4 * nf`` channels, shared by every residual block;
* ``down_blocks[i]``: two residual blocks, one residual pre-normalised linear (channel)
  attention, then ``out_conv``: a strided 4x4 convolution that halves the resolution and
  doubles the width, except on the deepest level, where a 3x3 convolution only doubles the
  width;
* ``mid_block``: residual block, attention, residual block at ``nf * 2**depth`` channels;
* ``up_blocks[j]``: mirror of the down path; each residual block first concatenates one
  skip tensor; ``out_conv`` is nearest-neighbour upsampling followed by a 3x3 convolution,
  except on the shallowest level (a 3x3 convolution only);
* ``final_resnet`` on ``concat(features, conv_in output)`` and the 3x3 ``conv_out``.

DA-CLIP (Luo et al., 2024) adds two per-image context vectors from its image encoder: the
image context feeds cross-attention transformers that replace the linear attention from
level 3 down and in the middle, the degradation context is added to the time embedding
through a learned prompt (``degradation_embedding``).

The spatial size is padded (reflect) to a multiple of ``2**depth`` and cropped back, so
any height and width are accepted. Module and parameter names are chosen so that a
checkpoint of the original network maps one to one onto this one; see
:mod:`diffusers_mrs.models.irsde_checkpoint`. The levels' layers are in
:mod:`~diffusers_mrs.models.unet_blocks` and :mod:`~diffusers_mrs.models.unet_attention`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .embeddings import sinusoidal_embedding, timestep_batch
from .irsde_checkpoint import (
    IRSDECheckpointMixin,
    convert_irsde_state_dict,
    convert_to_irsde_names,
    infer_irsde_config,
)
from .outputs import MRUNet2DOutput
from .padding import pad_to_multiple
from .unet_attention import MRAttention as MRAttention  # re-exported (defined here before)
from .unet_attention import MRContextTransformer as MRContextTransformer
from .unet_attention import MRLinearAttention as MRLinearAttention
from .unet_attention import make_attention
from .unet_blocks import (
    MRDegradationEmbedding,
    MRDownBlock,
    MRMidBlock,
    MRResnetBlock,
    MRTimestepEmbedding,
    MRUpBlock,
)

__all__ = ["MRUNet2DModel", "MRUNet2DOutput", "sinusoidal_embedding"]


class MRUNet2DModel(ModelMixin, ConfigMixin, IRSDECheckpointMixin):
    r"""The IR-SDE / DA-CLIP conditional U-Net for mean-reverting diffusion restoration.

    The network receives the current state ``sample`` (x_t), the timestep in training
    units (0..T) and the condition ``mu`` (the degraded image, same shape as ``sample``),
    and sees ``concat(sample - mu, mu)``. DA-CLIP's variant also takes two per-image
    context vectors from its image encoder: the image context
    drives cross-attention transformers at the deepest levels and the middle, the
    degradation context is added to the time embedding through a learned prompt.

    Args:
        in_channels: channels of ``sample`` and of ``mu`` (the first convolution sees twice
            as many).
        out_channels: channels of the prediction.
        nf: base width. Must be even (it is also the number of sinusoidal timestep
            features).
        depth: number of encoder/decoder levels (``depth - 1`` resolution halvings);
            inputs are padded to a multiple of ``2**depth``, as in the original. Default
            ``len(ch_mult)``, or 4.
        upscale: kept for compatibility with IR-SDE option files, which pass it but never
            use it; only ``1`` is accepted.
        mid_attention: ``"linear"`` (the IR-SDE ``ConditionalUNet``) or ``"full"``
            (softmax self-attention, as the unconditional IR-SDE U-Net uses in its middle);
            ignored with an image context (the middle is then a transformer).
        attention_heads: heads of every linear/full attention layer (4 in the original).
        attention_head_dim: width of each of those heads (32 in the original).
        ch_mult: output width of each level in units of ``nf`` (DA-CLIP's option, e.g.
            ``[1, 2, 4, 8]``: widths ``nf x [1, 1, 2, 4, 8]``). Default: IR-SDE's doubling
            ``[2, 4, ..., 2**depth]``.
        context_dim: width of the DA-CLIP context vectors (512); needed by the two options
            below.
        use_image_context: cross-attention transformers (``channels // 32`` heads of 32)
            at levels ``>= transformer_start_level`` and in the middle.
        use_degra_context: add the degradation prompt to the time embedding.
        transformer_start_level: first level with a transformer (3 in DA-CLIP; Wild-IR puts
            it on the deepest level only, ``depth - 1``, which is 3 for its four levels).
        inner_scale: resolution of the U-Net's levels relative to the ``conv_in`` output:
            ``1`` (IR-SDE, DA-CLIP), or ``0.5`` (Wild-IR's ``scale: 0.5``): a strided 4x4
            convolution (``inner_downsample``) runs before the first level and 2x
            nearest-neighbour upsampling followed by a 3x3 convolution
            (``inner_upsample``) after the last one; ``final_resnet`` still sees the
            full-resolution ``conv_in`` output. The input is padded to ``2**depth`` either
            way, as in the original.
    """

    _supports_gradient_checkpointing = True
    # How the input is padded up to pad_multiple (the tiled pipeline pads the same way).
    pad_mode = "reflect"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        nf: int = 64,
        depth: int | None = None,
        upscale: int = 1,
        mid_attention: str = "linear",
        attention_heads: int = 4,
        attention_head_dim: int = 32,
        ch_mult: list[int] | None = None,
        context_dim: int | None = None,
        use_image_context: bool = False,
        use_degra_context: bool = False,
        transformer_start_level: int = 3,
        inner_scale: float = 1.0,
    ) -> None:
        super().__init__()
        _check_inner_scale(inner_scale)
        widths = _check_config(
            nf,
            depth,
            upscale,
            mid_attention,
            ch_mult,
            context_dim,
            use_image_context,
            use_degra_context,
            transformer_start_level,
        )
        depth = len(widths) - 1
        self.register_to_config(depth=depth)

        temb_channels = 4 * nf
        self.conv_in = nn.Conv2d(2 * in_channels, nf, 7, padding=3, bias=False)
        self.time_embedding = MRTimestepEmbedding(nf, temb_channels)
        self.degradation_embedding = (
            MRDegradationEmbedding(context_dim, temb_channels) if use_degra_context else None
        )
        self._build_levels(widths, temb_channels)
        self.inner_downsample, self.inner_upsample = _inner_resampling(nf, inner_scale)
        self.final_resnet = MRResnetBlock(2 * nf, nf, temb_channels)
        self.conv_out = nn.Conv2d(nf, out_channels, 3, padding=1)
        # A new network starts at output 0: with velocity or noise targets that is "return
        # the (noisy) input", a sane baseline that training only improves on. Loaded weights
        # (from_pretrained, IR-SDE checkpoints) replace it.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.gradient_checkpointing = False

    def _attention(self, level: int | None, channels: int) -> nn.Module:
        """The attention layer of encoder/decoder ``level`` (``None``: the middle): a
        cross-attention transformer at deep levels of image-context networks, otherwise
        linear attention (``mid_attention`` in the middle)."""
        config = self.config
        deep = level is None or level >= config.transformer_start_level
        kind = "transformer" if config.use_image_context and deep else "linear"
        if level is None and kind == "linear":
            kind = config.mid_attention
        return make_attention(
            kind, channels, config.attention_heads, config.attention_head_dim, config.context_dim
        )

    def _build_levels(self, widths: list[int], temb_channels: int) -> None:
        """``down_blocks``, ``mid_block`` and ``up_blocks`` for the level ``widths``."""
        depth = len(widths) - 1
        self.down_blocks = nn.ModuleList(
            [
                MRDownBlock(
                    widths[i],
                    widths[i + 1],
                    temb_channels,
                    i < depth - 1,
                    self._attention(i, widths[i]),
                )
                for i in range(depth)
            ]
        )
        self.mid_block = MRMidBlock(
            widths[depth], temb_channels, self._attention(None, widths[depth])
        )
        # up_blocks[j] mirrors down_blocks[depth - 1 - j].
        self.up_blocks = nn.ModuleList(
            [
                MRUpBlock(
                    widths[i],
                    widths[i + 1],
                    temb_channels,
                    i > 0,
                    self._attention(i, widths[i + 1]),
                )
                for i in reversed(range(depth))
            ]
        )

    @property
    def pad_multiple(self) -> int:
        """The size multiple the input is reflect-padded to (``2**depth``): the network sees
        the same pixels whether it runs on a whole image or on tiles aligned to this grid."""
        return 2 ** int(self.config.depth)

    def _context(
        self, name: str, context: torch.Tensor | None, batch: int, used: bool
    ) -> torch.Tensor | None:
        """Check a context vector (``[B, context_dim]`` or ``[1, context_dim]``) and give it
        the batch size and the parameters' dtype; ``None`` when the network has no use."""
        if not used:
            return None
        if context is None:
            if name == "image_context":
                raise ValueError(
                    "this network attends to an image context (DA-CLIP): pass "
                    f"image_context of shape [batch, {self.config.context_dim}] (the "
                    "pipeline computes it with its image_encoder)."
                )
            return None
        dim = self.config.context_dim
        if context.ndim != 2 or context.shape[1] != dim or context.shape[0] not in (1, batch):
            raise ValueError(
                f"{name} must have shape [{batch}, {dim}] (or [1, {dim}]), got "
                f"{tuple(context.shape)}."
            )
        return context.to(self.conv_in.weight.dtype).expand(batch, dim)

    def _run(self, module: nn.Module, *args: Any) -> Any:
        """Call ``module``, through activation checkpointing when it is enabled."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            func = getattr(self, "_gradient_checkpointing_func", None)
            if func is not None:
                return func(module, *args)
            return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: float | int | torch.Tensor,
        mu: torch.Tensor,
        image_context: torch.Tensor | None = None,
        degradation_context: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> MRUNet2DOutput | tuple[torch.Tensor]:
        """Predict from the state ``sample`` at ``timestep`` given the condition ``mu``.

        Args:
            sample: current state x_t, ``[B, in_channels, H, W]``; any ``H``, ``W``.
            timestep: time in training units (0..T): a Python number, a 0-dim tensor or a
                tensor with one entry per batch item.
            mu: the degraded image (mean-reversion target), same shape as ``sample``.
            image_context: DA-CLIP image embedding ``[B, context_dim]`` (or ``[1, ...]``
                for the whole batch); required by networks with ``use_image_context``,
                ignored by the others.
            degradation_context: DA-CLIP degradation embedding, same shape; added through
                the prompt by networks with ``use_degra_context`` (skipped when ``None``,
                as in the original), ignored by the others.
            return_dict: return an :class:`MRUNet2DOutput` rather than a tuple.

        Returns:
            The prediction, ``[B, out_channels, H, W]``, in the parameters' dtype.
        """
        if mu.shape != sample.shape:
            raise ValueError(f"mu must have the shape of sample: {mu.shape} vs {sample.shape}.")
        batch, _, height, width = sample.shape
        dtype = self.conv_in.weight.dtype
        sample = sample.to(dtype)
        mu = mu.to(dtype)
        context = self._context(
            "image_context", image_context, batch, self.config.use_image_context
        )
        degradation = self._context(
            "degradation_context", degradation_context, batch, self.config.use_degra_context
        )

        temb = self.time_embedding(timestep_batch(timestep, batch, sample.device))
        if degradation is not None:
            temb = temb + self.degradation_embedding(degradation)

        x = pad_to_multiple(torch.cat([sample - mu, mu], dim=1), self.pad_multiple, self.pad_mode)
        x = self._unet(self.conv_in(x), temb, context)
        x = self.conv_out(x)[..., :height, :width]

        if not return_dict:
            return (x,)
        return MRUNet2DOutput(sample=x)

    def _unet(
        self, stem: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        """Down path, middle, up path (one skip pair per level) and ``final_resnet`` on
        ``concat(features, stem)``, from the ``conv_in`` output ``stem`` (the levels run at
        half its resolution with ``inner_scale=0.5``)."""
        x = stem if self.inner_downsample is None else self.inner_downsample(stem)
        skips: list[tuple[torch.Tensor, torch.Tensor]] = []
        for block in self.down_blocks:
            x, skip_0, skip_1 = self._run(block, x, temb, context)
            skips.append((skip_0, skip_1))
        x = self._run(self.mid_block, x, temb, context)
        for block in self.up_blocks:
            skip_0, skip_1 = skips.pop()
            x = self._run(block, x, skip_0, skip_1, temb, context)
        if self.inner_upsample is not None:
            x = self.inner_upsample(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self._run(self.final_resnet, torch.cat([x, stem], dim=1), temb)

    # IR-SDE / DA-CLIP checkpoint format (IRSDECheckpointMixin hooks).
    _irsde_infer_config = staticmethod(infer_irsde_config)
    _irsde_convert_state_dict = staticmethod(convert_irsde_state_dict)
    _irsde_original_names = staticmethod(convert_to_irsde_names)


#: Bounds on the architecture, checked before any parameter is allocated: a config with
#: ``nf=1e6`` would otherwise ask for terabytes. The original networks stay far below. A
#: skeleton built on the ``meta`` device (checkpoint checks) allocates nothing and is not
#: bounded, so a stray checkpoint entry is still named against the network it implies.
MAX_WIDTH, MAX_DEPTH = 4096, 8


def _check_config(
    nf: int,
    depth: int | None,
    upscale: int,
    mid_attention: str,
    ch_mult: list[int] | None,
    context_dim: int | None,
    use_image_context: bool,
    use_degra_context: bool,
    transformer_start_level: int,
) -> list[int]:
    """Validate the constructor arguments; return the level widths ``[nf, w_1, ..., w_D]``."""
    if upscale != 1:
        raise ValueError(
            f"upscale={upscale} is not supported: the IR-SDE U-Net ignores this option "
            "and always returns the input resolution; use upscale=1."
        )
    if nf < 4 or nf % 2:
        raise ValueError(f"nf must be an even number >= 4, got {nf}.")
    if mid_attention not in ("linear", "full"):
        raise ValueError(f"mid_attention must be 'linear' or 'full', got {mid_attention!r}.")
    if ch_mult is None:
        depth = 4 if depth is None else depth
        ch_mult = [2 ** (i + 1) for i in range(max(depth, 0))]
    elif depth is not None and depth != len(ch_mult):
        raise ValueError(f"depth={depth} contradicts ch_mult={list(ch_mult)} (one per level).")
    if len(ch_mult) < 1 or any(int(m) < 1 for m in ch_mult):
        raise ValueError(f"need at least one level and positive ch_mult, got {list(ch_mult)}.")
    widths = [nf] + [nf * int(m) for m in ch_mult]
    allocates = torch.get_default_device().type != "meta"  # a meta skeleton holds nothing
    if allocates and (max(widths) > MAX_WIDTH or len(ch_mult) > MAX_DEPTH):
        raise ValueError(
            f"nf={nf}, ch_mult={list(ch_mult)} give {len(ch_mult)} levels of up to "
            f"{max(widths)} channels; the supported maximum is {MAX_DEPTH} levels of "
            f"{MAX_WIDTH} channels (the original networks: 4 levels, up to 512)."
        )
    if (use_image_context or use_degra_context) and not context_dim:
        raise ValueError("use_image_context/use_degra_context need context_dim (512 in DA-CLIP).")
    if use_image_context:
        deep = widths[transformer_start_level:-1] + widths[transformer_start_level + 1 :]
        bad = sorted({w for w in [*deep, widths[-1]] if w % 32})
        if bad:
            raise ValueError(
                f"transformer levels need widths divisible by 32 (group norm, 32-wide heads); "
                f"got {bad} from nf={nf}, ch_mult={list(ch_mult)}."
            )
    return widths


def _check_inner_scale(inner_scale: float) -> None:
    """Only the original's two settings exist: 1 and Wild-IR's 0.5."""
    if inner_scale not in (1, 0.5):
        raise ValueError(
            f"inner_scale must be 1 or 0.5 (Wild-IR's `scale: 0.5`), got {inner_scale!r}."
        )


def _inner_resampling(nf: int, inner_scale: float) -> tuple[nn.Module | None, nn.Module | None]:
    """Wild-IR's pair around the levels (``inner_scale=0.5``): a 4x4 stride-2 convolution
    and the 3x3 convolution that follows 2x nearest upsampling, both ``nf -> nf`` with
    bias; ``(None, None)`` otherwise."""
    if inner_scale == 1:
        return None, None
    return nn.Conv2d(nf, nf, 4, stride=2, padding=1), nn.Conv2d(nf, nf, 3, padding=1)
