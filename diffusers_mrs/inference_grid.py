"""The inference grid of a multistep MR scheduler: model times and the schedule there
(docs/math.md#time-grids).

``set_timesteps`` of a multistep solver needs, for N model evaluations, the N + 1 times
``t_0 > ... > t_N`` and float64 ``lambda``, ``alpha`` and ``sigma`` at each of them, the
last set to ``(inf, 1, 0)`` when the solver ends at ``sigma = 0``
(``final_sigmas_type="zero"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .noise_schedule import MRNoiseSchedule
from .timestep_schedules import float32_times, host_times, spaced_times

FINAL_SIGMAS_TYPES = ("sigma_min", "zero")


@dataclass(frozen=True)
class InferenceGrid:
    """N + 1 times (float64, descending, the last one 0) and the schedule there, as floats."""

    times: np.ndarray
    lambdas: list[float]
    alphas: list[float]
    sigmas: list[float]

    @property
    def num_steps(self) -> int:
        return len(self.times) - 1


def custom_times(
    timesteps: Sequence[float] | np.ndarray | torch.Tensor, num_train_timesteps: int
) -> np.ndarray:
    """User model times (descending, in [0, T]) with the final time 0 appended; used as
    given (float64 ones exactly)."""
    times = host_times(timesteps)
    if times.size == 0:
        raise ValueError("timesteps must not be empty.")
    T = num_train_timesteps
    if np.any(times < 0) or np.any(times > T) or not np.all(np.isfinite(times)):
        raise ValueError(f"timesteps must lie in [0, num_train_timesteps={T}].")
    return np.append(times, 0.0)


def inference_grid(
    schedule: MRNoiseSchedule,
    times: np.ndarray,
    final_sigmas_type: str,
) -> InferenceGrid:
    """The schedule on ``times`` (from :func:`custom_times` or
    :func:`~diffusers_mrs.timestep_schedules.spaced_times`); refuses a grid whose lambda does
    not increase strictly."""
    lambdas = schedule.lambda_(times)
    alphas, sigmas = schedule.alpha(times), schedule.sigma(times)
    if final_sigmas_type == "zero":
        lambdas[-1], alphas[-1], sigmas[-1] = math.inf, 1.0, 0.0
    if not np.all(np.diff(lambdas) > 0):
        k = int(np.argmin(np.diff(lambdas) > 0))
        raise ValueError(
            f"The {len(times) - 1} timesteps must be strictly decreasing and distinct from the "
            f"final time (t = 0): times {k} and {k + 1} (t = {times[k]:.6g} and "
            f"{times[k + 1]:.6g}) do not decrease the noise level; use fewer steps or "
            "another timestep_spacing."
        )
    return InferenceGrid(times, lambdas.tolist(), alphas.tolist(), sigmas.tolist())


def grid_from_config(
    schedule: MRNoiseSchedule,
    config,
    num_inference_steps: int | None,
    timesteps: Sequence[float] | np.ndarray | torch.Tensor | None,
) -> InferenceGrid:
    """The grid from ``timesteps`` or from the config's spacing for ``num_inference_steps``
    (the caller has checked that exactly one is given and that N is a positive int).

    The spaced grid is rounded to float32, the dtype of the ``timesteps`` the model sees,
    before the schedule is evaluated (docs/math.md#time-grids), so passing a scheduler's
    own ``timesteps`` back reproduces its coefficients exactly."""
    if timesteps is not None:
        times = custom_times(timesteps, config.num_train_timesteps)
    else:
        times = float32_times(spaced_times(schedule, config.timestep_spacing,
                                           num_inference_steps, config.lambda_min, config.rho))
    return inference_grid(schedule, times, config.final_sigmas_type)
