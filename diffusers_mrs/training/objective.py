"""The training objective: times, noising, targets, x0 estimates and losses.

``x_t = scheduler.add_noise(x0, noise, t, mu=lq)`` with ``t`` uniform on the integers
``1..T`` (as IR-SDE) or on ``(0, T]``; the network's target by ``prediction_type``
(docs/math.md#prediction-types) and the loss on the target or on the implied x0 estimate,
optionally weighted per sample (docs/math.md#training-objective). A fraction of each batch
may be trained from the samplers' start instead (:func:`from_sampler_start`).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import prediction_types

# One table of prediction types and their conversions (docs/math.md#prediction-types).
PREDICTION_TYPES = prediction_types.PREDICTION_TYPES
TIMESTEP_SAMPLINGS = ("discrete", "continuous")
LOSS_SPACES = ("target", "x0")


def schedule_alpha_sigma(
    scheduler: Any, timesteps: torch.Tensor, ref: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t and sigma_t of ``scheduler`` at ``timesteps`` (shape ``[B]``), as ``B x 1 x 1 x 1``
    float32 tensors on ``ref``'s device, from the scheduler's noise schedule
    (docs/math.md#schedules)."""
    t = timesteps.to(ref.device)
    alpha, sigma = scheduler.noise_schedule.alpha_sigma(t, dtype=torch.float32)
    view = (-1,) + (1,) * (ref.ndim - 1)
    return alpha.view(view), sigma.view(view)


def sample_timesteps(
    batch_size: int,
    num_train_timesteps: int,
    mode: str = "discrete",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training times, float32 ``[B]``: uniform integers ``1..T`` or continuous ``U(0, T]``,
    drawn on ``device`` (default: the ``generator``'s, else the CPU), so training draws them
    where it computes, without a copy."""
    if device is None and generator is not None:
        device = generator.device
    if mode == "discrete":
        return torch.randint(1, num_train_timesteps + 1, (batch_size,), generator=generator,
                             device=device, dtype=torch.float32)
    if mode == "continuous":
        u = torch.rand((batch_size,), generator=generator, device=device)
        return ((1.0 - u) * num_train_timesteps).clamp(min=1e-3)
    raise ValueError(f"timestep_sampling must be 'discrete' or 'continuous', got {mode!r}")


def training_target(
    scheduler: Any,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    mu: torch.Tensor,
    prediction_type: str | None = None,
) -> torch.Tensor:
    """The regression target of the network for ``prediction_type`` (default: the scheduler's).

    ``epsilon`` -> ``noise``; ``sample`` -> ``x0``; ``v_prediction`` ->
    ``max_sigma alpha eps - (sigma / max_sigma) (x0 - mu)``: one row each of
    :data:`diffusers_mrs.prediction_types.OUTPUT_COEFFICIENTS`.
    """
    ptype = prediction_type or scheduler.config.prediction_type
    alpha, sigma = schedule_alpha_sigma(scheduler, timesteps, x0)
    return prediction_types.network_target(
        ptype, x0, noise, alpha, sigma, scheduler.config.max_sigma, mu
    )


def predict_x0(
    scheduler: Any,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    mu: torch.Tensor,
    prediction_type: str | None = None,
) -> torch.Tensor:
    """The x0 estimate implied by a network output (docs/math.md#prediction-types),
    differentiable.

    epsilon: ``x0 = mu + (y_t - sigma eps) / alpha``; sample: the output itself;
    v_prediction: ``x0 = mu + alpha y_t - (sigma / max_sigma) v``.
    ``prediction_type`` (default: the scheduler's) selects the row of the table.
    """
    ptype = prediction_type or scheduler.config.prediction_type
    alpha, sigma = schedule_alpha_sigma(scheduler, timesteps, x_t)
    return prediction_types.x0_from_output(
        ptype, model_output, x_t, alpha, sigma, scheduler.config.max_sigma, mu
    )


LOSS_TYPES = ("mse", "l1")
#: ``loss_weighting`` -> the power of the degraded input's loss that divides each sample's loss.
LOSS_WEIGHTINGS = {"none": 0.0, "sqrt": 0.5, "relative": 1.0}


def from_sampler_start(
    scheduler: Any,
    x0: torch.Tensor,
    mu: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    x_t: torch.Tensor,
    fraction: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move a random ``fraction`` of the batch to the samplers' start (docs/math.md
    #sampler-start): ``t = T`` and ``x_T = mu + sigma_T noise``, without the forward
    process's ``alpha_T (x0 - mu)``, which no sampler has. Returns ``(t, x_t, noise)`` with
    ``noise`` replaced by the one these ``x_t`` imply,
    ``(x_t - mu - alpha_t (x0 - mu)) / sigma_t``, so each target still converts back to
    ``x0`` exactly. Rows are chosen on the device (no host sync)."""
    check_sampler_start_fraction(fraction)
    T = float(scheduler.config.num_train_timesteps)
    start = torch.rand(timesteps.shape, device=timesteps.device) < fraction
    t = torch.where(start, torch.full_like(timesteps, T), timesteps)
    alpha, sigma = schedule_alpha_sigma(scheduler, t, x0)
    rows = start.view((-1,) + (1,) * (x0.ndim - 1))
    x_t = torch.where(rows, (mu + sigma * noise).to(x_t.dtype), x_t)
    implied = (x_t.float() - mu - alpha * (x0 - mu)) / sigma
    return t, x_t, torch.where(rows, implied.to(noise.dtype), noise)


def x0_loss_weight(scheduler: Any, timesteps: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-sample weight ``min(1 / c_t^2, cap)`` (``[B]``) of the x0 loss, ``c_t = sigma_t /
    max_sigma`` (docs/math.md#training-objective). For ``v_prediction`` the x0 loss times
    ``1 / c_t^2`` is the target loss, so ``cap = 1`` keeps the x0 loss, ``cap = inf`` gives
    the target loss, and a cap in between gives the target's weight to the times where
    ``c_t^2 >= 1 / cap`` and at most ``cap`` times the x0 weight to the small times below."""
    _, sigma = schedule_alpha_sigma(scheduler, timesteps.float(), timesteps.float())
    c_squared = (sigma / float(scheduler.config.max_sigma)).square()
    return c_squared.reciprocal().clamp(max=cap)


def check_x0_weight_cap(cap: float, loss_space: str) -> None:
    """Raises ``ValueError`` naming the option unless ``cap >= 1``, and unless the loss it
    weights is the x0 loss where ``cap > 1``."""
    if not cap >= 1.0:
        raise ValueError(f"x0_weight_cap must be at least 1 (1: the plain x0 loss), got {cap}")
    if cap != 1.0 and loss_space != "x0":
        raise ValueError("x0_weight_cap weights the x0 loss: it needs loss_space 'x0', "
                         f"got {loss_space!r}")


def check_sampler_start_fraction(fraction: float) -> None:
    """Raises ``ValueError`` naming the option unless ``0 <= fraction <= 1``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sampler_start_fraction must be in [0, 1], got {fraction}")


def check_loss_names(loss_type: str, weighting: str) -> None:
    """Raises ``ValueError`` naming the argument if either name is unknown."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(
            f"loss_weighting must be one of {tuple(LOSS_WEIGHTINGS)}, got {weighting!r}"
        )


def training_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    x0: torch.Tensor,
    loss_type: str = "mse",
    weighting: str = "none",
    floor: float = 1e-4,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean per-sample loss ``d(pred, target)``, ``d`` the squared (``mse``) or absolute
    (``l1``) error averaged over ``C x H x W``.

    ``weighting="relative"`` divides each sample's loss by ``max(d(mu, x0), floor)``, the loss
    of returning the degraded input, so degradations of very different strength weigh the
    same: ``-10 log10`` of the relative MSE is the PSNR gain over the input.
    ``weighting="sqrt"`` divides by the square root of that, a compromise that keeps strong
    degradations from being neglected.

    Both weights depend on the clean image, so for a given input the minimiser is no longer
    the posterior mean ``E[x0 | mu]`` but ``E[w x0 | mu] / E[w | mu]`` with
    ``w = d(mu, x0)^-p``: the sampler then draws from the posterior reweighted by ``w``, and
    where one input has several explanations (a dark photo: a clean dark scene, or a
    low-light shot) the one closest to ``mu`` gains by the ratio of their input losses.
    ``"none"`` is the unbiased choice.

    ``sample_weights`` (``[B]``) multiply the per-sample losses before the mean. Weights that
    depend only on what the network is told (a degradation type given as its context) leave
    each type's minimiser at its posterior mean: they only share capacity between the types.
    """
    check_loss_names(loss_type, weighting)

    def per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a.float() - b.float()
        return (diff.square() if loss_type == "mse" else diff.abs()).flatten(1).mean(1)

    loss = per_sample(pred, target)
    if LOSS_WEIGHTINGS[weighting]:
        loss = loss / per_sample(mu, x0).clamp_min(floor) ** LOSS_WEIGHTINGS[weighting]
    if sample_weights is not None:
        loss = loss * sample_weights.to(loss)
    return loss.mean()


def denoising_loss(
    unet: torch.nn.Module,
    scheduler: Any,
    lq: torch.Tensor,
    gt: torch.Tensor,
    timestep_sampling: str = "discrete",
    loss_space: str = "x0",
    loss_type: str = "mse",
    loss_weighting: str = "none",
    sample_weights: torch.Tensor | None = None,
    sampler_start_fraction: float = 0.0,
    x0_weight_cap: float = 1.0,
    **unet_kwargs: Any,
) -> torch.Tensor:
    """One batch's loss: draw ``t`` and noise, noise ``gt`` towards ``mu = lq``
    (docs/math.md#forward-process), move ``sampler_start_fraction`` of the batch to the
    samplers' start (:func:`from_sampler_start`), run the network (``unet_kwargs``, e.g. a
    ``degradation_context``, go to it), and compare its output with the target
    (``loss_space="target"``) or its implied x0 with ``gt`` (``"x0"``, each sample weighted
    by :func:`x0_loss_weight` when ``x0_weight_cap > 1``)."""
    if loss_space not in LOSS_SPACES:
        raise ValueError(f"loss_space must be one of {LOSS_SPACES}, got {loss_space!r}")
    check_x0_weight_cap(x0_weight_cap, loss_space)
    noise = torch.randn_like(gt)
    T = int(scheduler.config.num_train_timesteps)
    t = sample_timesteps(gt.shape[0], T, timestep_sampling, device=gt.device)
    x_t = scheduler.add_noise(gt, noise, t, mu=lq)
    if sampler_start_fraction:
        t, x_t, noise = from_sampler_start(scheduler, gt, lq, noise, t, x_t,
                                           sampler_start_fraction)
    pred = unet(x_t, t, lq, **unet_kwargs).sample
    if loss_space == "x0":
        pred, target = predict_x0(scheduler, pred, x_t, t, lq), gt
        if x0_weight_cap != 1.0:
            weight = x0_loss_weight(scheduler, t, x0_weight_cap)
            sample_weights = weight if sample_weights is None else sample_weights * weight
    else:
        target = training_target(scheduler, gt, noise, t, lq)
    return training_loss(pred, target, lq, gt, loss_type, loss_weighting,
                         sample_weights=sample_weights)
