"""The IR-SDE / DA-CLIP ``ConditionalUNet`` checkpoint format (:class:`MRUNet2DModel`).

IR-SDE saves its generator as a plain ``state_dict`` of ``ConditionalUNet`` (file names
like ``latest_G.pth``); other tools wrap it with a ``module.`` prefix (DataParallel) or
nest it under a key such as ``"params"`` or ``"state_dict"``. The parameter names map
one to one, with identical shapes, onto ours (IR-SDE -> diffusers-mrs):

- ``init_conv`` -> ``conv_in``; ``final_conv`` -> ``conv_out``;
  ``final_res_block`` -> ``final_resnet``;
- ``time_mlp.1`` / ``time_mlp.3`` -> ``time_embedding.linear_1`` / ``.linear_2``;
- ``downs.{i}.0`` / ``.1`` / ``.2`` / ``.3`` -> ``down_blocks.{i}.resnets.0`` /
  ``.resnets.1`` / ``.attention`` / ``.out_conv``;
- ``ups.{j}.0`` / ``.1`` / ``.2`` -> ``up_blocks.{j}.resnets.0`` / ``.resnets.1`` /
  ``.attention``; ``ups.{j}.3.1`` (upsampling levels) or ``ups.{j}.3`` (shallowest
  level) -> ``up_blocks.{j}.out_conv``;
- ``mid_block1`` / ``mid_attn`` / ``mid_block2`` -> ``mid_block.resnets.0`` /
  ``.attention`` / ``.resnets.1``;
- inside residual blocks: ``mlp.1`` -> ``time_emb_proj``, ``block1.proj`` -> ``conv1``,
  ``block2.proj`` -> ``conv2``, ``res_conv`` -> ``conv_shortcut``;
- inside attention layers: ``fn.norm.g`` -> ``norm.weight``, ``fn.fn.to_qkv`` ->
  ``to_qkv``, ``fn.fn.to_out.0`` (linear) or ``fn.fn.to_out`` (full) -> ``to_out``,
  ``fn.fn.to_out.1.g`` -> ``out_norm.weight``.
- DA-CLIP's context parts: ``prompt`` / ``text_mlp.0`` / ``text_mlp.2`` / ``prompt_mlp``
  -> ``degradation_embedding.prompt`` / ``.linear_1`` / ``.linear_2`` / ``.linear_out``;
  Wild-IR's ``downsample`` / ``upsample.1`` (``scale: 0.5``) -> ``inner_downsample`` /
  ``inner_upsample``;
  in its transformer attention layers ``fn.fn.<rest>`` -> ``transformer.<rest>`` (the
  spatial transformer's names and diffusers' ``Transformer2DModel``'s coincide).

Reading files (nesting, prefixes, ``weights_only``) and the structural check before
allocation live in :mod:`diffusers_mrs.models.checkpoint_io`; this module only knows the
names and how to read the architecture off the shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .checkpoint_io import (
    NESTED_KEYS,
    IRSDECheckpointError,
    IRSDECheckpointMixin,
    extract_state_dict,
    read_checkpoint,
    strip_wrappers,
)
from .checkpoint_io import preview_names as _preview

__all__ = [
    "NESTED_KEYS",
    "IRSDECheckpointError",
    "IRSDECheckpointMixin",
    "convert_irsde_state_dict",
    "convert_to_irsde_names",
    "convert_to_irsde_state_dict",
    "extract_state_dict",
    "infer_irsde_config",
    "load_irsde_checkpoint",
    "map_irsde_key",
    "read_checkpoint",
]

# Top-level prefixes: original -> ours (what follows the prefix is mapped by the tables below).
_BLOCK_RULES: list[tuple[re.Pattern[str], str, str]] = [
    # (pattern on the original key, replacement prefix, kind of the remainder)
    (re.compile(r"^init_conv\.(?P<rest>.+)$"), "conv_in.", "plain"),
    (re.compile(r"^time_mlp\.1\.(?P<rest>.+)$"), "time_embedding.linear_1.", "plain"),
    (re.compile(r"^time_mlp\.3\.(?P<rest>.+)$"), "time_embedding.linear_2.", "plain"),
    (re.compile(r"^(?P<rest>prompt)$"), "degradation_embedding.", "prompt"),
    (re.compile(r"^text_mlp\.0\.(?P<rest>.+)$"), "degradation_embedding.linear_1.", "plain"),
    (re.compile(r"^text_mlp\.2\.(?P<rest>.+)$"), "degradation_embedding.linear_2.", "plain"),
    (re.compile(r"^prompt_mlp\.(?P<rest>.+)$"), "degradation_embedding.linear_out.", "plain"),
    (re.compile(r"^downsample\.(?P<rest>weight|bias)$"), "inner_downsample.", "plain"),
    (re.compile(r"^upsample\.1\.(?P<rest>weight|bias)$"), "inner_upsample.", "plain"),
    (
        re.compile(r"^downs\.(?P<i>\d+)\.(?P<r>[01])\.(?P<rest>.+)$"),
        "down_blocks.{i}.resnets.{r}.",
        "resnet",
    ),
    (re.compile(r"^downs\.(?P<i>\d+)\.2\.(?P<rest>.+)$"), "down_blocks.{i}.attention.", "attn"),
    (
        re.compile(r"^downs\.(?P<i>\d+)\.3\.(?P<rest>weight|bias)$"),
        "down_blocks.{i}.out_conv.",
        "plain",
    ),
    (
        re.compile(r"^ups\.(?P<i>\d+)\.(?P<r>[01])\.(?P<rest>.+)$"),
        "up_blocks.{i}.resnets.{r}.",
        "resnet",
    ),
    (re.compile(r"^ups\.(?P<i>\d+)\.2\.(?P<rest>.+)$"), "up_blocks.{i}.attention.", "attn"),
    (
        re.compile(r"^ups\.(?P<i>\d+)\.3\.1\.(?P<rest>weight|bias)$"),
        "up_blocks.{i}.out_conv.",
        "plain",
    ),
    (
        re.compile(r"^ups\.(?P<i>\d+)\.3\.(?P<rest>weight|bias)$"),
        "up_blocks.{i}.out_conv.",
        "plain",
    ),
    (re.compile(r"^mid_block1\.(?P<rest>.+)$"), "mid_block.resnets.0.", "resnet"),
    (re.compile(r"^mid_block2\.(?P<rest>.+)$"), "mid_block.resnets.1.", "resnet"),
    (re.compile(r"^mid_attn\.(?P<rest>.+)$"), "mid_block.attention.", "attn"),
    (re.compile(r"^final_res_block\.(?P<rest>.+)$"), "final_resnet.", "resnet"),
    (re.compile(r"^final_conv\.(?P<rest>weight|bias)$"), "conv_out.", "plain"),
]

_RESNET_INNER = {
    "mlp.1.weight": "time_emb_proj.weight",
    "mlp.1.bias": "time_emb_proj.bias",
    "block1.proj.weight": "conv1.weight",
    "block2.proj.weight": "conv2.weight",
    "res_conv.weight": "conv_shortcut.weight",
}
_ATTN_INNER = {
    "fn.norm.g": "norm.weight",
    "fn.fn.to_qkv.weight": "to_qkv.weight",
    "fn.fn.to_out.0.weight": "to_out.weight",  # linear attention: conv then layer norm
    "fn.fn.to_out.0.bias": "to_out.bias",
    "fn.fn.to_out.1.g": "out_norm.weight",
    "fn.fn.to_out.weight": "to_out.weight",  # full attention: conv only
    "fn.fn.to_out.bias": "to_out.bias",
}
# DA-CLIP's spatial transformer: same names as diffusers' Transformer2DModel.
_TRANSFORMER_INNER = re.compile(
    r"^fn\.fn\.(?P<inner>(norm|proj_in|proj_out)\.(weight|bias)"
    r"|transformer_blocks\.\d+\.(norm[123]\.(weight|bias)|attn[12]\.to_[qkv]\.weight"
    r"|attn[12]\.to_out\.0\.(weight|bias)|ff\.net\.0\.proj\.(weight|bias)|ff\.net\.2\.(weight|bias)))$"
)
_PLAIN_INNER = {"weight": "weight", "bias": "bias"}
_INNER = {
    "plain": _PLAIN_INNER,
    "resnet": _RESNET_INNER,
    "attn": _ATTN_INNER,
    "prompt": {"prompt": "prompt"},
}


def map_irsde_key(key: str) -> str | None:
    """Our name for the IR-SDE / DA-CLIP parameter ``key`` (wrappers allowed), or ``None``."""
    key = strip_wrappers(key)
    for pattern, prefix, kind in _BLOCK_RULES:
        match = pattern.match(key)
        if match is None:
            continue
        rest = match.group("rest")
        inner = _INNER[kind].get(rest)
        if inner is None and kind == "attn":
            transformer = _TRANSFORMER_INNER.match(rest)
            inner = "transformer." + transformer.group("inner") if transformer else None
        if inner is None:
            return None
        return prefix.format(**match.groupdict()) + inner
    return None


def convert_irsde_state_dict(
    state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> dict[str, torch.Tensor]:
    """Rename an IR-SDE / DA-CLIP ``ConditionalUNet`` state dict to our names.

    ``module.``/``_orig_mod.`` prefixes are removed; the order of the entries is kept.
    Tensors are not copied or reshaped.

    Args:
        state_dict: the original parameters.
        strict: raise :class:`IRSDECheckpointError` on names that belong to no part of the
            network (otherwise they are dropped).
    """
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        new_key = map_irsde_key(key)
        if new_key is None:
            unknown.append(key)
            continue
        if new_key in converted:
            raise IRSDECheckpointError(f"two checkpoint entries map to {new_key!r} (e.g. {key!r})")
        converted[new_key] = value
    if unknown and strict:
        raise IRSDECheckpointError(
            f"{len(unknown)} checkpoint entries are not ConditionalUNet parameters: "
            f"{_preview(unknown)} (expected a generator checkpoint, e.g. 'latest_G.pth' or "
            "'universal-ir.pth', of models/modules/DenoisingUNet_arch.py:ConditionalUNet)"
        )
    return converted


def convert_to_irsde_names(state_dict: Mapping[str, Any]) -> dict[str, str | None]:
    """Our parameter names (the keys of ``state_dict``) -> the original names (or ``None``)."""
    num_up = len({k.split(".")[1] for k in state_dict if k.startswith("up_blocks.")})
    return {key: _unmap_key(key, state_dict, num_up) for key in state_dict}


def convert_to_irsde_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_irsde_state_dict`: our names back to the original names."""
    out: dict[str, torch.Tensor] = {}
    for key, orig in convert_to_irsde_names(state_dict).items():
        if orig is None:
            raise IRSDECheckpointError(f"{key!r} is not an MRUNet2DModel parameter name")
        out[orig] = state_dict[key]
    return out


_SIMPLE_INVERSE = {
    "conv_in.": "init_conv.",
    "time_embedding.linear_1.": "time_mlp.1.",
    "time_embedding.linear_2.": "time_mlp.3.",
    "conv_out.": "final_conv.",
    "degradation_embedding.linear_1.": "text_mlp.0.",
    "degradation_embedding.linear_2.": "text_mlp.2.",
    "degradation_embedding.linear_out.": "prompt_mlp.",
    "degradation_embedding.prompt": "prompt",
    "inner_downsample.": "downsample.",
    "inner_upsample.": "upsample.1.",
}
_NESTED_INVERSE: list[tuple[str, str, str]] = [
    (r"^down_blocks\.(\d+)\.resnets\.([01])\.(.+)$", "downs.{0}.{1}.", "resnet"),
    (r"^down_blocks\.(\d+)\.attention\.(.+)$", "downs.{0}.2.", "attn"),
    (r"^down_blocks\.(\d+)\.out_conv\.(.+)$", "downs.{0}.3.", "plain"),
    (r"^up_blocks\.(\d+)\.resnets\.([01])\.(.+)$", "ups.{0}.{1}.", "resnet"),
    (r"^up_blocks\.(\d+)\.attention\.(.+)$", "ups.{0}.2.", "attn"),
    (r"^up_blocks\.(\d+)\.out_conv\.(.+)$", "ups.{0}.3.", "upconv"),
    (r"^mid_block\.resnets\.0\.(.+)$", "mid_block1.", "resnet"),
    (r"^mid_block\.resnets\.1\.(.+)$", "mid_block2.", "resnet"),
    (r"^mid_block\.attention\.(.+)$", "mid_attn.", "attn"),
    (r"^final_resnet\.(.+)$", "final_res_block.", "resnet"),
]


def _unmap_key(key: str, state_dict: Mapping[str, Any], num_up: int) -> str | None:
    for ours, theirs in _SIMPLE_INVERSE.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    for pattern, template, kind in _NESTED_INVERSE:
        match = re.match(pattern, key)
        if match is None:
            continue
        *indices, rest = match.groups()
        prefix = template.format(*indices)
        if kind == "plain":
            return prefix + rest
        if kind == "upconv":
            # Every decoder level but the shallowest upsamples with Sequential(Upsample, conv).
            return prefix + rest if int(indices[0]) == num_up - 1 else prefix + "1." + rest
        if kind == "resnet":
            inverse = {v: k for k, v in _RESNET_INNER.items()}
            return prefix + inverse[rest] if rest in inverse else None
        return _unmap_attention(key, rest, prefix, state_dict)
    return None


def _unmap_attention(key: str, rest: str, prefix: str, state_dict: Mapping[str, Any]) -> str | None:
    if rest.startswith("transformer."):
        return prefix + "fn.fn." + rest[len("transformer.") :]
    # the linear kind has an output layer norm, the full kind does not.
    owner = key[: -len(rest)]
    linear = (owner + "out_norm.weight") in state_dict
    inverse_attn = {
        "norm.weight": "fn.norm.g",
        "to_qkv.weight": "fn.fn.to_qkv.weight",
        "to_out.weight": "fn.fn.to_out.0.weight" if linear else "fn.fn.to_out.weight",
        "to_out.bias": "fn.fn.to_out.0.bias" if linear else "fn.fn.to_out.bias",
        "out_norm.weight": "fn.fn.to_out.1.g",
    }
    return prefix + inverse_attn[rest] if rest in inverse_attn else None


def _shape(sd: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    if key not in sd:
        raise IRSDECheckpointError(
            f"this does not look like a ConditionalUNet checkpoint: {key!r} is missing; "
            f"first keys: {_preview(list(sd))}"
        )
    shape = tuple(int(n) for n in sd[key].shape)
    if len(shape) != ndim:
        raise IRSDECheckpointError(f"{key} has shape {shape}; expected {ndim} dimensions")
    return shape


def infer_irsde_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read the constructor arguments of :class:`MRUNet2DModel` off the shapes of an
    IR-SDE or DA-CLIP ``ConditionalUNet`` state dict (original names, wrappers allowed).

    The number of levels is the number of consecutive ``downs.{i}.3`` convolutions from
    level 0, so a stray higher-level entry is reported as unexpected instead of implying a
    deeper network. The split of the linear-attention width into heads is not recoverable
    from shapes; 4 heads (the original's value) are assumed.
    """
    sd = {strip_wrappers(k): v for k, v in state_dict.items()}
    init = _shape(sd, "init_conv.weight", 4)
    final = _shape(sd, "final_conv.weight", 4)
    if init[1] % 2:
        raise IRSDECheckpointError(
            f"init_conv.weight has shape {init}; the conditional U-Net expects an even number "
            "of input channels (x_t - mu stacked with mu)"
        )
    nf = init[0]
    widths = []
    while f"downs.{len(widths)}.3.weight" in sd:
        width = _shape(sd, f"downs.{len(widths)}.3.weight", 4)[0]
        if width % nf:
            raise IRSDECheckpointError(
                f"downs.{len(widths)}.3.weight has {width} output channels, not a multiple "
                f"of the base width nf={nf} (init_conv.weight)"
            )
        widths.append(width // nf)
    if not widths:
        raise IRSDECheckpointError("no level found: 'downs.0.3.weight' is missing")
    config: dict[str, Any] = {
        "in_channels": init[1] // 2,
        "out_channels": final[0],
        "nf": nf,
        "depth": len(widths),
        "mid_attention": "full" if "mid_attn.fn.fn.to_out.weight" in sd else "linear",
    }
    if widths != [2 ** (i + 1) for i in range(len(widths))]:
        config["ch_mult"] = widths
    config.update(_infer_context_config(sd, len(widths)))
    if "downsample.weight" in sd:  # Wild-IR's `scale: 0.5`
        config["inner_scale"] = 0.5
    qkv = sd.get("downs.0.2.fn.fn.to_qkv.weight")
    if qkv is not None and int(qkv.shape[0]) % 12 == 0:
        config["attention_heads"] = 4
        config["attention_head_dim"] = int(qkv.shape[0]) // 12
    return config


def _infer_context_config(sd: Mapping[str, torch.Tensor], depth: int) -> dict[str, Any]:
    """DA-CLIP's options: which contexts are used, their width, where transformers start."""
    config: dict[str, Any] = {}
    if "prompt" in sd:
        config["use_degra_context"] = True
        config["context_dim"] = _shape(sd, "text_mlp.0.weight", 2)[1]
    key = "mid_attn.fn.fn.transformer_blocks.0.attn2.to_k.weight"
    if "mid_attn.fn.fn.proj_in.weight" in sd:
        config["use_image_context"] = True
        config["context_dim"] = _shape(sd, key, 2)[1]
        levels = [i for i in range(depth) if f"downs.{i}.2.fn.fn.proj_in.weight" in sd]
        config["transformer_start_level"] = min(levels) if levels else max(depth, 3)
    return config


def load_irsde_checkpoint(path, model_cls: type[IRSDECheckpointMixin], **kwargs: Any):
    """``model_cls.from_irsde_checkpoint(path, **kwargs)`` (kept for older callers)."""
    return model_cls.from_irsde_checkpoint(path, **kwargs)
