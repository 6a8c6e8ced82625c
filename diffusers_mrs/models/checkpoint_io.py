"""Reading training checkpoints of the original code bases safely, and the loader mixin.

IR-SDE, DA-CLIP and Refusion save ``torch.save(state_dict)`` files (``*_G.pth``); other
tools wrap the names (``module.`` from DataParallel, ``_orig_mod.`` from ``torch.compile``)
or nest the state dict (``{"params_ema": ..., "params": ..., "iter": 5}``). This module
turns any of those into one flat state dict, never running pickled code
(``torch.load(weights_only=True)``), and checks a whole checkpoint against the
architecture it implies *before* any parameter memory is allocated: the model is first
built on the ``meta`` device, which allocates nothing, and its names and shapes are
compared with the checkpoint's.

A model class opts in with :class:`IRSDECheckpointMixin` and three hooks that describe
its original format (config inference, renaming, and the reverse renaming for messages).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging

from .weight_checks import non_finite_weights, non_float_weights

__all__ = [
    "NESTED_KEYS",
    "IRSDECheckpointError",
    "IRSDECheckpointMixin",
    "extract_state_dict",
    "preview_names",
    "read_checkpoint",
    "strip_wrappers",
    "weights_message",
]

logger = logging.get_logger(__name__)

# Keys under which training tools nest a state dict, tried in this order.
NESTED_KEYS = ("params_ema", "params", "state_dict", "model", "net", "net_g", "netG", "generator")
# Prefixes added by wrappers (DataParallel/DistributedDataParallel, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class IRSDECheckpointError(ValueError):
    """The checkpoint cannot be read, or does not fit the requested architecture."""


def strip_wrappers(key: str) -> str:
    """``key`` without any leading ``module.``/``_orig_mod.`` prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def extract_state_dict(obj: Any, key: str | None = None) -> dict[str, torch.Tensor]:
    """Return the tensor state dict inside a loaded checkpoint object.

    The nesting keys :data:`NESTED_KEYS` are tried in order and the first one holding a
    non-empty state dict wins (an empty ``params_ema`` is skipped; the choice is logged);
    otherwise the object itself must be a state dict (tensor values only).

    Args:
        obj: what ``torch.load`` returned.
        key: nesting key to use instead of the automatic search.
    """
    if not isinstance(obj, Mapping):
        raise IRSDECheckpointError(
            f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    if key is not None:
        if key not in obj:
            raise IRSDECheckpointError(
                f"checkpoint has no key {key!r}; top-level keys: {sorted(map(str, obj))[:20]}"
            )
        return extract_state_dict(obj[key])
    for candidate in NESTED_KEYS:
        if _is_state_dict(obj.get(candidate)):
            if len(obj) > 1 or candidate != "state_dict":
                logger.warning(f"using the state dict nested under {candidate!r}")
            return dict(obj[candidate])
    if _is_state_dict(obj):
        return dict(obj)
    non_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    raise IRSDECheckpointError(
        "no state dict found: the checkpoint is not a mapping of names to tensors "
        f"(non-tensor entries: {non_tensors[:10]}), and none of the nesting keys "
        f"{list(NESTED_KEYS)} holds a non-empty one"
    )


def read_checkpoint(
    path: str | os.PathLike[str], state_dict_key: str | None = None, mmap: bool = False
) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict with wrapper prefixes removed.

    ``.safetensors`` files are read with safetensors, anything else with
    ``torch.load(map_location="cpu", weights_only=True)``: a file that needs to run code
    to unpickle is refused, never executed. With ``mmap``, the tensors of a ``torch.save``
    zip file map the file instead of being read (for checks of names and shapes before
    any loading; older non-zip files are read whole).

    Raises:
        IRSDECheckpointError: naming the file, when it is missing, empty, truncated,
            not a checkpoint, or holds no state dict.
    """
    file = Path(path)
    if not file.is_file():
        raise IRSDECheckpointError(f"{file}: no such checkpoint file")
    if file.stat().st_size == 0:
        raise IRSDECheckpointError(f"{file}: the checkpoint file is empty (0 bytes)")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(file)
        else:
            obj = _torch_load(file, mmap)
    except pickle.UnpicklingError as err:
        raise IRSDECheckpointError(
            f"{file}: refused to load: unpickling it would run code or build objects other "
            f"than tensors (read with weights_only=True). Details: {str(err)[:300]}"
        ) from err
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise IRSDECheckpointError(
            f"{file}: not a readable checkpoint (truncated or not written by torch.save / "
            f"safetensors): {type(err).__name__}: {str(err)[:300]}"
        ) from err
    try:
        state_dict = extract_state_dict(obj, key=state_dict_key)
    except IRSDECheckpointError as err:
        raise IRSDECheckpointError(f"{file}: {err}") from None
    stripped = {strip_wrappers(k): v for k, v in state_dict.items()}
    if len(stripped) != len(state_dict):
        raise IRSDECheckpointError(f"{file}: names collide once 'module.' prefixes are removed")
    return stripped


def _torch_load(file: Path, mmap: bool) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped when asked and the format allows."""
    if mmap:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
    return torch.load(file, map_location="cpu", weights_only=True)


def preview_names(
    names: Sequence[str], limit: int = 12, quote: bool = True, separator: str = ", "
) -> str:
    """The first ``limit`` of ``names`` for an error message (quoted with ``repr`` unless
    ``quote`` is False), joined by ``separator``, then ``... (N more)`` if there are more."""
    shown = [repr(n) if quote else str(n) for n in names[:limit]]
    if len(names) > limit:
        shown.append(f"... ({len(names) - limit} more)")
    return separator.join(shown)


def weights_message(where: str, **problems: list[str]) -> str | None:
    """One message listing each non-empty group of ``problems`` (keyword: its title with
    ``_`` for spaces) as ``title (N): names``; ``None`` where all are empty."""
    parts = [
        f"{title.replace('_', ' ')} ({len(items)}): {preview_names(items, 8, quote=False)}"
        for title, items in problems.items()
        if items
    ]
    if not parts:
        return None
    return f"{where}: " + "; ".join(parts)


def check_against_skeleton(
    skeleton: torch.nn.Module,
    converted: Mapping[str, torch.Tensor],
    original_of: Mapping[str, str],
    expected_original: Callable[[Mapping[str, torch.Tensor]], Mapping[str, str | None]],
) -> None:
    """Compare a checkpoint (our names) with a model's names and shapes.

    Args:
        skeleton: the model built on the meta device.
        converted: the checkpoint renamed to our names.
        original_of: our name -> the checkpoint's name, for messages.
        expected_original: our expected names -> original names (hook), for messages.

    Raises:
        IRSDECheckpointError: listing missing, unexpected and wrongly shaped entries.
    """
    expected = skeleton.state_dict()
    theirs = expected_original(expected)
    missing = [f"{theirs.get(k) or '?'} (ours: {k})" for k in expected if k not in converted]
    unexpected = [f"{original_of[k]} (ours: {k})" for k in converted if k not in expected]
    mismatched = [
        f"{original_of[k]} (ours: {k}): checkpoint {tuple(converted[k].shape)} "
        f"vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in converted and converted[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = []
    for title, items in (
        ("missing from the checkpoint", missing),
        ("unexpected in the checkpoint", unexpected),
        ("shape mismatch", mismatched),
    ):
        if items:
            shown = preview_names(items, 10, quote=False, separator="\n    ")
            lines.append(f"{title} ({len(items)}):\n    {shown}")
    settings = ", ".join(
        f"{k}={v}"
        for k, v in dict(getattr(skeleton, "config", {})).items()
        if not k.startswith("_")
    )
    raise IRSDECheckpointError(
        f"the checkpoint does not fit {type(skeleton).__name__}({settings}).\n  "
        + "\n  ".join(lines)
        + "\nPass the values of `network_G.setting` from the original option file (or leave "
        "them out to infer them from the checkpoint)."
    )


def check_weight_values(state_dict: Mapping[str, torch.Tensor], path: object) -> None:
    """Every tensor of a checkpoint is floating point and finite, or an
    :class:`IRSDECheckpointError` names the ones that are not (int8 weights would be cast
    on load and NaN ones make every output NaN: an all-black image)."""
    message = weights_message(
        str(path),
        not_floating_point=non_float_weights({k: v.dtype for k, v in state_dict.items()}),
        NaN_or_infinite_values=non_finite_weights(state_dict),
    )
    if message is not None:
        raise IRSDECheckpointError(message + " (a network's weights are finite floats)")


def _meta_skeleton(cls: type, config: dict[str, Any], path: object) -> torch.nn.Module:
    """The model built on the ``meta`` device (nothing allocated); settings the model
    refuses (wrong type, out of bounds) become an :class:`IRSDECheckpointError`."""
    try:
        with torch.device("meta"):
            return cls(**config)
    except (TypeError, ValueError) as err:
        settings = ", ".join(f"{k}={v!r}" for k, v in config.items())
        raise IRSDECheckpointError(
            f"{path}: the settings ({settings}) describe no {cls.__name__}: {err}"
        ) from None


class IRSDECheckpointMixin:
    """Adds :meth:`from_irsde_checkpoint` to a diffusers model class.

    The class provides three static hooks describing the original format:

    - ``_irsde_infer_config(state_dict) -> dict``: constructor arguments read off the
      shapes (original names, wrappers removed);
    - ``_irsde_convert_state_dict(state_dict) -> dict``: original names -> ours, raising
      :class:`IRSDECheckpointError` on names that belong to no part of the network;
    - ``_irsde_original_names(state_dict) -> dict``: our names -> original names (or
      ``None``), used only in error messages.

    ``_irsde_error`` is the exception class raised (a subclass of
    :class:`IRSDECheckpointError`).
    """

    _irsde_error: type[IRSDECheckpointError] = IRSDECheckpointError

    _irsde_infer_config: Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]
    _irsde_convert_state_dict: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
    _irsde_original_names: Callable[[Mapping[str, torch.Tensor]], Mapping[str, str | None]]

    @classmethod
    def from_irsde_checkpoint(
        cls, path: str | os.PathLike[str], state_dict_key: str | None = None, **config: Any
    ):
        """Build the model from a checkpoint file of the original code.

        Args:
            path: the ``.pth``/``.pt`` file (plain, ``module.``-prefixed or nested state
                dict), or a ``.safetensors`` file with the original names.
            state_dict_key: nesting key to use instead of the automatic search.
            **config: constructor arguments (the original option file's
                ``network_G.setting``); the others are inferred from the shapes. Given or
                inferred, they are checked against every name and shape of the checkpoint
                before the model is allocated.

        Returns:
            The model, float32, in eval mode.

        Raises:
            IRSDECheckpointError (``_irsde_error``): an unreadable file, weights that are
                not floating point or hold NaN/inf (named), settings that describe no
                network (or one too large), or a checkpoint that does not fit them.
        """
        try:
            state_dict = read_checkpoint(path, state_dict_key)
            check_weight_values(state_dict, path)
            full_config = {**cls._irsde_infer_config(state_dict), **config}
            converted = cls._irsde_convert_state_dict(state_dict)
            original_of = dict(zip(converted, state_dict, strict=True))
            skeleton = _meta_skeleton(cls, full_config, path)
            check_against_skeleton(skeleton, converted, original_of, cls._irsde_original_names)
        except IRSDECheckpointError as err:
            if isinstance(err, cls._irsde_error):
                raise
            raise cls._irsde_error(str(err)) from None
        model = cls(**full_config)
        model.load_state_dict(converted, strict=True)
        return model.eval()
