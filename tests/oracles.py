"""Exact models for testing samplers (docs/math.md#gaussian-ground-truth).

If x_0 ~ N(m, v) per pixel and mu is fixed, y_t = x_t - mu is Gaussian and the exact data
prediction is linear in y_t:

    E[y_0 | y_t] = (m - mu) + alpha_t v / (alpha_t^2 v + sigma_t^2) (y_t - alpha_t (m - mu))

and the exact PF-ODE maps the standardised deviation unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from diffusers_mrs.noise_schedule import MRNoiseSchedule
from diffusers_mrs.prediction_types import network_target


class GaussianOracle:
    """The exact network for Gaussian data N(m, v) around a fixed mu.

    ``times`` (float64, optional) lets the oracle evaluate the schedule at the exact time
    the solver used instead of the float32 ``timestep`` it is handed.
    """

    def __init__(
        self,
        schedule: MRNoiseSchedule,
        m: torch.Tensor,
        v: torch.Tensor,
        mu: torch.Tensor,
        prediction_type: str = "sample",
        times: np.ndarray | None = None,
    ) -> None:
        self.schedule, self.m, self.v, self.mu = schedule, m, v, mu
        self.prediction_type = prediction_type
        self.times = times

    def _exact_time(self, t: float | torch.Tensor) -> float:
        t = float(t)
        if self.times is None:
            return t
        return float(self.times[np.argmin(np.abs(self.times - t))])

    def coefficients(self, t: float) -> tuple[float, float]:
        t = self._exact_time(t)
        return float(self.schedule.alpha(t)), float(self.schedule.sigma(t))

    def data_prediction(self, x_t: torch.Tensor, t: float) -> torch.Tensor:
        """x_0 estimate E[x_0 | x_t]."""
        a, s = self.coefficients(t)
        y, dm = x_t - self.mu, self.m - self.mu
        y0 = dm + a * self.v / (a * a * self.v + s * s) * (y - a * dm)
        return y0 + self.mu

    def __call__(self, x_t: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The exact network output for ``prediction_type``: the table's combination of the
        exact E[x_0 | x_t] and the noise it implies."""
        a, s = self.coefficients(t)
        x0 = self.data_prediction(x_t, t)
        eps = (x_t - self.mu - a * (x0 - self.mu)) / s
        return network_target(
            self.prediction_type, x0, eps, a, s, self.schedule.max_sigma, self.mu
        )

    def ode_solution(self, y_s: torch.Tensor, s: float, t: float) -> torch.Tensor:
        """Exact PF-ODE transport of y from time s to time t."""
        a_s, s_s = float(self.schedule.alpha(s)), float(self.schedule.sigma(s))
        a_t, s_t = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        dm = self.m - self.mu
        scale = torch.sqrt(a_t**2 * self.v + s_t**2) / torch.sqrt(a_s**2 * self.v + s_s**2)
        return a_t * dm + scale * (y_s - a_s * dm)

    def posterior_mean(self, y_T: torch.Tensor, T: float, t: float = 0.0) -> torch.Tensor:
        """E[y_t | y_T] of the forward process: what the exact reverse SDE from y_T
        averages to at time t (y_t and y_T are jointly Gaussian)."""
        a_t, s_t = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        a_T, s_T = float(self.schedule.alpha(T)), float(self.schedule.sigma(T))
        dm = self.m - self.mu
        var_t = a_t**2 * self.v + s_t**2
        cov = (a_T / a_t) * var_t
        return a_t * dm + cov / (a_T**2 * self.v + s_T**2) * (y_T - a_T * dm)


def make_gaussian_problem(
    schedule: MRNoiseSchedule, shape=(1, 3, 8, 8), seed: int = 0, dtype=torch.float64
):
    """Per-pixel m, v and a degraded mu for oracle tests."""
    g = torch.Generator().manual_seed(seed)
    m = 0.3 + 0.4 * torch.rand(shape, generator=g, dtype=dtype)
    v = 0.005 + 0.03 * torch.rand(shape, generator=g, dtype=dtype)
    mu = m + 0.15 * torch.randn(shape, generator=g, dtype=dtype)
    return m, v, mu


def run_sampler(
    scheduler, model, x: torch.Tensor, mu: torch.Tensor | None, noise=None, generator=None
) -> torch.Tensor:
    """The plain sampling loop of the README."""
    for i, t in enumerate(scheduler.timesteps):
        z = None if noise is None else noise(i)
        x = scheduler.step(
            model(x, t), t, x, mu=mu, generator=generator, variance_noise=z
        ).prev_sample
    return x
