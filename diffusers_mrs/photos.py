"""The natural photographs that scikit-image and scikit-learn install: nothing is downloaded.

Eight of them are the bundled training split, three (:data:`VAL_PHOTO_NAMES`) are held out
for validation and benchmarks. Photos as float32 ``H x W x 3`` arrays in ``[0, 1]``.
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = [
    "BUNDLED_PHOTO_NAMES",
    "TRAIN_PHOTO_NAMES",
    "VAL_PHOTO_NAMES",
    "bundled_photos",
    "load_bundled_photo",
]

#: The natural RGB photographs that scikit-image and scikit-learn install (no download needed).
#: ``motorcycle_left``/``motorcycle_right`` are a stereo pair: both are in the training split.
BUNDLED_PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "china",
    "chelsea",
    "coffee",
    "flower",
)
#: Held out for validation and benchmarks; never trained on.
VAL_PHOTO_NAMES: tuple[str, ...] = ("chelsea", "coffee", "flower")
#: The training split: every bundled photo that is not in :data:`VAL_PHOTO_NAMES`.
TRAIN_PHOTO_NAMES: tuple[str, ...] = tuple(
    n for n in BUNDLED_PHOTO_NAMES if n not in VAL_PHOTO_NAMES
)


@cache
def _load_bundled_uint8(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(f"{name}.jpg"))
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return np.asarray(left if name == "motorcycle_left" else right)
    if name not in BUNDLED_PHOTO_NAMES:
        raise ValueError(f"unknown bundled photo {name!r}; expected one of {BUNDLED_PHOTO_NAMES}")
    return np.asarray(getattr(skimage.data, name)())


def load_bundled_photo(name: str) -> np.ndarray:
    """One bundled photograph as a float32 ``H x W x 3`` array in ``[0, 1]`` (a fresh copy).

    Requires scikit-image (and scikit-learn for ``china``/``flower``); nothing is downloaded.
    """
    img = _load_bundled_uint8(name)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"bundled photo {name!r} is not RGB (shape {img.shape})")
    return img[..., :3].astype(np.float32) / 255.0


def bundled_photos(split: str = "train") -> dict[str, np.ndarray]:
    """The bundled photographs of one split, ``{name: float32 H x W x 3 array in [0, 1]}``.

    Args:
        split: ``"train"`` (:data:`TRAIN_PHOTO_NAMES`, 8 photos), ``"val"``
            (:data:`VAL_PHOTO_NAMES`: chelsea, coffee, flower) or ``"all"``.
    """
    names = {"train": TRAIN_PHOTO_NAMES, "val": VAL_PHOTO_NAMES, "all": BUNDLED_PHOTO_NAMES}
    if split not in names:
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    return {n: load_bundled_photo(n) for n in names[split]}
