"""Degradations, the bundled photographs and the datasets used to train MR diffusion models.

Conventions
-----------
* Images are RGB floats in ``[0, 1]`` (the IR-SDE convention). :func:`degrade` accepts either a
  NumPy array laid out ``H x W x C`` or a torch tensor laid out ``C x H x W`` (optionally with a
  leading batch dimension, ``B x C x H x W``) and returns the same type, layout, dtype and device.
* The degraded image is the MR diffusion's ``mu`` (the low-quality input, ``lq``); the clean image
  is ``gt``.
* Every random choice is drawn from an explicit :class:`numpy.random.Generator` (or an integer
  seed), so a degradation is a deterministic function of its inputs.

The four degradations (nominal parameters, ``randomize=False``; the training jitter in brackets):

``noise``     additive Gaussian noise of std 25/255, then clipped to [0, 1]       [std 15..35 /255]
``blur``      Gaussian blur of std 2.0 px (reflect borders, kernel truncated at 4 std)
                                                                                 [std 1.2..2.8 px]
``lowlight``  ``0.3 * x**1.5`` plus Gaussian noise of std 3/255, clipped
                                                    [gain 0.2..0.4, gamma 1.2..1.8, std 1..5 /255]
``jpeg``      JPEG compression at quality 15 (PIL, 4:2:0 chroma subsampling)     [quality 10..25]

``clean`` (:data:`CLEAN`) is the identity: the undegraded photo as its own input, which a
degradation-aware model learns to return unchanged.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .image_io import IMAGE_EXTENSIONS, load_rgb

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

DEGRADATION_KINDS: tuple[str, ...] = ("noise", "blur", "lowlight", "jpeg")
#: The identity "degradation": an undegraded photo.
CLEAN = "clean"
#: What a training set may draw: the degradations and :data:`CLEAN`.
TRAINING_KINDS: tuple[str, ...] = (*DEGRADATION_KINDS, CLEAN)

#: Nominal parameters of every degradation (what ``randomize=False`` applies; the benchmark's).
NOMINAL_PARAMS: dict[str, dict[str, float]] = {
    "noise": {"std": 25.0 / 255.0},
    "blur": {"std": 2.0},
    "lowlight": {"gain": 0.3, "gamma": 1.5, "std": 3.0 / 255.0},
    "jpeg": {"quality": 15},
    CLEAN: {},
}

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


# ----------------------------------------------------------------------------------------------
# Degradations
# ----------------------------------------------------------------------------------------------
def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def sample_degradation_params(
    kind: str, rng: np.random.Generator | int | None = None, randomize: bool = True
) -> dict[str, float]:
    """The parameters of one degradation: the nominal ones, or jittered around them.

    Args:
        kind: one of :data:`TRAINING_KINDS`.
        rng: random generator (or seed) used for the jitter.
        randomize: if ``False`` return :data:`NOMINAL_PARAMS` ``[kind]`` unchanged.

    Returns:
        A new dict of parameters (see the module docstring for their meaning and ranges).
    """
    if kind not in NOMINAL_PARAMS:
        raise ValueError(f"unknown degradation kind {kind!r}; expected one of {TRAINING_KINDS}")
    if not randomize or kind == CLEAN:
        return dict(NOMINAL_PARAMS[kind])
    rng = _as_rng(rng)
    if kind == "noise":
        return {"std": float(rng.uniform(15.0, 35.0)) / 255.0}
    if kind == "blur":
        return {"std": float(rng.uniform(1.2, 2.8))}
    if kind == "lowlight":
        return {
            "gain": float(rng.uniform(0.2, 0.4)),
            "gamma": float(rng.uniform(1.2, 1.8)),
            "std": float(rng.uniform(1.0, 5.0)) / 255.0,
        }
    return {"quality": int(rng.integers(10, 26))}


def gaussian_blur(image: np.ndarray, std: float, truncate: float = 4.0) -> np.ndarray:
    """Gaussian blur of the two image axes of an ``H x W [x C]`` array, in float64.

    ``scipy.ndimage.gaussian_filter(image, (std, std, 0), mode="reflect", truncate=truncate)``:
    kernel ``exp(-x^2 / (2 std^2))`` normalised over ``|x| <= truncate * std``, half-sample
    symmetric borders. ``std <= 0`` returns a float64 copy.
    """
    from scipy.ndimage import gaussian_filter

    out = image.astype(np.float64, copy=True)
    if std <= 0:
        return out
    sigma = (std, std) + (0,) * (out.ndim - 2)
    return gaussian_filter(out, sigma, mode="reflect", truncate=truncate)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    u8 = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8, mode="RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def _degrade_hwc(
    image: np.ndarray, kind: str, rng: np.random.Generator, params: dict[str, float]
) -> np.ndarray:
    x = image.astype(np.float64, copy=False)
    if kind == CLEAN:
        return x.copy()
    if kind == "noise":
        return np.clip(x + rng.normal(0.0, params["std"], size=x.shape), 0.0, 1.0)
    if kind == "blur":
        return np.clip(gaussian_blur(x, params["std"]), 0.0, 1.0)
    if kind == "lowlight":
        dark = params["gain"] * np.power(np.clip(x, 0.0, 1.0), params["gamma"])
        return np.clip(dark + rng.normal(0.0, params["std"], size=x.shape), 0.0, 1.0)
    if kind == "jpeg":
        return _jpeg(x, int(params["quality"]))
    raise ValueError(f"unknown degradation kind {kind!r}; expected one of {TRAINING_KINDS}")


def degrade(
    image: ArrayOrTensor,
    kind: str,
    rng: np.random.Generator | int | None = None,
    randomize: bool = True,
    params: dict[str, float] | None = None,
) -> ArrayOrTensor:
    """Degrade a clean RGB image in ``[0, 1]``.

    Args:
        image: NumPy ``H x W x 3`` array, or torch tensor ``3 x H x W`` / ``B x 3 x H x W``.
        kind: ``"noise"``, ``"blur"``, ``"lowlight"``, ``"jpeg"`` or ``"clean"`` (the
            identity; see the module docstring).
        rng: :class:`numpy.random.Generator` or seed; the result is deterministic given it.
            For a batch, each image draws its own parameters and noise from the same generator.
        randomize: jitter the parameters around the nominal ones (training); ``False`` applies
            exactly the nominal degradation (evaluation).
        params: explicit parameters, overriding both the nominal ones and the jitter.

    Returns:
        The degraded image, same type, layout, dtype (and device) as ``image``, in ``[0, 1]``.
    """
    rng = _as_rng(rng)
    if isinstance(image, torch.Tensor):
        if image.ndim == 4:
            return torch.stack(
                [degrade(im, kind, rng, randomize=randomize, params=params) for im in image]
            )
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a 3 x H x W tensor, got shape {tuple(image.shape)}")
        hwc = image.detach().float().permute(1, 2, 0).cpu().numpy()
        out = degrade(hwc, kind, rng, randomize=randomize, params=params)
        return torch.from_numpy(out).permute(2, 0, 1).to(dtype=image.dtype, device=image.device)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 array, got shape {image.shape}")
    p = dict(params) if params is not None else sample_degradation_params(kind, rng, randomize)
    out = _degrade_hwc(image, kind, rng, p)
    dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32
    return out.astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# The bundled photographs
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------
def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 RGB ``H x W x 3`` in ``[0, 1]``.

    The one reader of the package (:func:`diffusers_mrs.image_io.load_rgb`): EXIF orientation
    applied, 8/16-bit scale from the file's mode, gray repeated to RGB, alpha not used, so
    training sees a file exactly as the pipeline and the CLI do.
    """
    return load_rgb(path)


def random_augment(rng: np.random.Generator, *images: np.ndarray) -> list[np.ndarray]:
    """Apply the same random flip / rot90 (one of the 8 dihedral transforms) to HWC images."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = []
    for im in images:
        if flip:
            im = im[:, ::-1]
        out.append(np.ascontiguousarray(np.rot90(im, k, axes=(0, 1))))
    return out


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


class DegradedPatchDataset(Dataset):
    """Random patches of clean images, degraded on the fly: items are ``(lq, gt)`` tensors.

    Item ``i`` is a deterministic function of ``(seed, epoch, i)`` (see :meth:`set_epoch`;
    the epoch starts at 0): it picks an image uniformly, a
    random ``patch_size`` crop (plus a margin so that blur sees real context, cropped away
    after degrading), a random dihedral transform, a degradation kind (uniform over
    ``kinds``) and its (jittered) parameters. ``lq`` (the MR diffusion's ``mu``) and ``gt``
    are float32 ``3 x patch_size x patch_size`` tensors in ``[0, 1]``.

    Args:
        images: clean HWC images, float in ``[0, 1]`` or uint8 (e.g.
            ``bundled_photos("train").values()``).
        patch_size: side of the square crops; images smaller than that are reflect-padded.
        kinds: degradation kinds to sample from (one string for a fixed kind). Each entry is
            equally likely, so a kind listed twice is drawn twice as often.
        length: the dataset's length (the number of distinct items).
        seed: base seed.
        randomize: jitter the degradation parameters (see :func:`degrade`).
        augment: random flips and rot90.
        margin: context pixels cropped around the patch before degrading.
        labels: when given, items are ``(lq, gt, label)`` with ``label`` the position of the
            item's kind in ``labels`` (an int64 scalar tensor): the degradation-aware
            training's classes.
        degrader: ``degrader(crop, kind, rng, randomize=...)`` degrades a float HWC crop
            (default :func:`degrade`; e.g. the realistic model of
            :func:`diffusers_mrs.training.realistic_degradations.degrade_realistic`).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        patch_size: int = 64,
        kinds: str | Sequence[str] = DEGRADATION_KINDS,
        length: int = 100_000,
        seed: int = 0,
        randomize: bool = True,
        augment: bool = True,
        margin: int = 12,
        labels: Sequence[str] | None = None,
        degrader: Callable[..., np.ndarray] = degrade,
    ) -> None:
        # uint8 images stay uint8 (a quarter of the memory); crops are converted to [0, 1]
        self.images = [im if im.dtype == np.uint8 else np.asarray(im, dtype=np.float32)
                       for im in map(np.asarray, images)]
        if not self.images:
            raise ValueError("DegradedPatchDataset needs at least one image")
        self.kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        for k in self.kinds:
            if k not in TRAINING_KINDS:
                raise ValueError(
                    f"unknown degradation kind {k!r}; expected one of {TRAINING_KINDS}")
        self.labels = None if labels is None else list(labels)
        missing = [k for k in self.kinds if self.labels is not None and k not in self.labels]
        if missing:
            raise ValueError(f"kinds {missing} have no entry in labels {self.labels}")
        self.patch_size = int(patch_size)
        self.length = int(length)
        self.seed = int(seed)
        self.randomize = randomize
        self.augment = augment
        self.margin = int(margin)
        self.degrader = degrader
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of items (items use ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    def sample(
        self, index: int, epoch: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Item ``index`` of ``epoch`` (default: the current one) with its degradation kind."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        img = self.images[int(rng.integers(len(self.images)))]
        p, m = self.patch_size, self.margin
        size = p + 2 * m
        h, w = img.shape[:2]
        if h < size or w < size:
            ph, pw = max(0, size - h), max(0, size - w)
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        crop = img[top : top + size, left : left + size]
        if self.augment:
            (crop,) = random_augment(rng, crop)
        if crop.dtype == np.uint8:
            crop = crop.astype(np.float32) / 255.0
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        lq = self.degrader(crop, kind, rng, randomize=self.randomize)
        gt, lq = crop[m : m + p, m : m + p], lq[m : m + p, m : m + p]
        return _to_chw(lq), _to_chw(gt), kind

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        lq, gt, kind = self.sample(index)
        if self.labels is None:
            return lq, gt
        return lq, gt, torch.tensor(self.labels.index(kind))


class PairedFolderDataset(Dataset):
    """Paired images in the IR-SDE layout ``root/LQ/<name>`` and ``root/GT/<name>``.

    Files are matched by file name; a name present in only one folder, or a pair whose sizes
    differ, raises :class:`ValueError`. Items are ``(lq, gt)`` float32 ``3 x H x W`` tensors
    in ``[0, 1]``: whole images, or (``patch_size`` set) an aligned random crop, with random
    flips/rot90 if ``augment``.

    Args:
        root: folder holding ``LQ/`` and ``GT/``.
        patch_size: crop side; ``None`` returns whole images (batch size 1 unless equal sizes).
        augment: random dihedral transform of the pair.
        seed: base seed; item ``i`` uses ``(seed, epoch, i)`` (see :meth:`set_epoch`).
        lq_dir: name of the low-quality subfolder.
        gt_dir: name of the ground-truth subfolder.
    """

    def __init__(
        self,
        root: str | Path,
        patch_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        lq_dir: str = "LQ",
        gt_dir: str = "GT",
    ) -> None:
        self.root = Path(root)
        lq_root, gt_root = self.root / lq_dir, self.root / gt_dir
        for d in (lq_root, gt_root):
            if not d.is_dir():
                raise FileNotFoundError(f"{d} does not exist (expected {root}/LQ and {root}/GT)")

        def listing(d: Path) -> dict[str, Path]:
            return {
                p.name: p
                for p in sorted(d.iterdir())
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            }

        lq, gt = listing(lq_root), listing(gt_root)
        only_lq, only_gt = sorted(set(lq) - set(gt)), sorted(set(gt) - set(lq))
        if only_lq or only_gt:
            raise ValueError(
                f"LQ and GT file names do not match in {root}: "
                f"{len(only_lq)} only in {lq_dir}/ {only_lq[:5]}, "
                f"{len(only_gt)} only in {gt_dir}/ {only_gt[:5]}"
            )
        if not lq:
            raise ValueError(f"no images found in {lq_root}")
        self.names = sorted(lq)
        self.lq_paths = [lq[n] for n in self.names]
        self.gt_paths = [gt[n] for n in self.names]
        self.patch_size = patch_size
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops/transforms (items use ``(seed, epoch, index)``)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sample(index, self.epoch)

    def sample(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``index`` with the random crop/transform of ``epoch``."""
        lq, gt = load_image(self.lq_paths[index]), load_image(self.gt_paths[index])
        if lq.shape != gt.shape:
            raise ValueError(
                f"size mismatch for {self.names[index]!r}: LQ {lq.shape[:2]} vs GT {gt.shape[:2]}"
            )
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        if self.patch_size is not None:
            p = int(self.patch_size)
            h, w = gt.shape[:2]
            if h < p or w < p:
                pad = ((0, max(0, p - h)), (0, max(0, p - w)), (0, 0))
                lq, gt = np.pad(lq, pad, mode="reflect"), np.pad(gt, pad, mode="reflect")
                h, w = gt.shape[:2]
            top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            lq, gt = lq[top : top + p, left : left + p], gt[top : top + p, left : left + p]
        if self.augment:
            lq, gt = random_augment(rng, lq, gt)
        return _to_chw(lq), _to_chw(gt)


def make_validation_set(
    kinds: Sequence[str] = DEGRADATION_KINDS, crop: int = 128, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Centre crops of the held-out photos (``bundled_photos("val")``), degraded nominally:
    the validation data of training and the NFE benchmark.

    Each whole photo is degraded with the nominal parameters (``randomize=False``, seeded by
    ``(seed, photo, kind)``), then both images are centre-cropped to ``crop`` pixels.

    Returns:
        ``(lq, gt, labels)``: float32 ``N x 3 x crop x crop`` tensors and ``"kind/photo"``
        labels, ``N = len(kinds) * 3``.
    """
    lqs, gts, labels = [], [], []
    for pi, (name, img) in enumerate(bundled_photos("val").items()):
        h, w = img.shape[:2]
        c = min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        for ki, kind in enumerate(kinds):
            lq = degrade(img, kind, np.random.default_rng([seed, pi, ki]), randomize=False)
            for lst, im in ((lqs, lq), (gts, img)):
                patch = im[top : top + c, left : left + c].transpose(2, 0, 1)
                lst.append(torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)))
            labels.append(f"{kind}/{name}")
    return torch.stack(lqs), torch.stack(gts), labels
