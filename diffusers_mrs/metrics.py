"""Image quality of restorations: PSNR and SSIM per image, and means per degradation.

The one place the package scores images; training validation and the NFE benchmark both use
it. Images are ``N x C x H x W`` tensors in [0, 1]; the restorations are clipped to [0, 1]
first, the references are taken as they are. Both metrics come from scikit-image
(``peak_signal_noise_ratio`` and ``structural_similarity`` with ``data_range=1``, SSIM over
the channels), installed with the ``train``, ``bench`` and ``test`` extras.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _hwc_pairs(images: torch.Tensor, reference: torch.Tensor):
    if images.shape != reference.shape or images.ndim != 4:
        raise ValueError(
            "images and reference must be N x C x H x W tensors of one shape, got "
            f"{tuple(images.shape)} and {tuple(reference.shape)}."
        )
    for x, y in zip(images, reference, strict=True):
        # Copied to the host first, then widened to float64 there: MPS has no float64.
        restored = x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().double().numpy()
        clean = y.detach().permute(1, 2, 0).cpu().double().numpy()
        yield restored, clean


def psnr(images: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Per-image PSNR in dB, ``10 log10(1 / MSE)``, of ``images`` against ``reference``
    (``inf`` for an exact copy, e.g. the input of a clean photo)."""
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):
        return [float(peak_signal_noise_ratio(clean, restored, data_range=1.0))
                for restored, clean in _hwc_pairs(images, reference)]


def psnr_and_ssim(images: torch.Tensor, reference: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-image PSNR (dB) and SSIM of ``images`` against ``reference``."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnrs, ssims = [], []
    for restored, clean in _hwc_pairs(images, reference):
        psnrs.append(float(peak_signal_noise_ratio(clean, restored, data_range=1.0)))
        ssims.append(float(structural_similarity(clean, restored, data_range=1.0,
                                                 channel_axis=-1)))
    return psnrs, ssims


def mean_per_group(values: Sequence[float], groups: Sequence[str]) -> dict[str, float]:
    """Mean of per-image ``values`` per group (e.g. degradation kind), in first-appearance
    order, and ``"average"`` over all images."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (len(groups),):
        raise ValueError(f"{arr.size} values for {len(groups)} group labels.")
    labels = np.asarray(groups)
    out = {g: float(arr[labels == g].mean()) for g in dict.fromkeys(groups)}
    out["average"] = float(arr.mean())
    return out
