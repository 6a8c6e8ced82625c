"""The sample images in ``examples/images``: 256 x 256 crops of the held-out photographs.

One image per degradation the default model claims and one clean photo, each a crop of a
bundled photograph that no model of this package was trained on (``chelsea``, ``coffee``,
``flower``: :data:`diffusers_mrs.data.VAL_PHOTO_NAMES`). The whole photo is degraded with
the nominal parameters (seeded), then cropped, so the clean reference of every sample is
known exactly (:func:`clean_reference`).

    python benchmarks/example_images.py            # rewrites examples/images/*.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from diffusers_mrs.data import VAL_PHOTO_NAMES, degrade, load_bundled_photo

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples" / "images"
SIZE = 256


class Example(NamedTuple):
    """A sample image: the held-out photo, its degradation and the crop's top-left corner."""

    photo: str
    kind: str
    top: int
    left: int


EXAMPLES: dict[str, Example] = {
    "chelsea_noise.png": Example("chelsea", "noise", 20, 110),
    "flower_lowlight.png": Example("flower", "lowlight", 80, 180),
    "coffee_clean.png": Example("coffee", "clean", 10, 160),
}


def _crop(image: np.ndarray, example: Example) -> np.ndarray:
    return image[example.top : example.top + SIZE, example.left : example.left + SIZE]


def clean_reference(name: str) -> np.ndarray:
    """The clean crop behind sample ``name``, float32 ``H x W x 3`` in [0, 1]."""
    return _crop(load_bundled_photo(EXAMPLES[name].photo), EXAMPLES[name])


def degraded_sample(name: str, seed: int = 0) -> np.ndarray:
    """Sample ``name`` as 8-bit RGB (what the PNG holds)."""
    example = EXAMPLES[name]
    if example.photo not in VAL_PHOTO_NAMES:
        raise ValueError(f"{example.photo} is a training photo; samples must be held out")
    photo = load_bundled_photo(example.photo)
    rng = np.random.default_rng([seed, VAL_PHOTO_NAMES.index(example.photo)])
    lq = degrade(photo, example.kind, rng, randomize=False)
    return np.round(_crop(lq, example) * 255.0).astype(np.uint8)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLES:
        Image.fromarray(degraded_sample(name)).save(args.out / name)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
