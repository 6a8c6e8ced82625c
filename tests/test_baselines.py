"""The baselines (docs/math.md#baselines): posterior sampling and Euler-Maruyama, faithful to
the IR-SDE code by default and correctly jumping on request."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusers_mrs import MREulerMaruyamaScheduler, MRPosteriorScheduler, MRSamplerScheduler

from oracles import GaussianOracle, make_gaussian_problem, run_sampler


@pytest.mark.parametrize("cls", [MRPosteriorScheduler, MREulerMaruyamaScheduler])
def test_visits_irsde_times(cls):
    sched = cls()
    sched.set_timesteps(10)
    expected = np.linspace(1, 100, 10).astype(int)[::-1]
    assert sched.timesteps.tolist() == expected.tolist()
    assert sched.init_noise_sigma == pytest.approx(float(sched.noise_schedule.sigma(100)))


def test_posterior_step_is_the_gaussian_posterior():
    """One faithful step at t: the IR-SDE posterior mean and std with A = e^{-dt theta_t}."""
    sched = MRPosteriorScheduler(prediction_type="sample")
    sched.set_timesteps(4)
    ns = sched.noise_schedule
    t = int(sched.timesteps[0])
    A = math.exp(-ns.dt * ns.thetas[t])
    B, C = float(ns.alpha(t)), float(ns.alpha(t - 1))
    x, mu, x0 = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    z = torch.randn(1, 3, 4, 4)
    mean = mu + A * (1 - C**2) / (1 - B**2) * (x - mu) + C * (1 - A**2) / (1 - B**2) * (x0 - mu)
    std = sched.config.max_sigma * math.sqrt((1 - A**2) * (1 - C**2) / (1 - B**2))
    out = sched.step(x0, t, x, mu=mu, variance_noise=z).prev_sample
    torch.testing.assert_close(out, mean + std * z)


def test_euler_maruyama_step_is_the_reverse_sde_discretised():
    sched = MREulerMaruyamaScheduler(prediction_type="epsilon")
    sched.set_timesteps(100)
    ns = sched.noise_schedule
    t = 37
    sched.set_begin_index(100 - t)
    x, mu, eps, z = (torch.rand(1, 3, 4, 4) for _ in range(4))
    theta, dt, ms = ns.thetas[t], ns.dt, sched.config.max_sigma
    g = math.sqrt(2 * ms**2 * theta)
    score = -eps / float(ns.sigma(t))
    expected = x - (theta * (mu - x) - g**2 * score) * dt + g * math.sqrt(dt) * z
    out = sched.step(eps, t, x, mu=mu, variance_noise=z).prev_sample
    torch.testing.assert_close(out, expected)


def test_jumping_posterior_is_the_first_order_data_sde():
    """docs/math.md#baselines: a posterior jump from t to s is the first-order data SDE step."""
    times = [100, 80, 55, 30, 12, 3]
    post = MRPosteriorScheduler(step_mode="jump", prediction_type="epsilon")
    mrs = MRSamplerScheduler(
        algorithm_type="sde", parameterization="data", solver_order=1, prediction_type="epsilon"
    )
    post.set_timesteps(timesteps=times)
    mrs.set_timesteps(timesteps=times)
    m, v, mu = make_gaussian_problem(mrs.noise_schedule)
    oracle = GaussianOracle(mrs.noise_schedule, m, v, mu, "epsilon")
    noise = torch.randn(len(times), *m.shape, dtype=torch.float64)
    x = mu + 0.2 * torch.randn(m.shape, dtype=torch.float64)
    a = run_sampler(post, oracle, x, mu, noise=lambda i: noise[i])
    b = run_sampler(mrs, oracle, x, mu, noise=lambda i: noise[i])
    torch.testing.assert_close(a, b)


def residual_error(cls, n: int, step_mode: str) -> float:
    sched = cls(step_mode=step_mode, prediction_type="epsilon")
    sched.set_timesteps(n)
    shape = (1, 1, 64, 64)
    m = torch.full(shape, 0.4, dtype=torch.float64)
    v = torch.full(shape, 1e-6, dtype=torch.float64)  # nearly deterministic data
    mu = torch.full(shape, 0.6, dtype=torch.float64)
    oracle = GaussianOracle(sched.noise_schedule, m, v, mu, "epsilon")
    g = torch.Generator().manual_seed(0)
    x = mu + sched.init_noise_sigma * torch.randn(shape, generator=g, dtype=torch.float64)
    return float((run_sampler(sched, oracle, x, mu, generator=g) - m).abs().mean())


@pytest.mark.parametrize("cls", [MRPosteriorScheduler, MREulerMaruyamaScheduler])
def test_faithful_baselines_collapse_at_low_nfe(cls):
    """At 10 steps the one-grid-step updates leave the noise in (10x the NFE-100 error);
    jumping between the visited times does better; at NFE = T both modes coincide."""
    full = residual_error(cls, 100, "irsde")
    assert full == pytest.approx(residual_error(cls, 100, "jump"), rel=1e-9)
    faithful, jumping = residual_error(cls, 10, "irsde"), residual_error(cls, 10, "jump")
    assert faithful > 10 * full
    assert jumping < faithful


def test_jumping_posterior_keeps_its_quality_at_low_nfe():
    assert residual_error(MRPosteriorScheduler, 10, "jump") < 1.5 * residual_error(
        MRPosteriorScheduler, 100, "jump"
    )
