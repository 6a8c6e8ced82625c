"""The baselines the MR Sampler beats (docs/math.md#baselines), as swappable schedulers.

Both visit N integer times ``int(linspace(1, T, N))`` in descending order. With
``step_mode="irsde"`` (default, as the IR-SDE code) each visit applies the one-grid-step
update t -> t - 1, whatever the gap to the next visited time, which is why they collapse
at low NFE in the paper's tables; ``step_mode="jump"`` moves from each visited time to the
next one (and to 0 after the last), the mathematically consistent variant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .prediction_types import prediction_conversion
from .scheduling_common import (
    MRSchedulerBase,
    MRSchedulerOutput,
    check_choice,
    eager_step,
)
from .solver import StepCoefficients
from .timestep_schedules import host_times

STEP_MODES = ("irsde", "jump")


class MRGridSchedulerBase(MRSchedulerBase, SchedulerMixin, ConfigMixin):
    """Common machinery of the grid baselines: visited times, per-step linear update
    ``y' = a y + w D + c z`` with D the model output converted to ``target``."""

    #: "data" or "noise": what the update consumes.
    target = "data"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 100,
        theta_schedule: str = "cosine",
        trained_thetas: Sequence[float] | np.ndarray | None = None,
        max_sigma: float = 50 / 255,
        eps: float = 0.005,
        prediction_type: str = "epsilon",
        step_mode: str = "irsde",
    ) -> None:
        check_choice("step_mode", step_mode, STEP_MODES)
        self._build_schedule()
        self._coefficients: list[StepCoefficients] = []
        self._conversions: list[tuple[float, float]] = []

    def update_coefficients(self, t: float, s: float) -> StepCoefficients:
        """Coefficients of the update from t to s (s < t)."""
        raise NotImplementedError

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """Visit ``int(linspace(1, T, N))`` descending (or custom integer ``timesteps``)."""
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of num_inference_steps or timesteps.")
        if timesteps is None:
            n = self._check_num_steps(num_inference_steps)
            if n > T:
                raise ValueError(
                    f"num_inference_steps={n} is impossible: the grid has T={T} steps."
                )
            visits = np.linspace(1, T, n).astype(np.int64)[::-1]
        else:
            visits = host_times(timesteps)
            if visits.size == 0 or np.any(visits != np.round(visits)):
                raise ValueError("custom timesteps must be a non-empty list of integers.")
            visits = visits.astype(np.int64)
        if np.any(visits < 1) or np.any(visits > T) or np.any(np.diff(visits) >= 0):
            raise ValueError(
                f"timesteps must be strictly decreasing integers in [1, {T}], got "
                f"{visits.tolist()}."
            )
        jump = self.config.step_mode == "jump"
        targets = np.append(visits[1:], 0) if jump else visits - 1
        sched = self.noise_schedule
        self._coefficients = [self.update_coefficients(float(t), float(s))
                              for t, s in zip(visits, targets, strict=True)]
        self._conversions = [
            prediction_conversion(self.config.prediction_type, self.target,
                                  float(sched.alpha(t)), float(sched.sigma(t)),
                                  self.config.max_sigma)
            for t in visits
        ]
        self.num_inference_steps = len(visits)
        self.timesteps = torch.from_numpy(visits.astype(np.float32)).to(device)
        self.init_noise_sigma = float(sched.sigma(float(visits[0])))
        self._reset_steps()

    @eager_step
    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        mu: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> MRSchedulerOutput | tuple[torch.Tensor]:
        """y = x - mu; D = p y + q m; y' = a y + w D + c z; x' = y' + mu.

        Eager, never compiled, no host read-back; the noise z as in
        :meth:`MRSamplerScheduler.step` (``variance_noise`` or
        :func:`~diffusers_mrs.scheduling_common.draw_noise`)."""
        i = self._start_step(timestep)
        coef, (p, q) = self._coefficients[i], self._conversions[i]
        y, m, mu_ = self._shift(model_output, sample, mu)
        d = self._convert(m, y, p, q)
        y_next = torch.add(y * coef.a, d, alpha=coef.weights[0])
        if coef.noise != 0.0:
            y_next.add_(self._noise_like(y, generator, variance_noise), alpha=coef.noise)
        prev = (y_next if mu_ is None else y_next.add_(mu_)).to(sample.dtype)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return MRSchedulerOutput(prev_sample=prev)


class MRPosteriorScheduler(MRGridSchedulerBase):
    """IR-SDE posterior sampling: estimate x0, then sample x_s ~ q(x_s | x_t, x0).

    With A = alpha_t / alpha_s, B = alpha_t, C = alpha_s (docs/math.md#baselines)::

        mean = mu + A (1 - C^2)/(1 - B^2) (x_t - mu) + C (1 - A^2)/(1 - B^2) (x0 - mu)
        std  = max_sigma sqrt((1 - A^2)(1 - C^2) / (1 - B^2))
    """

    target = "data"

    def update_coefficients(self, t: float, s: float) -> StepCoefficients:
        sched = self.noise_schedule
        B, C = float(sched.alpha(t)), float(sched.alpha(s))
        A = B / C
        one_b = 1.0 - B * B
        return StepCoefficients(
            a=A * (1.0 - C * C) / one_b,
            weights=(C * (1.0 - A * A) / one_b,),
            noise=self.config.max_sigma * math.sqrt((1.0 - A * A) * (1.0 - C * C) / one_b),
        )


class MREulerMaruyamaScheduler(MRGridSchedulerBase):
    """Euler-Maruyama on the reverse SDE (docs/math.md#baselines), step Delta = dt (t - s)::

        x <- x - (theta_t (mu - x) - g_t^2 score) Delta - g_t sqrt(Delta) z,
        score = -eps / sigma_t,  g_t^2 = 2 max_sigma^2 theta_t

    i.e. y <- (1 + theta_t Delta) y - (g_t^2 Delta / sigma_t) eps + g_t sqrt(Delta) z.
    """

    target = "noise"

    def update_coefficients(self, t: float, s: float) -> StepCoefficients:
        sched = self.noise_schedule
        theta = float(sched.thetas[round(t)])
        delta = sched.dt * (t - s)
        g2 = 2.0 * self.config.max_sigma**2 * theta
        return StepCoefficients(
            a=1.0 + theta * delta,
            weights=(-g2 * delta / float(sched.sigma(t)),),
            noise=math.sqrt(g2 * delta),
        )
