"""Reflect padding of images at their bottom and right edges, the one way the networks
and the tiled pipeline pad (so a tile at the border sees what the whole network sees)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pad_to_multiple", "reflect_pad_bottom_right"]


def reflect_pad_bottom_right(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflect-pads ``x`` (``[..., H, W]``) by ``pad_h`` rows at the bottom and ``pad_w``
    columns at the right.

    Same as ``F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")`` where that is defined (pad
    smaller than the size); larger pads are applied in several reflections, and a size-1
    dimension is replicated, so any input size works.
    """
    while pad_w > 0 or pad_h > 0:
        step_w = min(pad_w, x.shape[-1] - 1)
        step_h = min(pad_h, x.shape[-2] - 1)
        if step_w == 0 and step_h == 0:  # 1 pixel wide and/or high: nothing to reflect
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_w -= step_w
        pad_h -= step_h
    return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pads ``x`` at the bottom and right up to the next multiple of ``multiple``."""
    height, width = x.shape[-2:]
    return reflect_pad_bottom_right(x, (-height) % multiple, (-width) % multiple)
