"""Checks that weights hold what a network can compute with: floating-point, finite numbers.

A checkpoint with one NaN weight (or int8 weights cast to float on load) gives a network
whose every output is NaN or garbage; sampling then returns an all-black image without a
word. These checks name the offending tensors instead, at load and at conversion:

- :func:`non_float_weights`: tensors stored in an integer or bool type (read from
  ``torch`` dtypes, or from safetensors headers with :func:`stored_weight_dtypes`, which
  reads no tensor data);
- :func:`non_finite_weights`: floating-point tensors holding NaN or +-inf (one pass over
  the values, one host sync per tensor: at load time, never per sampling step);

:func:`diffusers_mrs.models.checkpoint_io.weights_message` makes one error message of the
lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

__all__ = ["non_finite_weights", "non_float_weights", "stored_weight_dtypes"]


def _is_float(dtype: torch.dtype | str) -> bool:
    """A torch dtype, or a safetensors dtype name (``F32``, ``BF16``, ``F8_E4M3``, ``I8``)."""
    if isinstance(dtype, torch.dtype):
        return dtype.is_floating_point
    return dtype.startswith(("F", "BF"))


def _dtype_name(dtype: torch.dtype | str) -> str:
    return str(dtype).removeprefix("torch.")


def stored_weight_dtypes(files: Iterable[Path]) -> dict[str, str]:
    """``name -> dtype`` as stored in safetensors ``files`` (``"F32"``, ``"I8"``, ...),
    read from their headers only."""
    from safetensors import safe_open

    dtypes: dict[str, str] = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                dtypes[name] = f.get_slice(name).get_dtype()
    return dtypes


def non_float_weights(dtypes: Mapping[str, torch.dtype | str]) -> list[str]:
    """``"name (int8)"`` for every entry whose dtype is not floating point."""
    return [f"{name!r} ({_dtype_name(d)})" for name, d in dtypes.items() if not _is_float(d)]


def non_finite_weights(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """``"name (3 of 1024 values)"`` for every floating-point tensor holding NaN or +-inf
    (tensors on the ``meta`` device, which hold no values, are skipped)."""
    found = []
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or tensor.device.type == "meta":
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            found.append(f"{name!r} ({bad} of {tensor.numel()} values)")
    return found
