"""Our side of ``bench_restore.py``: ``MRRestorationPipeline`` restoring one image end to
end, for a method (MR Sampler or posterior sampling), an NFE and a variant (network dtype,
``+compile``)."""

from __future__ import annotations

from typing import Any

import torch
from restore_measure import Runner
from restore_networks import Network

from diffusers_mrs import MRPosteriorScheduler, MRRestorationPipeline, MRSamplerScheduler
from diffusers_mrs.pipelines.degradation import Contexts as _Contexts
from diffusers_mrs.restore_settings import seeded_generator


def ours_runner(net: Network, method: str, nfe: int, variant: str) -> Runner:
    """Our pipeline, end to end from a tensor image to the restored tensor."""
    config = net.scheduler_config
    scheduler = (MRSamplerScheduler if method == "mrs" else MRPosteriorScheduler).from_config(
        config
    )
    pipe = make_pipeline(net.unet, scheduler, variant, net.contexts, net.degradation_encoder)
    # a degradation-aware pipeline returns an image it finds clean unchanged: sample anyway
    extra = {"keep_clean": False} if net.degradation_encoder is not None else {}

    def run(mu: torch.Tensor, seed: int) -> torch.Tensor:
        generator = seeded_generator(mu.device, seed)  # the noise is drawn on mu's device
        out = pipe(
            image=mu, num_inference_steps=nfe, generator=generator, output_type="pt", **extra
        )
        return out.images

    return run


class FixedContextPipeline(MRRestorationPipeline):
    """The pipeline with fixed network contexts (``fixed_contexts``, ``[1, D]`` each) in
    place of DA-CLIP's image encoder: ``encode_image`` hands them over once per image, and
    the pipeline passes them to every network call as it passes the encoder's."""

    fixed_contexts: dict[str, torch.Tensor]

    def encode_image(self, mu: torch.Tensor) -> _Contexts:
        image, degradation = (
            self.fixed_contexts[name].to(mu.device, self._unet_dtype()).expand(mu.shape[0], -1)
            for name in ("image_context", "degradation_context")
        )
        return _Contexts(image, degradation)


def make_pipeline(
    unet: torch.nn.Module,
    scheduler: Any,
    variant: str,
    contexts: dict[str, torch.Tensor] | None = None,
    degradation_encoder: torch.nn.Module | None = None,
) -> MRRestorationPipeline:
    """A pipeline for a variant: ``fp32``, ``bf16`` or ``fp16`` network weights (the sampler
    stays float32), ``+compile`` for :meth:`MRRestorationPipeline.enable_compile`; with
    ``contexts``, a :class:`FixedContextPipeline`; with a degradation encoder (float32)."""
    import copy

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    name, _, extra = variant.partition("+")
    if name != "fp32" or extra:  # a copy: the other variants keep the float32 network
        unet = copy.deepcopy(unet).to(dtype[name])
    pipe_class = MRRestorationPipeline if contexts is None else FixedContextPipeline
    pipe = pipe_class(unet=unet, scheduler=scheduler, degradation_encoder=degradation_encoder)
    if contexts is not None:
        pipe.fixed_contexts = contexts
    pipe.set_progress_bar_config(disable=True)
    if extra == "compile":
        pipe.enable_compile()
    return pipe
