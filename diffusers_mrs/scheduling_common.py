"""What the three MR schedulers share: the noise schedule from the config, prediction
conversions (docs/math.md#prediction-types), forward noising for training, ``mu`` checks, step
bookkeeping, the step's noise draw and compatibility lookup outside diffusers' own module.

``step`` is eager by design (:func:`eager_step`): it keeps Python-side bookkeeping
(``_step_index``, the solver history) and per-step coefficients as Python floats, so compile
the network, never the step."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .inference_grid import InferenceGrid, grid_from_config
from .noise_schedule import MRNoiseSchedule
from .prediction_types import (
    PREDICTION_TYPES,
    check_prediction_type,
    network_target,
    x0_from_output,
)

__all__ = [
    "MAX_TRAIN_TIMESTEPS",
    "MR_SCHEDULERS",
    "PREDICTION_TYPES",
    "MRSchedulerBase",
    "MRSchedulerOutput",
    "draw_noise",
    "eager_step",
]

#: Every scheduler of the family; each lists the others as compatible.
MR_SCHEDULERS = (
    "MRSamplerScheduler",
    "MRUniPCScheduler",
    "MRPosteriorScheduler",
    "MREulerMaruyamaScheduler",
)

#: Upper bound on ``num_train_timesteps`` (T), checked before anything is allocated. Real
#: schedules use T = 100 (IR-SDE) to 1000 (DDPM); at the bound the per-T arrays are a few
#: MB each, and every grid time stays an exact integer in the float32 ``timesteps``
#: (exact up to 2^24).
MAX_TRAIN_TIMESTEPS = 1_000_000

_Step = TypeVar("_Step", bound=Callable)


def eager_step(step: _Step) -> _Step:
    """Mark a scheduler's ``step`` as eager: ``torch.compile`` never traces into it.

    ``step`` reads ``_step_index`` and per-step Python-float coefficients; traced, every
    step would be a new graph (guards on the index) and hit the recompile limit. Compiled
    code that calls ``step`` runs it eagerly instead (compile the network, not the step)."""
    return torch.compiler.disable(step)


@dataclass
class MRSchedulerOutput(BaseOutput):
    """Output of ``step``.

    Args:
        prev_sample: x at the next (less noisy) time.
        pred_original_sample: the data prediction x0 at the current time, when computed.
    """

    prev_sample: torch.FloatTensor
    pred_original_sample: torch.FloatTensor | None = None


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {choices}.")


def check_whole_number(name: str, value: object, minimum: int) -> None:
    """Config values that count things: an int (not a bool, not 10.5) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")


def check_real(name: str, value: object, allow_inf: bool = False) -> None:
    """Config values that are numbers: int or float, never NaN (nor inf unless allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number{' or +-inf' if allow_inf else ''}, got NaN.")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value}.")


def check_tensor(name: str, value: object) -> None:
    """``step`` arguments are torch tensors (a numpy array gets this message, no AttributeError)."""
    if value is not None and not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(value).__module__}.{type(value).__name__};"
            " convert it with torch.as_tensor."
        )


class MRSchedulerBase:
    """Mixin with the parts every MR scheduler shares. Subclasses also inherit
    ``SchedulerMixin`` and ``ConfigMixin`` and register the shared config names:
    ``num_train_timesteps, theta_schedule, trained_thetas, max_sigma, eps, prediction_type``.
    """

    _compatibles: ClassVar[list[str]] = list(MR_SCHEDULERS)
    order = 1

    @staticmethod
    def _config_from_betas_config(config: dict) -> dict | None:
        """This class's exact equivalent of a DDPM-style config (``beta_schedule``, no
        ``theta_schedule``), or None where the class takes such configs as they are."""
        return None

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
        """Like diffusers' ``from_config``; a DDPM-style config becomes its exact VP
        equivalent where the class defines one (docs/math.md#shifted-coordinates)."""
        if config is not None and "beta_schedule" in config and "theta_schedule" not in config:
            config = cls._config_from_betas_config(dict(config)) or config
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    # ---------------------------------------------------------------- construction
    def _build_schedule(self) -> None:
        cfg = self.config
        check_prediction_type(cfg.prediction_type)
        check_whole_number("num_train_timesteps", cfg.num_train_timesteps, minimum=1)
        if cfg.num_train_timesteps > MAX_TRAIN_TIMESTEPS:
            raise ValueError(
                f"num_train_timesteps={cfg.num_train_timesteps} is over the supported "
                f"maximum {MAX_TRAIN_TIMESTEPS:,} (real schedules use 100 to 1000)."
            )
        for name in ("max_sigma", "eps"):
            check_real(name, getattr(cfg, name))
        self.noise_schedule = MRNoiseSchedule.from_config(
            cfg.num_train_timesteps, cfg.theta_schedule, cfg.trained_thetas, cfg.max_sigma,
            cfg.eps,
        )
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(cfg.num_train_timesteps, -1, -1, dtype=torch.float32)
        self.init_noise_sigma = float(self.noise_schedule.sigma(cfg.num_train_timesteps))
        self._step_index: int | None = None
        self._begin_index: int | None = None

    @classmethod
    def _get_compatibles(cls) -> list[type]:
        """diffusers looks compatible names up in its own module; ours live here."""
        package = importlib.import_module(__name__.split(".")[0])
        names = {cls.__name__, *cls._compatibles}
        return [getattr(package, n) for n in sorted(names) if hasattr(package, n)]

    # ---------------------------------------------------------------- step bookkeeping
    @property
    def step_index(self) -> int | None:
        """Index of the step ``step`` will take next (None before the first call)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Set the first step index (pipelines call this so ``step`` never searches)."""
        self._begin_index = begin_index

    def _reset_steps(self) -> None:
        self._step_index = None
        self._begin_index = None

    def _init_step_index(self, timestep: float | torch.Tensor) -> None:
        """Find the step index of ``timestep``; a one-off lookup on the first step only."""
        if self._begin_index is not None:
            self._step_index = self._begin_index
            return
        t = torch.as_tensor(timestep, dtype=self.timesteps.dtype).to(self.timesteps.device)
        matches = (self.timesteps == t).nonzero()
        if len(matches) == 0:
            raise ValueError(f"timestep {timestep} is not in scheduler.timesteps.")
        self._step_index = int(matches[0])

    def _start_step(self, timestep: float | torch.Tensor) -> int:
        if self.num_inference_steps is None:
            raise ValueError("Call set_timesteps before step.")
        if self._step_index is None:
            self._init_step_index(timestep)
        if self._step_index >= self.num_inference_steps:
            raise ValueError(
                f"step called {self._step_index + 1} times for {self.num_inference_steps} "
                "inference steps; call set_timesteps again to restart."
            )
        return self._step_index

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """MR models take x_t unscaled (diffusers API compatibility)."""
        return sample

    # ---------------------------------------------------------------- checks
    @staticmethod
    def _check_mu(mu: torch.Tensor | None, sample: torch.Tensor) -> None:
        """Type and shape check only: reading values here would sync the device every step."""
        check_tensor("mu", mu)
        check_tensor("sample", sample)
        if mu is not None and mu.shape != sample.shape:
            raise ValueError(
                f"mu must have the shape of sample {tuple(sample.shape)}, got {tuple(mu.shape)}."
            )

    def _inference_grid(self, num_inference_steps: int | None, timesteps) -> InferenceGrid:
        """The multistep solvers' grid (:func:`~diffusers_mrs.inference_grid.grid_from_config`)
        from exactly one of ``num_inference_steps`` (checked) and custom ``timesteps``."""
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of num_inference_steps or timesteps.")
        if timesteps is None:
            num_inference_steps = self._check_num_steps(num_inference_steps)
        return grid_from_config(self.noise_schedule, self.config, num_inference_steps, timesteps)

    def _check_num_steps(self, num_inference_steps: int | None) -> int:
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
            raise ValueError(
                f"num_inference_steps must be a positive int, got {num_inference_steps!r}."
            )
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
        return num_inference_steps

    def _shift(
        self, model_output: torch.Tensor, sample: torch.Tensor, mu: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(y, m, mu) in the compute dtype (float32 at least): y = x - mu, and m the model
        output, shifted by mu too when it predicts the sample (so it is y0)."""
        check_tensor("model_output", model_output)
        self._check_mu(mu, sample)
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output shape {tuple(model_output.shape)} != sample shape "
                f"{tuple(sample.shape)}."
            )
        dtype = torch.promote_types(sample.dtype, torch.float32)
        m = model_output.to(dtype)
        if mu is None:
            return sample.to(dtype), m, None
        mu = mu.to(dtype)
        if self.config.prediction_type == "sample":
            m = m - mu
        return sample.to(dtype) - mu, m, mu

    @staticmethod
    def _convert(m: torch.Tensor, y: torch.Tensor, p: float, q: float) -> torch.Tensor:
        """D = p y + q m (one conversion of docs/math.md#prediction-types, precomputed p, q)."""
        return m * q if p == 0.0 else torch.add(m * q, y, alpha=p)

    @staticmethod
    def _noise_like(
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        variance_noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """The step's standard normal noise: ``variance_noise`` if given (moved to the
        sample's device and dtype without blocking), else :func:`draw_noise`."""
        if variance_noise is not None:
            check_tensor("variance_noise", variance_noise)
            if variance_noise.shape != sample.shape:
                raise ValueError(
                    f"variance_noise must have the shape of sample {tuple(sample.shape)}, got "
                    f"{tuple(variance_noise.shape)}."
                )
            return variance_noise.to(device=sample.device, dtype=sample.dtype, non_blocking=True)
        return draw_noise(sample.shape, generator, sample.device, sample.dtype)

    # ---------------------------------------------------------------- training helpers
    def _alpha_sigma(self, timesteps: torch.Tensor | float, like: torch.Tensor):
        """(alpha_t, sigma_t) shaped to broadcast over ``like``: ``timesteps`` is a scalar,
        one time (any shape with one element: broadcast over the batch, as diffusers'
        schedulers do) or one time per batch entry, on any device."""
        t = torch.as_tensor(timesteps).to(like.device, non_blocking=True)
        if t.numel() == 1:
            t = t.reshape(()).expand(like.shape[0])
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(
                f"timesteps must be one time or one per batch entry ({like.shape[0]}), got "
                f"shape {tuple(t.shape)}."
            )
        compute = torch.promote_types(like.dtype, torch.float32)
        alpha, sigma = self.noise_schedule.alpha_sigma(t, dtype=compute)
        view = (-1,) + (1,) * (like.ndim - 1)
        return alpha.view(view), sigma.view(view)

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor | float,
        mu: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Forward marginal: x_t = alpha_t x_0 + (1 - alpha_t) mu + sigma_t noise.

        docs/math.md#forward-process."""
        if mu is not None:
            self._check_mu(mu, original_samples)
        alpha, sigma = self._alpha_sigma(timesteps, original_samples)
        x0 = original_samples.to(alpha.dtype)
        y0 = x0 if mu is None else x0 - mu.to(alpha.dtype)
        x_t = alpha * y0 + sigma * noise.to(alpha.dtype)
        if mu is not None:
            x_t = x_t + mu.to(alpha.dtype)
        return x_t.to(original_samples.dtype)

    def get_velocity(
        self,
        sample: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor | float,
        mu: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity target v = max_sigma alpha_t eps - (sigma_t / max_sigma)(x_0 - mu)
        (the ``v_prediction`` row of docs/math.md#prediction-types)."""
        alpha, sigma = self._alpha_sigma(timesteps, sample)
        v = network_target(
            "v_prediction", sample.to(alpha.dtype), noise.to(alpha.dtype), alpha, sigma,
            self.config.max_sigma, None if mu is None else mu.to(alpha.dtype),
        )
        return v.to(sample.dtype)

    def predict_original_sample(
        self,
        model_output: torch.Tensor,
        timesteps: torch.Tensor | float,
        sample: torch.Tensor,
        mu: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_0 estimate from a network output at any (batched) times
        (docs/math.md#prediction-types)."""
        alpha, sigma = self._alpha_sigma(timesteps, sample)
        x0 = x0_from_output(
            self.config.prediction_type, model_output.to(alpha.dtype), sample.to(alpha.dtype),
            alpha, sigma, self.config.max_sigma, None if mu is None else mu.to(alpha.dtype),
        )
        return x0.to(sample.dtype)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def _generator_device(generator: torch.Generator | list[torch.Generator] | None):
    if generator is None:
        return None
    first = generator[0] if isinstance(generator, list) else generator
    return first.device


def draw_noise(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` for ``device``, drawn where the generator lives.

    - no generator, or one on ``device``: drawn on ``device`` directly (no copy, no sync);
    - a generator on another device (typically a CPU generator for a CUDA/MPS sample): drawn
      there, so a seed gives the same numbers on every device, then copied to ``device``
      (``non_blocking``; from pageable CPU memory the copy still waits for the host);
    - a list of generators: one per batch entry (diffusers' ``randn_tensor`` convention).
    """
    source = _generator_device(generator)
    source = device if source is None else source
    noise = randn_tensor(tuple(shape), generator=generator, device=source, dtype=dtype)
    return noise.to(device, non_blocking=True)

