"""The coefficients of one MR UniPC predictor (UniP) or corrector (UniC) step in y = x - mu
(docs/math.md#mr-unipc).

Like :mod:`diffusers_mrs.solver`, every update is linear in a stored state and the
converted model outputs, so it is kept as data, computed on the host in float64 once per step
when the timesteps are set::

    y_t = a * y_s + w_0 * D_0 + w_1 * D_1 + ...        (history newest first)

With ``hh = -h`` (data parameterization) or ``hh = h`` (noise), ``h = lambda_t - lambda_s``,
``c = alpha_t`` (data) or ``sigma_t`` (noise), and ``r_m = (lambda_m - lambda_s) / h``
for the other points used, a step is

    y_t = a y_s - c expm1(hh) D_s - c B(h) sum_m rho_m (D_m - D_s) / r_m,

where ``rho`` solves ``sum_m rho_m r_m^(k-1) = k! hh phi_{k+1}(hh) / B(h)`` for
``k = 1..K`` (K the number of other points) and ``B(h)`` is ``hh`` ("bh1") or
``expm1(hh)`` ("bh2"). A step with a single other point takes ``rho = 1/2`` (UniPC's and
diffusers' choice, ``single_point_rho="half"``) or the solution of that one equation,
``g_1 / B(h)`` (``"exact"``).
"""

from __future__ import annotations

import math

import numpy as np

from .solver import StepCoefficients

SOLVER_TYPES = ("bh1", "bh2")
SINGLE_POINT_RHOS = ("half", "exact")


def phi_terms(hh: float, count: int) -> list[float]:
    """``g_k = k! hh phi_{k+1}(hh)`` for k = 1..count, by the recursion
    ``hh phi_{k+1} = hh phi_k / hh - 1/k!`` from ``hh phi_1 = expm1(hh)``."""
    terms, h_phi, factorial = [], math.expm1(hh) / hh - 1.0, 1.0
    for k in range(1, count + 1):
        terms.append(h_phi * factorial)
        factorial *= k + 1
        h_phi = h_phi / hh - 1.0 / factorial
    return terms


def b_of_h(hh: float, solver_type: str) -> float:
    """B(h): ``hh`` for "bh1", ``expm1(hh)`` for "bh2" (docs/math.md#mr-unipc)."""
    return hh if solver_type == "bh1" else math.expm1(hh)


def unipc_rhos(ratios: tuple[float, ...], hh: float, solver_type: str,
               single_point_rho: str = "half") -> np.ndarray:
    """rho_1..rho_K from ``sum_m rho_m r_m^(k-1) = g_k / B(h)``, k = 1..K (K = len(ratios)).

    One point alone takes rho = 1/2 with ``single_point_rho="half"`` (the limit of
    g_1 / B(h) as h -> 0, the choice of the UniPC paper and diffusers; it keeps the order),
    or ``g_1 / B(h)`` with ``"exact"``: the step is then exact for model outputs linear in
    lambda, and ``rho * B(h) = g_1`` no longer depends on B(h) (docs/math.md#mr-unipc).
    """
    if len(ratios) == 1 and single_point_rho == "half":
        return np.array([0.5])
    r = np.asarray(ratios, dtype=np.float64)
    system = np.vander(r, len(r), increasing=True).T  # row k-1: r_m^(k-1)
    rhs = np.asarray(phi_terms(hh, len(r))) / b_of_h(hh, solver_type)
    return np.linalg.solve(system, rhs)


def _linear_part(h: float, alpha_s: float, sigma_s: float, alpha_t: float, sigma_t: float,
                 parameterization: str) -> tuple[float, float, float]:
    """(hh, a, c): the exactly integrated part ``a y_s - c expm1(hh) D_s``."""
    if parameterization == "data":
        return -h, sigma_t / sigma_s, alpha_t
    return h, alpha_t / alpha_s, sigma_t


def unipc_step(
    lambda_s: float,
    others: tuple[float, ...],
    schedule_s: tuple[float, float],
    schedule_t: tuple[float, float, float],
    parameterization: str,
    solver_type: str,
    single_point_rho: str = "half",
) -> tuple[float, float, np.ndarray]:
    """(a, w_s, w_others) of ``y_t = a y_s + w_s D_s + sum_m w_m D_m`` from s to t.

    Args:
        lambda_s: lambda at s.
        others: lambdas of the other points whose outputs enter, in the order of the
            returned weights.
        schedule_s: (alpha_s, sigma_s).
        schedule_t: (lambda_t, alpha_t, sigma_t).
        single_point_rho: "half" | "exact", see :func:`unipc_rhos`.
    """
    lambda_t, alpha_t, sigma_t = schedule_t
    h = lambda_t - lambda_s
    if not h > 0:
        raise ValueError("Each step must increase lambda (move toward less noise).")
    hh, a, c = _linear_part(h, *schedule_s, alpha_t, sigma_t, parameterization)
    w_s = -c * math.expm1(hh)
    if not others:
        return a, w_s, np.zeros(0)
    ratios = tuple((lam - lambda_s) / h for lam in others)
    rhos = unipc_rhos(ratios, hh, solver_type, single_point_rho)
    scale = c * b_of_h(hh, solver_type)
    w_others = -scale * rhos / np.asarray(ratios)
    return a, w_s - float(w_others.sum()), w_others


def predictor_coefficients(
    lambdas: tuple[float, ...],
    schedule_s: tuple[float, float],
    schedule_t: tuple[float, float, float],
    parameterization: str,
    solver_type: str,
    single_point_rho: str = "half",
) -> StepCoefficients:
    """UniP of order ``len(lambdas)`` from s to t: weights on (D_s, D_s1, D_s2), newest first.

    ``lambdas`` are lambda at s and at the previous model points (newest first). Order 2
    has a single other point: its rho follows ``single_point_rho`` (docs/math.md#mr-unipc).
    """
    a, w_s, w_others = unipc_step(lambdas[0], lambdas[1:], schedule_s, schedule_t,
                                  parameterization, solver_type, single_point_rho)
    return StepCoefficients(a=a, weights=(w_s, *(float(w) for w in w_others)))


def corrector_coefficients(
    lambdas: tuple[float, ...],
    schedule_s: tuple[float, float],
    schedule_t: tuple[float, float, float],
    parameterization: str,
    solver_type: str,
    single_point_rho: str = "half",
) -> StepCoefficients:
    """UniC of order ``len(lambdas)`` (accuracy order + 1) for the step s -> t just taken:
    ``y_t = a y_s + w_t D_t + w_s D_s + w_1 D_s1 + ...``, weights newest first (D_t, the
    output at the predicted y_t, first).

    ``lambdas`` are those of the predictor step (s, then the previous points); the point t
    itself enters with r = 1. Order 1 has t as its single other point: its rho follows
    ``single_point_rho``.
    """
    lambda_t = schedule_t[0]
    others = (*lambdas[1:], lambda_t)
    a, w_s, w_others = unipc_step(lambdas[0], others, schedule_s, schedule_t,
                                  parameterization, solver_type, single_point_rho)
    return StepCoefficients(
        a=a, weights=(float(w_others[-1]), w_s, *(float(w) for w in w_others[:-1]))
    )
