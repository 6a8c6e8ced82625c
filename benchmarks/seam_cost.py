"""Seam cost of tiling: PSNR of the tiled against the untiled restoration, per tile size.

The pipeline keeps the sampler state and its noise global and only runs the network on
tiles, so any difference comes from the context each tile lacks. This script restores a
centre crop of each image once untiled and once per tile size (default overlap SIZE/4),
all with the same seed, and prints one row per tile size. It backs the smallest ``--tile``
the CLI accepts (``diffusers_mrs.restore_settings.MIN_TILE_SIZE``;
docs/guide/tiling.md#the-smallest-useful-tile).
:func:`seam_cost` is the measurement, shared with ``bench_tiling.py`` (seam cost at its
memory benchmark's tile sizes). ``--record`` writes the table (a row per tile size, a
column per image) as the ``tile_size`` entry of ``results/recorded.json`` (:mod:`recorded`).

    python benchmarks/seam_cost.py [--size 192] [--steps 10] [--tiles 8 16 24 32 48 64 96]
        [--model PATH_OR_REPO] [--record] [IMAGE ...]
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from _common import image_psnr
from recorded import add_record_option, record_table, rounded, script_command

from diffusers_mrs import MRRestorationPipeline
from diffusers_mrs.image_io import read_image


def centre_crop(path: str, size: int) -> np.ndarray:
    image = read_image(path).rgb()
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def restore(pipe: MRRestorationPipeline, image: np.ndarray, steps: int, tile: int | None):
    return pipe(
        image=image, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
        output_type="np", tile_size=tile,
    ).images[0]


def seam_cost(
    restore: Callable[[int | None], np.ndarray], tiles: Iterable[int]
) -> Iterator[tuple[int | None, float, float]]:
    """Rows ``(tile, PSNR of that restoration against the untiled one in dB, seconds)``:
    first the untiled restoration (tile None, PSNR inf), then one per tile size.
    ``restore(tile)`` restores one fixed image with a fixed seed (None: untiled)."""
    start = time.perf_counter()
    untiled = np.asarray(restore(None))
    yield None, math.inf, time.perf_counter() - start
    for tile in tiles:
        start = time.perf_counter()
        tiled = np.asarray(restore(tile))
        yield tile, image_psnr(tiled, untiled), time.perf_counter() - start


def seam_table(psnr: dict[str, dict[int, float]]) -> tuple[list[str], list[list]]:
    """``(columns, rows)``: one row per tile size (tile, overlap ``tile // 4``, then the
    PSNR in dB of each image, rounded to 0.1), from ``psnr[image name][tile]``; every image
    must have the same tile sizes."""
    tiles = [list(by_tile) for by_tile in psnr.values()]
    if not tiles:
        raise ValueError("seam table: no images")
    if any(t != tiles[0] for t in tiles):
        raise ValueError(f"seam table: every image needs the same tile sizes, got {tiles}")
    columns = ["tile", "overlap", *(f"{name} (dB)" for name in psnr)]
    rows = [[tile, tile // 4, *(rounded(by_tile[tile], 1) for by_tile in psnr.values())]
            for tile in tiles[0]]
    return columns, rows


def seam_setting(model: str | None, size: int, steps: int) -> str:
    """The recorded entry's setting (model, crop size, steps)."""
    return (f"{model or 'default model'}, {size}x{size} centre crops, {steps} MR Sampler "
            "steps, seed 0, overlap SIZE/4; PSNR of the tiled against the untiled result")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", default=["examples/images/chelsea_noise.png"])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tiles", type=int, nargs="+", default=[8, 16, 24, 32, 48, 64, 96])
    parser.add_argument("--model", default=None)
    add_record_option(parser, "tile_size")
    args = parser.parse_args(argv)
    if len({Path(path).stem for path in args.images}) != len(args.images):
        parser.error("images: each file name once (they name the table's columns)")
    pipe = MRRestorationPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    print("| image | tile | overlap | PSNR tiled vs untiled (dB) |")
    print("|---|---:|---:|---:|")
    psnr: dict[str, dict[int, float]] = {}
    for path in args.images:
        crop = centre_crop(path, args.size)
        rows = seam_cost(functools.partial(restore, pipe, crop, args.steps), args.tiles)
        by_tile = psnr.setdefault(Path(path).stem, {})
        for tile, value, _ in rows:
            if tile is not None:
                by_tile[tile] = value
                print(f"| {path} | {tile} | {tile // 4} | {value:.1f} |", flush=True)
    if args.record:
        record_table("tile_size", *seam_table(psnr), script_command(__file__, argv),
                     seam_setting(args.model, args.size, args.steps))


if __name__ == "__main__":
    main()
