"""The step coefficients of diffusers_mrs.solver, as specifications
(docs/math.md#exponential-integrator)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from diffusers_mrs.solver import (
    backward_differences,
    exponential_integrator_step,
    ode_data_coefficients,
    ode_noise_coefficients,
    sde_data_coefficients,
    sde_noise_coefficients,
)

H = [0.05, 0.3, 1.0, 2.5]


def kernel_moments(kernel, h: float) -> tuple[float, float, float]:
    """Coefficients on D0, D1 = h f', D2 = h^2 f''/2 of int_0^h kernel(u) f(u) du for
    f(u) = f0 + u f' + u^2 f''/2: (int k, int k u / h, int k u^2 / h^2)."""
    return tuple(
        quad(lambda u, j=j: kernel(u) * u**j, 0, h, epsabs=1e-14, epsrel=1e-12)[0] / h**j
        for j in range(3)
    )


@pytest.mark.parametrize("h", H)
def test_taylor_coefficients_are_the_kernel_integrals(h):
    a_s, a_t, s_s, s_t = 0.3, 0.6, 0.4, 0.2
    cases = {
        # data ODE: y_t = (s_t/s_s) y_s + a_t int_0^h e^{-(h-u)} x0(u) du
        "ode-data": (ode_data_coefficients(h, a_t, s_s, s_t, 2.0), lambda u: a_t * math.exp(u - h)),
        # noise ODE: y_t = (a_t/a_s) y_s - s_t int_0^h e^{h-u} eps(u) du
        "ode-noise": (
            ode_noise_coefficients(h, a_s, a_t, s_t, 2.0),
            lambda u: -s_t * math.exp(h - u),
        ),
        # data SDE: kernel 2 a_t e^{-2(h-u)}
        "sde-data": (
            sde_data_coefficients(h, a_t, s_s, s_t, 2.0),
            lambda u: 2 * a_t * math.exp(2 * (u - h)),
        ),
        # noise SDE: kernel -2 s_t e^{h-u}
        "sde-noise": (
            sde_noise_coefficients(h, a_s, a_t, s_t, 2.0),
            lambda u: -2 * s_t * math.exp(h - u),
        ),
    }
    for name, (coef, kernel) in cases.items():
        expected = kernel_moments(kernel, h)
        np.testing.assert_allclose(coef.k, expected, rtol=1e-7, atol=1e-12, err_msg=name)


def test_dpm_solver_3m_coefficient_is_half_the_taylor_one():
    taylor = ode_data_coefficients(0.7, 0.5, 0.4, 0.3, 2.0)
    dpm = ode_data_coefficients(0.7, 0.5, 0.4, 0.3, 1.0)
    assert dpm.k[:2] == taylor.k[:2]
    assert dpm.k[2] == pytest.approx(taylor.k[2] / 2)


@pytest.mark.parametrize("order", [2, 3])
def test_backward_differences_recover_derivatives_of_a_quadratic(order):
    """On f(u) = 1 + 2u + 3u^2 sampled at 0, -r1 h, -(r1 + r2) h: D1 = h f'(0) (exact for
    order 3, first-order accurate for order 2) and D2 = h^2 f''/2."""
    h, r1, r2 = 0.1, 0.8, 1.3
    f = lambda u: 1 + 2 * u + 3 * u**2  # noqa: E731
    hist = np.array([f(0.0), f(-r1 * h), f(-(r1 + r2) * h)])
    d = backward_differences(order, r1, r2) @ hist
    if order == 3:
        np.testing.assert_allclose(d, [1.0, 2 * h, 3 * h * h], rtol=1e-12)
    else:
        assert d[1] == pytest.approx(2 * h, abs=3 * r1 * h * h + 1e-12)


def test_step_to_sigma_zero_returns_the_data_prediction():
    data = exponential_integrator_step((1.0,), 0.8, 0.3, math.inf, 1.0, 0.0, "sde", "data")
    assert (data.a, data.weights, data.noise) == (0.0, (1.0,), 0.0)
    noise = exponential_integrator_step((1.0,), 0.8, 0.3, math.inf, 1.0, 0.0, "ode", "noise")
    assert noise.a == pytest.approx(1 / 0.8) and noise.weights[0] == pytest.approx(-0.3 / 0.8)


def test_step_must_reduce_noise():
    with pytest.raises(ValueError, match="increase lambda"):
        exponential_integrator_step((1.0,), 0.8, 0.3, 0.5, 0.7, 0.4, "ode", "data")
