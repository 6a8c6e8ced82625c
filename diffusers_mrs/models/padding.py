"""Padding of images at their bottom and right edges, the way the networks and the tiled
pipeline pad (so a tile at the border sees what the whole network sees): reflection by
default, zeros for networks whose ``pad_mode`` is ``"constant"`` (Refusion's NAFNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["PAD_MODES", "pad_to_multiple", "reflect_pad_bottom_right"]

# A network's ``pad_mode``: how it pads its input up to its ``pad_multiple``.
PAD_MODES = ("reflect", "constant")


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


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pads ``x`` at the bottom and right up to the next multiple of ``multiple``: by
    reflection (``mode="reflect"``) or with zeros (``mode="constant"``)."""
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode must be one of {PAD_MODES}, got {mode!r}.")
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if mode == "constant":
        return F.pad(x, (0, pad_w, 0, pad_h))
    return reflect_pad_bottom_right(x, pad_h, pad_w)
