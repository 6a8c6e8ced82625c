"""Time grids for N model evaluations (docs/math.md#time-grids).

Every spacing returns N + 1 descending times ``t_0 = t_max > ... > t_N = 0`` in train-time
units; the model is evaluated at the first N, the solver ends at the last.

- ``linspace``: uniform in t (continuous times).
- ``leading`` / ``trailing``: DDIM-style integer grids, as diffusers defines them;
  ``leading`` steps by ``(T + 1) // (N + 1)`` from 0 (so it starts below ``t_max``),
  ``trailing`` rounds ``linspace(t_max, 0, N + 1)`` and so starts exactly at ``t_max``.
- ``karras``: Karras et al. (2022) ramp with exponent ``rho`` on the noise-to-signal ratio
  sigma_t / alpha_t = exp(-lambda_t).
- ``karras_time``: the same ramp on t itself.
- ``logsnr``: uniform in lambda (the paper's default).

The model sees float32 ``timesteps``, so the schedulers solve on the spaced times rounded to
float32 (:func:`float32_times`): passing a scheduler's own ``timesteps`` back as custom
timesteps reproduces its schedule bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .noise_schedule import MRNoiseSchedule

TIMESTEP_SPACINGS = ("linspace", "leading", "trailing", "karras", "karras_time", "logsnr")
INTEGER_SPACINGS = ("leading", "trailing")


def float32_times(times: np.ndarray) -> np.ndarray:
    """``times`` rounded to float32 and back to float64: the exact values of the float32
    ``timesteps`` the model is evaluated at, so coefficients and model times agree."""
    return np.asarray(times, dtype=np.float64).astype(np.float32).astype(np.float64)


def host_times(timesteps: object) -> np.ndarray:
    """Custom ``timesteps`` (list, numpy array or a tensor on any device) as a 1-d float64
    numpy array."""
    if isinstance(timesteps, torch.Tensor):
        timesteps = timesteps.detach().cpu().numpy()
    return np.asarray(timesteps, dtype=np.float64).reshape(-1)


def max_time(schedule: MRNoiseSchedule, lambda_min: float) -> float:
    """The largest t with lambda_t >= lambda_min (T when nothing is clipped)."""
    T = float(schedule.num_train_timesteps)
    if not math.isfinite(lambda_min) or schedule.lambda_(T) >= lambda_min:
        return T
    if schedule.lambda_(0.0) <= lambda_min:
        raise ValueError(
            f"lambda_min={lambda_min} clips the whole schedule (lambda_0 = "
            f"{float(schedule.lambda_(0.0)):.3f})."
        )
    return float(schedule.t_from_lambda(lambda_min))


def karras_ramp(start: float, end: float, n: int, rho: float) -> np.ndarray:
    """n + 1 points from ``start`` to ``end``, uniform in value ** (1 / rho)."""
    ramp = np.linspace(0.0, 1.0, n + 1)
    a, b = start ** (1.0 / rho), end ** (1.0 / rho)
    return (a + ramp * (b - a)) ** rho


def spaced_times(
    schedule: MRNoiseSchedule,
    spacing: str,
    num_inference_steps: int,
    lambda_min: float = -math.inf,
    rho: float = 7.0,
) -> np.ndarray:
    """N + 1 descending times from t_max to 0 for ``spacing`` (see the module docstring)."""
    n = num_inference_steps
    t_max = max_time(schedule, lambda_min)
    if spacing in INTEGER_SPACINGS:
        grid_top = math.floor(t_max)
        if not 1 <= n <= grid_top:
            raise ValueError(
                f"num_inference_steps={n} is impossible with timestep_spacing={spacing!r}: "
                f"the integer grid offers 1..{grid_top} steps."
            )
        if spacing == "leading":
            ratio = (grid_top + 1) // (n + 1)
            times = (np.arange(n + 1) * ratio)[::-1].astype(np.float64)
        else:
            times = np.floor(np.linspace(grid_top, 0.0, n + 1) + 0.5)
    elif spacing == "linspace":
        times = np.linspace(t_max, 0.0, n + 1)
    elif spacing == "karras":
        nsr = karras_ramp(math.exp(-schedule.lambda_(t_max)), math.exp(-schedule.lambda_(0.0)),
                          n, rho)
        times = schedule.t_from_noise_to_signal(nsr)
    elif spacing == "karras_time":
        times = karras_ramp(t_max, 0.0, n, rho)
    elif spacing == "logsnr":
        lambdas = np.linspace(schedule.lambda_(t_max), schedule.lambda_(0.0), n + 1)
        times = schedule.t_from_lambda(lambdas)
    else:
        raise ValueError(
            f"Unknown timestep_spacing {spacing!r}; expected one of {TIMESTEP_SPACINGS}."
        )
    times = np.asarray(times, dtype=np.float64)
    times[0], times[-1] = min(times[0], t_max), 0.0
    return times
