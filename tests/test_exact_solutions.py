"""The MR Sampler against exact solutions of Gaussian data (docs/math.md#gaussian-ground-truth),
float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers_mrs import MRSamplerScheduler

from oracles import GaussianOracle, make_gaussian_problem, run_sampler

NFES = (20, 30, 40, 60, 80, 100)


def logsnr_times(scheduler: MRSamplerScheduler, n: int) -> np.ndarray:
    """N model times uniform in lambda, ending (after the last step) at t = 0."""
    sched = scheduler.noise_schedule
    T = scheduler.config.num_train_timesteps
    lambdas = np.linspace(sched.lambda_(T), sched.lambda_(0.0), n + 1)
    times = sched.t_from_lambda(lambdas)
    times[0] = T
    return times[:-1]


def ode_error(
    n: int,
    order: int,
    parameterization: str,
    prediction_type: str,
    order3_coefficient: str = "taylor",
) -> float:
    sched = MRSamplerScheduler(
        algorithm_type="ode",
        parameterization=parameterization,
        solver_order=order,
        prediction_type=prediction_type,
        order3_coefficient=order3_coefficient,
    )
    times = logsnr_times(sched, n)
    sched.set_timesteps(timesteps=times)
    m, v, mu = make_gaussian_problem(sched.noise_schedule)
    oracle = GaussianOracle(sched.noise_schedule, m, v, mu, prediction_type, times)
    T = sched.config.num_train_timesteps
    y_T = (
        0.05 * torch.randn(m.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        + sched.init_noise_sigma
    )
    x = run_sampler(sched, oracle, y_T + mu, mu)
    exact = oracle.ode_solution(y_T, T, 0.0) + mu
    return float((x - exact).abs().max())


#: The SDE means leave their pre-asymptotic regime later (noise parameterization).
SDE_NFES = (80, 160, 320, 640)


def slope(errors: list[float], nfes: tuple[int, ...] = NFES) -> float:
    """Convergence order: -d log(error) / d log(NFE), least squares."""
    return float(-np.polyfit(np.log(nfes), np.log(errors), 1)[0])


@pytest.mark.parametrize("parameterization", ["data", "noise"])
@pytest.mark.parametrize(("order", "min_slope"), [(1, 0.9), (2, 1.8), (3, 2.7)])
def test_ode_converges_at_its_order(parameterization, order, min_slope):
    errors = [ode_error(n, order, parameterization, "sample") for n in NFES]
    assert errors[-1] < errors[0]
    assert slope(errors) >= min_slope, errors


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_prediction_types_solve_the_same_ode(prediction_type):
    """The network's output type changes nothing when the network is exact."""
    ref = ode_error(30, 2, "data", "sample")
    assert ode_error(30, 2, "data", prediction_type) == pytest.approx(ref, rel=1e-6, abs=1e-12)


def test_dpm_solver_3m_coefficient_is_only_second_order():
    """docs/math.md#order-3: phi3 * D2 converges at order 2, the Taylor 2 * phi3 * D2 at 3."""
    dpm = slope([ode_error(n, 3, "data", "sample", "dpm_solver") for n in NFES])
    taylor = slope([ode_error(n, 3, "data", "sample", "taylor") for n in NFES])
    assert dpm < 2.5 < 2.7 <= taylor


def sde_mean_error(n: int, order: int, parameterization: str) -> float:
    """With z = 0 the scheme gives its conditional mean given y_T; the exact one is the
    forward process's E[y_t | y_T] at the final time t = 0."""
    sched = MRSamplerScheduler(
        algorithm_type="sde",
        parameterization=parameterization,
        solver_order=order,
        prediction_type="sample",
    )
    times = logsnr_times(sched, n)
    sched.set_timesteps(timesteps=times)
    m, v, mu = make_gaussian_problem(sched.noise_schedule)
    oracle = GaussianOracle(sched.noise_schedule, m, v, mu, "sample", times)
    y_T = sched.init_noise_sigma * torch.randn(
        m.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    x = run_sampler(sched, oracle, y_T + mu, mu, noise=lambda i: torch.zeros_like(m))
    return float(
        (x - mu - oracle.posterior_mean(y_T, sched.config.num_train_timesteps)).abs().max()
    )


@pytest.mark.parametrize("order", [1, 2, 3])
def test_sde_mean_is_exact_with_data_parameterization(order):
    """The data SDE step from s to t is the posterior q(y_t | y_s, y0) with y0 = D0
    (docs/math.md#baselines); along the mean path the exact data prediction is constant (a
    martingale), so the scheme's conditional mean is exact at any NFE."""
    assert max(sde_mean_error(n, order, "data") for n in (5, 20, 100)) < 1e-12


@pytest.mark.parametrize(("order", "min_slope"), [(1, 0.9), (2, 1.8), (3, 1.8)])
def test_sde_mean_converges_with_noise_parameterization(order, min_slope):
    """Global weak order; order 3 is capped at 2 by its first-order warm-up step (the local
    order of the third-order coefficient itself is checked in test_solver.py)."""
    errors = [sde_mean_error(n, order, "noise") for n in SDE_NFES]
    assert slope(errors, SDE_NFES) >= min_slope, errors


@pytest.mark.parametrize("parameterization", ["data", "noise"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_sde_samples_reach_the_data_distribution(parameterization, order):
    """From the exact prior, SDE samples end with the data's mean and variance."""
    mean_gaps, var_gaps = [], []
    for n in (10, 50, 250):
        sched = MRSamplerScheduler(
            algorithm_type="sde",
            parameterization=parameterization,
            solver_order=order,
            prediction_type="epsilon",
        )
        sched.set_timesteps(n)
        shape = (1, 1, 200, 250)
        m = torch.full(shape, 0.4, dtype=torch.float64)
        v = torch.full(shape, 0.02, dtype=torch.float64)
        mu = torch.full(shape, 0.55, dtype=torch.float64)
        oracle = GaussianOracle(sched.noise_schedule, m, v, mu, "epsilon")
        g = torch.Generator().manual_seed(3)
        T = sched.config.num_train_timesteps
        a, s = float(sched.noise_schedule.alpha(T)), float(sched.noise_schedule.sigma(T))
        y_T = a * (m - mu) + (a * a * 0.02 + s * s) ** 0.5 * torch.randn(
            shape, generator=g, dtype=torch.float64
        )
        x = run_sampler(sched, oracle, y_T + mu, mu, generator=g)
        mean_gaps.append(abs(float(x.mean()) - 0.4))
        var_gaps.append(abs(float(x.var()) / 0.02 - 1.0))
    assert mean_gaps[-1] < 2e-3, mean_gaps
    assert var_gaps[-1] < 0.06, var_gaps
    assert var_gaps[-1] < var_gaps[0], var_gaps


def test_final_sigma_zero_returns_the_data_prediction():
    sched = MRSamplerScheduler(
        algorithm_type="ode", final_sigmas_type="zero", prediction_type="sample"
    )
    sched.set_timesteps(5)
    m, v, mu = make_gaussian_problem(sched.noise_schedule)
    oracle = GaussianOracle(sched.noise_schedule, m, v, mu, "sample")
    x = mu + sched.init_noise_sigma * torch.randn(m.shape, dtype=torch.float64)
    for t in sched.timesteps[:-1]:
        x = sched.step(oracle(x, t), t, x, mu=mu).prev_sample
    t = sched.timesteps[-1]
    out = sched.step(oracle(x, t), t, x, mu=mu).prev_sample
    torch.testing.assert_close(out, oracle.data_prediction(x, t))
