"""Resource limits of ``diffusers-mrs restore``, with their defaults and the flags that
change them.

- ``--steps`` at most :data:`MAX_STEPS`, ``--samples`` at most :data:`MAX_SAMPLES`,
  ``--seed`` in ``0 .. MAX_SEED`` (what ``torch.Generator.manual_seed`` takes), all
  checked when the command line is parsed. A scheduler may allow fewer steps: the
  posterior and Euler-Maruyama samplers take at most the model's ``num_train_timesteps``
  (checked before the model loads for a local model).
- ``--max-pixels`` (default :data:`~diffusers_mrs.image_limits.DEFAULT_MAX_PIXELS`): a
  file whose header declares more pixels is refused before it is decoded.
- Automatic tiling (:func:`automatic_tile`): without ``--tile``, an image whose pixels
  times ``--samples`` exceed :data:`AUTO_TILE_PIXELS` is restored with the network on
  :data:`AUTO_TILE_SIZE` tiles (the network's activations grow with the pixels of a
  call, a tile bounds them), and the run says so. ``--tile SIZE`` chooses the tiles
  itself; a SIZE at least the image's larger side runs the network untiled.
"""

from __future__ import annotations

__all__ = [
    "AUTO_TILE_PIXELS",
    "AUTO_TILE_SIZE",
    "MAX_SAMPLES",
    "MAX_SEED",
    "MAX_STEPS",
    "automatic_tile",
    "automatic_tile_note",
]

#: ``--steps`` upper bound: ten times the ``num_train_timesteps`` of the shipped and the
#: original IR-SDE / Refusion / DA-CLIP models (100).
MAX_STEPS = 1000

#: ``--samples`` upper bound (the K samples of an image are one batch).
MAX_SAMPLES = 64

#: ``--seed`` upper bound: the largest seed of ``torch.Generator.manual_seed``.
MAX_SEED = 2**64 - 1

#: Without ``--tile``, images with more pixels x samples than this (2048 x 2048) are
#: restored with the network on tiles.
AUTO_TILE_PIXELS = 2048 * 2048

#: The tile size of automatic tiling (its overlap is the pipeline's default, a quarter).
AUTO_TILE_SIZE = 512


def automatic_tile(height: int, width: int, samples: int, tile: int | None) -> int | None:
    """The tile size an image is restored with: ``tile`` (``--tile``) if given, else
    :data:`AUTO_TILE_SIZE` when ``height * width * samples`` exceeds
    :data:`AUTO_TILE_PIXELS`, else ``None`` (untiled)."""
    if tile is not None:
        return tile
    return AUTO_TILE_SIZE if height * width * samples > AUTO_TILE_PIXELS else None


def automatic_tile_note(height: int, width: int, samples: int) -> str:
    """The line that says an image is tiled automatically."""
    times = f" x {samples} samples" if samples > 1 else ""
    return (
        f"{width} x {height} px{times} is above {AUTO_TILE_PIXELS:,} pixels: the network runs"
        f" on {AUTO_TILE_SIZE} px tiles (--tile SIZE to choose, a SIZE of at least"
        f" {max(height, width)} for none)"
    )
