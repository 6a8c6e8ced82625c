"""Degradations, the bundled photographs and the datasets used to train MR diffusion models.

One import place for the three modules that hold them:

* :mod:`diffusers_mrs.degradations`: :func:`degrade` and its four kinds (``noise``, ``blur``,
  ``lowlight``, ``jpeg``) plus ``clean``, their nominal and jittered parameters;
* :mod:`diffusers_mrs.photos`: the photographs scikit-image and scikit-learn install, split
  into training and held-out validation photos;
* :mod:`diffusers_mrs.datasets`: the patch and paired-folder datasets and the validation set.
"""

from __future__ import annotations

from .datasets import (
    DegradedPatchDataset,
    PairedFolderDataset,
    load_image,
    make_validation_set,
    random_augment,
)
from .degradations import (
    CLEAN,
    DEGRADATION_KINDS,
    NOMINAL_PARAMS,
    TRAINING_KINDS,
    degrade,
    gaussian_blur,
    sample_degradation_params,
)
from .photos import (
    BUNDLED_PHOTO_NAMES,
    TRAIN_PHOTO_NAMES,
    VAL_PHOTO_NAMES,
    bundled_photos,
    load_bundled_photo,
)

__all__ = [
    "BUNDLED_PHOTO_NAMES",
    "CLEAN",
    "DEGRADATION_KINDS",
    "NOMINAL_PARAMS",
    "TRAINING_KINDS",
    "TRAIN_PHOTO_NAMES",
    "VAL_PHOTO_NAMES",
    "DegradedPatchDataset",
    "PairedFolderDataset",
    "bundled_photos",
    "degrade",
    "gaussian_blur",
    "load_bundled_photo",
    "load_image",
    "make_validation_set",
    "random_augment",
    "sample_degradation_params",
]
