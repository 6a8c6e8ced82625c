"""Pipelines of diffusers-mrs, installed as ``diffusers_mrs.pipelines``."""

from .pipeline_mr_restoration import (
    MRRestorationPipeline,
    MRRestorationPipelineOutput,
    default_model_path,
    prepare_images,
)
from .tiling import tiled_model_output

__all__ = [
    "MRRestorationPipeline",
    "MRRestorationPipelineOutput",
    "default_model_path",
    "prepare_images",
    "tiled_model_output",
]
