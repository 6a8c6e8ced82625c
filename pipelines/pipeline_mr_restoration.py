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

Large images: ``tile_size`` runs the network on overlapping tiles at every step and blends
the outputs with a raised-cosine window (see :mod:`diffusers_mrs.pipelines.tiling`); the
scheduler step, and with it the noise, stays global, so no seams appear.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, SchedulerMixin
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from .ensemble import check_num_samples, ensemble_statistics, repeat_for_samples
from .tiling import normalize_tile_args, tiled_model_output

logger = logging.get_logger(__name__)

PipelineImageInput = (
    PIL.Image.Image
    | np.ndarray
    | torch.Tensor
    | Sequence[PIL.Image.Image | np.ndarray | torch.Tensor]
)

#: The library name written to ``model_index.json`` for components defined in diffusers_mrs.
LIBRARY_NAME = "diffusers_mrs"

_OUTPUT_TYPES = ("pil", "np", "pt")
_COMMIT_IN_PATH = re.compile(r"snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")

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


def default_model_path() -> Path:
    """Folder of the default pipeline shipped in the package: ``diffusers_mrs/default_model``."""
    import diffusers_mrs

    return Path(diffusers_mrs.__file__).resolve().parent / "default_model"


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
    """

    uncertainty: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None


# ----------------------------------------------------------------------------- input handling
def _unwrap(module: Any) -> Any:
    """The module behind a ``torch.compile`` wrapper."""
    return getattr(module, "_orig_mod", module)


def _diffusers_mrs_library_tuple(module: Any) -> tuple[str, str] | None:
    """``("diffusers_mrs", ClassName)`` if the component's class is exported by diffusers_mrs."""
    if module is None:
        return None
    cls = type(_unwrap(module))
    try:
        import diffusers_mrs
    except ImportError:  # pragma: no cover - the package is always importable here
        return None
    if getattr(diffusers_mrs, cls.__name__, None) is cls:
        return LIBRARY_NAME, cls.__name__
    return None


def _ensure_loader_bases() -> None:
    """Makes ``diffusers_mrs`` resolvable as a component library by diffusers' loader.

    ``from_pretrained`` looks the base classes (``ModelMixin``, ``SchedulerMixin``) up on the
    library module named in ``model_index.json`` to pick the loading method. The package
    should export them next to its classes; this fills them in if it does not (no-op
    otherwise).
    """
    import diffusers

    import diffusers_mrs

    for base in ("ModelMixin", "SchedulerMixin"):
        if getattr(diffusers_mrs, base, None) is None:
            setattr(diffusers_mrs, base, getattr(diffusers, base))


def _convert_channels(img: torch.Tensor, channels: int, what: str) -> torch.Tensor:
    """Maps a ``[C, H, W]`` image to the model's channel count (gray <-> RGB, RGBA -> RGB)."""
    c = img.shape[0]
    if c == channels:
        return img
    if channels == 3 and c == 1:
        return img.expand(3, -1, -1)
    if channels == 3 and c == 4:
        return img[:3]  # drop alpha
    if channels == 1 and c in (3, 4):
        r, g, b = img[0], img[1], img[2]
        return (0.299 * r + 0.587 * g + 0.114 * b)[None]
    raise ValueError(
        f"{what} has {c} channels, but the model expects {channels}"
        + (" (1 = grayscale and 4 = RGBA are converted)." if channels == 3 else ".")
    )


def _pil_to_chw(img: PIL.Image.Image, channels: int) -> torch.Tensor:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
    elif img.mode == "I":  # 32-bit integer images almost always hold 16-bit data
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
    else:
        img = img.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _numpy_to_chw_list(arr: np.ndarray, what: str) -> list[torch.Tensor]:
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    else:
        raise ValueError(
            f"{what}: unsupported numpy dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]."
        )
    if arr.ndim == 2:
        return [torch.from_numpy(np.ascontiguousarray(arr[None]))]
    if arr.ndim == 3:
        return [torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))]
    if arr.ndim == 4:
        return [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for a in arr]
    raise ValueError(f"{what}: numpy images must be HW, HWC or BHWC, got shape {arr.shape}.")


def _torch_to_chw_list(t: torch.Tensor, what: str) -> list[torch.Tensor]:
    t = t.detach()
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.bool:
        t = t.float()
    elif not t.is_floating_point():
        raise ValueError(
            f"{what}: unsupported tensor dtype {t.dtype}; use a float tensor in [0, 1] or uint8."
        )
    if t.ndim == 2:
        return [t[None]]
    if t.ndim == 3:
        return [t]
    if t.ndim == 4:
        return list(t.unbind(0))
    raise ValueError(f"{what}: tensors must be HW, CHW or BCHW, got shape {tuple(t.shape)}.")


def prepare_images(image: PipelineImageInput, channels: int = 3) -> list[torch.Tensor]:
    """Turns the pipeline's ``image`` argument into a list of ``[channels, H, W]`` float tensors.

    Accepts PIL images (any mode; grayscale and RGBA are converted, alpha is dropped),
    numpy arrays (HW, HWC or BHWC; uint8, uint16 or float in [0, 1]), torch tensors (HW,
    CHW or BCHW; float in [0, 1] or uint8), and lists of them. Float values are used as
    given (not clipped), so slightly out-of-range degraded inputs keep their information.

    Raises:
        ValueError: empty input, unsupported type/dtype/shape, a channel count that cannot
            be converted, an empty image, or NaN/inf values.
    """
    if image is None:
        raise ValueError("`image` must be given (the degraded image, mu).")
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    if len(items) == 0:
        raise ValueError("`image` is an empty list; pass at least one image.")

    out: list[torch.Tensor] = []
    for idx, item in enumerate(items):
        what = f"image[{idx}]" if isinstance(image, (list, tuple)) else "image"
        if isinstance(item, PIL.Image.Image):
            chw = [_pil_to_chw(item, channels)]
            hint = ""
        elif isinstance(item, np.ndarray):
            chw = _numpy_to_chw_list(item, what)
            hint = " (numpy arrays are read as HWC)"
        elif isinstance(item, torch.Tensor):
            chw = _torch_to_chw_list(item, what)
            hint = " (tensors are read as CHW)"
        else:
            raise ValueError(
                f"{what} has unsupported type {type(item).__name__}; expected a PIL image, a numpy"
                " array, a torch tensor, or a list of them."
            )
        if len(chw) == 0:
            raise ValueError(f"{what} is an empty batch.")
        for img in chw:
            try:
                img = _convert_channels(img, channels, what)
            except ValueError as err:
                raise ValueError(f"{err}{hint}") from None
            if img.shape[1] == 0 or img.shape[2] == 0:
                raise ValueError(f"{what} is empty (shape {tuple(img.shape)}).")
            if not bool(torch.isfinite(img).all()):
                raise ValueError(f"{what} contains NaN or infinite values.")
            out.append(img)
    return out


# ----------------------------------------------------------------------------- the pipeline
class MRRestorationPipeline(DiffusionPipeline):
    r"""Image restoration by sampling a mean-reverting diffusion model (IR-SDE) with the MR Sampler.

    Components:
        unet: the network ``unet(sample, timestep, mu).sample`` (``MRUNet2DModel``, or any
            module with that call signature), predicting what ``scheduler.config.prediction_type``
            says (noise, data or velocity).
        scheduler: ``MRSamplerScheduler``, ``MRPosteriorScheduler`` or
            ``MREulerMaruyamaScheduler``; swap with
            ``pipe.scheduler = MRPosteriorScheduler.from_config(pipe.scheduler.config)``.

    ``model_index.json`` names the components' library as ``"diffusers_mrs"`` when their class
    is exported by the top-level ``diffusers_mrs`` package, so folders stay loadable when the
    package's internal modules move.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents", "mu"]  # noqa: RUF012 - diffusers convention

    def __init__(self, unet: torch.nn.Module, scheduler: SchedulerMixin) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    # -------------------------------------------------------------- model_index.json naming
    def register_modules(self, **kwargs: Any) -> None:
        """Registers components; diffusers_mrs classes get the library name ``diffusers_mrs``."""
        super().register_modules(**kwargs)
        for name, module in kwargs.items():
            entry = _diffusers_mrs_library_tuple(module)
            if entry is not None:
                self.register_to_config(**{name: entry})

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # DiffusionPipeline.__setattr__ re-registers swapped components (e.g. a new scheduler)
        # under their module path; use the short library name for diffusers_mrs classes.
        if "_internal_dict" in self.__dict__ and isinstance(
            self._internal_dict.get(name), (list, tuple)
        ):
            entry = _diffusers_mrs_library_tuple(value)
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
            **kwargs: passed to ``DiffusionPipeline.from_pretrained`` (``torch_dtype``,
                ``unet=...``, ...). ``revision``, ``cache_dir``, ``token``, ``force_download``
                and ``local_files_only`` also control the Hub download.

        diffusers does not download pipelines whose components come from a third-party
        library, so for a repo id the snapshot (``model_index.json``, ``README.md`` and the
        component folders) is downloaded with ``huggingface_hub`` first and loaded locally.
        """
        _ensure_loader_bases()
        if pretrained_model_name_or_path is None:
            path = default_model_path()
            if not (path / "model_index.json").is_file():
                raise FileNotFoundError(
                    f"The default model is not installed (no model_index.json in {path}). Pass a"
                    " local pipeline folder or a Hub repo id to `from_pretrained`."
                )
            return super().from_pretrained(str(path), **kwargs)

        name = os.path.expanduser(os.fspath(pretrained_model_name_or_path))
        if os.path.isdir(name):
            return super().from_pretrained(name, **kwargs)
        if os.path.exists(name):
            raise ValueError(
                f"{name!r} is a file; pass the pipeline folder (with model_index.json)."
            )
        looks_like_path = (
            name.startswith((".", "/", "~", "\\"))
            or name.count("/") > 1
            or os.sep in name.replace("/", "")
        )
        if looks_like_path:
            raise FileNotFoundError(
                f"No such pipeline folder: {name!r} (and it is not a Hub repo id)."
            )

        folder = download_pipeline_snapshot(
            name,
            revision=kwargs.get("revision"),
            cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"),
            force_download=kwargs.get("force_download", False),
            local_files_only=kwargs.get("local_files_only"),
        )
        pipe = super().from_pretrained(folder, **kwargs)
        pipe.register_to_config(_name_or_path=name)
        return pipe

    # ------------------------------------------------------------------------ saving / Hub
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> None:
        """Saves the pipeline folder; ``push_to_hub=True`` uploads it with the MR model card.

        With ``push_to_hub=True``, ``kwargs`` may hold ``repo_id`` (default: the folder
        name), ``commit_message``, ``private``, ``token``, ``create_pr`` and the model card
        options of :func:`diffusers_mrs.hub.render_model_card` (``license``, ...); the card
        is also written to ``save_directory/README.md``. Other keyword arguments go to
        diffusers' ``save_pretrained``.
        """
        from diffusers_mrs.hub import render_model_card, upload_pipeline_folder

        push_keys = {"repo_id", "commit_message", "private", "token", "create_pr"}
        push_keys |= set(inspect.signature(render_model_card).parameters) - {"pipe", "repo_id"}
        push_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in push_keys}
        super().save_pretrained(
            save_directory,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
            push_to_hub=False,
            **kwargs,
        )
        if push_to_hub:
            repo_id = push_kwargs.pop("repo_id", Path(save_directory).name)
            upload_pipeline_folder(self, save_directory, repo_id, **push_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        **card_kwargs: Any,
    ) -> Any:
        """Uploads the pipeline folder and its rendered model card (``README.md``) to the Hub.

        Same arguments as diffusers' ``push_to_hub``; extra keyword arguments go to
        :func:`diffusers_mrs.hub.render_model_card` (``license``, ``base_model``,
        ``datasets``, ``description``, ...). Returns the ``CommitInfo``.
        """
        from diffusers_mrs.hub import push_pipeline_to_hub

        return push_pipeline_to_hub(
            self,
            repo_id,
            commit_message=commit_message,
            private=private,
            token=token,
            create_pr=create_pr,
            safe_serialization=safe_serialization,
            variant=variant,
            **card_kwargs,
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

    def _unet_dtype(self) -> torch.dtype:
        dtype = getattr(self.unet, "dtype", None)
        if isinstance(dtype, torch.dtype):
            return dtype
        for p in self.unet.parameters():
            return p.dtype
        return torch.float32

    def _unet_pad_multiple(self) -> int:
        """The size multiple the network pads its input to (1 if unknown)."""
        multiple = getattr(self.unet, "pad_multiple", None)
        if isinstance(multiple, int) and multiple > 0:
            return multiple
        import diffusers_mrs

        config = getattr(self.unet, "config", None)
        if isinstance(_unwrap(self.unet), diffusers_mrs.MRUNet2DModel) and config is not None:
            return 2 ** int(config.depth)
        return 1

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

    # ------------------------------------------------------------------------ sampling
    def _set_timesteps(
        self, num_inference_steps: int, timesteps: Sequence[float] | None, device: torch.device
    ) -> torch.Tensor:
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

    def _restore_group(
        self,
        mu: torch.Tensor,
        num_inference_steps: int,
        timesteps: Sequence[float] | None,
        generator: torch.Generator | list[torch.Generator] | None,
        tiling: tuple[tuple[int, int], tuple[int, int]] | None,
        tile_batch_size: int,
        step_kwargs_names: set[str],
        callback_on_step_end: Callable[..., dict[str, Any]] | None,
        callback_on_step_end_tensor_inputs: Sequence[str],
    ) -> torch.Tensor:
        """Samples one batch of same-size images; returns the restored batch (unet dtype)."""
        device = mu.device
        ts = self._set_timesteps(num_inference_steps, timesteps, device)
        self._num_timesteps = len(ts)

        noise = randn_tensor(tuple(mu.shape), generator=generator, device=device, dtype=mu.dtype)
        latents = mu + self.scheduler.init_noise_sigma * noise

        def model(x_in: torch.Tensor, mu_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t_in = t.to(device).reshape(()).expand(x_in.shape[0])
            out = self.unet(x_in, t_in, mu=mu_in)
            return out.sample if hasattr(out, "sample") else out[0]

        step_kwargs: dict[str, Any] = {}
        if "mu" in step_kwargs_names:
            step_kwargs["mu"] = mu
        if "generator" in step_kwargs_names:
            step_kwargs["generator"] = generator

        pad_multiple = self._unet_pad_multiple() if tiling is not None else 1
        with self.progress_bar(total=len(ts)) as progress_bar:
            for i, t in enumerate(ts):
                if self.interrupt:
                    continue
                if tiling is None:
                    model_output = model(latents, mu, t)
                else:
                    model_output = tiled_model_output(
                        lambda xt, mt, t=t: model(xt, mt, t),
                        latents,
                        mu,
                        tiling[0],
                        tiling[1],
                        tile_batch_size,
                        pad_multiple,
                    )
                if "mu" in step_kwargs:
                    step_kwargs["mu"] = mu
                latents = self.scheduler.step(
                    model_output, t, latents, return_dict=False, **step_kwargs
                )[0].to(mu.dtype)

                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "mu": mu}
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                    mu = callback_outputs.pop("mu", mu)
                progress_bar.update()
        return latents

    @torch.no_grad()
    def __call__(
        self,
        image: PipelineImageInput = None,
        num_inference_steps: int = 10,
        timesteps: Sequence[float] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict[str, Any]]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        tile_size: int | tuple[int, int] | None = None,
        tile_overlap: int | tuple[int, int] | None = None,
        tile_batch_size: int = 4,
        num_samples: int = 1,
    ) -> MRRestorationPipelineOutput | tuple:
        r"""Restores degraded images.

        Args:
            image: the degraded image(s), ``mu``: a PIL image, a numpy array (HW, HWC or
                BHWC; uint8, uint16 or float in [0, 1]), a torch tensor (HW, CHW or BCHW;
                float in [0, 1] or uint8), or a list of them. Grayscale and RGBA inputs are
                converted to the model's channels. Any size; see the module docstring for
                batches of different sizes.
            num_inference_steps: number of network evaluations (sampler steps).
            timesteps: optional custom timesteps (train-time units, descending), passed to
                ``scheduler.set_timesteps(timesteps=...)``; overrides ``num_inference_steps``.
            generator: a ``torch.Generator``, or a list with one generator per image for
                per-image reproducibility independent of the batch composition.
            output_type: ``"pil"`` (list of PIL images), ``"np"`` (``[B, H, W, C]`` float32 in
                [0, 1]) or ``"pt"`` (``[B, C, H, W]`` float32 in [0, 1]).
            return_dict: return an ``ImagePipelineOutput`` (else a tuple ``(images,)``).
            callback_on_step_end: called after each step as ``callback(pipe, i, t,
                callback_kwargs)`` with the tensors named in
                ``callback_on_step_end_tensor_inputs`` (``"latents"``, ``"mu"``); the returned
                dict may replace them. ``i`` restarts at 0 for every size group.
            callback_on_step_end_tensor_inputs: which tensors the callback receives
                (default ``["latents"]``).
            tile_size: if given (int or ``(h, w)``), the network runs on overlapping tiles of
                this size at every step and the outputs are blended (bounded memory for large
                images). Rounded up to the network's padding multiple (``2**depth``); the
                image is padded to that multiple first, as the untiled network pads it.
            tile_overlap: overlap between tiles (int or ``(h, w)``), also the width of the
                raised-cosine blending ramps; default ``tile_size // 4``.
            tile_batch_size: tile crops per network call in tiled mode.
            num_samples: K posterior samples per image, drawn together in one batch of
                ``len(images) * K`` (with tiling, the tiles of all K samples share the
                network calls). For K > 1, ``images`` is their per-pixel mean and
                ``uncertainty`` their per-pixel standard deviation (each sample is clipped
                to [0, 1] first; :mod:`diffusers_mrs.pipelines.ensemble`). Callbacks see the
                ``len(images) * K`` batch; a generator list still has one entry per image.

        Returns:
            ``MRRestorationPipelineOutput`` with ``images`` in the input order (and
            ``uncertainty`` for K > 1), or the tuple of its non-``None`` fields.

        Raises:
            ValueError: on invalid arguments (empty image list, unsupported channel count,
                NaN/inf in the image, generator list of the wrong length, invalid
                ``num_inference_steps``, ``output_type`` or tiling arguments). All checks run
                before sampling starts.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        self.check_inputs(
            num_inference_steps,
            timesteps,
            output_type,
            tile_size,
            tile_overlap,
            tile_batch_size,
            callback_on_step_end_tensor_inputs,
        )
        num_samples = check_num_samples(num_samples)
        images = prepare_images(image, channels=self._unet_channels())
        batch_size = len(images)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for {batch_size} images; pass one"
                " generator per image, or a single generator."
            )
        tiling = normalize_tile_args(tile_size, tile_overlap) if tile_size is not None else None

        device = self._execution_device
        dtype = self._unet_dtype()
        self._interrupt = False
        step_kwargs_names = set(inspect.signature(self.scheduler.step).parameters)
        if "mu" not in step_kwargs_names:
            logger.info(f"{type(self.scheduler).__name__}.step takes no `mu`; it is not passed.")

        # Same-size images form one batch; groups keep the first-appearance order.
        groups: dict[tuple[int, int], list[int]] = {}
        for idx, img in enumerate(images):
            groups.setdefault(tuple(img.shape[-2:]), []).append(idx)

        restored: list[torch.Tensor | None] = [None] * batch_size
        spread: list[torch.Tensor | None] = [None] * batch_size
        for indices in groups.values():
            mu = torch.stack([images[k] for k in indices]).to(device=device, dtype=dtype)
            if isinstance(generator, list):
                group_generator: Any = [generator[k] for k in indices]
            else:
                group_generator = generator
            mu, group_generator = repeat_for_samples(mu, group_generator, num_samples)
            out = self._restore_group(
                mu,
                num_inference_steps,
                timesteps,
                group_generator,
                tiling,
                tile_batch_size,
                step_kwargs_names,
                callback_on_step_end,
                callback_on_step_end_tensor_inputs,
            )
            mean, std = ensemble_statistics(out.float().clamp_(0.0, 1.0), num_samples)
            for j, k in enumerate(indices):
                restored[k] = mean[j]
                spread[k] = None if std is None else std[j]

        self.maybe_free_model_hooks()
        output = MRRestorationPipelineOutput(
            images=self._format_output([r for r in restored if r is not None], output_type),
            uncertainty=None
            if num_samples == 1
            else self._format_output([s for s in spread if s is not None], output_type),
        )
        return output if return_dict else output.to_tuple()

    def _format_output(self, restored: list[torch.Tensor], output_type: str) -> Any:
        same_size = len({tuple(r.shape) for r in restored}) == 1
        if output_type == "pt":
            return torch.stack(restored) if same_size else restored
        arrays = [r.permute(1, 2, 0).cpu().numpy() for r in restored]
        if output_type == "np":
            return np.stack(arrays) if same_size else arrays
        return [self.numpy_to_pil(a[None])[0] for a in arrays]


# ----------------------------------------------------------------------------- Hub download
def download_pipeline_snapshot(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool | None = None,
) -> str:
    """Downloads a pipeline repo (model_index.json, README.md, components); returns the folder.

    Reads ``model_index.json`` first and then fetches only the folders of the components it
    names, pinned to the same commit.
    """
    from huggingface_hub import hf_hub_download, snapshot_download

    from diffusers_mrs import __version__

    common: dict[str, Any] = {
        "cache_dir": cache_dir,
        "token": token,
        "force_download": force_download,
        "local_files_only": bool(local_files_only),
        "library_name": LIBRARY_NAME,
        "library_version": __version__,
    }
    index_file = hf_hub_download(repo_id, "model_index.json", revision=revision, **common)
    match = _COMMIT_IN_PATH.search(str(index_file))
    pinned = match.group(1) if match else revision
    with open(index_file, encoding="utf-8") as f:
        index = json.load(f)
    components = [
        k
        for k, v in index.items()
        if not k.startswith("_") and isinstance(v, list) and v and v[0] is not None
    ]
    allow = ["model_index.json", "README.md", *[f"{c}/*" for c in components]]
    return snapshot_download(repo_id, revision=pinned, allow_patterns=allow, **common)
