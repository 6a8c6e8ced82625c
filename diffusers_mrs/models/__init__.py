"""Network architectures in diffusers format.

The DA-CLIP image encoder (which imports ``transformers``' CLIP modules) loads on first
use, so importing the U-Net stays light.
"""

from __future__ import annotations

from typing import Any

from .checkpoint_io import IRSDECheckpointError, IRSDECheckpointMixin, read_checkpoint
from .dtype_warning import install as _install_dtype_warning_filter
from .irsde_checkpoint import (
    convert_irsde_state_dict,
    convert_to_irsde_state_dict,
    load_irsde_checkpoint,
)
from .nafnet_mr import MRNAFNetModel
from .unet_mr import MRUNet2DModel, MRUNet2DOutput

_install_dtype_warning_filter()

_LAZY = {
    "DACLIPEncoderOutput": "diffusers_mrs.models.daclip_encoder",
    "DACLIPImageEncoder": "diffusers_mrs.models.daclip_encoder",
    "daclip_feature_extractor": "diffusers_mrs.models.daclip_encoder",
}

__all__ = [
    "DACLIPEncoderOutput",
    "DACLIPImageEncoder",
    "IRSDECheckpointError",
    "IRSDECheckpointMixin",
    "MRNAFNetModel",
    "MRUNet2DModel",
    "MRUNet2DOutput",
    "convert_irsde_state_dict",
    "convert_to_irsde_state_dict",
    "daclip_feature_extractor",
    "load_irsde_checkpoint",
    "read_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffusers_mrs.models' has no attribute {name!r}")
