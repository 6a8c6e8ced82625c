"""How a training run uses its device: pinned host memory. (Float32 precision, TF32, is set
with :func:`diffusers_mrs.restore_settings.set_tf32`, the same switch as sampling.)"""

from __future__ import annotations

import torch


def pin_host_memory(use_cpu: bool) -> bool:
    """Whether data loaders pin their batches (page-locked memory, for asynchronous copies
    to a CUDA device): when training on one."""
    return torch.cuda.is_available() and not use_cpu
