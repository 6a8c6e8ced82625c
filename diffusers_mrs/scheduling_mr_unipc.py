"""MRUniPCScheduler: UniPC (Zhao et al., NeurIPS 2023) for the PF-ODE of mean-reverting
diffusion, as a diffusers scheduler (docs/math.md#mr-unipc).

As for the MR Sampler, MR diffusion in x is ordinary diffusion in y = x - mu
(docs/math.md#shifted-coordinates): each step shifts by mu, corrects the state it was handed
with the new model output (UniC, one order higher at no extra network evaluation), takes the
next predictor step (UniP) and shifts back. All coefficients are computed once, in float64,
by ``set_timesteps`` (:mod:`diffusers_mrs.unipc_coefficients`); ``step`` only forms weighted
sums of tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .inference_grid import FINAL_SIGMAS_TYPES, InferenceGrid
from .prediction_types import prediction_conversion
from .scheduling_common import (
    MR_SCHEDULERS,
    MRSchedulerBase,
    MRSchedulerOutput,
    check_choice,
    check_real,
    check_whole_number,
    eager_step,
)
from .scheduling_mr_sampler import step_orders, vp_config_from_betas_config
from .solver import PARAMETERIZATIONS, StepCoefficients, exponential_integrator_step
from .thresholding import dynamic_threshold
from .timestep_schedules import TIMESTEP_SPACINGS
from .unipc_coefficients import (
    SINGLE_POINT_RHOS,
    SOLVER_TYPES,
    corrector_coefficients,
    predictor_coefficients,
)

#: diffusers' DPM-Solver names for ``solver_type``; diffusers' UniPC maps them to "bh2".
_DPM_SOLVER_TYPES = ("midpoint", "heun", "logrho")


class MRUniPCScheduler(MRSchedulerBase, SchedulerMixin, ConfigMixin):
    """UniPC predictor-corrector for the PF-ODE of mean-reverting diffusion (ODE only).

    Config (the MR Sampler's names for the shared ones):
        num_train_timesteps, theta_schedule, trained_thetas, max_sigma, eps,
        prediction_type, timestep_spacing, rho, lambda_min, thresholding,
        dynamic_thresholding_ratio, sample_max_value, final_sigmas_type: as
            :class:`~diffusers_mrs.MRSamplerScheduler`.
        solver_order: 1, 2 or 3, the predictor's order p (multistep); with the corrector the
            result is accurate to order p + 1.
        solver_type: "bh1" (B(h) = h) | "bh2" (B(h) = e^h - 1) (docs/math.md#mr-unipc).
        parameterization: "data" | "noise": the outputs the solver interpolates (diffusers'
            ``predict_x0`` True | False).
        single_point_rho: "half" | "exact": rho of a predictor or corrector with a single
            other point (order-2 UniP, order-1 UniC). "half" is UniPC's and diffusers' 1/2,
            the small-step limit; "exact" solves its equation, which makes such a step exact
            for model outputs linear in lambda and matters at the large steps of 5-10 NFE
            (docs/math.md#mr-unipc).
        disable_corrector: indices of the steps whose result is not corrected (the
            correction of step i happens at the start of step i + 1).
        lower_order_final: lower the order of the last steps when NFE < 15 (the MR
            Sampler's rule; diffusers' UniPC lowers them at any NFE).

    With ``mu=None`` (mu = 0), ``max_sigma=1`` and thetas from DDPM betas this is diffusers'
    ``UniPCMultistepScheduler``; :meth:`from_config` converts a DDPM-style config itself.
    """

    _compatibles: ClassVar[list[str]] = list(MR_SCHEDULERS)
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
        solver_order: int = 2,
        solver_type: str = "bh2",
        parameterization: str = "data",
        disable_corrector: Sequence[int] | None = None,
        single_point_rho: str = "half",
        timestep_spacing: str = "logsnr",
        rho: float = 7.0,
        lambda_min: float = -math.inf,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.5,
        lower_order_final: bool = True,
        final_sigmas_type: str = "sigma_min",
    ) -> None:
        check_choice("solver_type", solver_type, SOLVER_TYPES)
        check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        check_choice("single_point_rho", single_point_rho, SINGLE_POINT_RHOS)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        check_choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
        if solver_order not in (1, 2, 3) or isinstance(solver_order, bool):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order!r}.")
        if disable_corrector is not None and not isinstance(disable_corrector, (list, tuple)):
            raise ValueError(
                f"disable_corrector must be a list of step indices, got {disable_corrector!r}."
            )
        for index in disable_corrector or ():
            check_whole_number("disable_corrector entries", index, minimum=0)
        if thresholding and parameterization != "data":
            raise ValueError(
                "thresholding applies to the data prediction: it needs parameterization='data'."
            )
        for name, value in (("rho", rho), ("dynamic_thresholding_ratio",
                                           dynamic_thresholding_ratio),
                            ("sample_max_value", sample_max_value)):
            check_real(name, value)
        check_real("lambda_min", lambda_min, allow_inf=True)
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}.")
        self._build_schedule()
        self._predictors: list[StepCoefficients] = []
        self._correctors: list[StepCoefficients | None] = []
        self._conversions: list[tuple[float, float]] = []
        self._history: list[torch.Tensor] = []
        self._last_y: torch.Tensor | None = None

    # ---------------------------------------------------------------- config conversion
    @staticmethod
    def _config_from_betas_config(config: dict) -> dict:
        """The exact VP equivalent of a DDPM-style config such as a
        ``UniPCMultistepScheduler``'s; ``predict_x0`` becomes the parameterization."""
        return unipc_config_from_betas_config(config)

    # ---------------------------------------------------------------- timesteps
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Precompute the grid and every predictor's and corrector's coefficients.

        Args:
            num_inference_steps: N, the number of model evaluations.
            device: where ``timesteps`` go.
            timesteps: custom model-evaluation times (descending, train-time units) instead
                of ``num_inference_steps``; the solver then ends at t = 0 (or sigma = 0).
        """
        grid = self._inference_grid(num_inference_steps, timesteps)
        n = grid.num_steps
        orders = step_orders(n, self.config.solver_order, self.config.lower_order_final,
                             self.config.final_sigmas_type == "zero")
        self._predictors = [self._predictor(grid, i, orders[i]) for i in range(n)]
        self._correctors = [None] + [self._corrector(grid, i, orders[i - 1])
                                     for i in range(1, n)]
        self._conversions = [
            prediction_conversion(self.config.prediction_type, self.config.parameterization,
                                  grid.alphas[i], grid.sigmas[i], self.config.max_sigma)
            for i in range(n)
        ]
        self.num_inference_steps = n
        self.timesteps = torch.from_numpy(grid.times[:n].astype(np.float32)).to(device)
        self.sigmas = torch.tensor(grid.sigmas, dtype=torch.float32)
        self.init_noise_sigma = grid.sigmas[0]
        self._history, self._last_y = [], None
        self._reset_steps()

    def _predictor(self, grid: InferenceGrid, i: int, order: int) -> StepCoefficients:
        """UniP from grid point i to i + 1 (docs/math.md#mr-unipc); a last step to sigma = 0
        returns the data prediction."""
        lambdas = tuple(grid.lambdas[i - j] for j in range(order))
        s, t = (grid.alphas[i], grid.sigmas[i]), (grid.lambdas[i + 1], grid.alphas[i + 1],
                                                   grid.sigmas[i + 1])
        if t[2] == 0.0:
            return exponential_integrator_step(lambdas, *s, *t, "ode",
                                               self.config.parameterization)
        return predictor_coefficients(lambdas, s, t, self.config.parameterization,
                                      self.config.solver_type, self.config.single_point_rho)

    def _corrector(self, grid: InferenceGrid, i: int, order: int) -> StepCoefficients | None:
        """UniC of the step i - 1 -> i just taken with a predictor of ``order``, or None where
        ``disable_corrector`` lists i - 1."""
        if i - 1 in set(self.config.disable_corrector or ()):
            return None
        s = i - 1
        lambdas = tuple(grid.lambdas[s - j] for j in range(order))
        return corrector_coefficients(
            lambdas, (grid.alphas[s], grid.sigmas[s]),
            (grid.lambdas[i], grid.alphas[i], grid.sigmas[i]),
            self.config.parameterization, self.config.solver_type,
            self.config.single_point_rho,
        )

    # ---------------------------------------------------------------- the step
    @staticmethod
    def _weighted_sum(coef: StepCoefficients, y: torch.Tensor,
                      history: Sequence[torch.Tensor]) -> torch.Tensor:
        """a y + sum_j w_j history_j (one new tensor)."""
        out = y * coef.a
        for w, d in zip(coef.weights, history, strict=False):
            out.add_(d, alpha=w)
        return out

    def _data_or_noise(self, m: torch.Tensor, y: torch.Tensor, i: int,
                       mu: torch.Tensor | None) -> torch.Tensor:
        """The model output as the solver's D (thresholded when configured)."""
        p, q = self._conversions[i]
        d = self._convert(m, y, p, q)
        if not self.config.thresholding:
            return d
        x0 = d if mu is None else d + mu
        x0 = dynamic_threshold(x0, self.config.dynamic_thresholding_ratio,
                               self.config.sample_max_value)
        return x0 if mu is None else x0 - mu

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
        """One MR UniPC step from ``timestep`` to the next grid time. ``generator`` and
        ``variance_noise`` are accepted for a drop-in swap with the MR family's loops and
        ignored: the ODE draws no noise.

        y = x - mu;  D_i = p y + q m (at the sample the model saw);
        corrector: y <- a' y_{i-1} + sum_j w'_j D_{i-j}  (unless disabled or i = 0);
        predictor: y' = a y + sum_j w_j D_{i-j};  x' = y' + mu.
        """
        i = self._start_step(timestep)
        y, m, mu_ = self._shift(model_output, sample, mu)
        d = self._data_or_noise(m, y, i, mu_)
        history = [d, *self._history]
        corrector = self._correctors[i]
        if corrector is not None and self._last_y is not None:
            y = self._weighted_sum(corrector, self._last_y, history)
        self._history = history[:3]
        self._last_y = y
        y_next = self._weighted_sum(self._predictors[i], y, self._history)
        prev = (y_next if mu_ is None else y_next.add_(mu_)).to(sample.dtype)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        pred_x0 = None
        if self.config.parameterization == "data":
            pred_x0 = (d if mu_ is None else d + mu_).to(sample.dtype)
        return MRSchedulerOutput(prev_sample=prev, pred_original_sample=pred_x0)


def unipc_config_from_betas_config(config: dict[str, Any]) -> dict[str, Any]:
    """The MR UniPC config equal to a DDPM (VP) config such as diffusers' UniPC's: the MR
    Sampler's conversion (thetas from betas, max_sigma = 1), plus UniPC's own names;
    ``predict_x0`` becomes ``parameterization``, a DPM-Solver ``solver_type`` "bh2"."""
    converted = vp_config_from_betas_config(config)
    if "predict_x0" in config:
        converted["parameterization"] = "data" if config["predict_x0"] else "noise"
    solver_type = config.get("solver_type")
    if solver_type in _DPM_SOLVER_TYPES:
        solver_type = "bh2"
    if solver_type is not None:
        converted["solver_type"] = solver_type
    if config.get("disable_corrector"):
        converted["disable_corrector"] = list(config["disable_corrector"])
    return converted
