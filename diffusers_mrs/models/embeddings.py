"""Timestep inputs shared by the U-Net and the NAFNet: the batch of timesteps and their
sine/cosine features."""

from __future__ import annotations

import math

import torch

__all__ = ["sinusoidal_embedding", "timestep_batch", "timestep_features"]


def sinusoidal_embedding(
    timesteps: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sine/cosine features of ``timesteps`` (shape ``[B]``), as in IR-SDE.

    The ``dim // 2`` frequencies are geometrically spaced from 1 down to 1/10000 (both
    ends included, computed in float32 as in the original); the result is
    ``concat(sin(t f), cos(t f))`` of shape ``[B, 2 * (dim // 2)]`` in ``dtype`` (use
    float32 or float64: half precision is too coarse for the angles).
    """
    half = dim // 2
    step = math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=timesteps.device, dtype=torch.float32) * -step)
    angles = timesteps.to(dtype)[:, None] * freqs.to(dtype)[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def timestep_features(timesteps: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """:func:`sinusoidal_embedding` for a network whose parameters are in ``dtype``: the
    angles in float64 for float64 networks, float32 otherwise, the result cast to ``dtype``."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    return sinusoidal_embedding(timesteps, dim, compute).to(dtype)


def timestep_batch(
    timestep: float | int | torch.Tensor, batch: int, device: torch.device
) -> torch.Tensor:
    """A scalar, 0-dim or per-item timestep as a float tensor of shape ``[B]`` (float64
    if given in float64, float32 otherwise)."""
    t = torch.as_tensor(timestep, device=device)
    t = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)
    if t.numel() == 1:
        return t.reshape(1).expand(batch)
    t = t.reshape(-1)
    if t.numel() != batch:
        raise ValueError(
            f"timestep has {t.numel()} entries but the batch has {batch} items; "
            "pass a scalar or one timestep per item."
        )
    return t
