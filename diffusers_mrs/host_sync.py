"""Recording where a block of code makes the host wait for the device.

A value read back to the host (``.item()``, ``bool(tensor)``, ``.cpu()``...) makes the host
wait until the device has computed it: one such read per sampling step serialises the
host and the device. :class:`HostSyncRecorder` records them in a block:

- on every device, the tensor methods that read values back to the host (a
  ``TorchFunctionMode``: it sees calls from Python, so it also finds them on the CPU, where
  nothing waits);
- where the block runs on CUDA, also every synchronisation CUDA reports through
  ``torch.cuda.set_sync_debug_mode("warn")`` (blocking copies, ``nonzero``...).

Used by the tests of the sampling loop and by ``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["READ_BACKS", "HostSyncRecorder", "recorded_calls"]

#: Tensor methods that read values back to the host.
READ_BACKS = frozenset({
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
    torch.Tensor.nonzero,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
})
_READ_BACK_NAMES = frozenset({"item", "tolist", "nonzero", "numpy", "cpu"})


class _ReadBackMode(TorchFunctionMode):
    """Appends the name of every read-back call to ``calls``."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", str(func))
        if func in READ_BACKS or name in _READ_BACK_NAMES:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


class HostSyncRecorder:
    """``with HostSyncRecorder(cuda=...) as rec: ...`` records in ``rec.calls`` the
    read-backs of the block and, with ``cuda=True`` (CUDA available), the synchronisations
    CUDA warns about (``"cuda: <message>"``). ``rec.calls == []``: the host never waited.
    Nested recorders: an inner one keeps CUDA's reports of its block to itself (the
    read-backs reach both). ``read_backs=False`` records CUDA's reports only (no torch
    function mode: a compiled network is not traced again under it)."""

    def __init__(self, cuda: bool = False, read_backs: bool = True) -> None:
        self.cuda = bool(cuda) and torch.cuda.is_available()
        self.read_backs = read_backs
        self.calls: list[str] = []
        self._mode = _ReadBackMode(self.calls)
        self._warnings: Any = None

    def __enter__(self) -> HostSyncRecorder:
        if self.cuda:
            self._warnings = warnings.catch_warnings(record=True)
            self._caught = self._warnings.__enter__()
            warnings.simplefilter("always")
            self._previous_mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
        if self.read_backs:
            self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.read_backs:
            self._mode.__exit__(*exc)
        if self.cuda:
            torch.cuda.set_sync_debug_mode(self._previous_mode)
            self.calls += [f"cuda: {w.message}" for w in self._caught
                           if "synchroniz" in str(w.message)]
            self._warnings.__exit__(*exc)


@contextmanager
def recorded_calls(owner: Any, name: str, cuda: bool = False) -> Iterator[list[list[str]]]:
    """Within the block, every call of ``owner.<name>`` (e.g. a pipeline's ``denoise``, its
    sampling loop) runs under a :class:`HostSyncRecorder`; yields the list each call's
    recording is appended to. The method is restored afterwards."""
    recordings: list[list[str]] = []
    method = getattr(owner, name)
    own = vars(owner).get(name) if hasattr(owner, "__dict__") else None

    def recorded(*args: Any, **kwargs: Any) -> Any:
        with HostSyncRecorder(cuda=cuda) as rec:
            out = method(*args, **kwargs)
        recordings.append(rec.calls)
        return out

    setattr(owner, name, recorded)
    try:
        yield recordings
    finally:
        if own is None:
            delattr(owner, name)
        else:
            setattr(owner, name, own)
