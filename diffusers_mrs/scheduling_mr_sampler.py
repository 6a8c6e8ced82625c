"""MRSamplerScheduler: the MR Sampler (Li et al., ICLR 2025) as a diffusers scheduler.

MR diffusion in x is ordinary diffusion in y = x - mu (docs/math.md#shifted-coordinates),
so the whole sampler is: shift by mu, one exponential-integrator step from
:mod:`diffusers_mrs.solver` (coefficients precomputed per step in ``set_timesteps``),
shift back.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .inference_grid import FINAL_SIGMAS_TYPES
from .noise_schedule import thetas_from_betas
from .prediction_types import prediction_conversion
from .scheduling_common import (
    MRSchedulerBase,
    MRSchedulerOutput,
    check_choice,
    check_real,
    eager_step,
)
from .solver import (
    ALGORITHM_TYPES,
    ORDER3_COEFFICIENTS,
    PARAMETERIZATIONS,
    StepCoefficients,
    exponential_integrator_step,
)
from .thresholding import dynamic_threshold
from .timestep_schedules import TIMESTEP_SPACINGS


def step_orders(num_steps: int, solver_order: int, lower_order_final: bool,
                final_to_zero: bool) -> list[int]:
    """Order of each step: step k (from 1) uses min(k, order) (no history before that);
    with ``lower_order_final`` and fewer than 15 steps the last step is first order and the
    one before at most second order (as diffusers); a final step to sigma = 0 is first
    order (it returns the data prediction)."""
    orders = [min(k + 1, solver_order) for k in range(num_steps)]
    if lower_order_final and num_steps < 15:
        orders[-1] = min(orders[-1], 1)
        if num_steps >= 2:
            orders[-2] = min(orders[-2], 2)
    if final_to_zero:
        orders[-1] = 1
    return orders


class MRSamplerScheduler(MRSchedulerBase, SchedulerMixin, ConfigMixin):
    """The MR Sampler for the reverse SDE and PF-ODE of mean-reverting diffusion.

    Config (diffusers names where they exist):
        num_train_timesteps: T; the training grid is t = 0..T.
        theta_schedule: "cosine" | "linear" | "constant" (IR-SDE), unless ``trained_thetas``
            (T + 1 values) is given.
        max_sigma, eps: stationary std and alpha at t = T (docs/math.md#forward-process).
        prediction_type: what the network outputs: "epsilon" | "sample" | "v_prediction".
        algorithm_type: "sde" (reverse SDE) | "ode" (PF-ODE).
        parameterization: "data" | "noise": what the solver integrates.
        solver_order: 1, 2 or 3 (multistep).
        timestep_spacing: "linspace" | "leading" | "trailing" | "karras" | "karras_time" |
            "logsnr" (docs/math.md#time-grids); ``rho`` for the Karras ramps; ``lambda_min`` clips
            the noisy end.
        thresholding, dynamic_thresholding_ratio, sample_max_value: Imagen dynamic
            thresholding of the data prediction (data parameterization only).
        lower_order_final: lower the order of the last steps when NFE < 15.
        final_sigmas_type: "sigma_min" ends at t = 0 (as the paper); "zero" returns the
            data prediction at the last model time.
        order3_coefficient: "taylor" (really third order) | "dpm_solver" (the
            DPM-Solver-3M coefficient, half the Taylor one; docs/math.md#order-3).

    With ``mu=None`` (mu = 0), ``max_sigma=1`` and thetas from DDPM betas this is
    DPM-Solver / DPM-Solver++; :meth:`from_config` converts a DDPM-style config itself.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 100,
        theta_schedule: str = "cosine",
        trained_thetas: Sequence[float] | np.ndarray | None = None,
        max_sigma: float = 50 / 255,
        eps: float = 0.005,
        prediction_type: str = "epsilon",
        algorithm_type: str = "sde",
        parameterization: str = "data",
        solver_order: int = 2,
        timestep_spacing: str = "logsnr",
        rho: float = 7.0,
        lambda_min: float = -math.inf,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.5,
        lower_order_final: bool = True,
        final_sigmas_type: str = "sigma_min",
        order3_coefficient: str = "taylor",
    ) -> None:
        check_choice("algorithm_type", algorithm_type, ALGORITHM_TYPES)
        check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        check_choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
        check_choice("order3_coefficient", order3_coefficient, ORDER3_COEFFICIENTS)
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}.")
        if thresholding and parameterization != "data":
            raise ValueError(
                "thresholding applies to the data prediction: it needs parameterization='data'."
            )
        check_real("rho", rho)
        check_real("lambda_min", lambda_min, allow_inf=True)
        check_real("dynamic_thresholding_ratio", dynamic_thresholding_ratio)
        check_real("sample_max_value", sample_max_value)
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}.")
        self._build_schedule()
        self._coefficients: list[StepCoefficients] = []
        self._conversions: list[tuple[float, float]] = []
        self._history: list[torch.Tensor] = []

    # ---------------------------------------------------------------- config conversion
    @staticmethod
    def _config_from_betas_config(config: dict) -> dict:
        """The exact VP equivalent of a DDPM-style config."""
        return vp_config_from_betas_config(config)

    # ---------------------------------------------------------------- timesteps
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Precompute the grid and every step's coefficients.

        Args:
            num_inference_steps: N, the number of model evaluations.
            device: where ``timesteps`` go.
            timesteps: custom model-evaluation times (descending, train-time units) instead
                of ``num_inference_steps``; the solver then ends at t = 0 (or sigma = 0).

        The spaced grid is rounded to float32, the dtype of ``self.timesteps`` that the
        model sees, before the coefficients are computed (docs/math.md#time-grids), so
        ``set_timesteps(timesteps=s.timesteps)`` reproduces ``s``'s schedule exactly. Custom
        timesteps are used as given (float64 ones exactly; ``self.timesteps`` shows them
        in float32).
        """
        cfg = self.config
        grid = self._inference_grid(num_inference_steps, timesteps)
        n, times = grid.num_steps, grid.times
        final_zero = cfg.final_sigmas_type == "zero"
        lambdas, alphas, sigmas = grid.lambdas, grid.alphas, grid.sigmas

        orders = step_orders(n, cfg.solver_order, cfg.lower_order_final, final_zero)
        self._coefficients = [
            exponential_integrator_step(
                tuple(lambdas[i - j] for j in range(orders[i])),
                alphas[i], sigmas[i], lambdas[i + 1], alphas[i + 1], sigmas[i + 1],
                cfg.algorithm_type, cfg.parameterization, cfg.order3_coefficient,
            )
            for i in range(n)
        ]
        self._conversions = [
            prediction_conversion(cfg.prediction_type, cfg.parameterization, alphas[i],
                                  sigmas[i], cfg.max_sigma)
            for i in range(n)
        ]
        self.num_inference_steps = n
        self.timesteps = torch.from_numpy(times[:n].astype(np.float32)).to(device)
        self.sigmas = torch.tensor(sigmas, dtype=torch.float32)
        self.init_noise_sigma = sigmas[0]
        self._history = []
        self._reset_steps()

    # ---------------------------------------------------------------- the step
    def _threshold(self, x0: torch.Tensor) -> torch.Tensor:
        """Imagen dynamic thresholding of x0, per sample (no host sync):
        s = clamp(quantile(|x0|, ratio), 1, sample_max_value), x0 <- clamp(x0, -s, s) / s."""
        cfg = self.config
        return dynamic_threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)

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
        """One MR Sampler step from ``timestep`` to the next grid time.

        y = x - mu;  D0 = p y + q m  (the model output as a data or noise prediction);
        y' = a y + sum_j w_j D_-j + c z;  x' = y' + mu.

        Eager, never compiled (:func:`~diffusers_mrs.scheduling_common.eager_step`); it
        reads nothing back from the device. The noise z (SDE only) is ``variance_noise``
        when given (any device: moved to the sample's without blocking), else drawn by
        :func:`~diffusers_mrs.scheduling_common.draw_noise`: on the sample's device with no
        generator or a generator on that device (no copy); with a CPU generator and a
        CUDA/MPS sample, drawn on the CPU (the same numbers as on a CPU run) and copied.
        """
        i = self._start_step(timestep)
        coef, (p, q) = self._coefficients[i], self._conversions[i]
        y, m, mu_ = self._shift(model_output, sample, mu)
        d0 = self._convert(m, y, p, q)
        if self.config.thresholding:
            x0 = d0 if mu_ is None else d0 + mu_
            x0 = self._threshold(x0)
            d0 = x0 if mu_ is None else x0 - mu_
        self._history = [d0, *self._history[:2]]

        y_next = y * coef.a
        for w, d in zip(coef.weights, self._history, strict=False):
            y_next.add_(d, alpha=w)
        if coef.noise != 0.0:
            z = self._noise_like(y, generator, variance_noise)
            y_next.add_(z, alpha=coef.noise)
        prev = y_next if mu_ is None else y_next.add_(mu_)
        prev = prev.to(sample.dtype)
        self._step_index = i + 1
        if not return_dict:  # nobody reads pred_original_sample: not computed
            return (prev,)
        pred_x0 = None
        if self.config.parameterization == "data":
            pred_x0 = (d0 if mu_ is None else d0 + mu_).to(sample.dtype)
        return MRSchedulerOutput(prev_sample=prev, pred_original_sample=pred_x0)


def vp_config_from_betas_config(config: dict[str, Any]) -> dict[str, Any]:
    """The MR config equal to a DDPM (VP) beta schedule: thetas from betas, max_sigma = 1.

    A diffusers config with N train timesteps covers t = 0..N-1, so T = N - 1.
    """
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler.from_config(config)
    thetas, eps = thetas_from_betas(ddpm.betas.double().numpy())
    ours = set(inspect.signature(MRSamplerScheduler.__init__).parameters) - {"self"}
    # The DPM-Solver names mean other things here; the spacing default stays ours.
    ours -= {"algorithm_type", "timestep_spacing"}
    keep = {k: v for k, v in config.items() if k in ours}
    keep.update(
        num_train_timesteps=len(thetas) - 1,
        trained_thetas=thetas.tolist(),
        max_sigma=1.0,
        eps=eps,
    )
    return keep
