"""Training data of a run: the bundled photos or the fetched real photographs.

``--train_data photos`` (or ``photos:<cache folder>``) trains on the photographs that
``examples/fetch_training_photos.py`` put in the cache (:mod:`.photo_sources`), degraded
on the fly by the realistic model of :mod:`.realistic_degradations`, and validates on their
fixed held-out split; ``--train_data bundled`` keeps the bundled photos and
:func:`diffusers_mrs.data.degrade`. See ``docs/training_data.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import DEGRADATION_KINDS, bundled_photos, degrade, make_validation_set
from .photo_sources import photo_paths
from .realistic_degradations import degrade_realistic, realistic_ranges

__all__ = [
    "PHOTOS_SPEC",
    "is_photos_spec",
    "load_photos",
    "photo_validation_set",
    "photos_cache_dir",
    "training_images",
    "validation_set",
]

#: ``--train_data`` value of the fetched photographs (``photos:<folder>`` names the cache).
PHOTOS_SPEC = "photos"
#: Long side the photographs are downscaled to (antialiased): 2560-pixel wallpapers become
#: 1280, which also averages away their own JPEG artefacts and noise.
DEFAULT_MAX_SIDE = 1280


def is_photos_spec(train_data: str) -> bool:
    """Whether ``train_data`` names the fetched photographs (``photos`` or ``photos:DIR``)."""
    return train_data == PHOTOS_SPEC or train_data.startswith(PHOTOS_SPEC + ":")


def photos_cache_dir(train_data: str) -> Path | None:
    """The cache folder ``photos:DIR`` names (``None``: the default cache)."""
    if not is_photos_spec(train_data):
        raise ValueError(f"{train_data!r} does not name the photos (photos or photos:DIR)")
    folder = train_data[len(PHOTOS_SPEC) + 1 :]
    return Path(folder).expanduser() if folder else None


def load_photos(
    cache_dir: str | Path | None = None, split: str = "train", max_side: int = DEFAULT_MAX_SIDE
) -> dict[str, np.ndarray]:
    """The cached photographs of one split, ``{file stem path: uint8 H x W x 3}``.

    Each is read with its EXIF orientation, converted to RGB and, when its long side exceeds
    ``max_side``, downscaled (Lanczos, aspect kept) so that it equals ``max_side``.
    """
    from PIL import Image, ImageOps

    if max_side < 16:
        raise ValueError(f"max_side must be at least 16, got {max_side}")
    photos = {}
    for path in photo_paths(cache_dir, split):
        with Image.open(path) as im:
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        scale = max_side / max(rgb.size)
        if scale < 1:
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        photos[f"{path.parent.name}/{path.stem}"] = np.asarray(rgb, dtype=np.uint8)
    return photos


def training_images(
    train_data: str, ranges: dict[str, Any] | None = None
) -> tuple[list[np.ndarray], Callable[..., np.ndarray]]:
    """The clean training images of ``train_data`` and the degradation to apply to them:
    ``bundled`` -> the bundled training photos with :func:`diffusers_mrs.data.degrade`;
    ``photos[:DIR]`` -> the fetched training split with :func:`.degrade_realistic`, its
    parameter ranges with ``ranges`` replacing entries of the same name."""
    if train_data == "bundled":
        if ranges:
            raise ValueError("realistic_ranges apply to --train_data photos only")
        return list(bundled_photos("train").values()), degrade
    realistic_ranges(ranges)  # unknown names fail here, before any photo is loaded
    photos = list(load_photos(photos_cache_dir(train_data), "train").values())
    if not ranges:
        return photos, degrade_realistic
    return photos, functools.partial(degrade_realistic, ranges=dict(ranges))


def photo_validation_set(
    cache_dir: str | Path | None = None,
    kinds: Sequence[str] = DEGRADATION_KINDS,
    crop: int = 128,
    seed: int = 0,
    margin: int = 12,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Centre crops of the held-out photographs, each degraded once per kind.

    The ``crop + 2 * margin`` centre of each (downscaled) photo is degraded by
    :func:`.degrade_realistic` with parameters drawn from the training distribution by the
    generator ``(seed, photo, kind)`` (fixed for a seed), then the margin is cut away.

    Returns:
        ``(lq, gt, labels)``: float32 ``N x 3 x crop x crop`` tensors and ``"kind/photo"``
        labels, as :func:`diffusers_mrs.data.make_validation_set`.
    """
    lqs, gts, labels = [], [], []
    for pi, (name, img) in enumerate(load_photos(cache_dir, "val").items()):
        h, w = img.shape[:2]
        c = min(crop, h - 2 * margin, w - 2 * margin)
        if c < 8:
            raise ValueError(f"validation photo {name} ({w} x {h}) is too small for a crop")
        top, left = (h - c) // 2 - margin, (w - c) // 2 - margin
        window = img[top : top + c + 2 * margin, left : left + c + 2 * margin]
        clean = window.astype(np.float32) / 255.0
        for ki, kind in enumerate(kinds):
            lq = degrade_realistic(clean, kind, np.random.default_rng([seed, pi, ki]))
            for lst, im in ((lqs, lq), (gts, clean)):
                patch = im[margin : margin + c, margin : margin + c].transpose(2, 0, 1)
                lst.append(torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)))
            labels.append(f"{kind}/{name}")
    return torch.stack(lqs), torch.stack(gts), labels


def validation_set(
    train_data: str, kinds: Sequence[str], crop: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The held-out crops of a run: :func:`photo_validation_set` for ``photos[:DIR]``,
    else :func:`diffusers_mrs.data.make_validation_set` (the bundled validation photos)."""
    if is_photos_spec(train_data):
        return photo_validation_set(photos_cache_dir(train_data), kinds, crop, seed)
    return make_validation_set(kinds, crop, seed)
