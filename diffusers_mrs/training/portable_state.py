"""Nested states (``state_dict()`` results, random-generator states) as safetensors + JSON,
without pickle.

:func:`save_state_files` writes ``STEM.json`` (the structure, numbers and strings) and, when
the state holds tensors, ``STEM.safetensors`` (each tensor under the dotted path of keys
that leads to it, e.g. ``state.0.exp_avg`` in an optimiser's state); :func:`load_state_files`
rebuilds the same object. What JSON cannot say is tagged: a tensor is
``{"__tensor__": path}``, a tuple ``{"__tuple__": [...]}``, a dict with integer keys
``{"__int_keys__": {...}}`` (optimiser states are keyed by parameter index) and a numpy
array ``{"__ndarray__": [...], "dtype": ...}`` (numpy's random state). Floats survive the
round trip exactly (JSON numbers are written with Python's shortest exact ``repr``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

_TENSOR, _TUPLE, _INT_KEYS, _NDARRAY = "__tensor__", "__tuple__", "__int_keys__", "__ndarray__"


def encode_state(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """``obj`` as JSON-ready values; its tensors go to ``tensors`` (CPU, contiguous) under
    their dotted key path. A ``TypeError`` names the path of anything else (an object)."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [encode_state(v, tensors, _join(path, i)) for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_state(v, tensors, _join(path, k)) for k, v in obj.items()}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in obj):
            return {_INT_KEYS: {str(k): encode_state(v, tensors, _join(path, k))
                                for k, v in obj.items()}}
    raise TypeError(f"cannot store {type(obj).__name__} at {path or 'the top'} of a state "
                    "without pickle (only tensors, numbers, strings, lists, tuples, dicts)")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def decode_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The object :func:`encode_state` encoded (``tensors``: what it collected)."""
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        key = obj[_TENSOR]
        if key not in tensors:
            raise ValueError(f"the state names tensor {key!r}, which its safetensors file lacks")
        return tensors[key]
    if _TUPLE in obj:
        return tuple(decode_state(v, tensors) for v in obj[_TUPLE])
    if _INT_KEYS in obj:
        return {int(k): decode_state(v, tensors) for k, v in obj[_INT_KEYS].items()}
    if _NDARRAY in obj:
        return np.asarray(obj[_NDARRAY], dtype=np.dtype(obj["dtype"]))
    return {k: decode_state(v, tensors) for k, v in obj.items()}


def state_files(folder: Path, stem: str) -> tuple[Path, Path]:
    """``STEM.json`` and ``STEM.safetensors`` in ``folder``."""
    return folder / f"{stem}.json", folder / f"{stem}.safetensors"


def save_state_files(folder: Path, stem: str, state: Any) -> None:
    """Write ``state`` as ``STEM.json`` (+ ``STEM.safetensors`` when it holds tensors); the
    JSON goes last, so a folder with the JSON has both."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    record = encode_state(state, tensors)
    json_path, tensor_path = state_files(folder, stem)
    if tensors:
        save_file(tensors, str(tensor_path), metadata={"format": "pt"})
    json_path.write_text(json.dumps(record, indent=1) + "\n")


def load_state_files(folder: Path, stem: str) -> Any:
    """The state :func:`save_state_files` wrote as ``STEM`` in ``folder``."""
    from safetensors.torch import load_file

    json_path, tensor_path = state_files(folder, stem)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path} is missing: not a complete checkpoint")
    tensors = load_file(str(tensor_path)) if tensor_path.is_file() else {}
    return decode_state(json.loads(json_path.read_text()), tensors)
