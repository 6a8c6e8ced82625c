"""Network architectures in diffusers format."""

from .irsde_checkpoint import (
    IRSDECheckpointError,
    convert_irsde_state_dict,
    convert_to_irsde_state_dict,
    load_irsde_checkpoint,
)
from .dtype_warning import install as _install_dtype_warning_filter
from .unet_mr import MRUNet2DModel, MRUNet2DOutput

_install_dtype_warning_filter()

__all__ = [
    "IRSDECheckpointError",
    "MRUNet2DModel",
    "MRUNet2DOutput",
    "convert_irsde_state_dict",
    "convert_to_irsde_state_dict",
    "load_irsde_checkpoint",
]
