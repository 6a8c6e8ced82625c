"""The mean-reverting noise schedule: theta, alpha, sigma and lambda in one place.

docs/math.md#schedules. On the training grid t = 0, 1, ..., T::

    dt       = -log(eps) / sum(theta)
    alpha_t  = exp(-dt * cumsum(theta)[t])        (inclusive cumulative sum)
    sigma_t  = max_sigma * sqrt(1 - alpha_t^2)
    lambda_t = log(alpha_t) - log(sigma_t)         (half log-SNR, decreasing in t)

Between grid points ``log(alpha)`` is interpolated linearly in t and sigma and lambda are
derived from it, so the three stay consistent at every continuous t. All host-side
arithmetic is float64 numpy; :meth:`MRNoiseSchedule.alpha_sigma` gives device tensors for
training (``add_noise``) from a copy of the grid kept on each device it was asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

THETA_SCHEDULES = ("cosine", "linear", "constant")

ArrayLike = float | Sequence[float] | np.ndarray


def irsde_thetas(schedule: str, num_train_timesteps: int) -> np.ndarray:
    """The T+1 values theta_0..theta_T of an IR-SDE theta schedule (docs/math.md#schedules).

    - ``cosine`` (s = 0.008): n = T + 2, abar_k = cos(((k/n) + s)/(1 + s) * pi/2)^2 for
      k = 0..n, normalised by abar_0, and theta = 1 - abar[1:-1];
    - ``linear``: linspace(1e-4 * c, 0.02 * c, T + 1) with c = 1000 / (T + 1);
    - ``constant``: ones(T + 1).
    """
    T = num_train_timesteps
    if schedule == "cosine":
        s = 0.008
        n = T + 2
        k = np.arange(n + 1, dtype=np.float64)
        abar = np.cos(((k / n) + s) / (1 + s) * math.pi * 0.5) ** 2
        abar = abar / abar[0]
        return 1.0 - abar[1:-1]
    if schedule == "linear":
        c = 1000.0 / (T + 1)
        return np.linspace(1e-4 * c, 0.02 * c, T + 1, dtype=np.float64)
    if schedule == "constant":
        return np.ones(T + 1, dtype=np.float64)
    raise ValueError(f"Unknown theta_schedule {schedule!r}; expected one of {THETA_SCHEDULES}.")


def thetas_from_betas(betas: ArrayLike) -> tuple[np.ndarray, float]:
    """Thetas and eps that make the MR schedule equal a DDPM (VP) schedule
    (docs/math.md#shifted-coordinates).

    theta_k = -log(1 - beta_k) / 2 and eps = sqrt(prod(1 - beta)); then dt = 1 and
    alpha_t = sqrt(alphas_cumprod[t]). Use with ``max_sigma = 1`` and ``mu = 0``.
    """
    betas = np.asarray(betas, dtype=np.float64)
    thetas = -0.5 * np.log1p(-betas)
    eps = float(np.exp(-thetas.sum()))
    return thetas, eps


class MRNoiseSchedule:
    """alpha, sigma and lambda of a mean-reverting SDE at continuous times t in [0, T].

    Args:
        thetas: theta_0..theta_T (T + 1 positive values).
        max_sigma: stationary standard deviation (IR-SDE's ``max_sigma: 50`` is 50/255).
        eps: alpha at t = T (the cumulative decay reached at the end).
    """

    def __init__(self, thetas: ArrayLike, max_sigma: float, eps: float) -> None:
        thetas = np.asarray(thetas, dtype=np.float64)
        if thetas.ndim != 1 or thetas.size < 2:
            raise ValueError("thetas must be a 1-d array of T + 1 >= 2 values (t = 0..T).")
        if not np.all(np.isfinite(thetas)) or np.any(thetas <= 0):
            raise ValueError("thetas must be finite and strictly positive.")
        if not (max_sigma > 0 and math.isfinite(max_sigma)):
            raise ValueError(f"max_sigma must be positive and finite, got {max_sigma}.")
        if not (0.0 < eps < 1.0):
            raise ValueError(f"eps must lie in (0, 1), got {eps}.")
        self.thetas = thetas
        self.max_sigma = float(max_sigma)
        self.eps = float(eps)
        self.num_train_timesteps = thetas.size - 1
        self.dt = -math.log(eps) / thetas.sum()
        # log(alpha) on the grid t = 0..T: -dt * inclusive cumsum(theta).
        self.log_alpha_grid = -self.dt * np.cumsum(thetas)
        self._grid = np.arange(thetas.size, dtype=np.float64)
        self._device_grids: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def from_config(
        cls,
        num_train_timesteps: int,
        theta_schedule: str = "cosine",
        trained_thetas: ArrayLike | None = None,
        max_sigma: float = 50 / 255,
        eps: float = 0.005,
    ) -> MRNoiseSchedule:
        """Build from scheduler config values: a named schedule or ``trained_thetas``."""
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}.")
        if trained_thetas is not None:
            thetas = np.asarray(trained_thetas, dtype=np.float64)
            if thetas.shape != (num_train_timesteps + 1,):
                raise ValueError(
                    f"trained_thetas must have num_train_timesteps + 1 = {num_train_timesteps + 1}"
                    f" entries (t = 0..T), got shape {tuple(thetas.shape)}."
                )
        else:
            thetas = irsde_thetas(theta_schedule, num_train_timesteps)
        return cls(thetas, max_sigma=max_sigma, eps=eps)

    # ----------------------------------------------------------------- host (float64) side
    def _check_t(self, t: np.ndarray) -> np.ndarray:
        if np.any(t < 0) or np.any(t > self.num_train_timesteps) or not np.all(np.isfinite(t)):
            raise ValueError(
                f"timesteps must lie in [0, num_train_timesteps={self.num_train_timesteps}]."
            )
        return t

    def log_alpha(self, t: ArrayLike) -> np.ndarray:
        """log(alpha_t), linear in t between grid points."""
        t = self._check_t(np.asarray(t, dtype=np.float64))
        return np.interp(t, self._grid, self.log_alpha_grid)

    def alpha(self, t: ArrayLike) -> np.ndarray:
        return np.exp(self.log_alpha(t))

    def sigma(self, t: ArrayLike) -> np.ndarray:
        """sigma_t = max_sigma * sqrt(1 - alpha_t^2), computed as sqrt(-expm1(2 log alpha))."""
        return self.max_sigma * np.sqrt(-np.expm1(2.0 * self.log_alpha(t)))

    def lambda_(self, t: ArrayLike) -> np.ndarray:
        """lambda_t = log(alpha_t / sigma_t)."""
        la = self.log_alpha(t)
        return la - math.log(self.max_sigma) - 0.5 * np.log(-np.expm1(2.0 * la))

    def t_from_log_alpha(self, log_alpha: ArrayLike) -> np.ndarray:
        """Inverse of :meth:`log_alpha` (log alpha decreases strictly in t)."""
        la = np.asarray(log_alpha, dtype=np.float64)
        return np.interp(-la, -self.log_alpha_grid, self._grid)

    def t_from_lambda(self, lam: ArrayLike) -> np.ndarray:
        """Inverse of :meth:`lambda_`: alpha^2 = m e^{2 lambda} / (1 + m e^{2 lambda}),
        m = max_sigma^2."""
        lam = np.asarray(lam, dtype=np.float64)
        u = 2.0 * lam + 2.0 * math.log(self.max_sigma)  # log(m e^{2 lambda})
        log_alpha = 0.5 * (u - np.logaddexp(0.0, u))
        return self.t_from_log_alpha(log_alpha)

    def t_from_noise_to_signal(self, nsr: ArrayLike) -> np.ndarray:
        """Inverse of sigma_t / alpha_t = exp(-lambda_t)."""
        return self.t_from_lambda(-np.log(np.asarray(nsr, dtype=np.float64)))

    # ----------------------------------------------------------------- device side
    def _device_grid(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``log_alpha_grid`` on ``device``, copied there once and kept."""
        key = (device, dtype)
        if key not in self._device_grids:
            self._device_grids[key] = torch.as_tensor(self.log_alpha_grid, dtype=dtype,
                                                      device=device)
        return self._device_grids[key]

    def alpha_sigma(self, timesteps: torch.Tensor, dtype: torch.dtype | None = None):
        """(alpha_t, sigma_t) as tensors on ``timesteps.device`` for continuous ``timesteps``.

        Pure tensor arithmetic on the device (no host sync, no copy after the first call on
        a device), used by ``add_noise`` during training.
        """
        device = timesteps.device
        work = torch.float32 if device.type == "mps" else torch.float64
        grid = self._device_grid(device, work)
        t = timesteps.to(work).clamp(0, self.num_train_timesteps)
        lo = t.floor().long().clamp(max=self.num_train_timesteps - 1)
        frac = t - lo.to(work)
        log_alpha = grid[lo] + frac * (grid[lo + 1] - grid[lo])
        alpha = log_alpha.exp()
        sigma = self.max_sigma * torch.sqrt(-torch.expm1(2.0 * log_alpha))
        out_dtype = dtype or torch.float32
        return alpha.to(out_dtype), sigma.to(out_dtype)
