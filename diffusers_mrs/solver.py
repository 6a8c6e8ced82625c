"""One generic exponential-integrator step in y = x - mu
(docs/math.md#shifted-coordinates, docs/math.md#exponential-integrator).

Every MR Sampler update, for either parameterization, PF-ODE or reverse SDE, order 1-3,
is linear in the current state, the model history and the noise::

    y_t = a * y_s + w_0 * D_0 + w_1 * D_-1 + w_2 * D_-2 + c * z

where D_0, D_-1, D_-2 are the converted model outputs (data or noise predictions) at s and
at the two previous points. This module computes (a, w, c) on the host in float64, once
per step in ``set_timesteps``; ``step`` then does nothing but the weighted sum.

The coefficients are built in two stages, mirroring the paper:

1. the Taylor form ``y_t = a y_s + k_0 D0 + k_1 D1 + k_2 D2 + c z`` where D1 and D2 are the
   scaled derivatives (D1 ~ h f', D2 ~ h^2 f''/2) and k_j the integrals of the
   exponential kernel against u^j (the phi functions);
2. the backward differences that estimate D1, D2 from the history
   (docs/math.md#exponential-integrator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALGORITHM_TYPES = ("sde", "ode")
PARAMETERIZATIONS = ("data", "noise")
ORDER3_COEFFICIENTS = ("taylor", "dpm_solver")


@dataclass(frozen=True)
class StepCoefficients:
    """y_t = a * y_s + sum_j weights[j] * D_{-j} + noise * z  (history newest first)."""

    a: float
    weights: tuple[float, ...]
    noise: float = 0.0

    @property
    def order(self) -> int:
        return len(self.weights)


@dataclass(frozen=True)
class TaylorCoefficients:
    """y_t = a * y_s + k[0] * D0 + k[1] * D1 + k[2] * D2 + noise * z."""

    a: float
    k: tuple[float, float, float]
    noise: float


def ode_data_coefficients(h: float, alpha_t: float, sigma_s: float, sigma_t: float,
                          order3_factor: float) -> TaylorCoefficients:
    """Data-prediction PF-ODE (DPM-Solver++):

    phi1 = expm1(-h), phi2 = phi1/h + 1, phi3 = phi2/h - 1/2,
    y_t = (sigma_t/sigma_s) y_s - alpha_t (phi1 D0 - phi2 D1 + 2 phi3 D2).
    """
    phi1 = math.expm1(-h)
    phi2 = phi1 / h + 1.0
    phi3 = phi2 / h - 0.5
    return TaylorCoefficients(
        a=sigma_t / sigma_s,
        k=(-alpha_t * phi1, alpha_t * phi2, -order3_factor * alpha_t * phi3),
        noise=0.0,
    )


def ode_noise_coefficients(h: float, alpha_s: float, alpha_t: float, sigma_t: float,
                           order3_factor: float) -> TaylorCoefficients:
    """Noise-prediction PF-ODE (DPM-Solver):

    phi1 = expm1(h), phi2 = phi1/h - 1, phi3 = phi2/h - 1/2,
    y_t = (alpha_t/alpha_s) y_s - sigma_t (phi1 D0 + phi2 D1 + 2 phi3 D2).
    """
    phi1 = math.expm1(h)
    phi2 = phi1 / h - 1.0
    phi3 = phi2 / h - 0.5
    return TaylorCoefficients(
        a=alpha_t / alpha_s,
        k=(-sigma_t * phi1, -sigma_t * phi2, -order3_factor * sigma_t * phi3),
        noise=0.0,
    )


def sde_data_coefficients(h: float, alpha_t: float, sigma_s: float, sigma_t: float,
                          order3_factor: float) -> TaylorCoefficients:
    """Data-prediction reverse SDE (SDE-DPM-Solver++), with e = 1 - exp(-2h):

    y_t = (sigma_t/sigma_s) e^{-h} y_s + alpha_t e D0 + alpha_t (1 - e/(2h)) D1
          + alpha_t (1 - 1/h + e/(2h^2)) D2 + sigma_t sqrt(e) z.
    """
    e = -math.expm1(-2.0 * h)
    k2 = 1.0 - 1.0 / h + e / (2.0 * h * h)
    return TaylorCoefficients(
        a=sigma_t / sigma_s * math.exp(-h),
        k=(alpha_t * e, alpha_t * (1.0 - e / (2.0 * h)), 0.5 * order3_factor * alpha_t * k2),
        noise=sigma_t * math.sqrt(e),
    )


def sde_noise_coefficients(h: float, alpha_s: float, alpha_t: float, sigma_t: float,
                           order3_factor: float) -> TaylorCoefficients:
    """Noise-prediction reverse SDE (SDE-DPM-Solver):

    y_t = (alpha_t/alpha_s) y_s - 2 sigma_t (phi1 D0 + phi2 D1 + 2 phi3 D2)
          + sigma_t sqrt(expm1(2h)) z,  with the phis of the noise PF-ODE.
    """
    ode = ode_noise_coefficients(h, alpha_s, alpha_t, sigma_t, order3_factor)
    return TaylorCoefficients(
        a=ode.a, k=tuple(2.0 * k for k in ode.k), noise=sigma_t * math.sqrt(math.expm1(2.0 * h))
    )


_TAYLOR = {
    ("ode", "data"): lambda h, a_s, a_t, s_s, s_t, f: ode_data_coefficients(h, a_t, s_s, s_t, f),
    ("ode", "noise"): lambda h, a_s, a_t, s_s, s_t, f: ode_noise_coefficients(h, a_s, a_t, s_t, f),
    ("sde", "data"): lambda h, a_s, a_t, s_s, s_t, f: sde_data_coefficients(h, a_t, s_s, s_t, f),
    ("sde", "noise"): lambda h, a_s, a_t, s_s, s_t, f: sde_noise_coefficients(h, a_s, a_t, s_t, f),
}


def backward_differences(order: int, r1: float = 1.0, r2: float = 1.0) -> np.ndarray:
    """Rows (D0, D1, D2) as weights on the history (D_0, D_-1, D_-2)
    (docs/math.md#exponential-integrator).

    order 2: D1 = (D0 - D_-1) / r1;
    order 3: D1_0 = (D0 - D_-1)/r1, D1_1 = (D_-1 - D_-2)/r2,
             D1 = D1_0 + (D1_0 - D1_1) r1/(r1 + r2), D2 = (D1_0 - D1_1)/(r1 + r2).
    """
    m = np.zeros((3, 3))
    m[0, 0] = 1.0
    if order == 2:
        m[1, :2] = (1.0 / r1, -1.0 / r1)
    elif order == 3:
        d1_0 = np.array([1.0, -1.0, 0.0]) / r1
        d1_1 = np.array([0.0, 1.0, -1.0]) / r2
        m[1] = d1_0 + (d1_0 - d1_1) * r1 / (r1 + r2)
        m[2] = (d1_0 - d1_1) / (r1 + r2)
    return m


def exponential_integrator_step(
    lambdas: tuple[float, ...],
    alpha_s: float,
    sigma_s: float,
    lambda_t: float,
    alpha_t: float,
    sigma_t: float,
    algorithm_type: str,
    parameterization: str,
    order3_coefficient: str = "taylor",
) -> StepCoefficients:
    """Coefficients of one MR Sampler step from s to t (docs/math.md#exponential-integrator).

    Args:
        lambdas: lambda at s, then at the previous points s1, s2 (newest first); the step's
            order is ``len(lambdas)``.
        alpha_s, sigma_s: the schedule at s.
        lambda_t, alpha_t, sigma_t: the schedule at t (sigma_t = 0 returns the data
            prediction at s, the ``final_sigmas_type="zero"`` step).
    """
    order = len(lambdas)
    if sigma_t == 0.0:
        # Limit h -> inf: the step returns the data prediction at s.
        if parameterization == "data":
            return StepCoefficients(a=0.0, weights=(1.0,))
        return StepCoefficients(a=1.0 / alpha_s, weights=(-sigma_s / alpha_s,))
    h = lambda_t - lambdas[0]
    if not h > 0:
        raise ValueError("Each step must increase lambda (move toward less noise).")
    factor = 2.0 if order3_coefficient == "taylor" else 1.0
    taylor = _TAYLOR[(algorithm_type, parameterization)](h, alpha_s, alpha_t, sigma_s, sigma_t,
                                                        factor)
    r1 = (lambdas[0] - lambdas[1]) / h if order >= 2 else 1.0
    r2 = (lambdas[1] - lambdas[2]) / h if order >= 3 else 1.0
    weights = np.asarray(taylor.k[:order]) @ backward_differences(order, r1, r2)[:order]
    return StepCoefficients(
        a=taylor.a, weights=tuple(float(w) for w in weights[:order]), noise=taylor.noise
    )
