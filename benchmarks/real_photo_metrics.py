"""No-reference measures of a restored real photograph against its input (no ground truth).

All images are ``H x W x 3`` float arrays in ``[0, 1]`` (sRGB values as stored). See
``docs/training_data.md#real-photographs`` for what each measure is for.

* :func:`hue_angles`: per pixel, the angle between the chroma vectors of output and input
  in the YCbCr plane (ITU-R BT.601, :func:`skimage.color.rgb2ycbcr`)::

      c = (Cb - 128, Cr - 128)                     chroma vector of a pixel
      angle = arccos(c_out . c_in / (|c_out| |c_in|))    in degrees, 0 to 180

  on the pixels whose input has signal, ``max(R, G, B) >= 0.06``. ``Cb`` and ``Cr`` are
  linear in RGB, so a gain on all three channels (brightening alone) leaves every angle at
  0, and a colour cast the restoration adds or removes shows as the angle it turns the
  chroma by. A pixel with no chroma (exact grey) in either image has no hue; it counts as
  0 degrees when both are grey and as 90 when one is.
* :func:`low_pass_hue_angle_stats`: the same hue angles between output and input both
  blurred by a Gaussian of ``sigma = 3`` px first. An input's sensor noise turns the hue of
  its dark pixels at random, so the per-pixel angle of even a perfect restoration is large
  on a noisy photograph (``benchmarks/hue_reference.py``); the blur averages that noise away
  and keeps a colour cast the restoration adds.
* :func:`residual_noise`: ``skimage.restoration.estimate_sigma`` (wavelet MAD, averaged over
  the channels), in 1/255 units.
* :func:`low_pass_psnr`: PSNR between output and input, both blurred by a Gaussian of
  ``sigma = 3`` px (:func:`skimage.filters.gaussian`): how faithfully a denoiser keeps the
  image's content below the noise's frequencies, ``10 log10(1 / MSE)``.
* :func:`mean_luma`: the mean of BT.601 luma ``Y' = 0.299 R + 0.587 G + 0.114 B``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SIGNAL_THRESHOLD",
    "blur_pair",
    "hue_angle_stats",
    "hue_angles",
    "low_pass_hue_angle_stats",
    "low_pass_psnr",
    "mean_luma",
    "residual_noise",
]

#: A pixel has signal where its input's largest channel reaches this (issue 25).
SIGNAL_THRESHOLD = 0.06
LOW_PASS_SIGMA = 3.0


def _check_pair(output: np.ndarray, reference: np.ndarray) -> None:
    if output.shape != reference.shape or output.ndim != 3 or output.shape[2] != 3:
        raise ValueError(f"expected two H x W x 3 images of one shape, got {output.shape}"
                         f" and {reference.shape}")


def _chroma(image: np.ndarray) -> np.ndarray:
    """``(Cb - 128, Cr - 128)`` per pixel (BT.601, ``H x W x 2``)."""
    from skimage.color import rgb2ycbcr

    return rgb2ycbcr(np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0))[..., 1:] - 128.0


def hue_angles(output: np.ndarray, reference: np.ndarray,
               threshold: float = SIGNAL_THRESHOLD) -> np.ndarray:
    """The hue angle (degrees) between ``output`` and ``reference`` at every pixel whose
    reference has ``max(R, G, B) >= threshold`` (module docstring), as a flat array."""
    _check_pair(output, reference)
    mask = reference.max(axis=-1) >= threshold
    a, b = _chroma(output)[mask], _chroma(reference)[mask]
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    dot = np.einsum("nc,nc->n", a, b)
    angles = np.degrees(np.arctan2(np.abs(cross), dot))  # the arccos of the docstring
    one_grey = (np.linalg.norm(a, axis=-1) == 0) != (np.linalg.norm(b, axis=-1) == 0)
    return np.where(one_grey, 90.0, angles)


def hue_angle_stats(output: np.ndarray, reference: np.ndarray,
                    threshold: float = SIGNAL_THRESHOLD) -> dict[str, float]:
    """Median and 90th percentile of :func:`hue_angles` (degrees) and the share of pixels
    they are taken over."""
    angles = hue_angles(output, reference, threshold)
    if angles.size == 0:
        raise ValueError(f"no pixel of the input reaches max channel {threshold}")
    return {"hue_median": float(np.median(angles)), "hue_p90": float(np.percentile(angles, 90)),
            "signal_share": angles.size / (reference.shape[0] * reference.shape[1])}


def low_pass_hue_angle_stats(output: np.ndarray, reference: np.ndarray,
                             sigma: float = LOW_PASS_SIGMA,
                             threshold: float = SIGNAL_THRESHOLD) -> dict[str, float]:
    """:func:`hue_angle_stats` of ``output`` against ``reference`` after a Gaussian blur of
    ``sigma`` px on both (the signal mask from the blurred reference), keys suffixed
    ``_low_pass``: ``hue_median_low_pass``, ``hue_p90_low_pass``,
    ``signal_share_low_pass``."""
    _check_pair(output, reference)
    stats = hue_angle_stats(*blur_pair(output, reference, sigma), threshold)
    return {f"{key}_low_pass": value for key, value in stats.items()}


def blur_pair(output: np.ndarray, reference: np.ndarray, sigma: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Both images (float64) blurred by a Gaussian of ``sigma`` px in each channel."""
    from skimage.filters import gaussian

    return tuple(gaussian(np.asarray(im, dtype=np.float64), sigma=sigma, channel_axis=-1)
                 for im in (output, reference))


def residual_noise(image: np.ndarray) -> float:
    """Estimated noise std in 1/255 units: ``255 * estimate_sigma(image, channel_axis=-1,
    average_sigmas=True)`` (needs PyWavelets)."""
    from skimage.restoration import estimate_sigma

    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {image.shape}")
    return 255.0 * float(estimate_sigma(image, channel_axis=-1, average_sigmas=True))


def low_pass_psnr(output: np.ndarray, reference: np.ndarray,
                  sigma: float = LOW_PASS_SIGMA) -> float:
    """PSNR (dB) between ``output`` and ``reference`` after a Gaussian blur of ``sigma`` px
    on both (``inf`` where they agree exactly)."""
    from skimage.metrics import peak_signal_noise_ratio

    _check_pair(output, reference)
    blurred = blur_pair(output, reference, sigma)
    if np.array_equal(*blurred):
        return float("inf")
    return float(peak_signal_noise_ratio(blurred[1], blurred[0], data_range=1.0))


def mean_luma(image: np.ndarray) -> float:
    """Mean BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` over the image, in ``[0, 1]``."""
    return float(np.mean(image[..., :3] @ np.array([0.299, 0.587, 0.114])))
