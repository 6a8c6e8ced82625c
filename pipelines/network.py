"""What the pipeline reads off its network, by duck typing.

The pipeline's ``unet`` is ``MRUNet2DModel``, ``MRNAFNetModel`` or any module with the call
signature ``unet(sample, timestep, mu)``, possibly wrapped by ``torch.compile``. A network
tells its dtype, its input channels (``config.in_channels``), and how it pads its input
(``pad_multiple`` and ``pad_mode``) where it has them; the defaults below stand in where it
does not.
"""

from __future__ import annotations

import itertools

import torch
from diffusers.utils.torch_utils import unwrap_module

__all__ = ["NetworkMixin"]


class NetworkMixin:
    """The network's dtype, channels, padding and device, read off ``self.unet``."""

    unet: torch.nn.Module

    @property
    def _execution_device(self) -> torch.device:
        """The device the network runs on. diffusers' property reads ``module.device``,
        which a plain ``nn.Module`` lacks; then the network's first tensor decides."""
        try:
            return super()._execution_device  # type: ignore[misc]
        except AttributeError:
            for tensor in itertools.chain(self.unet.parameters(), self.unet.buffers()):
                return tensor.device
            return torch.device("cpu")

    def _unet_dtype(self) -> torch.dtype:
        """The network's dtype: its ``dtype``, else its first parameter's, else float32."""
        dtype = getattr(self.unet, "dtype", None)
        if isinstance(dtype, torch.dtype):
            return dtype
        for p in self.unet.parameters():
            return p.dtype
        return torch.float32

    def _sampling_dtype(self) -> torch.dtype:
        """The dtype of the sampler's state: float64 for a float64 network, else float32,
        so a float16/bfloat16 network only changes the network's arithmetic."""
        return torch.float64 if self._unet_dtype() == torch.float64 else torch.float32

    def _unet_pad_multiple(self) -> int:
        """The size multiple the network pads its input to: its ``pad_multiple``, else 1."""
        multiple = getattr(unwrap_module(self.unet), "pad_multiple", None)
        return multiple if isinstance(multiple, int) and multiple > 0 else 1

    def _unet_pad_mode(self) -> str:
        """How the network pads its input (``"reflect"`` or ``"constant"`` zeros); tiles pad
        the same way, so one tile covering the image equals the untiled network."""
        return getattr(unwrap_module(self.unet), "pad_mode", "reflect")

    def _unet_channels(self) -> int:
        """The network's input channels: ``config.in_channels``, else 3 (RGB)."""
        config = getattr(self.unet, "config", None)
        channels = getattr(config, "in_channels", None) if config is not None else None
        return int(channels) if channels else 3
