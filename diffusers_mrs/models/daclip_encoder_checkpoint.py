"""Reading DA-CLIP's image-encoder checkpoint (open_clip ``DaCLIP`` state dict).

``daclip_ViT-B-32.pt`` holds, under open_clip names:

- ``clip.visual.*`` (the main image tower) and the same tensors again as ``visual.*``
  (``DaCLIP.visual`` is the same module);
- ``visual_control.*`` (the controller tower; its blocks sit one level deeper, under
  ``visual_control.transformer.transformer.resblocks``, beside the per-layer
  ``visual_control.transformer.zero_modules.{l}`` linear maps);
- the text tower (``clip.transformer.*``, ``clip.token_embedding``, ...) and two
  ``logit_scale`` entries, which the image encoder does not use.

Names map onto :class:`~diffusers_mrs.DACLIPImageEncoder` as follows (per tower; main:
``clip.visual.`` -> ``vision_model.``, controller: ``visual_control.`` ->
``controller_model.``):

- ``conv1.weight`` -> ``embeddings.patch_embedding.weight``; ``class_embedding`` ->
  ``embeddings.class_embedding``; ``positional_embedding`` ->
  ``embeddings.position_embedding.weight``; ``ln_pre`` / ``ln_post`` -> ``pre_layrnorm`` /
  ``post_layernorm``;
- block ``i``: ``ln_1`` / ``ln_2`` -> ``layer_norm1`` / ``layer_norm2``;
  ``attn.in_proj_weight`` / ``_bias`` -> split by rows into ``self_attn.q_proj``,
  ``k_proj``, ``v_proj``; ``attn.out_proj`` -> ``self_attn.out_proj``; ``mlp.c_fc`` /
  ``mlp.c_proj`` -> ``mlp.fc1`` / ``mlp.fc2``;
- ``proj`` (``[hidden, projection]``, used as ``x @ proj``) -> the transpose, as
  ``visual_projection.weight`` / ``controller_projection.weight``;
- ``visual_control.transformer.zero_modules.{l}`` -> ``controller_outputs.{l}``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from .checkpoint_io import IRSDECheckpointError
from .checkpoint_io import preview_names as _preview
from .checkpoint_io import read_checkpoint as read_tensor_checkpoint

__all__ = [
    "DACLIPCheckpointError",
    "check_daclip_state_dict",
    "convert_daclip_state_dict",
    "convert_vit_blocks",
    "infer_daclip_encoder_config",
    "read_checkpoint",
]

MAIN_PREFIXES = ("clip.visual.", "visual.")
CONTROL_PREFIX = "visual_control."

_TOWER_TOP = {
    "conv1.weight": "embeddings.patch_embedding.weight",
    "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight",
    "ln_pre.bias": "pre_layrnorm.bias",
    "ln_post.weight": "post_layernorm.weight",
    "ln_post.bias": "post_layernorm.bias",
}
_BLOCK = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_IN_PROJ = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}


class DACLIPCheckpointError(ValueError):
    """The file is not a DA-CLIP (open_clip ``DaCLIP``) checkpoint, or does not fit."""


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a DA-CLIP checkpoint, wrapper prefixes removed.

    Read by :func:`diffusers_mrs.models.checkpoint_io.read_checkpoint` (safetensors, or
    ``torch.load(weights_only=True)``: pickled code is refused, never run); a state dict
    nested under ``"state_dict"`` (open_clip's training checkpoints) is unwrapped.

    Raises:
        FileNotFoundError: no file at ``path``.
        DACLIPCheckpointError: the file is empty, truncated, needs to unpickle objects
            other than tensors, or holds no state dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DA-CLIP checkpoint not found: {os.fspath(path)}")
    try:
        return read_tensor_checkpoint(path)
    except IRSDECheckpointError as err:
        raise DACLIPCheckpointError(str(err)) from err


def _main_tower(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The main tower's entries (prefix removed): ``clip.visual.*``, checked equal to the
    ``visual.*`` copy when both are present."""
    towers = [{k[len(p) :]: v for k, v in sd.items() if k.startswith(p)} for p in MAIN_PREFIXES]
    clip_visual, visual = towers
    both = bool(clip_visual) and bool(visual)
    if both and (
        set(clip_visual) != set(visual)
        or any(not torch.equal(v, visual[k]) for k, v in clip_visual.items())
    ):
        raise DACLIPCheckpointError(
            "'clip.visual.*' and 'visual.*' differ; in a DaCLIP state dict they are the same module"
        )
    return clip_visual or visual


def convert_vit_blocks(
    blocks: Mapping[str, torch.Tensor], prefix: str, block_root: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename open_clip transformer blocks (``{block_root}resblocks.{i}.*``) to
    ``{prefix}encoder.layers.{i}.*`` of ``transformers``' CLIP (image and text towers share
    the layout); returns (converted, names that are no block entry)."""
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    pattern = re.compile(rf"^{re.escape(block_root)}resblocks\.(\d+)\.(.+)$")
    for key, value in blocks.items():
        m = pattern.match(key)
        rest = m.group(2) if m is not None else ""
        layer = f"{prefix}encoder.layers.{m.group(1)}." if m is not None else ""
        if rest in _BLOCK:
            converted[layer + _BLOCK[rest]] = value
        elif rest in _IN_PROJ:
            if value.shape[0] % 3:
                raise DACLIPCheckpointError(f"{key} has {value.shape[0]} rows, not 3 x width")
            for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                converted[f"{layer}self_attn.{name}_proj.{_IN_PROJ[rest]}"] = part
        else:
            unknown.append(key)
    return converted, unknown


def _convert_tower(tower: Mapping[str, torch.Tensor], prefix: str, block_root: str):
    """Rename one open_clip ViT; returns (converted, unknown original names)."""
    converted: dict[str, torch.Tensor] = {}
    blocks: dict[str, torch.Tensor] = {}
    for key, value in tower.items():
        if key in _TOWER_TOP:
            converted[prefix + _TOWER_TOP[key]] = value
        elif key == "proj":
            converted[prefix + "projection"] = value.t()
        else:
            blocks[key] = value
    renamed, unknown = convert_vit_blocks(blocks, prefix, block_root)
    converted.update(renamed)
    return converted, unknown


def convert_daclip_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename an open_clip ``DaCLIP`` state dict to :class:`DACLIPImageEncoder` names.

    The text tower and ``logit_scale`` are dropped; unknown image-tower entries raise
    :class:`DACLIPCheckpointError`.
    """
    main = _main_tower(state_dict)
    control = {
        k[len(CONTROL_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(CONTROL_PREFIX)
    }
    if not main or not control:
        raise DACLIPCheckpointError(
            "not a DA-CLIP checkpoint: expected 'clip.visual.*' (or 'visual.*') and "
            f"'visual_control.*' entries; first keys: {_preview(list(state_dict))}"
        )
    converted, unknown = _convert_tower(main, "vision_model.", "transformer.")
    zero = re.compile(r"^transformer\.zero_modules\.(\d+)\.(weight|bias)$")
    zeros = {}
    rest = {}
    for key, value in control.items():
        if (m := zero.match(key)) is not None:
            zeros[f"controller_outputs.{m.group(1)}.{m.group(2)}"] = value
        else:
            rest[key] = value
    control_converted, control_unknown = _convert_tower(
        rest, "controller_model.", "transformer.transformer."
    )
    unknown += [CONTROL_PREFIX + k for k in control_unknown]
    if unknown:
        raise DACLIPCheckpointError(
            f"{len(unknown)} image-tower entries are not parts of DA-CLIP's ViT: "
            f"{_preview(unknown)}"
        )
    converted.update(control_converted)
    converted.update(zeros)
    converted["visual_projection.weight"] = converted.pop("vision_model.projection")
    converted["controller_projection.weight"] = converted.pop("controller_model.projection")
    return converted


def infer_daclip_encoder_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """:class:`DACLIPImageEncoder` arguments read off the main tower's shapes."""
    main = _main_tower(state_dict)
    needed = (
        "conv1.weight",
        "positional_embedding",
        "proj",
        "transformer.resblocks.0.mlp.c_fc.weight",
    )
    missing = [k for k in needed if k not in main]
    if missing:
        raise DACLIPCheckpointError(
            f"not a DA-CLIP ViT checkpoint: the image tower lacks {missing}; first keys: "
            f"{_preview(list(state_dict))}"
        )
    conv, pos = main["conv1.weight"], main["positional_embedding"]
    if conv.ndim != 4 or conv.shape[-1] != conv.shape[-2] or pos.ndim != 2:
        raise DACLIPCheckpointError(
            f"unexpected shapes: conv1.weight {tuple(conv.shape)}, positional_embedding "
            f"{tuple(pos.shape)} (expected a square-patch ViT)"
        )
    grid = math.isqrt(int(pos.shape[0]) - 1)
    if grid * grid != pos.shape[0] - 1:
        raise DACLIPCheckpointError(
            f"positional_embedding has {pos.shape[0]} rows, not 1 + a square number of patches"
        )
    hidden, patch = int(conv.shape[0]), int(conv.shape[-1])
    layers = {
        int(m.group(1)) for k in main if (m := re.match(r"^transformer\.resblocks\.(\d+)\.", k))
    }
    return {
        "image_size": grid * patch,
        "patch_size": patch,
        "num_channels": int(conv.shape[1]),
        "hidden_size": hidden,
        "num_hidden_layers": max(layers) + 1,
        "num_attention_heads": max(1, hidden // 64),
        "intermediate_size": int(main["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "projection_dim": int(main["proj"].shape[1]),
    }


def check_daclip_state_dict(
    converted: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    config: Mapping[str, Any],
) -> None:
    """Raise :class:`DACLIPCheckpointError` listing missing, unexpected and mis-shaped
    entries (our names) of ``converted`` against the ``expected`` shapes."""
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(s)}"
        for k, s in expected.items()
        if k in converted and tuple(converted[k].shape) != tuple(s)
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = []
    for title, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", mismatched),
    ):
        if items:
            lines.append(f"{title} ({len(items)}): {_preview(items, 8)}")
    settings = ", ".join(f"{k}={v}" for k, v in config.items())
    raise DACLIPCheckpointError(
        f"the DA-CLIP checkpoint does not fit DACLIPImageEncoder({settings}):\n  "
        + "\n  ".join(lines)
    )
