"""Opening an image file within limits: a regular file, and a pixel count checked from its
header before anything is decoded.

Pillow reads only the header when it opens a file, so the size a file *declares* is known
before its pixels are decoded: a few hundred bytes of PNG can declare 12000 x 12000 pixels
(3.6 GB once decoded as float32 RGB). :func:`open_within_limits` refuses such a file with
one clear error instead. Pillow's own decompression-bomb check (a warning above
``PIL.Image.MAX_IMAGE_PIXELS``, an error above twice that) is folded into the same error;
a caller that allows more pixels than Pillow does raises Pillow's limit with
:func:`allow_pixels`.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import PIL.Image

__all__ = ["DEFAULT_MAX_PIXELS", "ImageLimitError", "allow_pixels", "open_within_limits"]

#: Default pixel limit of a file read by :func:`open_within_limits` (50 megapixels, e.g.
#: 8660 x 5773; the command line's ``--max-pixels`` raises it).
DEFAULT_MAX_PIXELS = 50_000_000


class ImageLimitError(ValueError):
    """A file that is not an image file within the limits (not a regular file, or more
    pixels than allowed)."""


def allow_pixels(max_pixels: int) -> None:
    """Lets Pillow open files of up to ``max_pixels`` without its decompression-bomb error
    (process-wide: ``PIL.Image.MAX_IMAGE_PIXELS`` is raised, never lowered)."""
    current = PIL.Image.MAX_IMAGE_PIXELS
    if current is not None and max_pixels > current:
        PIL.Image.MAX_IMAGE_PIXELS = max_pixels


def _check_regular_file(path: Path) -> None:
    """A FIFO, device or socket would block or never end when read: refused by name."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device or special file")
        raise ImageLimitError(f"{path} is {kind}, not a regular file; only image files are read")


def _pixel_limit_error(path: Path, size: tuple[int, int] | None, max_pixels: int) -> str:
    declared = f"declares {size[0]} x {size[1]} = {size[0] * size[1]:,} pixels" if size else (
        "declares more pixels than Pillow opens")
    return (f"{path} {declared}, above the limit of {max_pixels:,} pixels (checked from the"
            " header, nothing decoded); raise the limit to restore it (max_pixels; --max-pixels on"
            " the command line)")


@contextmanager
def open_within_limits(
    path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[PIL.Image.Image]:
    """``PIL.Image.open(path)`` (header only, nothing decoded), after checking that ``path``
    is a regular file and that its declared width x height is at most ``max_pixels``.

    Raises:
        ImageLimitError: not a regular file, or more than ``max_pixels`` pixels.
        OSError / PIL.UnidentifiedImageError: the file cannot be opened as an image.
    """
    path = Path(path)
    _check_regular_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # refused below
        try:
            img = PIL.Image.open(path)
        except PIL.Image.DecompressionBombError:
            raise ImageLimitError(_pixel_limit_error(path, None, max_pixels)) from None
    with img:
        if img.width * img.height > max_pixels:
            raise ImageLimitError(_pixel_limit_error(path, img.size, max_pixels))
        yield img
