"""``MRRestorationPipeline``: image restoration with a mean-reverting (IR-SDE) diffusion model.

The degraded image is the mean ``mu`` of the mean-reverting SDE. Sampling starts at
``x_T = mu + init_noise_sigma * noise`` and runs the scheduler (the MR Sampler by default,
or one of the baselines) with the network ``unet(x_t, t, mu)``. Images are RGB in [0, 1]
(the IR-SDE convention, not [-1, 1]).

Batches: images of the same size are restored together as one batch; images of different
sizes in one call are restored one size group after another (the noise of each image only
depends on its own generator when a list of generators is given). The output keeps the
input order; with mixed sizes, ``output_type="np"``/``"pt"`` give lists of per-image arrays
instead of one stacked array.

DA-CLIP models: a pipeline with an ``image_encoder`` (and its ``feature_extractor``)
computes the encoder's two context vectors once per image from the degraded image and
passes them to every network call (tiled calls included).

Degradation-aware models: a pipeline with a ``degradation_encoder`` detects each image's
degradation type (or takes the one forced with ``degradation=``), hands the network the
matching ``degradation_context`` in every call, and reports the type and its probability
in the output (:mod:`diffusers_mrs.pipelines.degradation`; the claimed types are
:attr:`MRRestorationPipeline.supported_degradations`).

Large images: ``tile_size`` runs the network on overlapping tiles at every step and blends
the outputs with a raised-cosine window (see :mod:`diffusers_mrs.pipelines.tiling`); the
scheduler step, and with it the noise, stays global. Each tile still gives the network less
context: tiles under 48 px fall below ~45 dB PSNR against the untiled result on the default
model (README "Large images"; the CLI refuses them).

This module only samples. Where a pipeline folder comes from (default model, local folder,
Hub snapshot) is :mod:`diffusers_mrs.pipeline_folder`; model cards and uploads are
:mod:`diffusers_mrs.hub`, which uses this pipeline (never the other way round).
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, SchedulerMixin
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

from diffusers_mrs.image_io import PipelineImageInput, check_finite, prepare_images
from diffusers_mrs.models.padding import pad_to_multiple
from diffusers_mrs.pipeline_folder import (
    LIBRARY_NAME,
    default_model_path,
    download_pipeline_snapshot,
    hub_repo_id,
)

from .degradation import (
    DegradationEstimate,
    ImageDegradation,
    check_degradation,
    check_encoder_image_sizes,
    daclip_degradation_estimate,
    estimate_degradation,
    per_image_degradations,
)
from .ensemble import check_num_samples, ensemble_statistics, repeat_for_samples
from .tiling import normalize_tile_args, tiled_model_output

logger = logging.get_logger(__name__)

StepCallback = Callable[..., dict[str, Any]] | PipelineCallback | MultiPipelineCallbacks

_OUTPUT_TYPES = ("pil", "np", "pt")
#: ``from_pretrained`` keyword arguments that also control the Hub download.
_DOWNLOAD_KWARGS = ("revision", "cache_dir", "token", "force_download", "local_files_only")

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image
        >>> from diffusers_mrs import MRRestorationPipeline

        >>> pipe = MRRestorationPipeline.from_pretrained()  # the model shipped with the package
        >>> degraded = Image.open("degraded.png")
        >>> restored = pipe(image=degraded, num_inference_steps=10,
        ...                 generator=torch.Generator().manual_seed(0)).images[0]
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


@dataclass
class MRRestorationPipelineOutput(ImagePipelineOutput):
    """Output of :class:`MRRestorationPipeline`.

    Attributes:
        images: the restorations (with ``num_samples > 1``: the per-pixel mean of each
            image's samples), as ``output_type`` says.
        uncertainty: with ``num_samples > 1``, the per-pixel standard deviation of each
            image's samples (Bessel-corrected), in the same layout and ``output_type`` as
            ``images`` (values in [0, 1] intensity units; as PIL, std 1.0 is white);
            ``None`` for a single sample.
        degradation: per input image (input order), the degradation type the network was
            given: the one detected by the pipeline's ``degradation_encoder`` (the most
            probable), or the one forced with ``degradation=``. ``None`` for a pipeline
            without a degradation encoder.
        degradation_probability: per input image, the encoder's probability of that type.
            For a forced type this is still the encoder's own estimate (it runs anyway), so
            a low value says the encoder would have chosen another type.
        degradation_probabilities: per input image, ``{type: probability}`` over all the
            encoder's types (they sum to 1).
    """

    uncertainty: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None
    degradation: list[str] | None = None
    degradation_probability: list[float] | None = None
    degradation_probabilities: list[dict[str, float]] | None = None


# ----------------------------------------------------------------------------- components
def _unwrap(module: Any) -> Any:
    """The module behind a ``torch.compile`` wrapper."""
    return getattr(module, "_orig_mod", module)


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place version counter; ``None`` for inference-mode tensors, which
    have none."""
    try:
        return tensor._version
    except RuntimeError:
        return None


def _library_entry(module: Any) -> tuple[str, str] | None:
    """``("diffusers_mrs", ClassName)`` if diffusers' loader finds the component's class there.

    The loader imports the library named in ``model_index.json`` and looks the class up on
    it; the same lookup here decides whether the short name is valid.
    """
    if module is None:
        return None
    cls = type(_unwrap(module))
    if getattr(importlib.import_module(LIBRARY_NAME), cls.__name__, None) is cls:
        return LIBRARY_NAME, cls.__name__
    return None


# ----------------------------------------------------------------------------- the pipeline
@dataclass(frozen=True)
class _Tiling:
    """Tiled network evaluation: tile and overlap ``(h, w)``, tile crops per network call."""

    size: tuple[int, int]
    overlap: tuple[int, int]
    batch_size: int


@dataclass(frozen=True)
class _Contexts:
    """Per-image conditioning vectors of the network, ``[B, D]`` each (DA-CLIP's two, or
    only the degradation context of a degradation-aware model)."""

    image: torch.Tensor | None
    degradation: torch.Tensor
    #: DA-CLIP's degradation names (an encoder that stores them), for the output
    estimate: DegradationEstimate | None = None

    def repeat_interleave(self, repeats: int) -> _Contexts:
        """The contexts of a batch whose items are each repeated ``repeats`` times."""
        return _Contexts(
            None if self.image is None else self.image.repeat_interleave(repeats, dim=0),
            self.degradation.repeat_interleave(repeats, dim=0),
        )

    def unet_kwargs(self, batch: int) -> dict[str, torch.Tensor]:
        """Keyword arguments of the network for a batch of ``batch`` items. A tiled call
        stacks the tiles position-major (item ``k * B + b`` is tile ``k`` of image ``b``,
        :func:`~diffusers_mrs.pipelines.tiling.tiled_model_output`), so the contexts are
        tiled the same way."""
        per_image = self.degradation.shape[0]
        if batch % per_image:
            raise ValueError(f"a batch of {batch} is not a whole number of {per_image} images")
        reps = batch // per_image
        kwargs = {"degradation_context": self.degradation.repeat(reps, 1)}
        if self.image is not None:
            kwargs["image_context"] = self.image.repeat(reps, 1)
        return kwargs


@dataclass(frozen=True)
class _Sampling:
    """The settings of one ``__call__`` that every size group samples with."""

    num_inference_steps: int
    timesteps: Sequence[float] | None
    num_samples: int
    latents: torch.Tensor | None
    tiling: _Tiling | None
    callback: StepCallback | None
    callback_inputs: Sequence[str]
    #: ``degradation=`` checked: None (detect), one type, or a list (one per image, ``None``
    #: entries detected); after the images are read, always one entry per image.
    degradation: str | Sequence[str | None] | None = None
    #: return images of type ``"clean"`` as they are, without sampling
    keep_clean: bool = True


def _clean_rows(estimate: DegradationEstimate | None, sampling: _Sampling) -> list[bool] | None:
    """Per image of a batch, whether it is returned as it is: its type (detected or forced)
    is ``"clean"`` and ``keep_clean`` is on. The posterior of an undegraded image given
    itself is the image (docs/math.md#degradation-context)."""
    if estimate is None or not sampling.keep_clean:
        return None
    return [name == "clean" for name in estimate.names]


def _size_groups(images: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of same-size images, one list per size, in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for idx, img in enumerate(images):
        groups.setdefault(tuple(img.shape[-2:]), []).append(idx)
    return list(groups.values())


class MRRestorationPipeline(DiffusionPipeline):
    r"""Image restoration by sampling a mean-reverting diffusion model (IR-SDE) with the MR Sampler.

    Components:
        unet: the network ``unet(sample, timestep, mu).sample`` (``MRUNet2DModel``, or any
            module with that call signature), predicting what ``scheduler.config.prediction_type``
            says (noise, data or velocity). A network that pads its input exposes the size
            multiple as ``pad_multiple`` (tiles are aligned to it); others count as 1.
        scheduler: ``MRSamplerScheduler``, ``MRPosteriorScheduler`` or
            ``MREulerMaruyamaScheduler``; swap with
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

    # -------------------------------------------------------------- model_index.json naming
    def register_modules(self, **kwargs: Any) -> None:
        """Registers components; diffusers_mrs classes get the library name ``diffusers_mrs``."""
        super().register_modules(**kwargs)
        for name, module in kwargs.items():
            entry = _library_entry(module)
            if entry is not None:
                self.register_to_config(**{name: entry})

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # DiffusionPipeline.__setattr__ re-registers swapped components (e.g. a new scheduler)
        # under their module path; use the short library name for diffusers_mrs classes.
        if "_internal_dict" in self.__dict__ and isinstance(
            self._internal_dict.get(name), (list, tuple)
        ):
            entry = _library_entry(value)
            if entry is not None:
                self.register_to_config(**{name: entry})

    # ------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs: Any
    ) -> MRRestorationPipeline:
        """Loads a pipeline from a local folder, a Hub repo id, or (no argument) the default model.

        Args:
            pretrained_model_name_or_path: a folder written by ``save_pretrained``, a Hub repo
                id (``"user/name"``), or ``None`` for the default model shipped in the package
                (``diffusers_mrs/default_model``).
            **kwargs: passed to ``DiffusionPipeline.from_pretrained`` (``unet=...``, ...).
                ``torch_dtype`` (or ``dtype``) loads the network in that dtype: it then runs
                in float16/bfloat16 while the sampler keeps float32. ``revision``,
                ``cache_dir``, ``token``, ``force_download`` and ``local_files_only`` also
                control the Hub download.

        diffusers does not download pipelines whose components come from a third-party
        library, so for a repo id the snapshot is downloaded first
        (:func:`diffusers_mrs.pipeline_folder.download_pipeline_snapshot`) and loaded locally.
        """
        if "torch_dtype" in kwargs:  # diffusers' deprecated name for `dtype`
            kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
        if pretrained_model_name_or_path is None:
            path = default_model_path()
            if not (path / "model_index.json").is_file():
                raise FileNotFoundError(
                    f"The default model is not installed (no model_index.json in {path}). Pass a"
                    " local pipeline folder or a Hub repo id to `from_pretrained`."
                )
            return super().from_pretrained(str(path), **kwargs)
        repo_id = hub_repo_id(pretrained_model_name_or_path)
        if repo_id is None:
            folder = os.path.expanduser(os.fspath(pretrained_model_name_or_path))
            return super().from_pretrained(folder, **kwargs)
        download = {k: kwargs[k] for k in _DOWNLOAD_KWARGS if k in kwargs}
        pipe = super().from_pretrained(download_pipeline_snapshot(repo_id, **download), **kwargs)
        pipe.register_to_config(_name_or_path=repo_id)
        return pipe

    # ------------------------------------------------------------------------ properties
    @property
    def num_timesteps(self) -> int:
        """Number of denoising steps of the last call (per size group)."""
        return getattr(self, "_num_timesteps", 0)

    @property
    def supported_degradations(self) -> list[str] | None:
        """The degradations this model claims to restore: its ``degradation_encoder``'s types
        without ``"clean"`` (an undegraded photo, which the encoder also recognises), in the
        encoder's order; ``None`` for a model without a degradation encoder. Any of the
        encoder's types, ``"clean"`` included, may be forced with ``degradation=``."""
        encoder = getattr(self, "degradation_encoder", None)
        if encoder is None:
            return None
        return [d for d in encoder.config.degradations if d != "clean"]

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` from a callback to skip the remaining steps."""
        return getattr(self, "_interrupt", False)

    @property
    def _execution_device(self) -> torch.device:
        """The device the network runs on. diffusers' property reads ``module.device``,
        which a plain ``nn.Module`` lacks; then the network's first tensor decides."""
        try:
            return super()._execution_device
        except AttributeError:
            for tensor in itertools.chain(self.unet.parameters(), self.unet.buffers()):
                return tensor.device
            return torch.device("cpu")

    def enable_compile(self, pad_to_multiple: int | None = None, **compile_kwargs: Any) -> None:
        """Compiles the network in place with ``torch.compile`` (opt-in).

        The compiled graph is built on the first call and then reused for every step and
        every image of that size; a second image size triggers one more compilation with
        dynamic shapes, which then serves all sizes (tiled restoration always feeds the
        same tile shape). Compiling takes tens of seconds to minutes on a CPU, so it pays
        off for many images or steps; the README gives measured costs. Calling it again
        does not compile again (a ``pad_to_multiple`` given again replaces the earlier).
        ``compile_kwargs`` go to ``torch.compile`` (``mode``, ``dynamic``...).

        Args:
            pad_to_multiple: pad the network's inputs (state and ``mu``) at the bottom and
                right up to a multiple of this many pixels, the way the network pads
                (``pad_mode``: reflection, zeros for Refusion), and crop its output back:
                every image size that rounds up to the same multiple runs the same
                compiled graph. Rounded up to a multiple of the network's own
                ``pad_multiple``; equal to that, the result is unchanged (the network pads
                the same way itself). Larger, the network sees more of the reflected
                border, so the output changes near the bottom and right edges, and
                everywhere a little through the networks' global attention (README,
                "Opt-in: network dtype and torch.compile"). ``mu`` is padded once per
                image, the state once per step.
        """
        if pad_to_multiple is not None:
            if isinstance(pad_to_multiple, bool) or not isinstance(pad_to_multiple, int):
                raise TypeError(f"pad_to_multiple must be an int, got {pad_to_multiple!r}.")
            if pad_to_multiple < 1:
                raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}.")
            self._compile_pad_multiple = math.lcm(pad_to_multiple, self._unet_pad_multiple())
        unet = _unwrap(self.unet)
        if getattr(unet, "_compiled_call_impl", None) is None:
            unet.compile(**compile_kwargs)

    @property
    def compile_pad_multiple(self) -> int:
        """The multiple the network's inputs are padded to (:meth:`enable_compile`); 1: none."""
        return getattr(self, "_compile_pad_multiple", 1)

    def _pad_for_network(self, x: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x`` and ``mu`` padded up to :attr:`compile_pad_multiple`; the padded ``mu`` is
        kept while the same ``mu``, unchanged by its version counter, comes back (every step
        of one image; an inference-mode ``mu`` has no counter and is padded every step)."""
        multiple, mode = self.compile_pad_multiple, self._unet_pad_mode()
        cached, version = getattr(self, "_padded_mu", None), _version(mu)
        if cached is None or cached[0] is not mu or version is None or cached[1] != version:
            cached = (mu, version, pad_to_multiple(mu, multiple, mode))
            self._padded_mu = cached
        return pad_to_multiple(x, multiple, mode), cached[2]

    def _sampling_dtype(self) -> torch.dtype:
        """The dtype of the sampler's state: float64 for a float64 network, else float32,
        so a float16/bfloat16 network only changes the network's arithmetic."""
        return torch.float64 if self._unet_dtype() == torch.float64 else torch.float32

    def _unet_dtype(self) -> torch.dtype:
        dtype = getattr(self.unet, "dtype", None)
        if isinstance(dtype, torch.dtype):
            return dtype
        for p in self.unet.parameters():
            return p.dtype
        return torch.float32

    def _unet_pad_multiple(self) -> int:
        """The size multiple the network pads its input to: its ``pad_multiple``, else 1."""
        multiple = getattr(_unwrap(self.unet), "pad_multiple", None)
        return multiple if isinstance(multiple, int) and multiple > 0 else 1

    def _unet_pad_mode(self) -> str:
        """How the network pads its input (``"reflect"`` or ``"constant"`` zeros); tiles pad
        the same way, so one tile covering the image equals the untiled network."""
        return getattr(_unwrap(self.unet), "pad_mode", "reflect")

    def _unet_channels(self) -> int:
        config = getattr(self.unet, "config", None)
        channels = getattr(config, "in_channels", None) if config is not None else None
        return int(channels) if channels else 3

    # ------------------------------------------------------------------------ checks
    def check_inputs(
        self,
        num_inference_steps: int,
        timesteps: Sequence[float] | None,
        output_type: str,
        tile_size: int | tuple[int, int] | None,
        tile_overlap: int | tuple[int, int] | None,
        tile_batch_size: int,
        callback_on_step_end_tensor_inputs: Sequence[str] | None,
    ) -> None:
        """Validates the non-image arguments (raises ``ValueError``)."""
        if timesteps is None and (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, (int, np.integer))
            or num_inference_steps < 1
        ):
            raise ValueError(
                f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}."
            )
        if timesteps is not None and len(timesteps) == 0:
            raise ValueError("`timesteps` must not be empty.")
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {_OUTPUT_TYPES}, got {output_type!r}.")
        if tile_size is not None:
            normalize_tile_args(tile_size, tile_overlap)
        if (
            isinstance(tile_batch_size, bool)
            or not isinstance(tile_batch_size, int)
            or tile_batch_size < 1
        ):
            raise ValueError(
                f"`tile_batch_size` must be a positive integer, got {tile_batch_size!r}."
            )
        if callback_on_step_end_tensor_inputs is not None:
            bad = [
                k
                for k in callback_on_step_end_tensor_inputs
                if k not in self._callback_tensor_inputs
            ]
            if bad:
                raise ValueError(
                    f"`callback_on_step_end_tensor_inputs` {bad} are not among"
                    f" {self._callback_tensor_inputs}."
                )

    def check_images_in_dtype(self, images: Sequence[torch.Tensor]) -> None:
        """The images must stay finite in the network's dtype (e.g. > 65504 overflows float16):
        checked after the cast, so sampling never starts from inf and returns NaN."""
        dtype = self._unet_dtype()
        for k, img in enumerate(images):
            check_finite(img.to(dtype), f"image[{k}]" if len(images) > 1 else "image")

    def check_latents(
        self, latents: torch.Tensor | None, images: Sequence[torch.Tensor], num_samples: int
    ) -> torch.Tensor | None:
        """``latents`` (the initial states x_T) must be a finite tensor of shape
        ``[len(images) * num_samples, C, H, W]`` (samples of image ``i`` at ``i*K + k``);
        it needs images of one size."""
        if latents is None:
            return None
        if not isinstance(latents, torch.Tensor):
            raise ValueError(f"`latents` must be a torch.Tensor, got {type(latents).__name__}.")
        sizes = {tuple(img.shape) for img in images}
        if len(sizes) != 1:
            raise ValueError("`latents` needs images of one size (got several sizes).")
        expected = (len(images) * num_samples, *next(iter(sizes)))
        if tuple(latents.shape) != expected:
            raise ValueError(
                f"`latents` must have shape {list(expected)} (images x num_samples, C, H, W), "
                f"got {list(latents.shape)}."
            )
        if not bool(torch.isfinite(latents).all()):
            raise ValueError("`latents` contains NaN or infinite values.")
        return latents

    @staticmethod
    def check_generators(
        generator: torch.Generator | list[torch.Generator] | None, batch_size: int
    ) -> None:
        """A list of generators must hold one generator per image."""
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for {batch_size} images; pass one"
                " generator per image, or a single generator."
            )

    def _sampling_settings(
        self,
        num_inference_steps: int,
        timesteps: Sequence[float] | None,
        num_samples: int,
        output_type: str,
        tile_size: int | tuple[int, int] | None,
        tile_overlap: int | tuple[int, int] | None,
        tile_batch_size: int,
        callback: StepCallback | None,
        callback_inputs: Sequence[str] | None,
        degradation: str | Sequence[str | None] | None = None,
        keep_clean: bool = True,
    ) -> _Sampling:
        """Checks every non-image argument of ``__call__`` and bundles the sampling settings."""
        if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
            callback_inputs = callback.tensor_inputs
        if callback_inputs is None:
            callback_inputs = ["latents"]
        self.check_inputs(
            num_inference_steps,
            timesteps,
            output_type,
            tile_size,
            tile_overlap,
            tile_batch_size,
            callback_inputs,
        )
        num_samples = check_num_samples(num_samples)
        checked = check_degradation(degradation, getattr(self, "degradation_encoder", None))
        tiling = None
        if tile_size is not None:
            tiling = _Tiling(*normalize_tile_args(tile_size, tile_overlap), tile_batch_size)
        return _Sampling(
            num_inference_steps, timesteps, num_samples, None, tiling, callback, callback_inputs,
            checked, bool(keep_clean),
        )

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
        self, mu: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
    ) -> torch.Tensor:
        """The start of sampling: ``x_T = mu + init_noise_sigma * noise``."""
        noise = randn_tensor(tuple(mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + self.scheduler.init_noise_sigma * noise

    def _step_kwargs(self, generator: Any) -> tuple[dict[str, Any], bool]:
        """The ``generator`` argument if this scheduler's ``step`` takes one, and whether it
        takes ``mu`` (passed per step: a callback may replace it)."""
        names = set(inspect.signature(self.scheduler.step).parameters)
        if "mu" not in names:
            logger.info(f"{type(self.scheduler).__name__}.step takes no `mu`; it is not passed.")
        return {"generator": generator} if "generator" in names else {}, "mu" in names

    def detect_degradation(
        self, mu: torch.Tensor, degradation: Sequence[str | None] | None = None
    ) -> DegradationEstimate | None:
        """The degradation encoder on the images ``mu`` (``[B, 3, H, W]`` in [0, 1]): every
        image's type (``degradation[i]`` where given, else detected), the probabilities and
        the network's context (:mod:`diffusers_mrs.pipelines.degradation`); ``None`` without
        a ``degradation_encoder``. ``degradation`` must hold checked names."""
        encoder = getattr(self, "degradation_encoder", None)
        if encoder is None:
            return None
        forced = [None] * mu.shape[0] if degradation is None else list(degradation)
        return estimate_degradation(encoder, mu, forced)

    def _degradation_contexts(self, estimate: DegradationEstimate) -> _Contexts:
        """The network's contexts from a degradation estimate (in the network's dtype)."""
        return _Contexts(None, estimate.context.to(self._unet_dtype()))

    def encode_image(self, mu: torch.Tensor) -> _Contexts | None:
        """The network's contexts of the degraded images ``mu`` (``[B, C, H, W]`` in
        [0, 1]): DA-CLIP's two, or a degradation-aware model's detected degradation context
        (:meth:`detect_degradation`), or ``None`` for a network without contexts.

        As DA-CLIP prepares them: the image is turned into 8 bits by truncation
        (``uint8(x * 255)``, in float32), then the feature extractor resizes the short side
        to 224 (bicubic), centre-crops 224 x 224 and normalises with CLIP's mean and std.
        The encoder then runs once on the whole batch.
        """
        if self.image_encoder is None:
            estimate = self.detect_degradation(mu)
            return None if estimate is None else self._degradation_contexts(estimate)
        pixels = (mu.detach().float().clamp(0, 1) * 255).to(torch.uint8)
        pil = [PIL.Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in pixels]
        pixel_values = self.feature_extractor(images=pil, return_tensors="pt").pixel_values
        encoder_dtype = getattr(self.image_encoder, "dtype", torch.float32)
        out = self.image_encoder(pixel_values.to(device=mu.device, dtype=encoder_dtype))
        dtype = self._unet_dtype()  # the contexts only feed the network
        estimate = daclip_degradation_estimate(self.image_encoder, out)
        return _Contexts(out[0].to(dtype), out[1].to(dtype), estimate)

    def _network(
        self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, contexts: _Contexts | None
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
        tiling: _Tiling | None,
        contexts: _Contexts | None = None,
    ) -> torch.Tensor:
        """The network's prediction at ``t``, on the whole image or tile by tile."""
        if tiling is None:
            return self._network(latents, mu, t, contexts)
        return tiled_model_output(
            lambda x_tiles, mu_tiles: self._network(x_tiles, mu_tiles, t, contexts),
            latents,
            mu,
            tiling.size,
            tiling.overlap,
            tiling.batch_size,
            self._unet_pad_multiple(),
            self._unet_pad_mode(),
        )

    def _run_callback(
        self, sampling: _Sampling, i: int, t: torch.Tensor, latents: torch.Tensor, mu: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Calls ``callback_on_step_end``; it may replace ``latents`` and ``mu``."""
        tensors = {"latents": latents, "mu": mu}
        callback_kwargs = {k: tensors[k] for k in sampling.callback_inputs}
        outputs = sampling.callback(self, i, t, callback_kwargs)
        if outputs is None:
            return latents, mu
        if not isinstance(outputs, dict):
            raise TypeError(
                "callback_on_step_end must return a dict (tensor name -> tensor, e.g."
                f" {{'latents': latents}}) or None, got {type(outputs).__name__}."
            )
        new_latents, new_mu = outputs.get("latents", latents), outputs.get("mu", mu)
        for name, new, old in (("latents", new_latents, latents), ("mu", new_mu, mu)):
            if not isinstance(new, torch.Tensor) or new.shape != old.shape:
                raise ValueError(
                    f"callback_on_step_end returned {name!r} as {type(new).__name__}"
                    f" {tuple(getattr(new, 'shape', ()))}; expected a tensor of shape"
                    f" {tuple(old.shape)}."
                )
        return new_latents, new_mu

    def denoise(
        self,
        latents: torch.Tensor,
        mu: torch.Tensor,
        timesteps: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        sampling: _Sampling,
        contexts: _Contexts | None = None,
    ) -> torch.Tensor:
        """The sampling loop: one network evaluation and one scheduler step per timestep
        (``contexts``, computed once per image, go to every evaluation)."""
        step_kwargs, takes_mu = self._step_kwargs(generator)
        network_dtype = self._unet_dtype()
        mu_net = mu.to(network_dtype)  # once per image, not per step
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                model_output = self._model_output(latents, mu_net, t, sampling.tiling, contexts)
                if takes_mu:
                    step_kwargs["mu"] = mu
                latents = self.scheduler.step(
                    model_output, t, latents, return_dict=False, **step_kwargs
                )[0].to(mu.dtype)
                if sampling.callback is not None:
                    latents, new_mu = self._run_callback(sampling, i, t, latents, mu)
                    if new_mu is not mu:
                        mu, mu_net = new_mu, new_mu.to(network_dtype)
                progress_bar.update()
        self._padded_mu = None  # the padded mu of this image, if any
        return latents

    def _restore_group(
        self,
        mu: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        sampling: _Sampling,
        latents: torch.Tensor | None = None,
        degradation: Sequence[str | None] | None = None,
    ) -> tuple[torch.Tensor, DegradationEstimate | None]:
        """Samples one batch of same-size images (``num_samples`` per image, in the
        :func:`~diffusers_mrs.pipelines.ensemble.repeat_for_samples` layout), from
        ``latents`` when given, with the types ``degradation`` (per image, None: detect);
        returns the samples as float32 in [0, 1] and the degradation estimate (or None)."""
        # the contexts: once per image, before the repeats and the tiles
        estimate = self.detect_degradation(mu, degradation)
        clean = _clean_rows(estimate, sampling)
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
        if latents is None:
            latents = self.prepare_latents(mu, generator)
        else:
            latents = latents.to(device=mu.device, dtype=mu.dtype)
        latents = self.denoise(latents, mu, timesteps, generator, sampling, contexts)
        if clean is not None and any(clean):
            rows = torch.tensor(clean, device=mu.device).repeat_interleave(sampling.num_samples)
            latents[rows] = mu[rows].to(latents.dtype)
        return latents.float().clamp_(0.0, 1.0), estimate

    def _restore_images(
        self,
        images: list[torch.Tensor],
        generator: torch.Generator | list[torch.Generator] | None,
        sampling: _Sampling,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[ImageDegradation] | None]:
        """Restores every image, one batch per size; returns the restorations (the mean of
        each image's samples), their spread (``None`` for one sample) and the degradation
        of each image (``None`` without a degradation encoder), in input order."""
        device, dtype = self._execution_device, self._sampling_dtype()
        restored: list[torch.Tensor] = [torch.empty(0)] * len(images)
        spread: list[torch.Tensor | None] = [None] * len(images)
        reports: list[ImageDegradation | None] = [None] * len(images)
        for indices in _size_groups(images):
            mu = torch.stack([images[k] for k in indices]).to(device=device, dtype=dtype)
            group_generator = (
                [generator[k] for k in indices] if isinstance(generator, list) else generator
            )
            forced = None if sampling.degradation is None else [
                sampling.degradation[k] for k in indices]
            samples, estimate = self._restore_group(
                mu, group_generator, sampling, sampling.latents, forced)
            mean, std = ensemble_statistics(samples, sampling.num_samples)
            group_reports = [None] * len(indices) if estimate is None else estimate.per_image()
            for j, k in enumerate(indices):
                restored[k] = mean[j]
                spread[k] = None if std is None else std[j]
                reports[k] = group_reports[j]
        return restored, spread, None if None in reports else reports

    @staticmethod
    def format_output(restored: list[torch.Tensor], output_type: str) -> Any:
        """``[C, H, W]`` images in [0, 1] as PIL images, a numpy or a torch batch (or a list
        of per-image arrays where the sizes differ)."""
        same_size = len({tuple(r.shape) for r in restored}) == 1
        if output_type == "pt":
            return torch.stack(restored) if same_size else restored
        arrays = [r.permute(1, 2, 0).cpu().numpy() for r in restored]
        if output_type == "np":
            return np.stack(arrays) if same_size else arrays
        return [DiffusionPipeline.numpy_to_pil(a[None])[0] for a in arrays]

    def _prepare_call_inputs(
        self,
        image: PipelineImageInput,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        sampling: _Sampling,
    ) -> tuple[list[torch.Tensor], _Sampling]:
        """Reads and checks ``__call__``'s images, generators, initial latents and degradation
        types (before any sampling); returns the images and the settings with the checked
        latents and one degradation entry per image."""
        images = prepare_images(image, channels=self._unet_channels())
        self.check_images_in_dtype(images)
        self.check_generators(generator, len(images))
        checked = self.check_latents(latents, images, sampling.num_samples)
        degradation = sampling.degradation
        if getattr(self, "degradation_encoder", None) is not None:
            check_encoder_image_sizes(images)
            degradation = per_image_degradations(degradation, len(images))
        return images, replace(sampling, latents=checked, degradation=degradation)

    def _pipeline_output(
        self,
        restored: list[torch.Tensor],
        spread: list[torch.Tensor | None],
        output_type: str,
        num_samples: int,
        reports: list[ImageDegradation] | None = None,
    ) -> MRRestorationPipelineOutput:
        """The restorations (and, for ``num_samples`` > 1, their spread) as ``output_type``,
        with each image's degradation where the model has a degradation encoder."""
        return MRRestorationPipelineOutput(
            images=self.format_output(restored, output_type),
            uncertainty=None if num_samples == 1 else self.format_output(spread, output_type),
            degradation=None if reports is None else [r.name for r in reports],
            degradation_probability=None if reports is None else [
                r.probability for r in reports],
            degradation_probabilities=None if reports is None else [
                r.probabilities for r in reports],
        )

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
    ) -> MRRestorationPipelineOutput | tuple:
        r"""Restores degraded images.

        Args:
            image: the degraded image(s) ``mu``: PIL, numpy (HWC), torch (CHW), a file path or a
                list, read by :mod:`diffusers_mrs.image_io` (EXIF, 8/16-bit scale, channels).
            num_inference_steps: number of network evaluations (sampler steps).
            timesteps, generator: custom descending timesteps (train-time units; override the
                steps); one ``torch.Generator``, or one per image.
            output_type: ``"pil"``, ``"np"`` (BHWC) or ``"pt"`` (BCHW), float32 in [0, 1].
            return_dict: return an ``ImagePipelineOutput`` (else a tuple ``(images,)``).
            callback_on_step_end: ``callback(pipe, i, t, callback_kwargs)`` after each step,
                may replace the tensors named in ``callback_on_step_end_tensor_inputs``.
            tile_size, tile_overlap, tile_batch_size: blended network tiles (int or ``(h, w)``),
                their overlap (default a quarter tile) and tiles per network call.
            num_samples: K samples per image, one batch; K > 1: ``images`` is their mean,
                ``uncertainty`` their std (faithful: MRS solver_order=2, docs/math.md#ensembles).
            latents: initial x_T, ``[len(images) * K, C, H, W]`` (one image size; default ``mu +
                init_noise_sigma * noise``); the result is deterministic with an ODE scheduler.
            degradation: models with a ``degradation_encoder``: ``None``/``"auto"`` detects
                each image's type, a name forces it, a list gives one per image
                (:mod:`diffusers_mrs.pipelines.degradation`).
            keep_clean: such models return a ``"clean"`` image unchanged, without sampling.

        Returns:
            ``MRRestorationPipelineOutput`` (``images``; ``uncertainty`` for K > 1; the
            ``degradation*`` fields for degradation-aware models), or its tuple.

        Raises:
            ValueError: a bad argument or image, before sampling (TypeError: a bad callback).

        Examples:
        """
        sampling = self._sampling_settings(
            num_inference_steps, timesteps, num_samples, output_type, tile_size, tile_overlap,
            tile_batch_size, callback_on_step_end, callback_on_step_end_tensor_inputs,
            degradation, keep_clean)
        images, sampling = self._prepare_call_inputs(image, generator, latents, sampling)
        self._interrupt = False
        restored, spread, reports = self._restore_images(images, generator, sampling)
        self.maybe_free_model_hooks()
        output = self._pipeline_output(restored, spread, output_type, num_samples, reports)
        return output if return_dict else output.to_tuple()

    @classmethod
    def from_original(
        cls, source: str | os.PathLike, model: str | None = None, **kwargs: Any
    ) -> MRRestorationPipeline:
        """The pipeline of original DA-CLIP / IR-SDE / Refusion checkpoints (a Hub repo id,
        a folder or a single network file), converted once and cached; ``model`` names
        the DA-CLIP pair. See :func:`diffusers_mrs.original_checkpoints.load_original_pipeline`."""
        from diffusers_mrs.original_checkpoints import load_original_pipeline

        return load_original_pipeline(source, model, pipeline_class=cls, **kwargs)
