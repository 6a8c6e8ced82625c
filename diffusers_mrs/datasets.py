"""The training datasets: degraded random patches of clean photos, paired image folders,
and the held-out validation crops.

Items are ``(lq, gt)`` pairs of float32 ``3 x H x W`` tensors in ``[0, 1]``; patches are
degraded with :func:`diffusers_mrs.degradations.degrade` unless a dataset is given another
degrader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .degradations import DEGRADATION_KINDS, TRAINING_KINDS, degrade
from .image_io import IMAGE_EXTENSIONS, load_rgb
from .photos import bundled_photos

__all__ = [
    "DegradedPatchDataset",
    "PairedFolderDataset",
    "load_image",
    "make_validation_set",
    "random_augment",
]


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
