"""Reading, converting and writing images: the one place that decides what a pixel value means.

The pipeline (:func:`prepare_images`), the command line (:func:`read_image` /
:func:`write_image`) and the training datasets (:func:`load_rgb`) all go through this
module, so a file is seen the same way everywhere. Model inputs are float32 in ``[0, 1]``
(the IR-SDE convention).

Rules
-----
Reading a file (:func:`read_image`) or a PIL image (:func:`decode_pil`):

* Files are opened by :func:`~diffusers_mrs.image_limits.open_within_limits`: only regular
  files (a FIFO would block), and no more pixels than ``max_pixels`` (default
  :data:`~diffusers_mrs.image_limits.DEFAULT_MAX_PIXELS`), checked from the header before
  anything is decoded.
* EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), for files and for PIL
  images given to the pipeline alike (applying it twice is harmless: the tag is removed).
* The scale comes from the image **mode** (the file's declared bit depth), never from the
  pixel values: 8-bit modes (``L``, ``RGB``, ...) are divided by 255; 16-bit modes
  (``I;16*``, and ``I``, which Pillow uses for 16-bit PGM/PPM files) by 65535; ``I`` values
  outside ``0..65535`` are refused (32-bit integer data has no agreed scale); ``F`` (32-bit
  float) is taken as already in ``[0, 1]``. 16-bit colour PNGs (which Pillow would reduce
  to 8 bits) are decoded with ``pypng``.
* Grayscale (``1``, ``L``, ``I;16``, ``I``, ``F``) stays one channel; ``LA``/``RGBA`` keep
  their alpha channel separately (:attr:`DecodedImage.alpha`, the file's integers, never
  restored); palette images become RGB, or RGBA when they have transparency; ``CMYK``,
  ``YCbCr``, ``LAB`` and ``HSV`` become RGB.
* Multi-frame files (animated GIF/PNG/WebP, multi-page TIFF) are **refused**: a restoration
  of the first frame only would silently lose the rest. Extract the frames first. (MPO files
  from cameras are read as their primary image.)

Arrays and tensors given to the pipeline (:func:`prepare_images`): numpy HW/HWC/BHWC and
torch HW/CHW/BCHW; ``uint8`` / ``uint16`` are divided by 255 / 65535, ``bool`` becomes 0/1,
floats are used as given but must be finite and lie in ``[-0.5, 1.5]`` (:data:`FLOAT_RANGE`):
float images in ``0..255`` are refused, not clipped (divide them by 255 or pass ``uint8``).
Other integer dtypes are refused. The model's channel count is met by repeating a gray
channel (gray -> RGB), dropping alpha (RGBA -> RGB, with an :class:`ImageFormatWarning`) or
taking ITU-R 601 luma (RGB -> gray).

Writing (:func:`write_image`, always PNG): the output keeps the input's format where PNG can
hold it: 16-bit in -> 16-bit out, grayscale in -> grayscale out (ITU-R 601 luma of the
restored RGB, as ``PIL.Image.convert("L")``), alpha carried through unchanged. What PNG
cannot keep is warned about with :class:`ImageFormatWarning` when the file is read
(palette -> RGB, CMYK & co. -> RGB, float -> 16 bit).

Errors: every refused input raises :class:`ImageInputError` (a ``ValueError``) naming the
problem.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor

from .image_limits import DEFAULT_MAX_PIXELS, ImageLimitError, open_within_limits

__all__ = [
    "FLOAT_RANGE",
    "IMAGE_EXTENSIONS",
    "DecodedImage",
    "ImageFormatWarning",
    "ImageInputError",
    "PipelineImageInput",
    "check_finite",
    "check_finite_in",
    "check_float_range",
    "check_min_side",
    "decode_pil",
    "load_rgb",
    "prepare_images",
    "read_image",
    "write_image",
]

#: File extensions of the images folders contribute (CLI inputs, paired datasets).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}
)

#: Float inputs must lie in this range (degraded images may overshoot [0, 1] a little).
FLOAT_RANGE = (-0.5, 1.5)

_GRAY_8 = ("1", "L")
_GRAY_16 = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WITH_ALPHA = {"LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


class ImageInputError(ValueError):
    """An image (file, PIL image, array or tensor) that cannot be restored as it is."""


class ImageFormatWarning(UserWarning):
    """The output cannot keep something of the input's format (see the module rules)."""


@dataclass
class DecodedImage:
    """An image as the model sees it, plus what the writer needs to keep its format.

    Attributes:
        pixels: float32 ``H x W x C`` in ``[0, 1]``; ``C`` is 1 (gray) or 3 (RGB).
        alpha: the alpha channel as stored in the file (``uint8`` or ``uint16``, ``H x W``),
            or None.
        bit_depth: 8 or 16: the bit depth the output is written with.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int

    @property
    def grayscale(self) -> bool:
        return self.pixels.shape[2] == 1

    def rgb(self) -> np.ndarray:
        """float32 ``H x W x 3`` (gray repeated, alpha not included)."""
        if self.grayscale:
            return np.repeat(self.pixels, 3, axis=2)
        return self.pixels


# ----------------------------------------------------------------------------- decoding
def _check_single_frame(img: PIL.Image.Image, what: str) -> None:
    frames = int(getattr(img, "n_frames", 1) or 1)
    if frames > 1 and img.format != "MPO":
        raise ImageInputError(
            f"{what} has {frames} frames (animated or multi-page {img.format or 'image'}); only"
            " single images are restored: extract the frames first (e.g. with"
            " PIL.ImageSequence) and restore them as separate files."
        )


def _scaled_gray16(img: PIL.Image.Image, what: str) -> np.ndarray:
    arr = np.asarray(img)
    if img.mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ImageInputError(
            f"{what} is a 32-bit integer image with values {arr.min()}..{arr.max()}; only 8- and"
            " 16-bit integer images have a known scale. Convert it to 16 bits or to floats in"
            " [0, 1]."
        )
    return (arr.astype(np.float32) / 65535.0)[..., None]


def _split_alpha(img: PIL.Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(colour as float32 H x W x C, alpha as the file's uint8) of an image with alpha."""
    arr = np.asarray(img.convert(_WITH_ALPHA[img.mode]))
    return arr[..., :-1].astype(np.float32) / 255.0, np.ascontiguousarray(arr[..., -1])


def decode_pil(img: PIL.Image.Image, what: str = "image") -> DecodedImage:
    """Decodes a PIL image by the module's rules (EXIF orientation applied).

    Raises:
        ImageInputError: a multi-frame image, a 32-bit integer image outside 0..65535, or
            float pixels outside :data:`FLOAT_RANGE`.
    """
    _check_single_frame(img, what)
    img = PIL.ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in _GRAY_16:
        return DecodedImage(_scaled_gray16(img, what), None, 16)
    if mode == "F":
        warnings.warn(f"{what}: 32-bit float image; the output is a 16-bit PNG.",
                      ImageFormatWarning, stacklevel=2)
        pixels = np.asarray(img, dtype=np.float32)[..., None]
        check_float_range(pixels, what)
        return DecodedImage(pixels, None, 16)
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("PA"), "PA"
    if mode in _WITH_ALPHA:
        color, alpha = _split_alpha(img)
        return DecodedImage(color, alpha, 8)
    if mode in _GRAY_8:
        pixels = VaeImageProcessor.pil_to_numpy(img.convert("L"))[0][..., None]
        return DecodedImage(pixels, None, 8)
    if mode not in ("RGB", "RGBX"):
        warnings.warn(f"{what}: {mode} image converted to RGB; the output is an RGB PNG.",
                      ImageFormatWarning, stacklevel=2)
    return DecodedImage(VaeImageProcessor.pil_to_numpy(img.convert("RGB"))[0], None, 8)


def _png_bit_depth(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR chunk, (0, -1) for other files."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, -1
    return head[24], head[25]


#: EXIF orientation -> PIL transposes, in order (what ``ImageOps.exif_transpose`` does).
_ORIENTATION = {
    2: (PIL.Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (PIL.Image.Transpose.ROTATE_180,),
    4: (PIL.Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (PIL.Image.Transpose.TRANSPOSE,),
    6: (PIL.Image.Transpose.ROTATE_270,),
    7: (PIL.Image.Transpose.TRANSVERSE,),
    8: (PIL.Image.Transpose.ROTATE_90,),
}


def _read_png16_color(path: Path, img: PIL.Image.Image) -> DecodedImage:
    """A 16-bit colour or gray+alpha PNG through pypng (Pillow keeps only 8 of its bits)."""
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = info["planes"]
    arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, planes)
    moves = _ORIENTATION.get(int(img.getexif().get(0x0112, 1)), ())
    if moves:
        channels = [PIL.Image.fromarray(np.ascontiguousarray(arr[..., c])) for c in range(planes)]
        for move in moves:
            channels = [ch.transpose(move) for ch in channels]
        arr = np.stack([np.asarray(ch, dtype=np.uint16) for ch in channels], axis=-1)
    n_color = planes - 1 if info["alpha"] else planes
    pixels = arr[..., :n_color].astype(np.float32) / 65535.0
    alpha = np.ascontiguousarray(arr[..., -1]) if info["alpha"] else None
    return DecodedImage(pixels, alpha, 16)


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Reads an image file by the module's rules, within the limits of
    :func:`~diffusers_mrs.image_limits.open_within_limits` (a regular file, at most
    ``max_pixels`` pixels by its header).

    Raises:
        ImageInputError: not a regular file, too many pixels, or see :func:`decode_pil`.
        OSError / PIL.UnidentifiedImageError: the file cannot be read as an image.
    """
    path = Path(path)
    try:
        with open_within_limits(path, max_pixels) as img:
            _check_single_frame(img, str(path))
            depth, color_type = _png_bit_depth(path)
            if depth == 16 and color_type != 0:  # 16-bit RGB, RGBA or gray + alpha
                return _read_png16_color(path, img)
            img.load()
            return decode_pil(img, str(path))
    except ImageLimitError as err:  # raised before anything is decoded
        raise ImageInputError(str(err)) from None


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """A file as float32 RGB ``H x W x 3`` in ``[0, 1]`` (training data; alpha not used)."""
    return read_image(path).rgb()


# ----------------------------------------------------------------------------- checks
def check_float_range(values: np.ndarray | torch.Tensor, what: str) -> None:
    """Refuses NaN/inf and floats outside :data:`FLOAT_RANGE` (e.g. images in 0..255)."""
    t = torch.as_tensor(values)
    if t.numel() == 0:
        return
    if not bool(torch.isfinite(t).all()):
        raise ImageInputError(f"{what} contains NaN or infinite values.")
    lo, hi = float(t.min()), float(t.max())
    if lo < FLOAT_RANGE[0] or hi > FLOAT_RANGE[1]:
        hint = " (it looks like 0..255: divide by 255 or pass uint8)" if 2.0 < hi <= 256.0 else ""
        raise ImageInputError(
            f"{what} has float values in [{lo:.4g}, {hi:.4g}]; float images must lie in [0, 1]"
            f" (accepted: {FLOAT_RANGE[0]}..{FLOAT_RANGE[1]}){hint}."
        )


def check_finite(t: torch.Tensor, what: str) -> None:
    """Refuses a tensor with NaN/inf, e.g. after a cast to float16 overflowed."""
    if not bool(torch.isfinite(t).all()):
        raise ImageInputError(
            f"{what} is not finite in {t.dtype} (values beyond the dtype's range, e.g. > 65504"
            " in float16)."
        )


def _image_name(k: int, count: int) -> str:
    return f"image[{k}]" if count > 1 else "image"


def check_finite_in(images: Sequence[torch.Tensor], dtype: torch.dtype) -> None:
    """The images must stay finite in the network's ``dtype`` (e.g. > 65504 overflows
    float16): checked after the cast, so sampling never starts from inf and returns NaN."""
    for k, img in enumerate(images):
        check_finite(img.to(dtype), _image_name(k, len(images)))


def check_min_side(images: Sequence[torch.Tensor], min_side: int, needed_by: str) -> None:
    """Every image must be at least ``min_side`` pixels a side (``needed_by`` names what
    needs it in the error)."""
    for k, img in enumerate(images):
        if min(img.shape[-2:]) < min_side:
            raise ImageInputError(
                f"{_image_name(k, len(images))} is {img.shape[-1]} x {img.shape[-2]} px;"
                f" {needed_by} needs at least {min_side} x {min_side}."
            )


# ----------------------------------------------------------------------------- pipeline input
def _array_to_float(arr: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """uint8 / uint16 / bool / float array or tensor -> float32 tensor (range checked)."""
    t = torch.from_numpy(np.ascontiguousarray(arr)) if isinstance(arr, np.ndarray) else arr
    t = t.detach()
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.dtype == torch.uint16:
        return t.to(torch.int32).float() / 65535.0
    if t.dtype == torch.bool:
        return t.float()
    if not t.is_floating_point() or t.is_complex():
        raise ImageInputError(
            f"{what}: unsupported dtype {t.dtype}; use uint8, uint16, bool or floats in [0, 1]."
        )
    check_float_range(t, what)
    return t.float()


def _split_batch(t: torch.Tensor, channels_last: bool, what: str) -> list[torch.Tensor]:
    """HW / HWC / BHWC (numpy) or HW / CHW / BCHW (torch) -> list of CHW."""
    layout = "HW, HWC or BHWC (numpy)" if channels_last else "HW, CHW or BCHW (torch)"
    if t.ndim == 2:
        return [t[None]]
    if t.ndim not in (3, 4):
        raise ImageInputError(f"{what}: images must be {layout}, got shape {tuple(t.shape)}.")
    if channels_last:
        t = t.movedim(-1, -3)
    return [t] if t.ndim == 3 else list(t.unbind(0))


def _to_channels(img: torch.Tensor, channels: int, what: str) -> torch.Tensor:
    """Maps a ``[C, H, W]`` image to the model's channel count (module rules)."""
    c = img.shape[0]
    if c == channels:
        return img
    if channels == 3 and c == 1:
        return img.expand(3, -1, -1)
    if channels == 3 and c == 4:
        warnings.warn(f"{what}: alpha channel dropped (the model restores RGB).",
                      ImageFormatWarning, stacklevel=3)
        return img[:3]
    if channels == 1 and c in (3, 4):
        return sum(w * img[k] for k, w in enumerate(_LUMA))[None]
    raise ImageInputError(
        f"{what} has {c} channels, but the model expects {channels}"
        + (" (1 = grayscale and 4 = RGBA are converted)." if channels == 3 else ".")
    )


def _item_to_chw(item: object, what: str) -> list[torch.Tensor]:
    if isinstance(item, (str, os.PathLike)):
        try:
            decoded = read_image(item)
        except OSError as err:  # includes PIL.UnidentifiedImageError
            raise ImageInputError(f"{what}: cannot read {os.fspath(item)!r}: {err}") from None
        return [torch.from_numpy(np.ascontiguousarray(decoded.pixels.transpose(2, 0, 1)))]
    if isinstance(item, PIL.Image.Image):
        decoded = decode_pil(item, what)
        pixels = decoded.pixels
        if decoded.alpha is not None:
            warnings.warn(f"{what}: alpha channel dropped (the model restores RGB).",
                          ImageFormatWarning, stacklevel=3)
        return [torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))]
    if isinstance(item, (np.ndarray, torch.Tensor)):
        channels_last = isinstance(item, np.ndarray)
        return _split_batch(_array_to_float(item, what), channels_last, what)
    raise ImageInputError(
        f"{what} has unsupported type {type(item).__name__}; expected a PIL image, a numpy"
        " array, a torch tensor, a file path, or a list of them."
    )


def prepare_images(
    image: PipelineImageInput | str | os.PathLike,
    channels: int = 3,
    *,
    dtype: torch.dtype | None = None,
    min_side: int = 1,
    min_side_for: str = "the model",
) -> list[torch.Tensor]:
    """The pipeline's ``image`` argument as a list of float32 ``[channels, H, W]`` tensors,
    read and checked in one pass: every check on the images themselves is made here.

    Accepts what :data:`PipelineImageInput` names (PIL images, numpy arrays, torch tensors
    and lists of them) and file paths, by the module rules. ``dtype`` (the network's) and
    ``min_side`` (with ``min_side_for`` naming who needs it) are what the model needs of
    its images (:func:`check_finite_in`, :func:`check_min_side`).

    Raises:
        ImageInputError: empty input, unsupported type/dtype/shape/channels, an empty image,
            NaN/inf, floats outside :data:`FLOAT_RANGE`, a multi-frame image, values not
            finite in ``dtype``, an image smaller than ``min_side``.
    """
    if image is None:
        raise ImageInputError("`image` must be given (the degraded image, mu).")
    is_list = isinstance(image, (list, tuple))
    items: Sequence[object] = list(image) if is_list else [image]
    if len(items) == 0:
        raise ImageInputError("`image` is an empty list; pass at least one image.")
    out: list[torch.Tensor] = []
    for idx, item in enumerate(items):
        what = f"image[{idx}]" if is_list else "image"
        chw = _item_to_chw(item, what)
        if len(chw) == 0:
            raise ImageInputError(f"{what} is an empty batch.")
        layout = {np.ndarray: " (numpy arrays are read as HWC)",
                  torch.Tensor: " (tensors are read as CHW)"}.get(type(item), "")
        for img in chw:
            if img.shape[1] == 0 or img.shape[2] == 0:
                raise ImageInputError(f"{what} is empty (shape {tuple(img.shape)}).")
            try:
                out.append(_to_channels(img, channels, what))
            except ImageInputError as err:
                raise ImageInputError(f"{err}{layout}") from None
    if dtype is not None:
        check_finite_in(out, dtype)
    check_min_side(out, min_side, min_side_for)
    return out


# ----------------------------------------------------------------------------- writing
def _quantize(values: np.ndarray, bit_depth: int) -> np.ndarray:
    top = 65535 if bit_depth == 16 else 255
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return (np.clip(values, 0.0, 1.0) * top).round().astype(dtype)


def _write_png16(file: BinaryIO, arr: np.ndarray) -> None:
    """A uint16 ``H x W x C`` array (C = 2, 3 or 4) as a 16-bit PNG through pypng."""
    import png

    height, width, planes = arr.shape
    mode = {2: "LA", 3: "RGB", 4: "RGBA"}[planes] + ";16"
    png.from_array(arr.reshape(height, width * planes), mode).write(file)


def write_image(
    path: str | os.PathLike | BinaryIO, restored: np.ndarray, like: DecodedImage
) -> None:
    """Writes a restored float image (``H x W x C`` in [0, 1]) as a PNG in ``like``'s format,
    to a file name or to an open binary file (e.g. the one of
    :func:`~diffusers_mrs.atomic_files.write_atomic`).

    Gray input -> gray output (ITU-R 601 luma of RGB), the input's bit depth, and the
    input's alpha channel unchanged.

    Raises:
        ValueError: ``restored`` and ``like`` differ in size.
    """
    if restored.shape[:2] != like.pixels.shape[:2]:
        raise ValueError(
            f"restored image {restored.shape[:2]} and input {like.pixels.shape[:2]} differ in size."
        )
    if like.grayscale and restored.shape[2] == 3:
        restored = sum(w * restored[..., k] for k, w in enumerate(_LUMA))[..., None]
    arr = _quantize(restored, like.bit_depth)
    if like.alpha is not None:
        arr = np.concatenate([arr, like.alpha[..., None].astype(arr.dtype)], axis=2)
    if like.bit_depth == 16 and arr.shape[2] > 1:
        if isinstance(path, (str, os.PathLike)):
            with open(path, "wb") as file:
                _write_png16(file, arr)
        else:
            _write_png16(path, arr)
        return
    image = PIL.Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    image.save(path, format="PNG")
