"""Real low-light and real noisy photographs from the package registries, for evaluation.

No ground truth exists for these: they measure what a model does to a real photograph
(``benchmarks/real_photos.py``), not how close it comes to a clean one. The selection is the
explicit list :data:`REAL_PHOTOS`; each entry's name is ``<kind>/<name>`` with the kind
``lowlight`` (a dim scene shot without enough light) or ``noisy`` (visible sensor noise).
They come from the sample images of Debian's ``opencv-doc`` (``apt-get download`` and
``dpkg -x``, nothing installed) and from scikit-image's data folder, and are fetched with
:func:`~.photo_sources.fetch_photos` into their own cache (:func:`default_real_photos_dir`),
whose ``manifest.json`` gives every file's package, version, license and SHA-256.

The registries were searched for more (``docs/training_data.md#real-photographs``); the
noisy ones found are mildly noisy, none as noisy as the synthetic validation set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .photo_sources import PhotoEntry, fetch_photos, load_manifest

__all__ = [
    "REAL_KINDS",
    "REAL_PHOTOS",
    "default_real_photos_dir",
    "fetch_real_photos",
    "real_photo_files",
]

#: The kinds of real photograph, the first part of each entry's name.
REAL_KINDS: tuple[str, ...] = ("lowlight", "noisy")
_OPENCV = "usr/share/doc/opencv-doc/examples"
_OPENCV_LICENSE = "Apache-2.0 AND BSD-3-Clause"
_OPENCV_HOLDER = "OpenCV contributors (opencv-doc copyright, Files: *)"


def _opencv(name: str, path: str) -> PhotoEntry:
    return PhotoEntry(name, "deb", "opencv-doc", f"{_OPENCV}/{path}", _OPENCV_LICENSE,
                      _OPENCV_HOLDER)


#: The selection: dim scenes for ``lowlight``, photographs with visible sensor noise for
#: ``noisy``.
REAL_PHOTOS: tuple[PhotoEntry, ...] = (
    _opencv("lowlight/street_sign_dusk", "text/scenetext02.jpg"),
    _opencv("lowlight/notebook_dim", "data/ela_original.jpg"),
    _opencv("noisy/dog_in_car", "data/chicky_512.png"),
    _opencv("noisy/plant_indoors", "alphamat/input_images/plant.jpg"),
    PhotoEntry("noisy/hubble_deep_field", "python", "scikit-image", "hubble_deep_field.jpg",
               "public domain", "NASA, ESA (Hubble Deep Field)"),
)


def default_real_photos_dir() -> Path:
    """``$DIFFUSERS_MRS_REAL_PHOTOS``, else ``$XDG_CACHE_HOME/diffusers-mrs/real_photos``
    (default ``~/.cache/diffusers-mrs/real_photos``)."""
    if os.environ.get("DIFFUSERS_MRS_REAL_PHOTOS"):
        return Path(os.environ["DIFFUSERS_MRS_REAL_PHOTOS"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "diffusers-mrs" / "real_photos"


def fetch_real_photos(cache_dir: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`~.photo_sources.fetch_photos` of :data:`REAL_PHOTOS` into ``cache_dir``
    (default :func:`default_real_photos_dir`); none is for training, so every entry's split
    is ``val``. ``kwargs`` go to ``fetch_photos`` (``providers``, ``refresh``, ``progress``,
    ``entries``)."""
    entries = kwargs.pop("entries", REAL_PHOTOS)
    kinds = {e.name.split("/", 1)[0] for e in entries}
    if not kinds <= set(REAL_KINDS):
        raise ValueError(f"real photo kinds {sorted(kinds - set(REAL_KINDS))} unknown;"
                         f" expected {REAL_KINDS}")
    cache = Path(cache_dir) if cache_dir is not None else default_real_photos_dir()
    return fetch_photos(cache, entries, [e.name for e in entries], **kwargs)


def real_photo_files(cache_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``{name: manifest record + "path"}`` of the cached real photographs, in manifest
    order; raises ``FileNotFoundError`` naming the fetch command if any is missing."""
    cache = Path(cache_dir) if cache_dir is not None else default_real_photos_dir()
    records = load_manifest(cache)["photos"]
    missing = [r["name"] for r in records if not (cache / r["file"]).is_file()]
    if not records or missing:
        raise FileNotFoundError(
            f"real photographs missing from {cache} ({missing[:3] or 'no manifest'}): run "
            f"`python examples/fetch_real_photos.py --cache-dir {cache}` first")
    return {r["name"]: {**r, "path": cache / r["file"]} for r in records}
