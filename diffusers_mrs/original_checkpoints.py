"""Original DA-CLIP, IR-SDE and Refusion checkpoints by name: fetched, converted once, loaded.

DA-CLIP's authors publish their checkpoints in one Hub repo, :data:`HUB_REPO`, as three
pairs of an image encoder and a restoration network (:data:`PAIRS`). One call,
:func:`load_original_pipeline` (also ``MRRestorationPipeline.from_original``), turns a pair
into a pipeline:

1. the source is resolved to files: a Hub repo id (the pair's two files, downloaded with
   ``huggingface_hub.hf_hub_download``: cached, resumable, with progress bars; only those
   two), a local folder holding the same files, or a single IR-SDE/Refusion network file
   (a local path, ``owner/name/path/file.pth`` in a Hub repo, or its
   ``https://huggingface.co/.../resolve/...`` URL);
2. the files are checked before any download or conversion (the pair name, the repo's
   file list, and, memory-mapped, that the encoder fits the network and no file is
   truncated);
3. they are converted once, by the same code as ``diffusers-mrs convert``
   (:func:`diffusers_mrs.convert.convert_checkpoint`: safetensors, the MR Sampler paper's
   scheduler, a model card, DA-CLIP's degradation names), into a folder of
   :func:`converted_cache_dir` named by the files' SHA-256, so a second call only loads.

With the files in the Hugging Face cache everything works offline (``HF_HUB_OFFLINE=1``);
without them, offline, one error names the repo, the files and the command that fetches
them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers_mrs.convert import ConversionError, convert_checkpoint

__all__ = [
    "DEFAULT_PAIR",
    "HUB_REPO",
    "PAIRS",
    "OriginalFilesNotCachedError",
    "OriginalPair",
    "converted_cache_dir",
    "load_model_argument",
    "load_original_pipeline",
    "original_model_spec",
    "resolve_original_files",
]

#: The Hub repo of DA-CLIP's checkpoints (all three pairs).
HUB_REPO = "weblzw/daclip-uir-ViT-B-32-irsde"


@dataclass(frozen=True)
class OriginalPair:
    """A DA-CLIP image encoder and the restoration network trained with it."""

    encoder: str  # file name in the repo
    network: str
    context_dim: int  # width of the encoder's embeddings = the network's contexts
    title: str


PAIRS: dict[str, OriginalPair] = {
    "universal-ir": OriginalPair(
        "daclip_ViT-B-32.pt", "universal-ir.pth", 512, "DA-CLIP universal-ir (ViT-B-32)"
    ),
    "universal-ir-mix": OriginalPair(
        "daclip_ViT-B-32_mix.pt", "universal-ir-mix.pth", 512,
        "DA-CLIP universal-ir-mix (ViT-B-32, mixed degradations)",
    ),
    "wild-ir": OriginalPair(
        "wild-daclip_ViT-L-14.pt", "wild-ir.pth", 768, "DA-CLIP wild-ir (ViT-L-14)"
    ),
}  # fmt: skip
DEFAULT_PAIR = "universal-ir"
#: Bumped when a converted folder's layout changes, so older conversions are redone.
CONVERSION_FORMAT = 1
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_HUB_URL = re.compile(
    r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/(?:resolve|blob)/(?P<rev>[^/]+)/(?P<path>.+)$"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class OriginalFilesNotCachedError(FileNotFoundError):
    """Downloads are off and the files are not in the Hugging Face cache."""


@dataclass(frozen=True)
class OriginalFiles:
    """What a source resolved to: the conversion family and its local files."""

    family: str  # "daclip", "irsde" or "refusion" (diffusers_mrs.convert.FAMILIES)
    network: Path
    encoder: Path | None
    name: str  # for the model card and the cache folder


@dataclass(frozen=True)
class _Hub:
    """How to reach the Hub: ``hf_hub_download``'s shared arguments."""

    revision: str | None = None
    cache_dir: str | os.PathLike[str] | None = None
    token: str | bool | None = None
    local_files_only: bool = False

    @property
    def offline(self) -> bool:
        from huggingface_hub import constants

        return self.local_files_only or bool(constants.HF_HUB_OFFLINE)


def converted_cache_dir() -> Path:
    """Where converted folders are kept: ``$DIFFUSERS_MRS_CACHE``, else
    ``$HF_HOME/diffusers_mrs/converted``."""
    from huggingface_hub import constants

    env = os.environ.get("DIFFUSERS_MRS_CACHE")
    return Path(env) if env else Path(constants.HF_HOME) / "diffusers_mrs" / "converted"


def original_model_spec(text: str) -> tuple[str, str] | None:
    """``(source, pair)`` of a ``--model`` value naming a DA-CLIP pair, ``SOURCE:PAIR``
    (``weblzw/daclip-uir-ViT-B-32-irsde:wild-ir``, ``./downloads:universal-ir``) or a bare
    pair name (``wild-ir``: from :data:`HUB_REPO`); ``None`` for anything else (a pipeline
    folder or repo). A Hub repo id cannot contain ``:``, so the suffix is unambiguous."""
    if text in PAIRS:
        return HUB_REPO, text
    source, sep, pair = text.rpartition(":")
    return (source, pair) if sep and source and pair in PAIRS else None


def _pair(model: str | None) -> OriginalPair:
    name = DEFAULT_PAIR if model is None else model
    if name not in PAIRS:
        raise ConversionError(f"unknown model {name!r}; choose one of {list(PAIRS)}")
    return PAIRS[name]


def _fetch_command(repo: str, files: list[str], hub: _Hub) -> str:
    extra = f" --revision {hub.revision}" if hub.revision else ""
    extra += f" --cache-dir {os.fspath(hub.cache_dir)}" if hub.cache_dir else ""
    return f"hf download {repo} {' '.join(files)}{extra}"


def _cached_files(repo: str, files: list[str], hub: _Hub, why: str) -> dict[str, Path]:
    """The files from the Hugging Face cache, or one error naming the repo, the files and
    the command that fetches them."""
    from huggingface_hub import try_to_load_from_cache

    found = {f: try_to_load_from_cache(repo, f, cache_dir=hub.cache_dir, revision=hub.revision)
             for f in files}  # fmt: skip
    missing = [f for f, path in found.items() if not isinstance(path, str)]
    if missing:
        raise OriginalFilesNotCachedError(
            f"{repo}: {', '.join(missing)} not in the Hugging Face cache and {why}; fetch "
            f"them once with: {_fetch_command(repo, missing, hub)}"
        )
    return {f: Path(path) for f, path in found.items()}


def _hub_files(repo: str, files: list[str], hub: _Hub) -> dict[str, Path]:
    """``files`` of ``repo``, downloaded (cached, resumable) after checking that the repo
    holds them all; from the cache alone when offline."""
    if hub.offline:
        return _cached_files(repo, files, hub, "downloads are off (HF_HUB_OFFLINE)")
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        present = set(HfApi().list_repo_files(repo, revision=hub.revision, token=hub.token))
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise ConversionError(f"{repo}: no such Hub repo or revision ({err})") from None
    except Exception as err:  # no connection: the cache may still hold the files
        return _cached_files(repo, files, hub, f"the Hub cannot be reached ({err})")
    missing = [f for f in files if f not in present]
    if missing:
        listed = sorted(f for f in present if f.endswith(_CHECKPOINT_SUFFIXES))
        raise ConversionError(f"{repo} holds no {', '.join(missing)}; its checkpoints: {listed}")
    common = {"revision": hub.revision, "cache_dir": hub.cache_dir, "token": hub.token}
    return {f: Path(hf_hub_download(repo, f, **common)) for f in files}


def _single_file_family(path: Path) -> str:
    """``"irsde"`` or ``"refusion"`` from a network file's names (memory-mapped)."""
    from diffusers_mrs.models.checkpoint_io import read_checkpoint

    names = set(read_checkpoint(path, mmap=True))
    if "init_conv.weight" in names:
        if "mid_attn.fn.fn.proj_in.weight" in names or "prompt" in names:
            raise ConversionError(
                f"{path.name} is a DA-CLIP network: it needs its encoder; pass the Hub repo "
                f"or a folder holding both files, with model= one of {list(PAIRS)}"
            )
        return "irsde"
    if "intro.weight" in names:
        return "refusion"
    raise ConversionError(
        f"{path.name} is neither an IR-SDE ConditionalUNet nor a Refusion ConditionalNAFNet "
        "checkpoint (no 'init_conv.weight' or 'intro.weight')"
    )


def _hub_file_source(source: str) -> tuple[str, str | None, str] | None:
    """``(repo, revision, path)`` of a file in a Hub repo given as a URL or as
    ``owner/name/path/file.pth``; ``None`` for anything else."""
    match = _HUB_URL.match(source)
    if match:
        return match["repo"], match["rev"], match["path"]
    parts = source.split("/")
    if len(parts) >= 3 and source.endswith(_CHECKPOINT_SUFFIXES) and not source.startswith(
        (".", "/", "~")
    ):
        return "/".join(parts[:2]), None, "/".join(parts[2:])
    return None


def resolve_original_files(
    source: str | os.PathLike[str], model: str | None = None, hub: _Hub | None = None
) -> OriginalFiles:
    """The local files of ``source`` (see :func:`load_original_pipeline`), downloaded
    where needed; every check that needs no tensor runs first."""
    hub = hub or _Hub()
    text = os.path.expanduser(os.fspath(source))
    if os.path.isfile(text) or _hub_file_source(text) is not None:
        if model is not None:
            raise ConversionError(
                f"model={model!r} names a DA-CLIP pair; {text} is a single network file"
            )
        if os.path.isfile(text):
            path = Path(text)
        else:
            repo, revision, file = _hub_file_source(text)  # type: ignore[misc]
            hub = _Hub(revision or hub.revision, hub.cache_dir, hub.token, hub.local_files_only)
            path = _hub_files(repo, [file], hub)[file]
        return OriginalFiles(_single_file_family(path), path, None, path.stem)
    pair = _pair(model)
    name = DEFAULT_PAIR if model is None else model
    files = [pair.encoder, pair.network]
    if os.path.isdir(text):
        missing = [f for f in files if not (Path(text) / f).is_file()]
        if missing:
            raise ConversionError(f"{text} holds no {', '.join(missing)} (the {name} pair)")
        paths = {f: Path(text) / f for f in files}
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        paths = _hub_files(text, files, hub)
    else:
        raise ConversionError(
            f"{text!r} is no local folder or file, no Hub repo id (owner/name) and no Hub file"
        )
    return OriginalFiles("daclip", paths[pair.network], paths[pair.encoder], name)


def _sha256(path: Path) -> str:
    """The file's SHA-256: the blob name in the Hugging Face cache (LFS files are stored
    under it), else computed."""
    blob = path.resolve().name
    if _SHA256.match(blob) and path.resolve().parent.name == "blobs":
        return blob
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _converted_folder(files: OriginalFiles, cache: Path) -> Path:
    """The cache folder of these files: ``<name>-<16 hex digits>`` of their SHA-256."""
    hashed = [_sha256(files.network)] + ([_sha256(files.encoder)] if files.encoder else [])
    key = json.dumps({"family": files.family, "sha256": hashed, "format": CONVERSION_FORMAT})
    slug = re.sub(r"[^\w.-]+", "-", files.name)
    return cache / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _convert_once(files: OriginalFiles, cache: Path) -> Path:
    """The converted folder of ``files``, converting only when it is not there yet."""
    folder = _converted_folder(files, cache)
    if (folder / "model_index.json").is_file():
        return folder
    if files.encoder is not None:  # before the cache folder is created (memory-mapped)
        from diffusers_mrs.convert import check_daclip_pair

        check_daclip_pair(files.encoder, files.network)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        convert_checkpoint(files.family, files.network, folder, daclip=files.encoder,
                           model_name=f"{files.name} (converted original checkpoint)")  # fmt: skip
    except (ConversionError, OSError):
        if not (folder / "model_index.json").is_file():  # not another process's result
            raise
    return folder


def load_original_pipeline(
    source: str | os.PathLike[str] = HUB_REPO,
    model: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    converted_dir: str | os.PathLike[str] | None = None,
    pipeline_class: Any = None,
    **kwargs: Any,
) -> Any:
    """An :class:`~diffusers_mrs.MRRestorationPipeline` from original checkpoints.

    Args:
        source: a Hub repo id holding DA-CLIP's pairs (default :data:`HUB_REPO`), a local
            folder holding the same files, or a single IR-SDE/Refusion network file (a
            path, ``owner/name/path/file.pth`` or a ``huggingface.co`` file URL).
        model: the pair, one of :data:`PAIRS` (default ``"universal-ir"``); only for
            repos and folders.
        revision, cache_dir, token, local_files_only: as ``hf_hub_download``'s.
        converted_dir: where converted folders are kept (default
            :func:`converted_cache_dir`).
        pipeline_class: the class whose ``from_pretrained`` loads the folder (default
            ``MRRestorationPipeline``).
        **kwargs: passed to ``from_pretrained`` (``dtype``, components, ...).

    Returns:
        The pipeline, with the MR Sampler at the paper's setting (SDE, data, order 2).

    Raises:
        ConversionError: an unknown pair, a repo or folder without the pair's files, an
            encoder that does not fit the network, a single file that is no IR-SDE or
            Refusion network; all before any download or conversion.
        OriginalFilesNotCachedError: offline, and the files are not cached.
        IRSDECheckpointError, DACLIPCheckpointError: a file is truncated or unreadable.
    """
    hub = _Hub(revision, cache_dir, token, local_files_only)
    files = resolve_original_files(source, model, hub)
    cache = Path(converted_dir) if converted_dir is not None else converted_cache_dir()
    folder = _convert_once(files, cache)
    if pipeline_class is None:
        from diffusers_mrs import MRRestorationPipeline as pipeline_class
    return pipeline_class.from_pretrained(folder, **kwargs)


def load_model_argument(model: str | None, **kwargs: Any) -> Any:
    """The pipeline a ``--model`` value names (the CLI's and the demo's): a DA-CLIP pair
    (:func:`original_model_spec`) or a single original network file through
    :func:`load_original_pipeline`, anything else (``None``: the default model, a pipeline
    folder or repo) through ``MRRestorationPipeline.from_pretrained``."""
    from diffusers_mrs import MRRestorationPipeline

    spec = original_model_spec(model) if model is not None else None
    if spec is not None:
        return load_original_pipeline(*spec, **kwargs)
    if model is not None and os.path.isfile(os.path.expanduser(model)):
        return load_original_pipeline(model, **kwargs)
    return MRRestorationPipeline.from_pretrained(model, **kwargs)
