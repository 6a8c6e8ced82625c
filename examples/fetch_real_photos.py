#!/usr/bin/env python
"""Fetch the real low-light and real noisy photographs that benchmarks/real_photos.py measures.

A thin command line over :func:`diffusers_mrs.training.real_photo_sources.fetch_real_photos`:
it copies the selected photographs (``REAL_PHOTOS``: sample images of Debian's
``opencv-doc`` and scikit-image's Hubble Deep Field) into a cache folder and writes
``manifest.json`` there (package, version, license and SHA-256 of every file). A re-run
verifies the cached files and fetches only what is missing or corrupt; a file that changed
upstream stops the run unless ``--refresh``. Nothing is installed: the Debian package is
fetched with ``apt-get download`` and unpacked with ``dpkg -x``. The images are never
committed. See ``docs/training_data.md#real-photographs``.

Examples::

    python examples/fetch_real_photos.py              # ~/.cache/diffusers-mrs/real_photos
    python examples/fetch_real_photos.py --cache-dir /data/real --sources python   # no apt
    python benchmarks/real_photos.py                  # then restore and measure them
"""

from __future__ import annotations

import time

from diffusers_mrs.training.photo_sources import fetch_argument_parser
from diffusers_mrs.training.real_photo_sources import (
    REAL_PHOTOS,
    default_real_photos_dir,
    fetch_real_photos,
)


def main(argv: list[str] | None = None) -> None:
    parser = fetch_argument_parser(__doc__.split("\n\n")[0], default_real_photos_dir())
    args = parser.parse_args(argv)
    entries = [e for e in REAL_PHOTOS if e.source in args.sources]
    start = time.perf_counter()
    manifest = fetch_real_photos(args.cache_dir, entries=entries, refresh=args.refresh)
    for r in manifest["photos"]:
        print(f"{r['name']:28s} {r['width']} x {r['height']}  {r['package']}"
              f" {r['package_version']}  {r['license']}  sha256 {r['sha256'][:12]}")
    print(f"{len(manifest['photos'])} photos in {time.perf_counter() - start:.1f} s ->"
          f" {args.cache_dir or default_real_photos_dir()}")


if __name__ == "__main__":
    main()
