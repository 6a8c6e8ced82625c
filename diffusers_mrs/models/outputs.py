"""Output types shared by the model families (the IR-SDE U-Net, Refusion's NAFNet)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput

__all__ = ["MRUNet2DOutput"]


@dataclass
class MRUNet2DOutput(BaseOutput):
    """Output of :class:`MRUNet2DModel`.

    Args:
        sample: network prediction with the same shape as the input ``sample``
            (``[batch, out_channels, height, width]``).
    """

    sample: torch.Tensor
