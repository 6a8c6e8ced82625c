"""Names and architecture of Refusion's ``ConditionalNAFNet`` checkpoints.

Refusion (Luo et al., 2023, in the IR-SDE code base, ``DenoisingNAFNet_arch.py``) saves
its generator as a ``ConditionalNAFNet`` state dict. Its names map one to one, with
identical shapes, onto :class:`~diffusers_mrs.MRNAFNetModel` (Refusion -> diffusers-mrs):

- ``intro`` -> ``conv_in``; ``ending`` -> ``conv_out``;
- ``time_mlp.1`` / ``time_mlp.3`` -> ``time_embedding.linear_1`` / ``.linear_2``;
- ``encoders.{i}.{j}`` -> ``down_blocks.{i}.{j}``; ``downs.{i}`` -> ``downsamplers.{i}``;
- ``middle_blks.{j}`` -> ``mid_blocks.{j}``;
- ``ups.{i}.0`` -> ``upsamplers.{i}.conv``; ``decoders.{i}.{j}`` -> ``up_blocks.{i}.{j}``;
- inside a block: ``mlp.1`` -> ``time_emb_proj``, ``sca.1`` -> ``channel_attention``,
  ``norm1.g`` / ``norm2.g`` -> ``norm1.weight`` / ``norm2.weight``; ``conv1`` ...
  ``conv5``, ``beta`` and ``gamma`` keep their names.

The functions here take state dicts whose wrapper prefixes (``module.``) are already
removed; they build nothing. They are the hooks of :class:`MRNAFNetModel`'s
:class:`~diffusers_mrs.models.checkpoint_io.IRSDECheckpointMixin`, which reads the file
safely and checks the checkpoint before allocating a model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .checkpoint_io import IRSDECheckpointError
from .checkpoint_io import preview_names as _preview

__all__ = [
    "NAFNetCheckpointError",
    "convert_nafnet_state_dict",
    "infer_nafnet_config",
    "map_nafnet_key",
    "nafnet_original_names",
]

_TOP = [
    (re.compile(r"^intro\.(weight|bias)$"), r"conv_in.\1"),
    (re.compile(r"^ending\.(weight|bias)$"), r"conv_out.\1"),
    (re.compile(r"^time_mlp\.1\.(weight|bias)$"), r"time_embedding.linear_1.\1"),
    (re.compile(r"^time_mlp\.3\.(weight|bias)$"), r"time_embedding.linear_2.\1"),
    (re.compile(r"^downs\.(\d+)\.(weight|bias)$"), r"downsamplers.\1.\2"),
    (re.compile(r"^ups\.(\d+)\.0\.weight$"), r"upsamplers.\1.conv.weight"),
]
_BLOCK_LISTS = {"encoders": "down_blocks", "decoders": "up_blocks"}
_BLOCK_INNER = {
    "mlp.1.weight": "time_emb_proj.weight",
    "mlp.1.bias": "time_emb_proj.bias",
    "sca.1.weight": "channel_attention.weight",
    "sca.1.bias": "channel_attention.bias",
    "norm1.g": "norm1.weight",
    "norm2.g": "norm2.weight",
    "beta": "beta",
    "gamma": "gamma",
    **{f"conv{n}.{p}": f"conv{n}.{p}" for n in range(1, 6) for p in ("weight", "bias")},
}
_BLOCK = re.compile(
    r"^(?:(?P<list>encoders|decoders)\.(?P<i>\d+)|middle_blks)\.(?P<j>\d+)\.(?P<rest>.+)$"
)


class NAFNetCheckpointError(IRSDECheckpointError):
    """The checkpoint is not a Refusion ``ConditionalNAFNet``, or does not fit."""


def map_nafnet_key(key: str) -> str | None:
    """Our name for the Refusion parameter ``key``, or ``None`` if it is none of them."""
    for pattern, replacement in _TOP:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    match = _BLOCK.match(key)
    if match is None or match.group("rest") not in _BLOCK_INNER:
        return None
    inner = _BLOCK_INNER[match.group("rest")]
    if match.group("list") is None:
        return f"mid_blocks.{match.group('j')}.{inner}"
    owner = _BLOCK_LISTS[match.group("list")]
    return f"{owner}.{match.group('i')}.{match.group('j')}.{inner}"


def convert_nafnet_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename a ``ConditionalNAFNet`` state dict to :class:`MRNAFNetModel` names.

    Raises:
        NAFNetCheckpointError: on names that belong to no part of the network.
    """
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        new_key = map_nafnet_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        raise NAFNetCheckpointError(
            f"{len(unknown)} checkpoint entries are not ConditionalNAFNet parameters: "
            f"{_preview(unknown)} (expected a Refusion generator checkpoint of "
            "codes/config/<task>/models/modules/DenoisingNAFNet_arch.py:ConditionalNAFNet)"
        )
    return converted


def nafnet_original_names(state_dict: Mapping[str, Any]) -> dict[str, str | None]:
    """Our names -> Refusion's names (for messages), the inverse of :func:`map_nafnet_key`."""
    out: dict[str, str | None] = {}
    inner_inverse = {v: k for k, v in _BLOCK_INNER.items()}
    top_inverse = [
        (r"^conv_in\.", "intro."),
        (r"^conv_out\.", "ending."),
        (r"^time_embedding\.linear_1\.", "time_mlp.1."),
        (r"^time_embedding\.linear_2\.", "time_mlp.3."),
        (r"^downsamplers\.(\d+)\.", r"downs.\1."),
        (r"^upsamplers\.(\d+)\.conv\.", r"ups.\1.0."),
    ]
    for key in state_dict:
        name = None
        for pattern, replacement in top_inverse:
            if re.match(pattern, key):
                name = re.sub(pattern, replacement, key)
                break
        m = re.match(r"^(down_blocks|up_blocks)\.(\d+)\.(\d+)\.(.+)$", key) or re.match(
            r"^(mid_blocks)\.(\d+)\.(.+)$", key
        )
        if name is None and m is not None and m.groups()[-1] in inner_inverse:
            inner = inner_inverse[m.groups()[-1]]
            if m.group(1) == "mid_blocks":
                name = f"middle_blks.{m.group(2)}.{inner}"
            else:
                owner = {v: k for k, v in _BLOCK_LISTS.items()}[m.group(1)]
                name = f"{owner}.{m.group(2)}.{m.group(3)}.{inner}"
        out[key] = name
    return out


def _block_counts(state_dict: Mapping[str, torch.Tensor], list_name: str) -> list[int]:
    """Blocks per level of ``encoders``/``decoders`` (levels and blocks numbered 0..n-1)."""
    found: dict[int, set[int]] = {}
    for key in state_dict:
        m = re.match(rf"^{list_name}\.(\d+)\.(\d+)\.", key)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    levels = sorted(found)
    if levels != list(range(len(levels))):
        raise NAFNetCheckpointError(f"{list_name} levels are not numbered 0..n-1: {levels}")
    counts = []
    for level in levels:
        blocks = sorted(found[level])
        if blocks != list(range(len(blocks))):
            raise NAFNetCheckpointError(
                f"{list_name}.{level} blocks are not numbered 0..n-1: {blocks}"
            )
        counts.append(len(blocks))
    return counts


def infer_nafnet_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """:class:`MRNAFNetModel` arguments read off a ``ConditionalNAFNet`` state dict:
    ``in_channels``, ``out_channels``, ``width``, ``enc_blk_nums``, ``middle_blk_num`` and
    ``dec_blk_nums`` (Refusion's option-file names).

    Raises:
        NAFNetCheckpointError: the entries that fix these are missing or inconsistent.
    """
    for key in ("intro.weight", "ending.weight"):
        if key not in state_dict or state_dict[key].ndim != 4:
            raise NAFNetCheckpointError(
                f"this does not look like a ConditionalNAFNet checkpoint: {key!r} (a 4-d "
                f"convolution weight) is missing; first keys: {_preview(list(state_dict))}"
            )
    intro = state_dict["intro.weight"]
    if intro.shape[1] % 2:
        raise NAFNetCheckpointError(
            f"intro.weight has shape {tuple(intro.shape)}; the conditional NAFNet expects an "
            "even number of input channels (x_t - mu stacked with mu)"
        )
    enc, dec = _block_counts(state_dict, "encoders"), _block_counts(state_dict, "decoders")
    if len(enc) != len(dec):
        raise NAFNetCheckpointError(
            f"{len(enc)} encoder levels but {len(dec)} decoder levels; ConditionalNAFNet "
            "mirrors every encoder level"
        )
    middle = {int(m.group(1)) for k in state_dict if (m := re.match(r"^middle_blks\.(\d+)\.", k))}
    if sorted(middle) != list(range(len(middle))):
        raise NAFNetCheckpointError(f"middle_blks are not numbered 0..n-1: {sorted(middle)}")
    return {
        "in_channels": int(intro.shape[1]) // 2,
        "out_channels": int(state_dict["ending.weight"].shape[0]),
        "width": int(intro.shape[0]),
        "enc_blk_nums": enc,
        "middle_blk_num": len(middle),
        "dec_blk_nums": dec,
    }
