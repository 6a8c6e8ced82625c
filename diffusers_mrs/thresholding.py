"""Imagen dynamic thresholding of a data prediction (Saharia et al., 2022), per sample and
without reading anything back to the host (docs/guide/schedulers.md)."""

from __future__ import annotations

import math

import torch


def per_sample_quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of each row of ``flat`` (B x n), with torch.quantile's linear
    interpolation between order statistics k = floor(q (n - 1)) and k + 1 (0-based), from
    ``kthvalue``: exact, on every device, with no limit on n (torch.quantile refuses rows
    over 2^24 elements) and no host sync."""
    n = flat.shape[1]
    position = q * (n - 1)
    below = math.floor(position)
    lower = flat.kthvalue(below + 1, dim=1).values
    if below + 1 >= n or position == below:
        return lower
    upper = flat.kthvalue(below + 2, dim=1).values
    return torch.lerp(lower, upper, position - below)


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """``clamp(x0, -s, s) / s`` with ``s = clamp(quantile(|x0|, ratio), 1, max_value)`` per
    sample."""
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = per_sample_quantile(flat.float(), ratio)
    s = s.clamp(min=1.0, max=max_value).to(x0.dtype)
    s = s.view(-1, *([1] * (x0.ndim - 1)))
    return torch.clamp(x0, -s, s) / s
