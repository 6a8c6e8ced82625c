"""The held-out crops the default-model benchmarks measure on, degraded.

Two sources, both never trained on by the default model they measure:

* :func:`photo_crops`: the seven held-out photographs of ``docs/training_data.md``
  (``photo_validation_set``'s split, fetched by ``examples/fetch_training_photos.py``),
  degraded by the realistic model of :mod:`diffusers_mrs.training.realistic_degradations`
  with parameters drawn from the training distribution by fixed seeds
  (``docs/training_data.md#the-held-out-split``);
* :func:`bundled_crops`: the three bundled validation photos (``chelsea``, ``coffee``,
  ``flower``) degraded by :func:`diffusers_mrs.data.degrade` with its nominal parameters,
  the setting models up to v3 were accepted on.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusers_mrs.data import TRAINING_KINDS, VAL_PHOTO_NAMES, degrade, load_bundled_photo
from diffusers_mrs.training.photo_data import load_photos
from diffusers_mrs.training.realistic_degradations import degrade_realistic

__all__ = ["MARGIN", "bundled_crops", "held_out_photos", "photo_crops", "require_held_out_photos",
           "to_tensor"]

#: Pixels degraded around each crop and cut away afterwards, so that blur and JPEG see the
#: crop's surroundings as they would in the whole photo.
MARGIN = 12


@functools.cache
def _held_out_photos(cache_dir: str | None) -> tuple[tuple[str, np.ndarray], ...]:
    return tuple(load_photos(cache_dir, "val").items())


def held_out_photos(cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """The held-out photographs, ``{name: uint8 H x W x 3}``, read once per cache folder
    (:func:`diffusers_mrs.training.photo_data.load_photos`, long side 1280)."""
    return dict(_held_out_photos(None if cache_dir is None else str(cache_dir)))


def require_held_out_photos(cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """:func:`held_out_photos`, or ``SystemExit`` naming what is missing: a script calls it
    first, so that a missing photo cache stops it before any model loads."""
    try:
        return held_out_photos(cache_dir)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """An ``H x W x 3`` array as a float32 ``3 x H x W`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def photo_crops(
    photos: Mapping[str, np.ndarray],
    kind: str,
    per_photo: int,
    crop: int,
    seed: int,
    params: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lq, gt)``, ``[N, 3, crop, crop]``: ``per_photo`` random crops of each photo.

    Crop positions depend on ``(seed, photo)`` only, the same for every kind. Each crop
    with a :data:`MARGIN` around it is degraded by :func:`degrade_realistic` with
    parameters drawn from the training distribution by the generator
    ``(seed, photo, crop, kind)`` (photo, crop and kind as indices; the kind's in
    :data:`diffusers_mrs.data.TRAINING_KINDS`) (or with ``params``), then the margin is cut away.
    """
    if kind not in TRAINING_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {TRAINING_KINDS}")
    if crop < 8 or per_photo < 1:
        raise ValueError(f"need crop >= 8 and per_photo >= 1, got {crop} and {per_photo}")
    kind_index = TRAINING_KINDS.index(kind)
    lqs, gts = [], []
    for pi, (name, photo) in enumerate(photos.items()):
        h, w = photo.shape[:2]
        window = crop + 2 * MARGIN
        if min(h, w) < window:
            raise ValueError(f"photo {name} ({w} x {h}) is smaller than a {window} px window")
        where = np.random.default_rng([seed, pi])
        for ci in range(per_photo):
            top, left = (int(where.integers(0, n - window + 1)) for n in (h, w))
            clean = photo[top : top + window, left : left + window].astype(np.float32) / 255
            rng = np.random.default_rng([seed, pi, ci, kind_index])
            lq = degrade_realistic(clean, kind, rng, params=params)
            inner = (slice(MARGIN, MARGIN + crop), slice(MARGIN, MARGIN + crop))
            lqs.append(to_tensor(lq[inner]))
            gts.append(to_tensor(clean[inner]))
    return torch.stack(lqs), torch.stack(gts)


def bundled_crops(kind: str, per_photo: int, crop: int, seed: int,
                  params: dict[str, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lq, gt)``: ``per_photo`` random crops of each bundled validation photo,
    ``[N, 3, crop, crop]``, each photo degraded whole with the nominal parameters of
    :func:`diffusers_mrs.data.degrade` (or ``params``); crop positions depend on ``seed``
    only (the same for every kind)."""
    lqs, gts = [], []
    for pi, name in enumerate(VAL_PHOTO_NAMES):
        photo = load_bundled_photo(name)
        lq = degrade(photo, kind, np.random.default_rng([seed, pi, 7]), randomize=False,
                     params=params)
        where = np.random.default_rng([seed, pi])
        for _ in range(per_photo):
            top = int(where.integers(0, photo.shape[0] - crop + 1))
            left = int(where.integers(0, photo.shape[1] - crop + 1))
            lqs.append(to_tensor(lq[top : top + crop, left : left + crop]))
            gts.append(to_tensor(photo[top : top + crop, left : left + crop]))
    return torch.stack(lqs), torch.stack(gts)
