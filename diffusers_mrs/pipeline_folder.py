"""Pipeline folders: where one comes from (the default model shipped in the package, a local
folder, or a snapshot of a Hub repo) and how its ``model_index.json`` names components.

diffusers downloads only pipelines whose components it knows, so a Hub repo id is turned
into a local snapshot here (``model_index.json`` first, then exactly the component folders
it names, pinned to that commit) and loaded from disk. :class:`PipelineFolderMixin` gives a
pipeline that ``from_pretrained`` and writes ``"diffusers_mrs"`` as the library of the
components whose class the top-level package exports, so folders stay loadable when the
package's internal modules move. A folder is checked as it loads
(:class:`PipelineFolderError`): ``model_index.json`` must be a JSON object, and every loaded
model's weights must all be there, stored as floats and finite
(:func:`check_component_weights`), so a broken folder never gives all-black images.
Publishing (model cards, uploads) is :mod:`diffusers_mrs.hub`, which builds on the
pipeline; this module needs neither.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from typing import Any

from diffusers.utils.torch_utils import unwrap_module
from huggingface_hub import hf_hub_download, snapshot_download

from diffusers_mrs import __version__

__all__ = [
    "LIBRARY_NAME",
    "PipelineFolderError",
    "PipelineFolderMixin",
    "check_component_weights",
    "default_model_path",
    "download_pipeline_snapshot",
    "hub_repo_id",
    "read_model_index",
]

#: The library name written to ``model_index.json`` for components defined in diffusers_mrs.
LIBRARY_NAME = "diffusers_mrs"
#: ``from_pretrained`` keyword arguments that also control the Hub download.
_DOWNLOAD_KWARGS = ("revision", "cache_dir", "token", "force_download", "local_files_only")

_COMMIT_IN_PATH = re.compile(r"snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")


def default_model_path() -> Path:
    """Folder of the default pipeline shipped in the package: ``diffusers_mrs/default_model``."""
    return Path(__file__).resolve().parent / "default_model"


def hub_repo_id(name_or_path: str | os.PathLike) -> str | None:
    """``name_or_path`` as a Hub repo id, or ``None`` where it is an existing local folder.

    Raises:
        ValueError: ``name_or_path`` is a file (a pipeline is a folder).
        FileNotFoundError: it looks like a path (``./x``, ``/x``, ``a/b/c``) but no such
            folder exists.
    """
    name = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(name):
        return None
    if os.path.exists(name):
        raise ValueError(f"{name!r} is a file; pass the pipeline folder (with model_index.json).")
    looks_like_path = (
        name.startswith((".", "/", "~", "\\"))
        or name.count("/") > 1
        or os.sep in name.replace("/", "")
    )
    if looks_like_path:
        raise FileNotFoundError(f"No such pipeline folder: {name!r} (and it is not a Hub repo id).")
    return name


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
    index = read_model_index(Path(index_file))
    components = [
        k
        for k, v in index.items()
        if not k.startswith("_") and isinstance(v, list) and v and v[0] is not None
    ]
    allow = ["model_index.json", "README.md", *[f"{c}/*" for c in components]]
    return snapshot_download(repo_id, revision=pinned, allow_patterns=allow, **common)


class PipelineFolderError(ValueError):
    """A pipeline folder that cannot give a working pipeline: its ``model_index.json`` is
    not a JSON object, or a component's weights are missing, not floating point or not
    finite (checked at load, with the names)."""


def read_model_index(file: Path) -> dict[str, Any]:
    """``model_index.json`` as a dict, or a :class:`PipelineFolderError` saying what it is."""
    try:
        index = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineFolderError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(index, dict):
        raise PipelineFolderError(
            f"{file} must be a JSON object (component name -> [library, class]), got a "
            f"JSON {type(index).__name__}."
        )
    return index


def check_component_weights(pipe: Any, folder: Path, names: list[str]) -> None:
    """The weights of the components ``names`` (loaded from ``folder/<name>``) are all
    there, stored as floats and finite, or a :class:`PipelineFolderError` names the
    tensors that are not.

    Read off the loaded modules and the safetensors headers (no second read of the data):
    a weight the files lack stays on the ``meta`` device (or is missing from the header),
    int8 weights are cast to float silently on load (seen in the header), and one NaN
    weight makes every output NaN (an all-black image).
    """
    from diffusers import ModelMixin

    from diffusers_mrs.models.checkpoint_io import weights_message
    from diffusers_mrs.models.weight_checks import (
        non_finite_weights,
        non_float_weights,
        stored_weight_dtypes,
    )

    for name in names:
        module = getattr(pipe, name, None)
        if not isinstance(module, ModelMixin):
            continue
        tensors = dict(module.state_dict(keep_vars=True))
        stored = stored_weight_dtypes(sorted((folder / name).glob("*.safetensors")))
        missing = [k for k, v in tensors.items() if v.device.type == "meta"]
        if stored and type(module).__module__.startswith(LIBRARY_NAME):  # our names are stable
            missing += [k for k in tensors if k not in stored and k not in missing]
        message = weights_message(
            f"{folder / name}: the weights of `{name}` ({type(module).__name__})",
            missing=[repr(k) for k in missing],
            not_floating_point=non_float_weights(
                {k: d for k, d in stored.items() if k in tensors and tensors[k].is_floating_point()}
            ),
            NaN_or_infinite_values=non_finite_weights(tensors),
        )
        if message is not None:
            raise PipelineFolderError(message)


def _pipeline_location(
    name_or_path: str | os.PathLike | None, kwargs: dict[str, Any]
) -> tuple[str, str | None]:
    """The local folder to load (the default model, a folder, or the downloaded snapshot
    of a Hub repo) and the repo id (``None`` for local folders)."""
    if name_or_path is None:
        path = default_model_path()
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"The default model is not installed (no model_index.json in {path}). Pass a"
                " local pipeline folder or a Hub repo id to `from_pretrained`."
            )
        return str(path), None
    repo_id = hub_repo_id(name_or_path)
    if repo_id is None:
        return os.path.expanduser(os.fspath(name_or_path)), None
    download = {k: kwargs[k] for k in _DOWNLOAD_KWARGS if k in kwargs}
    return download_pipeline_snapshot(repo_id, **download), repo_id


def _library_entry(module: Any) -> tuple[str, str] | None:
    """``("diffusers_mrs", ClassName)`` if diffusers' loader finds the component's class there.

    The loader imports the library named in ``model_index.json`` and looks the class up on
    it; the same lookup here decides whether the short name is valid.
    """
    if module is None:
        return None
    cls = type(unwrap_module(module))
    if getattr(importlib.import_module(LIBRARY_NAME), cls.__name__, None) is cls:
        return LIBRARY_NAME, cls.__name__
    return None


class PipelineFolderMixin:
    """``from_pretrained`` from the default model, a folder or a Hub repo id, and the short
    library name in ``model_index.json``; goes before ``DiffusionPipeline`` in the bases."""

    def register_modules(self, **kwargs: Any) -> None:
        """Registers components; diffusers_mrs classes get the library name ``diffusers_mrs``."""
        super().register_modules(**kwargs)  # type: ignore[misc]
        for name, module in kwargs.items():
            entry = _library_entry(module)
            if entry is not None:
                self.register_to_config(**{name: entry})  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # DiffusionPipeline.__setattr__ re-registers swapped components (e.g. a new scheduler)
        # under their module path; use the short library name for diffusers_mrs classes.
        if "_internal_dict" in self.__dict__ and isinstance(
            self._internal_dict.get(name), (list, tuple)  # type: ignore[attr-defined]
        ):
            entry = _library_entry(value)
            if entry is not None:
                self.register_to_config(**{name: entry})  # type: ignore[attr-defined]

    @classmethod
    def from_original(cls, source: str | os.PathLike, model: str | None = None,
                      **kwargs: Any) -> Any:
        """The pipeline of original DA-CLIP / IR-SDE / Refusion checkpoints (a Hub repo id,
        a folder or a single network file), converted once and cached; ``model`` names the
        DA-CLIP pair (``universal-ir``, ``universal-ir-mix``, ``wild-ir``). See
        :func:`diffusers_mrs.original_checkpoints.load_original_pipeline`."""
        from diffusers_mrs.original_checkpoints import load_original_pipeline

        return load_original_pipeline(source, model, pipeline_class=cls, **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs: Any
    ) -> Any:
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
        (:func:`download_pipeline_snapshot`) and loaded locally.

        Raises:
            PipelineFolderError: ``model_index.json`` is not a JSON object, or a loaded
                component's weights are missing, not floating point (e.g. int8) or hold
                NaN/inf, naming the tensors (:func:`check_component_weights`).
        """
        if "torch_dtype" in kwargs:  # diffusers' deprecated name for `dtype`
            kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
        location, repo_id = _pipeline_location(pretrained_model_name_or_path, kwargs)
        index_file = Path(location) / "model_index.json"
        index = read_model_index(index_file) if index_file.is_file() else {}
        pipe = super().from_pretrained(location, **kwargs)  # type: ignore[misc]
        loaded = [k for k, v in index.items() if not k.startswith("_") and k not in kwargs
                  and isinstance(v, list)]
        check_component_weights(pipe, Path(location), loaded)
        if repo_id is not None:
            pipe.register_to_config(_name_or_path=repo_id)
        return pipe
