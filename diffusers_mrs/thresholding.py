"""Imagen dynamic thresholding of a data prediction (Saharia et al., 2022), per sample and
without reading anything back to the host."""

from __future__ import annotations

import torch


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """``clamp(x0, -s, s) / s`` with ``s`` the ``ratio`` quantile of ``|x0|`` per sample,
    clipped to ``[1, max_value]``."""
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat.float(), ratio, dim=1)
    s = s.clamp(min=1.0, max=max_value).to(x0.dtype)
    s = s.view(-1, *([1] * (x0.ndim - 1)))
    return torch.clamp(x0, -s, s) / s
