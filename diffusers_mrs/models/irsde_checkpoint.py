"""Loading official IR-SDE checkpoints into :class:`~diffusers_mrs.MRUNet2DModel`.

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
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "IRSDECheckpointError",
    "convert_irsde_state_dict",
    "convert_to_irsde_state_dict",
    "extract_state_dict",
    "infer_irsde_config",
    "load_irsde_checkpoint",
]

# Keys under which other training tools nest a state dict, tried in this order.
NESTED_KEYS = ("params_ema", "params", "state_dict", "model", "net_g", "netG", "generator")
# Prefixes added by wrappers (DataParallel/DistributedDataParallel, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# Top-level prefixes: original -> ours (what follows the prefix is mapped by the tables below).
_BLOCK_RULES: list[tuple[re.Pattern[str], str, str]] = [
    # (pattern on the original key, replacement prefix, kind of the remainder)
    (re.compile(r"^init_conv\.(?P<rest>.+)$"), "conv_in.", "plain"),
    (re.compile(r"^time_mlp\.1\.(?P<rest>.+)$"), "time_embedding.linear_1.", "plain"),
    (re.compile(r"^time_mlp\.3\.(?P<rest>.+)$"), "time_embedding.linear_2.", "plain"),
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
_PLAIN_INNER = {"weight": "weight", "bias": "bias"}
_INNER = {"plain": _PLAIN_INNER, "resnet": _RESNET_INNER, "attn": _ATTN_INNER}


class IRSDECheckpointError(ValueError):
    """The checkpoint is not an IR-SDE ``ConditionalUNet`` matching the requested config."""


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def map_irsde_key(key: str) -> str | None:
    """Our name for the IR-SDE parameter ``key`` (wrapper prefixes allowed), or ``None``."""
    key = _strip_wrappers(key)
    for pattern, prefix, kind in _BLOCK_RULES:
        match = pattern.match(key)
        if match is None:
            continue
        inner = _INNER[kind].get(match.group("rest"))
        if inner is None:
            return None
        return prefix.format(**match.groupdict()) + inner
    return None


def extract_state_dict(obj: Any, key: str | None = None) -> dict[str, torch.Tensor]:
    """Return the tensor state dict inside a loaded checkpoint object.

    Args:
        obj: what ``torch.load`` returned: a state dict, or a dict nesting one under one of
            :data:`NESTED_KEYS` (or under ``key``).
        key: nesting key to use instead of the automatic search.
    """
    if not isinstance(obj, Mapping):
        raise IRSDECheckpointError(
            f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    if key is not None:
        if key not in obj:
            raise IRSDECheckpointError(
                f"checkpoint has no key {key!r}; top-level keys: {sorted(obj)[:20]}"
            )
        return extract_state_dict(obj[key])
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors:
        return tensors
    for candidate in NESTED_KEYS:
        if isinstance(obj.get(candidate), Mapping):
            return extract_state_dict(obj[candidate])
    raise IRSDECheckpointError(
        "no tensors found in the checkpoint, and none of the usual nesting keys "
        f"{list(NESTED_KEYS)} holds a state dict; top-level keys: {sorted(obj)[:20]}"
    )


def convert_irsde_state_dict(
    state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> dict[str, torch.Tensor]:
    """Rename an IR-SDE ``ConditionalUNet`` state dict to :class:`MRUNet2DModel` names.

    ``module.``/``_orig_mod.`` prefixes are removed. Tensors are not copied or reshaped.

    Args:
        state_dict: the original parameters.
        strict: raise :class:`IRSDECheckpointError` on names that belong to no part of the
            IR-SDE U-Net (otherwise they are dropped).
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
            f"{len(unknown)} checkpoint entries are not IR-SDE ConditionalUNet parameters: "
            f"{_preview(unknown)} (expected a generator checkpoint, e.g. 'latest_G.pth', of "
            "codes/config/<task>/models/modules/DenoisingUNet_arch.py:ConditionalUNet)"
        )
    return converted


def convert_to_irsde_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_irsde_state_dict`: our names back to IR-SDE names."""
    num_up = len({k.split(".")[1] for k in state_dict if k.startswith("up_blocks.")})
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        orig = _unmap_key(key, state_dict, num_up)
        if orig is None:
            raise IRSDECheckpointError(f"{key!r} is not an MRUNet2DModel parameter name")
        out[orig] = value
    return out


def _unmap_key(key: str, state_dict: Mapping[str, Any], num_up: int) -> str | None:
    simple = {
        "conv_in.": "init_conv.",
        "time_embedding.linear_1.": "time_mlp.1.",
        "time_embedding.linear_2.": "time_mlp.3.",
        "conv_out.": "final_conv.",
    }
    for ours, theirs in simple.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    patterns: list[tuple[str, str, str]] = [
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
    for pattern, template, kind in patterns:
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
        # attention: the linear kind has an output layer norm, the full kind does not.
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
    return None


def infer_irsde_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read ``in_channels``, ``out_channels``, ``nf``, ``depth`` and ``mid_attention`` off
    the shapes of an IR-SDE state dict (original names, wrapper prefixes allowed).

    The split of the attention width into heads is not recoverable from shapes; 4 heads
    (the original's value) are assumed.
    """
    sd = {_strip_wrappers(k): v for k, v in state_dict.items()}
    if "init_conv.weight" not in sd or "final_conv.weight" not in sd:
        raise IRSDECheckpointError(
            "this does not look like an IR-SDE ConditionalUNet checkpoint: "
            "'init_conv.weight' and/or 'final_conv.weight' are missing; first keys: "
            f"{_preview(list(sd))}"
        )
    init = sd["init_conv.weight"]
    if init.ndim != 4 or init.shape[1] % 2:
        raise IRSDECheckpointError(
            f"init_conv.weight has shape {tuple(init.shape)}; the conditional U-Net expects "
            "an even number of input channels (x_t - mu stacked with mu)"
        )
    levels = {int(m.group(1)) for k in sd if (m := re.match(r"^downs\.(\d+)\.", k))}
    config: dict[str, Any] = {
        "in_channels": int(init.shape[1]) // 2,
        "out_channels": int(sd["final_conv.weight"].shape[0]),
        "nf": int(init.shape[0]),
        "depth": max(levels) + 1 if levels else 0,
        "mid_attention": "full" if "mid_attn.fn.fn.to_out.weight" in sd else "linear",
    }
    qkv = sd.get("downs.0.2.fn.fn.to_qkv.weight")
    if qkv is not None and int(qkv.shape[0]) % 12 == 0:
        config["attention_heads"] = 4
        config["attention_head_dim"] = int(qkv.shape[0]) // 12
    return config


def _preview(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_irsde_state_dict_into(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> torch.nn.Module:
    """Convert ``state_dict`` (IR-SDE names) and load it into ``model``, strictly.

    Raises:
        IRSDECheckpointError: listing the missing, unexpected and wrongly shaped entries,
            by their IR-SDE names and ours.
    """
    originals = {map_irsde_key(k): k for k in state_dict}
    converted = convert_irsde_state_dict(state_dict, strict=True)
    expected = model.state_dict()
    num_up = len({k.split(".")[1] for k in expected if k.startswith("up_blocks.")})
    missing = [
        f"{_unmap_key(k, expected, num_up)} (ours: {k})" for k in expected if k not in converted
    ]
    unexpected = [f"{originals[k]} (ours: {k})" for k in converted if k not in expected]
    mismatched = [
        f"{originals[k]} (ours: {k}): checkpoint {tuple(converted[k].shape)} "
        f"vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in converted and converted[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        model.load_state_dict(converted, strict=True)
        return model
    lines = []
    for title, items in (
        ("missing from the checkpoint", missing),
        ("unexpected in the checkpoint", unexpected),
        ("shape mismatch", mismatched),
    ):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines.extend(f"    {item}" for item in items[:10])
            if len(items) > 10:
                lines.append(f"    ... and {len(items) - 10} more")
    config = getattr(model, "config", None)
    settings = (
        ", ".join(f"{k}={v}" for k, v in dict(config).items() if not k.startswith("_"))
        if config is not None
        else "?"
    )
    raise IRSDECheckpointError(
        f"the IR-SDE checkpoint does not fit {type(model).__name__}({settings}).\n  "
        + "\n  ".join(lines)
        + "\nPass the values of `network_G.setting` from the IR-SDE option file (or leave "
        "them out to infer them from the checkpoint)."
    )


def load_irsde_checkpoint(
    path: str | os.PathLike[str],
    model_cls: type | None = None,
    state_dict_key: str | None = None,
    **config: Any,
):
    """Load an IR-SDE generator checkpoint file into a new :class:`MRUNet2DModel`.

    Args:
        path: ``.pth``/``.pt`` file written by IR-SDE (``torch.save(state_dict)``); it is
            read with ``torch.load(..., map_location="cpu", weights_only=True)``.
        model_cls: class to instantiate (default :class:`MRUNet2DModel`).
        state_dict_key: nesting key holding the state dict, if not found automatically.
        **config: constructor arguments; those not given are inferred from the shapes.

    Returns:
        The model, float32, in eval mode.
    """
    if model_cls is None:
        from .unet_mr import MRUNet2DModel

        model_cls = MRUNet2DModel
    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    state_dict = extract_state_dict(obj, key=state_dict_key)
    full_config = {**infer_irsde_config(state_dict), **config}
    model = model_cls(**full_config)
    load_irsde_state_dict_into(model, state_dict)
    return model.eval()
