"""The optional packages training needs (the ``[train]`` extra), checked before any work."""

from __future__ import annotations

import importlib.util

#: import name -> package: the bundled photos (scikit-image, scikit-learn) and the PSNR of
#: validation (scikit-image).
TRAINING_PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}
INSTALL_HINT = 'pip install -e ".[train]"'


def missing_training_packages() -> list[str]:
    """The packages of the ``[train]`` extra that are not installed."""
    return [package for module, package in TRAINING_PACKAGES.items()
            if importlib.util.find_spec(module) is None]


def require_training_packages() -> None:
    """An ``ImportError`` (one line, naming the packages and :data:`INSTALL_HINT`) when any
    package training needs is missing."""
    missing = missing_training_packages()
    if missing:
        raise ImportError(f"training needs {', '.join(missing)} (the [train] extra): "
                          f"{INSTALL_HINT}")
