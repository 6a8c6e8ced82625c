"""Network architectures in diffusers format."""

from .checkpoint_io import IRSDECheckpointError, IRSDECheckpointMixin, read_checkpoint
from .irsde_checkpoint import (
    convert_irsde_state_dict,
    convert_to_irsde_state_dict,
    load_irsde_checkpoint,
)
from .unet_mr import MRUNet2DModel, MRUNet2DOutput

__all__ = [
    "IRSDECheckpointError",
    "IRSDECheckpointMixin",
    "MRUNet2DModel",
    "MRUNet2DOutput",
    "convert_irsde_state_dict",
    "convert_to_irsde_state_dict",
    "load_irsde_checkpoint",
    "read_checkpoint",
]
