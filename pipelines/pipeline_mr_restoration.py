"""``MRRestorationPipeline``: image restoration with a mean-reverting (IR-SDE) diffusion model.

The degraded image is the mean ``mu`` of the mean-reverting SDE. Sampling starts at
``x_T = mu + init_noise_sigma * noise`` and runs the scheduler (the MR Sampler by default,
or one of the baselines) with the network ``unet(x_t, t, mu)``; images are RGB in [0, 1].
Same-size images are restored as one batch, other sizes one group after another, and the
output keeps the input order. DA-CLIP and degradation-aware models get their contexts once
per image (:mod:`~diffusers_mrs.pipelines.degradation`). Noise is drawn where the generator
lives, or on the CPU up front with ``cpu_noise`` (:mod:`~diffusers_mrs.pipelines.noise`);
``tile_size`` runs the network on overlapping tiles planned once per image
(:mod:`~diffusers_mrs.pipelines.tiling`). The sampling loop reads nothing back to the host.
User guide: docs/guide/pipeline.md, tiling.md, reproducibility.md.

This module only samples. The pipeline's other jobs are mixins, each in its own module:
loading and ``model_index.json`` names (:mod:`diffusers_mrs.pipeline_folder`),
``torch.compile`` and its padding (:mod:`~diffusers_mrs.pipelines.compiled`), the network's
contexts (:mod:`~diffusers_mrs.pipelines.degradation`), the checks of ``__call__``'s
arguments (:mod:`~diffusers_mrs.pipelines.call_arguments`) and what is read off the network
(:mod:`~diffusers_mrs.pipelines.network`). The images are read and checked once, by
:func:`diffusers_mrs.image_io.prepare_images`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import DiffusionPipeline, SchedulerMixin
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

from diffusers_mrs.image_io import PipelineImageInput, prepare_images
from diffusers_mrs.pipeline_folder import PipelineFolderMixin, default_model_path

from .call_arguments import (
    CallArgumentsMixin,
    SamplingSettings,
    StepCallback,
    TileSettings,
    clean_rows,
    size_groups,
)
from .compiled import CompileMixin
from .degradation import (
    ConditioningMixin,
    Contexts,
    DegradationEstimate,
    ImageDegradation,
    check_degradation,
    per_image_degradations,
)
from .ensemble import ensemble_statistics, repeat_for_samples
from .noise import CpuNoise, draw_cpu_noise, noisy_steps
from .output import (
    MRRestorationPipelineOutput,
    check_finite_samples,
    format_images,
    pipeline_output,
)
from .tiling import TilePlan, plan_tiles

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image
        >>> from diffusers_mrs import MRRestorationPipeline

        >>> pipe = MRRestorationPipeline.from_pretrained()  # the model shipped with the package
        >>> degraded = Image.open("degraded.png")
        >>> generator = torch.Generator(pipe.device).manual_seed(0)  # noise drawn where it samples
        >>> restored = pipe(image=degraded, num_inference_steps=10, generator=generator).images[0]
        >>> restored.save("restored.png")
        ```
"""

__all__ = [
    "MRRestorationPipeline",
    "MRRestorationPipelineOutput",
    "PipelineImageInput",
    "default_model_path",
    "prepare_images",
]


class MRRestorationPipeline(
    PipelineFolderMixin, CompileMixin, ConditioningMixin, CallArgumentsMixin, DiffusionPipeline
):
    r"""Image restoration by sampling a mean-reverting diffusion model (IR-SDE) with the MR Sampler.

    Components:
        unet: the network ``unet(sample, timestep, mu).sample`` (``MRUNet2DModel``, or any
            module with that call signature), predicting what ``scheduler.config.prediction_type``
            says (noise, data or velocity). A network that pads its input exposes the size
            multiple as ``pad_multiple`` (tiles are aligned to it); others count as 1.
        scheduler: ``MRSamplerScheduler``, ``MRUniPCScheduler``, ``MRPosteriorScheduler``
            or ``MREulerMaruyamaScheduler``; swap with
            ``pipe.scheduler = MRPosteriorScheduler.from_config(pipe.scheduler.config)``.
        image_encoder: optional, DA-CLIP's :class:`~diffusers_mrs.DACLIPImageEncoder`
            (``None`` for plain IR-SDE/Refusion networks). With it, the network is called
            as ``unet(x_t, t, mu, image_context=..., degradation_context=...)``.
        feature_extractor: the encoder's preprocessing (a ``transformers`` CLIP image
            processor, :func:`~diffusers_mrs.models.daclip_encoder.daclip_feature_extractor`);
            required with ``image_encoder``.
        degradation_encoder: optional, :class:`~diffusers_mrs.MRDegradationEncoder` (the
            default model's): names the degradation of each image and gives the network its
            ``degradation_context``.

    ``model_index.json`` names the components' library as ``"diffusers_mrs"`` when their class
    is exported by the top-level ``diffusers_mrs`` package, so folders stay loadable when the
    package's internal modules move. Publishing with a model card:
    :func:`diffusers_mrs.hub.push_pipeline_to_hub`.
    """

    model_cpu_offload_seq = "degradation_encoder->image_encoder->unet"
    _optional_components = [  # noqa: RUF012
        "image_encoder", "feature_extractor", "degradation_encoder"]
    _callback_tensor_inputs = ["latents", "mu"]  # noqa: RUF012 - diffusers convention

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: SchedulerMixin,
        image_encoder: torch.nn.Module | None = None,
        feature_extractor: Any = None,
        degradation_encoder: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        if (image_encoder is None) != (feature_extractor is None):
            raise ValueError(
                "image_encoder and feature_extractor go together (the encoder needs its "
                "preprocessing); pass both or neither."
            )
        if image_encoder is not None and degradation_encoder is not None:
            raise ValueError(
                "a pipeline takes DA-CLIP's image_encoder or a degradation_encoder, not both"
                " (both would produce the network's degradation_context)."
            )
        self.register_modules(
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            degradation_encoder=degradation_encoder,
        )

    # ------------------------------------------------------------------------ properties
    @property
    def num_timesteps(self) -> int:
        """Number of denoising steps of the last call (per size group)."""
        return getattr(self, "_num_timesteps", 0)

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` from a callback to skip the remaining steps."""
        return getattr(self, "_interrupt", False)

    @torch.no_grad()
    def detect_degradation(
        self, image: PipelineImageInput, degradation: str | Sequence[str | None] | None = None
    ) -> DegradationEstimate | None:
        """The degradation encoder on ``image`` (what ``__call__`` takes: path, PIL, numpy,
        torch or a list), read and checked as ``__call__`` reads it: every image's type
        (``degradation`` forces it as in ``__call__``, else detected), the probabilities and
        the network's context, in input order (images of different sizes go through the
        encoder one size after another); ``None`` without a ``degradation_encoder``
        (:mod:`diffusers_mrs.pipelines.degradation`)."""
        checked = check_degradation(degradation, getattr(self, "degradation_encoder", None))
        if getattr(self, "degradation_encoder", None) is None:
            return None
        images = prepare_images(image, **self._image_requirements())
        forced = per_image_degradations(checked, len(images))
        device, dtype = self._execution_device, self._sampling_dtype()
        groups = size_groups(images)
        estimates = [self._estimate_degradation(
            torch.stack([images[k] for k in indices]).to(device=device, dtype=dtype),
            [forced[k] for k in indices]) for indices in groups]
        return DegradationEstimate.in_input_order(estimates, groups)

    # ------------------------------------------------------------------------ sampling steps
    def prepare_timesteps(
        self, num_inference_steps: int, timesteps: Sequence[float] | None, device: torch.device
    ) -> torch.Tensor:
        """Sets the scheduler's timesteps (custom ``timesteps`` win) and returns them."""
        if timesteps is not None:
            params = inspect.signature(self.scheduler.set_timesteps).parameters
            if "timesteps" not in params:
                raise ValueError(
                    f"{type(self.scheduler).__name__}.set_timesteps does not accept custom"
                    " `timesteps`."
                )
            self.scheduler.set_timesteps(timesteps=list(timesteps), device=device)
        else:
            self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        return self.scheduler.timesteps

    def prepare_latents(
        self,
        mu: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The start of sampling: ``x_T = mu + init_noise_sigma * noise`` (``noise`` drawn
        from ``generator`` on ``mu``'s device unless given)."""
        if noise is None:
            noise = randn_tensor(tuple(mu.shape), generator=generator, device=mu.device,
                                 dtype=mu.dtype)
        return mu + self.scheduler.init_noise_sigma * noise

    def _step_kwargs(self, generator: Any, noise: CpuNoise | None) -> tuple[dict[str, Any], bool]:
        """The ``generator`` argument if this scheduler's ``step`` takes one (none with
        noise drawn up front: that goes in as ``variance_noise``), and whether it takes
        ``mu`` (passed per step: a callback may replace it)."""
        names = set(inspect.signature(self.scheduler.step).parameters)
        if "mu" not in names:
            logger.info(f"{type(self.scheduler).__name__}.step takes no `mu`; it is not passed.")
        if noise is not None:
            if "variance_noise" not in names:
                raise ValueError(
                    f"{type(self.scheduler).__name__}.step takes no `variance_noise`, so the"
                    " noise cannot be drawn on the CPU up front (cpu_noise / a CPU generator"
                    " on another device); pass a generator on the sampling device."
                )
            return {}, "mu" in names
        return {"generator": generator} if "generator" in names else {}, "mu" in names

    def _tile_plan(self, mu_net: torch.Tensor, tiling: TileSettings | None) -> TilePlan | None:
        """The tiling fixed for one image (:func:`~.tiling.plan_tiles`), ``None`` untiled.
        With a compiled network the last tile batch is padded to the full batch, so every
        network call has one shape (one graph, also under ``mode="reduce-overhead"``)."""
        if tiling is None:
            return None
        return plan_tiles(mu_net, tiling.size, tiling.overlap, tiling.batch_size,
                          self._unet_pad_multiple(), self._unet_pad_mode(),
                          pad_last_batch=self.is_compiled)

    def _network(
        self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, contexts: Contexts | None
    ) -> torch.Tensor:
        """``unet(x, t, mu[, contexts])`` with ``t`` broadcast over the batch; returns the
        prediction.

        ``x`` (the state, new at every step) is cast to the network's dtype here; ``mu`` and
        the contexts arrive in it already (cast once per image)."""
        x = x.to(mu.dtype)
        kwargs = contexts.unet_kwargs(x.shape[0]) if contexts is not None else {}
        height, width = x.shape[-2:]
        if self.compile_pad_multiple > 1:
            x, mu = self._pad_for_network(x, mu)
        out = self.unet(x, t.to(x.device).reshape(()).expand(x.shape[0]), mu=mu, **kwargs)
        out = out.sample if hasattr(out, "sample") else out[0]
        return out[..., :height, :width]

    def _model_output(
        self,
        latents: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        plan: TilePlan | None,
        contexts: Contexts | None = None,
    ) -> torch.Tensor:
        """The network's prediction at ``t``, on the whole image or tile by tile (``plan``:
        the image's tiling, :meth:`_tile_plan`)."""
        if plan is None:
            return self._network(latents, mu, t, contexts)
        return plan.apply(
            lambda x_tiles, mu_tiles: self._network(x_tiles, mu_tiles, t, contexts), latents)

    def denoise(
        self,
        latents: torch.Tensor,
        mu: torch.Tensor,
        timesteps: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        sampling: SamplingSettings,
        contexts: Contexts | None = None,
        noise: CpuNoise | None = None,
    ) -> torch.Tensor:
        """The sampling loop: one network evaluation and one scheduler step per timestep
        (``contexts``, computed once per image, go to every evaluation; ``noise``: every
        step's noise drawn up front on the CPU, else ``generator`` draws it in ``step``).
        Nothing in it reads a value back to the host (tests/test_host_sync.py)."""
        step_kwargs, takes_mu = self._step_kwargs(generator, noise)
        network_dtype = self._unet_dtype()
        mu_net = mu.to(network_dtype)  # once per image, not per step
        plan = self._tile_plan(mu_net, sampling.tiling)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                model_output = self._model_output(latents, mu_net, t, plan, contexts)
                if takes_mu:
                    step_kwargs["mu"] = mu
                if noise is not None:
                    step_kwargs["variance_noise"] = noise.step_noise(i)
                latents = self.scheduler.step(
                    model_output, t, latents, return_dict=False, **step_kwargs
                )[0].to(mu.dtype)
                if sampling.callback is not None:
                    latents, new_mu = self._run_callback(sampling, i, t, latents, mu)
                    if new_mu is not mu:
                        mu, mu_net = new_mu, new_mu.to(network_dtype)
                        plan = self._tile_plan(mu_net, sampling.tiling)
                progress_bar.update()
        self._forget_padded_mu()
        return latents

    def _restore_group(
        self,
        mu: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        sampling: SamplingSettings,
        latents: torch.Tensor | None = None,
        degradation: Sequence[str | None] | None = None,
        image_numbers: list[int] | None = None,
    ) -> tuple[torch.Tensor, DegradationEstimate | None]:
        """Samples one batch of same-size images (``num_samples`` per image, in the
        :func:`~diffusers_mrs.pipelines.ensemble.repeat_for_samples` layout), from
        ``latents`` when given, with the types ``degradation`` (per image, None: detect);
        returns the samples as float32 in [0, 1] and the degradation estimate (or None).
        Samples with NaN/inf raise :class:`~.output.NonFiniteOutputError` naming the
        images by ``image_numbers`` (their input positions)."""
        # the contexts: once per image, before the repeats and the tiles
        estimate = self._estimate_degradation(mu, degradation)
        clean = clean_rows(estimate, sampling)
        if clean is not None and all(clean):  # nothing to sample: each image is its own result
            self._num_timesteps = 0
            return mu.float().clamp(0.0, 1.0).repeat_interleave(sampling.num_samples, 0), estimate
        contexts = self.encode_image(mu) if estimate is None else self._degradation_contexts(
            estimate)
        if estimate is None and contexts is not None:  # DA-CLIP's names, where stored
            estimate = contexts.estimate
        mu, generator = repeat_for_samples(mu, generator, sampling.num_samples)
        if contexts is not None:
            contexts = contexts.repeat_interleave(sampling.num_samples)
        timesteps = self.prepare_timesteps(
            sampling.num_inference_steps, sampling.timesteps, mu.device
        )
        self._num_timesteps = len(timesteps)
        noise = None
        if sampling.cpu_noise:  # once per image, in a CPU run's order (pipelines/noise.py)
            noise = draw_cpu_noise(
                tuple(mu.shape), generator, mu.device, mu.dtype,
                torch.promote_types(mu.dtype, torch.float32),
                noisy_steps(self.scheduler, len(timesteps)), with_start=latents is None)
        if latents is None:
            latents = self.prepare_latents(
                mu, generator, None if noise is None else noise.start_noise())
        else:
            latents = latents.to(device=mu.device, dtype=mu.dtype)
        latents = self.denoise(latents, mu, timesteps, generator, sampling, contexts, noise)
        if clean is not None and any(clean):
            rows = torch.tensor(clean, device=mu.device).repeat_interleave(sampling.num_samples)
            latents[rows] = mu[rows].to(latents.dtype)
        check_finite_samples(latents, sampling.num_samples, image_numbers)
        return latents.float().clamp_(0.0, 1.0), estimate

    def _restore_images(
        self,
        images: list[torch.Tensor],
        generator: torch.Generator | list[torch.Generator] | None,
        sampling: SamplingSettings,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[ImageDegradation] | None]:
        """Restores every image, one batch per size; returns the restorations (the mean of
        each image's samples), their spread (``None`` for one sample) and the degradation
        of each image (``None`` without a degradation encoder), in input order."""
        self._interrupt = False
        device, dtype = self._execution_device, self._sampling_dtype()
        restored: list[torch.Tensor] = [torch.empty(0)] * len(images)
        spread: list[torch.Tensor | None] = [None] * len(images)
        reports: list[ImageDegradation | None] = [None] * len(images)
        for indices in size_groups(images):
            mu = torch.stack([images[k] for k in indices]).to(device=device, dtype=dtype)
            group_generator = (
                [generator[k] for k in indices] if isinstance(generator, list) else generator
            )
            forced = None if sampling.degradation is None else [
                sampling.degradation[k] for k in indices]
            samples, estimate = self._restore_group(
                mu, group_generator, sampling, sampling.latents, forced, indices)
            mean, std = ensemble_statistics(samples, sampling.num_samples)
            group_reports = [None] * len(indices) if estimate is None else estimate.per_image()
            for j, k in enumerate(indices):
                restored[k] = mean[j]
                spread[k] = None if std is None else std[j]
                reports[k] = group_reports[j]
        return restored, spread, None if None in reports else reports

    #: ``[C, H, W]`` images in [0, 1] as ``output_type`` (:func:`.output.format_images`)
    format_output = staticmethod(format_images)

    # ------------------------------------------------------------------------ __call__
    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: PipelineImageInput = None,
        num_inference_steps: int = 10,
        timesteps: Sequence[float] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        tile_size: int | tuple[int, int] | None = None,
        tile_overlap: int | tuple[int, int] | None = None,
        tile_batch_size: int = 4,
        num_samples: int = 1,
        latents: torch.Tensor | None = None,
        degradation: str | Sequence[str | None] | None = None,
        keep_clean: bool = True,
        cpu_noise: bool = False,
    ) -> MRRestorationPipelineOutput | tuple:
        r"""Restores degraded images.

        Args:
            image: the degraded image(s) ``mu``: PIL, numpy (HWC), torch (CHW), a file path or a
                list, read by :mod:`diffusers_mrs.image_io` (EXIF, 8/16-bit scale, channels).
            num_inference_steps: number of network evaluations (sampler steps).
            timesteps, generator: custom descending timesteps (train-time units; override the
                steps); one ``torch.Generator`` or one per image, on the sampling device or CPU.
            output_type: ``"pil"``, ``"np"`` (BHWC) or ``"pt"`` (BCHW), float32 in [0, 1].
            return_dict: return an ``ImagePipelineOutput`` (else a tuple ``(images,)``).
            callback_on_step_end: ``callback(pipe, i, t, callback_kwargs)`` after each step,
                may replace the tensors named in ``callback_on_step_end_tensor_inputs``.
            tile_size, tile_overlap, tile_batch_size: blended network tiles (int or ``(h, w)``),
                their overlap (default a quarter tile) and tiles per call (compiled: every call).
            num_samples: K samples per image, one batch; K > 1: ``images`` is their mean,
                ``uncertainty`` their std (faithful: MRS solver_order=2, docs/math.md#ensembles).
            latents: initial x_T, ``[len(images) * K, C, H, W]`` (one image size; default ``mu +
                init_noise_sigma * noise``); the result is deterministic with an ODE scheduler.
            degradation: models with a ``degradation_encoder``: ``None``/``"auto"`` detects
                each image's type, a name forces it, a list gives one per image
                (:mod:`diffusers_mrs.pipelines.degradation`).
            keep_clean: such models return a ``"clean"`` image unchanged, without sampling.
            cpu_noise: all noise drawn on the CPU up front, copied asynchronously (so with a CPU
                generator on another device): a CPU run's images (docs: reproducibility).

        Returns ``MRRestorationPipelineOutput`` (``images``; ``uncertainty`` for K > 1;
        ``degradation*`` for degradation-aware models) or its tuple. Raises ValueError for a
        bad argument (before sampling) or a NaN/inf result, TypeError for a bad callback.

        Examples:
        """
        sampling = self._sampling_settings(
            num_inference_steps, timesteps, num_samples, output_type, tile_size, tile_overlap,
            tile_batch_size, callback_on_step_end, callback_on_step_end_tensor_inputs, degradation,
            keep_clean)
        images = prepare_images(image, **self._image_requirements())  # read and checked, once
        sampling = self._settings_for_images(sampling, images, generator, latents, cpu_noise)
        restored, spread, reports = self._restore_images(images, generator, sampling)
        self.maybe_free_model_hooks()
        out = pipeline_output(restored, spread, output_type, num_samples, reports)
        return out if return_dict else out.to_tuple()
