"""Where a pipeline folder comes from: the default model shipped in the package, a local
folder, or a snapshot of a Hub repo.

diffusers downloads only pipelines whose components it knows, so a Hub repo id is turned
into a local snapshot here (``model_index.json`` first, then exactly the component folders
it names, pinned to that commit) and loaded from disk. Publishing (model cards, uploads)
is :mod:`diffusers_mrs.hub`, which builds on the pipeline; this module needs neither.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import hf_hub_download, snapshot_download

from diffusers_mrs import __version__

__all__ = ["LIBRARY_NAME", "default_model_path", "download_pipeline_snapshot", "hub_repo_id"]

#: The library name written to ``model_index.json`` for components defined in diffusers_mrs.
LIBRARY_NAME = "diffusers_mrs"

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
    with open(index_file, encoding="utf-8") as f:
        index = json.load(f)
    components = [
        k
        for k, v in index.items()
        if not k.startswith("_") and isinstance(v, list) and v and v[0] is not None
    ]
    allow = ["model_index.json", "README.md", *[f"{c}/*" for c in components]]
    return snapshot_download(repo_id, revision=pinned, allow_patterns=allow, **common)
