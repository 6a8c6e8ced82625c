"""diffusers-mrs: the MR Sampler for mean-reverting diffusion, as a diffusers plugin.

The schedulers import eagerly (they are light); the network and the pipeline load on
first use, so ``import diffusers_mrs`` stays fast.
"""

from __future__ import annotations

from typing import Any

# diffusers' loader resolves ("diffusers_mrs", ClassName) entries of model_index.json by
# looking the loadable base classes up on this module.
from diffusers import ModelMixin, SchedulerMixin  # noqa: F401

from ._checkout import serve_checkout_folders
from .noise_schedule import MRNoiseSchedule
from .scheduling_mr_baselines import MREulerMaruyamaScheduler, MRPosteriorScheduler
from .scheduling_mr_sampler import MRSamplerScheduler
from .scheduling_mr_unipc import MRUniPCScheduler

__version__ = "0.1.0"

# In a plain checkout, `pipelines/` and `model_cards/` (top-level folders) become
# `diffusers_mrs.pipelines` / `diffusers_mrs.model_cards`, as an install maps them.
serve_checkout_folders(__name__, ("pipelines", "model_cards"))

_LAZY = {
    "DACLIPImageEncoder": "diffusers_mrs.models.daclip_encoder",
    "MRDegradationEncoder": "diffusers_mrs.models.degradation_encoder",
    "MRNAFNetModel": "diffusers_mrs.models.nafnet_mr",
    "MRUNet2DModel": "diffusers_mrs.models.unet_mr",
    "MRRestorationPipeline": "diffusers_mrs.pipelines",
    "MRRestorationPipelineOutput": "diffusers_mrs.pipelines",
}

__all__ = [
    "DACLIPImageEncoder",
    "MRDegradationEncoder",
    "MREulerMaruyamaScheduler",
    "MRNAFNetModel",
    "MRNoiseSchedule",
    "MRPosteriorScheduler",
    "MRRestorationPipeline",
    "MRRestorationPipelineOutput",
    "MRSamplerScheduler",
    "MRUNet2DModel",
    "MRUniPCScheduler",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffusers_mrs' has no attribute {name!r}")
