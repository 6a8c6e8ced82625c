"""The prediction types: what the network outputs, as one table, and every conversion
derived from it (docs/math.md#prediction-types).

In the shifted coordinates ``y = x - mu`` the forward process is
``y_t = alpha_t y_0 + sigma_t eps`` (docs/math.md#shifted-coordinates). Every prediction
type is a linear combination of the two unknowns,

    output = a_t y_0 + b_t eps          (+ mu for "sample", whose output is x_0 itself)

and :data:`OUTPUT_COEFFICIENTS` holds ``(a_t, b_t)`` and nothing else. The training target
is that combination of the true ``y_0`` and ``eps``. Solving the 2 x 2 system

    [alpha_t  sigma_t] [y_0]   [y_t]
    [a_t      b_t    ] [eps] = [ m ]     (m = output, minus mu for "sample")

gives the data and noise estimates as ``p y_t + q m`` with ``det = alpha_t b_t - sigma_t a_t``:

    y_0 = (b_t y_t - sigma_t m) / det,       eps = (alpha_t m - a_t y_t) / det.

Everything here is elementwise arithmetic, so ``alpha``/``sigma`` may be Python floats
(the schedulers' precomputed float64 coefficients) or tensors broadcast over a batch
(training). alpha and sigma themselves come from :class:`~diffusers_mrs.MRNoiseSchedule`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "OUTPUT_COEFFICIENTS",
    "OUTPUT_INCLUDES_MU",
    "PREDICTION_TYPES",
    "TARGETS",
    "check_prediction_type",
    "network_target",
    "prediction_conversion",
    "x0_from_output",
]

Coefficient = Any  # float or tensor (broadcastable)

#: prediction_type -> (alpha, sigma, max_sigma) -> (a, b) with output = a y_0 + b eps.
#: ``v_prediction`` is v = max_sigma alpha eps - (sigma / max_sigma) y_0, the v of the
#: normalised variable y / max_sigma scaled back (EDM-style, sigma_data = max_sigma).
OUTPUT_COEFFICIENTS: dict[str, Callable[[Coefficient, Coefficient, float], tuple]] = {
    "epsilon": lambda alpha, sigma, max_sigma: (0.0, 1.0),
    "sample": lambda alpha, sigma, max_sigma: (1.0, 0.0),
    "v_prediction": lambda alpha, sigma, max_sigma: (-sigma / max_sigma, max_sigma * alpha),
}
#: The names, in the order the config docs list them.
PREDICTION_TYPES = tuple(OUTPUT_COEFFICIENTS)
#: Types whose output is the sample x_0 (so y_0 plus mu), not a quantity in y coordinates.
OUTPUT_INCLUDES_MU = frozenset({"sample"})
#: What a conversion can produce: the data estimate y_0 or the noise estimate eps.
TARGETS = ("data", "noise")


def check_prediction_type(prediction_type: str) -> None:
    """Raises ``ValueError`` naming the choices if ``prediction_type`` is not in the table."""
    if prediction_type not in OUTPUT_COEFFICIENTS:
        raise ValueError(
            f"Unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}."
        )


def prediction_conversion(
    prediction_type: str,
    target: str,
    alpha: Coefficient,
    sigma: Coefficient,
    max_sigma: float,
) -> tuple[Coefficient, Coefficient]:
    """(p, q) with ``target = p * y_t + q * m`` (docs/math.md#prediction-types).

    ``target`` is ``"data"`` (y_0 = x_0 - mu) or ``"noise"`` (eps); ``m`` is the network
    output, minus mu for the types in :data:`OUTPUT_INCLUDES_MU`.
    """
    check_prediction_type(prediction_type)
    if target not in TARGETS:
        raise ValueError(f"Unknown conversion target {target!r}; expected one of {TARGETS}.")
    a, b = OUTPUT_COEFFICIENTS[prediction_type](alpha, sigma, max_sigma)
    det = alpha * b - sigma * a
    if target == "data":
        return b / det, -sigma / det
    return -a / det, alpha / det


def network_target(
    prediction_type: str,
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha: Coefficient,
    sigma: Coefficient,
    max_sigma: float,
    mu: torch.Tensor | None = None,
) -> torch.Tensor:
    """What a perfect network outputs for clean image ``x0`` and noise ``noise``:
    ``a y_0 + b eps`` (plus mu for ``sample``), docs/math.md#training-objective.

    Written in x coordinates, ``a x_0 + b eps + (1 - a) mu`` resp. ``a x_0 + b eps - a mu``,
    so the ``sample`` target is ``x0`` exactly.
    """
    check_prediction_type(prediction_type)
    a, b = OUTPUT_COEFFICIENTS[prediction_type](alpha, sigma, max_sigma)
    target = a * x0 + b * noise
    if mu is None:
        return target
    mu_weight = (1.0 - a) if prediction_type in OUTPUT_INCLUDES_MU else -a
    return target + mu_weight * mu


def x0_from_output(
    prediction_type: str,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    alpha: Coefficient,
    sigma: Coefficient,
    max_sigma: float,
    mu: torch.Tensor | None = None,
) -> torch.Tensor:
    """The clean-image estimate ``x_0 = mu + p y_t + q m`` implied by a network output
    (docs/math.md#prediction-types); differentiable.

    Written in x coordinates, so the ``sample`` estimate is the output exactly.
    """
    p, q = prediction_conversion(prediction_type, "data", alpha, sigma, max_sigma)
    x0 = p * x_t + q * model_output
    if mu is None:
        return x0
    mu_weight = 1.0 - p - q if prediction_type in OUTPUT_INCLUDES_MU else 1.0 - p
    return x0 + mu_weight * mu
