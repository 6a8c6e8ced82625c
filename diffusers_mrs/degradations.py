"""The synthetic degradations: a clean photo in, the MR diffusion's degraded input ``mu`` out.

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
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

__all__ = [
    "CLEAN",
    "DEGRADATION_KINDS",
    "NOMINAL_PARAMS",
    "TRAINING_KINDS",
    "degrade",
    "gaussian_blur",
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
