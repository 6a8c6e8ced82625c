"""Realistic low-light and noise degradations of clean photographs, drawn per sample.

The model (``docs/training_data.md#degradation-model``), for a clean RGB image ``x`` in
``[0, 1]`` and parameters drawn independently for every sample:

``lowlight``  an under-exposed shot read out by a noisy sensor::

        d_c = clip(g * k_c * x_c ** gamma, 0, 1)          exposure gain g, gamma, colour gain k_c
        y   = a * Poisson(d / a) + Normal(0, b)            Poisson-Gaussian sensor noise
        out = round(255 * clip(y, 0, 1)) / 255             8-bit quantisation

    so that ``E[y | d] = d`` and ``Var[y | d] = a * d + b`` (shot noise ``a``, read noise
    ``b = read_std ** 2``): the noise is added after darkening, where a real sensor adds it.

``noise``     Gaussian noise, then 8 bits, then (with probability ``jpeg_probability``) a mild
    JPEG::

        out = round(255 * clip(x + Normal(0, std ** 2), 0, 1)) / 255     [JPEG at quality q]

The ranges are :data:`LOWLIGHT_RANGES` and :data:`NOISE_RANGES`; ``randomize=False`` applies
:data:`NOMINAL_REALISTIC_PARAMS`. The other kinds (``blur``, ``jpeg``, ``clean``) are
:func:`diffusers_mrs.data.degrade`'s. Images are NumPy ``H x W x 3`` arrays, as in
:mod:`diffusers_mrs.data`; the result is a deterministic function of the generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import TRAINING_KINDS, degrade

__all__ = [
    "LOWLIGHT_RANGES",
    "NOISE_RANGES",
    "NOMINAL_REALISTIC_PARAMS",
    "REALISTIC_KINDS",
    "degrade_realistic",
    "lowlight",
    "noise",
    "quantize_8bit",
    "realistic_ranges",
    "sample_realistic_params",
]

#: The kinds this module models; the others are :func:`diffusers_mrs.data.degrade`'s.
REALISTIC_KINDS: tuple[str, ...] = ("noise", "lowlight")

#: ``(low, high)`` of each low-light parameter; ``gain``, ``color_gain`` (each channel
#: independently), ``shot_noise`` (``a``) and ``read_std`` (``sqrt(b)``) are drawn
#: log-uniformly, ``gamma`` uniformly.
LOWLIGHT_RANGES: dict[str, tuple[float, float]] = {
    "gain": (0.08, 0.4),
    "gamma": (1.0, 1.8),
    "color_gain": (0.8, 1.25),
    "shot_noise": (2e-4, 1e-2),
    "read_std": (0.5 / 255.0, 4.0 / 255.0),
}
#: ``std`` is drawn uniformly; a JPEG follows with probability ``jpeg_probability``, its
#: quality an integer drawn uniformly from ``jpeg_quality`` (both ends included).
NOISE_RANGES: dict[str, Any] = {
    "std": (5.0 / 255.0, 50.0 / 255.0),
    "jpeg_probability": 0.3,
    "jpeg_quality": (75, 95),
}
#: What ``randomize=False`` applies (``jpeg_quality`` 0: no JPEG).
NOMINAL_REALISTIC_PARAMS: dict[str, dict[str, Any]] = {
    "lowlight": {"gain": 0.2, "gamma": 1.4, "color_gain": (1.0, 1.0, 1.0),
                 "shot_noise": 2e-3, "read_std": 2.0 / 255.0},
    "noise": {"std": 25.0 / 255.0, "jpeg_quality": 0},
}


#: Both kinds' ranges in one dict, what :func:`realistic_ranges` overrides.
_DEFAULT_RANGES: dict[str, Any] = {**LOWLIGHT_RANGES, **NOISE_RANGES}


def _log_uniform(rng: np.random.Generator, low: float, high: float, size: int | None = None):
    return np.exp(rng.uniform(np.log(low), np.log(high), size=size))


def realistic_ranges(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """:data:`LOWLIGHT_RANGES` and :data:`NOISE_RANGES` in one dict, with ``overrides``
    (e.g. ``{"color_gain": (1, 1)}``: no colour cast) replacing entries of the same name."""
    unknown = sorted(set(overrides or {}) - set(_DEFAULT_RANGES))
    if unknown:
        raise ValueError(f"unknown realistic degradation range(s) {unknown}; "
                         f"expected some of {sorted(_DEFAULT_RANGES)}")
    return {**_DEFAULT_RANGES, **(overrides or {})}


def sample_realistic_params(
    kind: str,
    rng: np.random.Generator | int | None = None,
    randomize: bool = True,
    ranges: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters of one ``lowlight`` or ``noise`` sample (see the module docstring).

    Args:
        kind: ``"lowlight"`` or ``"noise"``.
        rng: generator or seed of the draw.
        randomize: ``False`` returns :data:`NOMINAL_REALISTIC_PARAMS` ``[kind]``.
        ranges: replacements for entries of the default ranges (:func:`realistic_ranges`).
    """
    if kind not in REALISTIC_KINDS:
        raise ValueError(f"kind must be one of {REALISTIC_KINDS}, got {kind!r}")
    r = realistic_ranges(ranges) if ranges else _DEFAULT_RANGES  # per sample: no copy
    if not randomize:
        return dict(NOMINAL_REALISTIC_PARAMS[kind])
    rng = np.random.default_rng(rng)
    if kind == "noise":
        q_low, q_high = r["jpeg_quality"]
        jpeg = rng.uniform() < r["jpeg_probability"]
        quality = int(rng.integers(q_low, q_high + 1))
        return {"std": float(rng.uniform(*r["std"])),
                "jpeg_quality": quality if jpeg else 0}
    return {"gain": float(_log_uniform(rng, *r["gain"])),
            "gamma": float(rng.uniform(*r["gamma"])),
            "color_gain": tuple(float(k) for k in _log_uniform(rng, *r["color_gain"], size=3)),
            "shot_noise": float(_log_uniform(rng, *r["shot_noise"])),
            "read_std": float(_log_uniform(rng, *r["read_std"]))}


def quantize_8bit(image: np.ndarray) -> np.ndarray:
    """``round(255 * clip(image, 0, 1)) / 255``: the 256 levels of an 8-bit file."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0


def lowlight(image: np.ndarray, rng: np.random.Generator, params: dict[str, Any]) -> np.ndarray:
    """Darken (``g * k_c * x_c ** gamma``), add Poisson-Gaussian noise (``Var = a d + b``),
    quantise to 8 bits; ``shot_noise`` 0 means no shot noise."""
    gains = params["gain"] * np.asarray(params["color_gain"], dtype=np.float64)
    dark = np.clip(gains * np.power(np.clip(image, 0.0, 1.0), params["gamma"]), 0.0, 1.0)
    a = float(params["shot_noise"])
    noisy = a * rng.poisson(dark / a) if a > 0 else dark
    noisy = noisy + rng.normal(0.0, float(params["read_std"]), size=dark.shape)
    return quantize_8bit(noisy)


def noise(image: np.ndarray, rng: np.random.Generator, params: dict[str, Any]) -> np.ndarray:
    """Gaussian noise of ``std``, 8 bits, then a JPEG at ``jpeg_quality`` unless it is 0."""
    out = quantize_8bit(image + rng.normal(0.0, float(params["std"]), size=image.shape))
    quality = int(params.get("jpeg_quality", 0))
    return degrade(out, "jpeg", params={"quality": quality}) if quality else out


def degrade_realistic(
    image: np.ndarray,
    kind: str,
    rng: np.random.Generator | int | None = None,
    randomize: bool = True,
    params: dict[str, Any] | None = None,
    ranges: dict[str, Any] | None = None,
) -> np.ndarray:
    """Degrade a clean ``H x W x 3`` image in ``[0, 1]`` (same signature as
    :func:`diffusers_mrs.data.degrade` for NumPy images, so it can be a dataset's degrader).

    ``lowlight`` and ``noise`` follow the model of the module docstring (parameters drawn
    per call, from the default ranges with ``ranges`` replacing entries of the same name,
    unless ``randomize`` is ``False`` or ``params`` are given); ``blur``, ``jpeg``
    and ``clean`` are :func:`diffusers_mrs.data.degrade`'s. Returns float32 (or the input's
    float dtype).
    """
    if kind not in TRAINING_KINDS:
        raise ValueError(f"unknown degradation kind {kind!r}; expected one of {TRAINING_KINDS}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 array, got shape {image.shape}")
    rng = np.random.default_rng(rng)
    if kind not in REALISTIC_KINDS:
        return degrade(image, kind, rng, randomize=randomize, params=params)
    p = (dict(params) if params is not None
         else sample_realistic_params(kind, rng, randomize, ranges))
    x = image.astype(np.float64, copy=False)
    out = lowlight(x, rng, p) if kind == "lowlight" else noise(x, rng, p)
    dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32
    return out.astype(dtype, copy=False)
