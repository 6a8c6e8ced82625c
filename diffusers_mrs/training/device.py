"""How a training run uses its device: float32 precision (TF32) and pinned host memory."""

from __future__ import annotations

import torch


def set_float32_precision(allow_tf32: bool) -> None:
    """Set, process-wide, whether float32 matmuls and cuDNN convolutions may run in TF32 on
    Ampere and later GPUs (``--allow_tf32``: faster, 10-bit mantissa) or in IEEE float32.

    torch's own defaults differ between the two (cuDNN convolutions TF32, matmuls not), so a
    run sets both explicitly; mixed precision (bf16/fp16) is unaffected. Uses torch's
    ``fp32_precision`` flags where they exist (torch >= 2.9 refuses to mix them with the
    legacy ``allow_tf32`` ones).
    """
    if not hasattr(torch.backends.cudnn, "conv"):  # torch < 2.9: only the legacy flags
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
        return
    precision = "tf32" if allow_tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def pin_host_memory(use_cpu: bool) -> bool:
    """Whether data loaders pin their batches (page-locked memory, for asynchronous copies
    to a CUDA device): when training on one."""
    return torch.cuda.is_available() and not use_cpu
