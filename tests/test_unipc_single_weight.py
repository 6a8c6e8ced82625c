"""The exact single weight of MR UniPC (``single_point_rho="exact"``, docs/math.md#mr-unipc):
a step with one other point integrates model outputs that are linear in lambda exactly,
where UniPC's rho = 1/2 shortcut does not, and the convergence order is kept."""

from __future__ import annotations

import math

import pytest
from test_unipc_exact import NFES, ode_error, slope

from diffusers_mrs import MRUniPCScheduler
from diffusers_mrs.unipc_coefficients import corrector_coefficients, predictor_coefficients

#: A large step (h = 2), as in a 5-step run, between two points of an (alpha, sigma) schedule.
LAMBDA_S, LAMBDA_T, LAMBDA_PREV = -1.0, 1.0, -2.5
SIGMA_S, SIGMA_T = 0.8, 0.3
C0, C1 = 0.7, -0.4  # F(lambda) = C0 + C1 (lambda - lambda_s)


def schedule(lam: float, sigma: float) -> tuple[float, float]:
    return sigma * math.exp(lam), sigma


def exact_step(parameterization: str, y_s: float) -> float:
    """y_t for F linear in lambda, integrated in closed form (docs/math.md#mr-unipc)."""
    h = LAMBDA_T - LAMBDA_S
    alpha_s, _ = schedule(LAMBDA_S, SIGMA_S)
    alpha_t, _ = schedule(LAMBDA_T, SIGMA_T)
    es, et = math.exp(LAMBDA_S), math.exp(LAMBDA_T)
    if parameterization == "data":  # sigma_t int e^lambda D dlambda
        integral = C0 * (et - es) + C1 * (et * (h - 1) + es)
        return SIGMA_T / SIGMA_S * y_s + SIGMA_T * integral
    integral = C0 * (1 / es - 1 / et) + C1 * (1 / es - (h + 1) / et)  # int e^-lambda E
    return alpha_t / alpha_s * y_s - alpha_t * integral


def f(lam: float) -> float:
    return C0 + C1 * (lam - LAMBDA_S)


def one_step(kind: str, parameterization: str, solver_type: str, rho: str, y_s: float) -> float:
    s = schedule(LAMBDA_S, SIGMA_S)
    t = (LAMBDA_T, *schedule(LAMBDA_T, SIGMA_T))
    if kind == "corrector":  # UniC-1: the points s and t
        coef = corrector_coefficients((LAMBDA_S,), s, t, parameterization, solver_type, rho)
        outputs = (f(LAMBDA_T), f(LAMBDA_S))
    else:  # UniP-2: the points s and one earlier point
        coef = predictor_coefficients((LAMBDA_S, LAMBDA_PREV), s, t, parameterization,
                                      solver_type, rho)
        outputs = (f(LAMBDA_S), f(LAMBDA_PREV))
    return coef.a * y_s + sum(w * d for w, d in zip(coef.weights, outputs, strict=True))


@pytest.mark.parametrize("kind", ["corrector", "predictor"])
@pytest.mark.parametrize("parameterization", ["data", "noise"])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
def test_exact_single_weight_integrates_linear_outputs_exactly(kind, parameterization,
                                                               solver_type):
    exact = exact_step(parameterization, 0.3)
    assert one_step(kind, parameterization, solver_type, "exact", 0.3) == pytest.approx(
        exact, rel=1e-12, abs=1e-12)
    half = one_step(kind, parameterization, solver_type, "half", 0.3)
    assert abs(half - exact) > 1e-3  # the shortcut misses by far more than rounding at h = 2


@pytest.mark.parametrize("order", [1, 2])
def test_exact_single_weight_keeps_the_order(order):
    """On the exact Gaussian ODE: order p + 1 with the corrector, as with rho = 1/2."""
    errors = [ode_error(n, order, "data", "bh2", True, single_point_rho="exact")
              for n in NFES[order]]
    assert slope(errors, NFES[order]) >= order + 1 - 0.15, errors


def test_unknown_single_point_rho_is_refused():
    with pytest.raises(ValueError, match="single_point_rho"):
        MRUniPCScheduler(single_point_rho="third")
