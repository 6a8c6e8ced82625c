"""The diffusers scheduler contract, checked for the four MR schedulers.

What a diffusers pipeline or training loop relies on from any scheduler: the config survives
``save_pretrained``/``from_pretrained`` and ``from_config``; ``return_dict=False`` gives the
same sample; a seeded generator makes a run repeatable; ``scale_model_input`` and
``add_noise`` work on any device and ``add_noise`` broadcasts one time over the batch; ``step``
keeps the sample's shape and dtype (half precision included); ``step_index`` and
``set_begin_index`` behave; a scheduler's own ``timesteps`` passed back as custom timesteps give
the same schedule; step counts up to and above ``num_train_timesteps``.

Differences inherent to mean-reverting diffusion, and so expected here:

- ``step`` and ``add_noise`` take ``mu``, the mean the process reverts to (the degraded
  image); every check runs with a non-zero ``mu``, and ``mu=None`` means ``mu = 0``.
- ``scale_model_input`` is the identity: MR networks take x_t unscaled.
- The grid baselines (and the sampler's ``leading``/``trailing`` spacings) visit integer
  train times, so they offer at most T steps and refuse more with a clear error; the
  sampler's continuous spacings accept any N.
- ``pred_original_sample`` is returned by the sampler with the data parameterization only.
- MR UniPC solves the probability-flow ODE: it draws no noise, so a generator changes nothing.
"""

from __future__ import annotations

import json

import pytest
import torch

from diffusers_mrs import (
    MREulerMaruyamaScheduler,
    MRPosteriorScheduler,
    MRSamplerScheduler,
    MRUniPCScheduler,
)
from diffusers_mrs.scheduling_common import MAX_TRAIN_TIMESTEPS
from diffusers_mrs.timestep_schedules import TIMESTEP_SPACINGS

from oracles import GaussianOracle, make_gaussian_problem

SCHEDULERS = (MRSamplerScheduler, MRUniPCScheduler, MRPosteriorScheduler, MREulerMaruyamaScheduler)
T = 100  # num_train_timesteps of every config here


def network(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """A deterministic stand-in for a network that depends on x and t."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return 0.6 * torch.tanh(x) + 0.002 * t


def problem(shape=(4, 3, 8, 8), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    mu = (0.3 * torch.rand(shape, generator=g)).to(dtype)
    return x, mu


def run(sched, x, mu, seed: int | None = 0, return_dict: bool = True) -> torch.Tensor:
    g = None if seed is None else torch.Generator().manual_seed(seed)
    for t in sched.timesteps:
        out = sched.step(network(x, t).to(x.dtype), t, x, mu=mu, generator=g,
                         return_dict=return_dict)
        x = out.prev_sample if return_dict else out[0]
    return x


def fresh(cls, steps: int = 10, **config):
    sched = cls(**config)
    sched.set_timesteps(steps)
    return sched


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("cls", SCHEDULERS)
def test_save_and_load_round_trip_gives_the_same_config_and_steps(cls, tmp_path):
    config = {"prediction_type": "v_prediction", "max_sigma": 30 / 255, "eps": 0.01}
    if cls is MRSamplerScheduler:
        config.update(solver_order=3, timestep_spacing="karras", algorithm_type="sde")
    sched = cls(**config)
    sched.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path)
    saved = dict(sched.config)
    saved.pop("_use_default_values", None)
    assert dict(loaded.config) == saved
    x, mu = problem()
    sched.set_timesteps(7)
    loaded.set_timesteps(7)
    assert torch.equal(run(sched, x, mu), run(loaded, x, mu))


@pytest.mark.parametrize("cls", SCHEDULERS)
def test_from_config_round_trip_gives_the_same_scheduler(cls):
    sched = cls(num_train_timesteps=50, theta_schedule="linear", prediction_type="sample")
    again = cls.from_config(sched.config)
    assert dict(again.config) == dict(sched.config)
    x, mu = problem()
    sched.set_timesteps(6)
    again.set_timesteps(6)
    assert torch.equal(run(sched, x, mu), run(again, x, mu))


@pytest.mark.parametrize("bad", [10**9, 1e9, MAX_TRAIN_TIMESTEPS + 1])
def test_a_huge_num_train_timesteps_is_refused_before_allocating(bad, tmp_path):
    (tmp_path / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "MRSamplerScheduler", "num_train_timesteps": bad})
    )
    with pytest.raises(ValueError, match="num_train_timesteps"):
        MRSamplerScheduler.from_pretrained(tmp_path)
    for cls in SCHEDULERS:
        with pytest.raises(ValueError, match="num_train_timesteps"):
            cls(num_train_timesteps=bad)


# --------------------------------------------------------------------------- step outputs
@pytest.mark.parametrize("cls", SCHEDULERS)
def test_return_dict_false_gives_the_same_sample(cls):
    x, mu = problem()
    as_dict = run(fresh(cls), x, mu, seed=3, return_dict=True)
    as_tuple = run(fresh(cls), x, mu, seed=3, return_dict=False)
    assert torch.equal(as_dict, as_tuple)


@pytest.mark.parametrize("cls", SCHEDULERS)
def test_a_seed_repeats_a_run_bit_for_bit_and_another_seed_does_not(cls):
    x, mu = problem()
    first = run(fresh(cls), x, mu, seed=11)
    assert torch.equal(first, run(fresh(cls), x, mu, seed=11))
    other = run(fresh(cls), x, mu, seed=12)
    if cls is MRUniPCScheduler:  # the ODE draws no noise: the seed changes nothing
        assert torch.equal(first, other)
    else:
        assert not torch.equal(first, other)


@pytest.mark.parametrize("cls", SCHEDULERS)
@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (4, 3, 8, 8), (2, 3, 5, 7), (2, 4, 16)])
def test_step_keeps_the_sample_shape(cls, shape):
    sched = fresh(cls, steps=4)
    x, mu = problem(shape)
    for t in sched.timesteps:
        out = sched.step(network(x, t), t, x, mu=mu)
        assert out.prev_sample.shape == x.shape and out.prev_sample.dtype == x.dtype
        if out.pred_original_sample is not None:
            assert out.pred_original_sample.shape == x.shape
        x = out.prev_sample
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("cls", SCHEDULERS)
def test_scale_model_input_returns_the_sample_unscaled(cls):
    sched = fresh(cls)
    x, _ = problem()
    for t in (sched.timesteps[0], sched.timesteps[-1], 0.0):
        assert torch.equal(sched.scale_model_input(x, t), x)


# --------------------------------------------------------------------------- add_noise
def _devices() -> list[str]:
    devices = ["cpu", "meta"]  # meta: a non-CPU device with shapes only, on any machine
    if torch.cuda.is_available():
        devices.append("cuda")
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


@pytest.mark.parametrize("cls", SCHEDULERS)
def test_add_noise_broadcasts_one_time_over_the_batch(cls):
    sched = fresh(cls)
    x0, mu = problem()
    noise = torch.randn_like(x0)
    t = sched.timesteps[5]
    per_entry = t.expand(x0.shape[0])
    alpha = float(sched.noise_schedule.alpha(float(t)))
    sigma = float(sched.noise_schedule.sigma(float(t)))
    exact = alpha * x0 + (1 - alpha) * mu + sigma * noise  # docs/math.md#forward-process
    expected = sched.add_noise(x0, noise, per_entry, mu=mu)
    torch.testing.assert_close(expected, exact, rtol=1e-5, atol=1e-6)
    for one in (t, t[None], t.reshape(1, 1), float(t)):
        assert torch.equal(sched.add_noise(x0, noise, one, mu=mu), expected)
        assert torch.equal(sched.get_velocity(x0, noise, one, mu=mu),
                           sched.get_velocity(x0, noise, per_entry, mu=mu))
        assert torch.equal(sched.predict_original_sample(noise, one, x0, mu=mu),
                           sched.predict_original_sample(noise, per_entry, x0, mu=mu))
    with pytest.raises(ValueError, match="one per batch entry"):
        sched.add_noise(x0, noise, sched.timesteps[:2])


@pytest.mark.parametrize("cls", SCHEDULERS)
@pytest.mark.parametrize("device", _devices())
def test_add_noise_and_scale_model_input_work_on_any_device(cls, device):
    sched = fresh(cls)
    x0, mu = (v.to(device) for v in problem())
    noise = torch.randn(x0.shape).to(device)
    scaled = sched.scale_model_input(x0, sched.timesteps[5])
    noised = sched.add_noise(scaled, noise, sched.timesteps[5][None], mu=mu)
    assert noised.shape == x0.shape and noised.device == x0.device


# --------------------------------------------------------------------------- step index
@pytest.mark.parametrize("cls", SCHEDULERS)
def test_step_index_counts_steps_and_set_begin_index_starts_there(cls):
    sched = fresh(cls, steps=6)
    x, mu = problem()
    assert sched.step_index is None and sched.begin_index is None
    for k, t in enumerate(sched.timesteps[:3]):
        x = sched.step(network(x, t), t, x, mu=mu).prev_sample
        assert sched.step_index == k + 1
    # Without a begin index the first call looks its timestep up in the grid.
    sched.set_timesteps(6)
    sched.step(network(x, 0.0), sched.timesteps[2], x, mu=mu)
    assert sched.step_index == 3
    # With one, the first call starts there whatever timestep it is handed.
    sched.set_timesteps(6)
    sched.set_begin_index(4)
    assert sched.begin_index == 4
    sched.step(network(x, 0.0), 12345.0, x, mu=mu)
    assert sched.step_index == 5
    sched.set_timesteps(6)
    assert sched.step_index is None and sched.begin_index is None


# --------------------------------------------------------------------------- timesteps
def _same_schedule(a, b) -> None:
    assert torch.equal(a.timesteps, b.timesteps)
    assert a._coefficients == b._coefficients and a._conversions == b._conversions
    assert a.init_noise_sigma == b.init_noise_sigma


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
@pytest.mark.parametrize("final_sigmas_type", ["sigma_min", "zero"])
@pytest.mark.parametrize("lambda_min", [-float("inf"), -3.0])  # -3.0 clips the noisy end
def test_own_timesteps_passed_back_give_the_same_schedule(spacing, final_sigmas_type,
                                                         lambda_min):
    config = dict(timestep_spacing=spacing, final_sigmas_type=final_sigmas_type,
                  solver_order=3, lambda_min=lambda_min)
    x, mu = problem()
    most = T if lambda_min == -float("inf") else 90  # the clipped integer grid has 93 times
    for steps in (1, 2, 7, 10, 25, most):
        own = fresh(MRSamplerScheduler, steps, **config)
        custom = MRSamplerScheduler(**config)
        custom.set_timesteps(timesteps=own.timesteps)
        _same_schedule(own, custom)
        if steps == 10:
            assert torch.equal(run(own, x, mu), run(custom, x, mu))


@pytest.mark.parametrize("cls", [MRPosteriorScheduler, MREulerMaruyamaScheduler])
@pytest.mark.parametrize("step_mode", ["irsde", "jump"])
def test_baselines_own_timesteps_passed_back_give_the_same_schedule(cls, step_mode):
    for steps in (1, 5, 10, T):
        own = fresh(cls, steps, step_mode=step_mode)
        custom = cls(step_mode=step_mode)
        custom.set_timesteps(timesteps=own.timesteps)
        _same_schedule(own, custom)


@pytest.mark.parametrize("cls", SCHEDULERS)
def test_step_counts_up_to_num_train_timesteps(cls):
    sched = fresh(cls, steps=T)
    assert len(sched.timesteps) == sched.num_inference_steps == T
    assert torch.all(sched.timesteps[1:] < sched.timesteps[:-1])
    x, mu = problem((1, 3, 4, 4))
    assert torch.isfinite(run(sched, x, mu)).all()


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
def test_step_counts_above_num_train_timesteps(spacing):
    sched = MRSamplerScheduler(timestep_spacing=spacing)
    if spacing in ("leading", "trailing"):  # integer grids: at most T distinct times
        with pytest.raises(ValueError, match="num_inference_steps"):
            sched.set_timesteps(T + 1)
        return
    sched.set_timesteps(2 * T)
    assert len(sched.timesteps) == 2 * T
    assert torch.all(sched.timesteps[1:] < sched.timesteps[:-1])
    x, mu = problem((1, 3, 4, 4))
    assert torch.isfinite(run(sched, x, mu)).all()


@pytest.mark.parametrize("cls", [MRPosteriorScheduler, MREulerMaruyamaScheduler])
def test_baselines_refuse_more_steps_than_the_grid(cls):
    with pytest.raises(ValueError, match="num_inference_steps"):
        cls().set_timesteps(T + 1)


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("cls", SCHEDULERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_half_precision_outputs_near_float32(cls, dtype):
    """With the exact network of Gaussian data (tests/oracles.py) the half-precision run
    stays within its rounding of the float32 run (a toy network would amplify rounding
    by 1 / alpha_T at the noisy end)."""
    sched = cls()
    m, v, mu = make_gaussian_problem(sched.noise_schedule, (2, 3, 8, 8), dtype=torch.float32)
    oracle = GaussianOracle(sched.noise_schedule, m, v, mu, "epsilon")
    g = torch.Generator().manual_seed(1)
    x = mu + sched.init_noise_sigma * torch.randn(m.shape, generator=g)
    results = []
    for run_dtype in (torch.float32, dtype):
        sched.set_timesteps(10)
        g = torch.Generator().manual_seed(5)
        xt = x.to(run_dtype)
        for t in sched.timesteps:
            out = oracle(xt.float(), t).to(run_dtype)
            xt = sched.step(out, t, xt, mu=mu.to(run_dtype), generator=g).prev_sample
            assert xt.dtype == run_dtype
        results.append(xt)
    reference, half = results
    torch.testing.assert_close(half.float(), reference, rtol=0, atol=0.05)


def test_half_precision_with_thresholding():
    sched = fresh(MRSamplerScheduler, thresholding=True, dynamic_thresholding_ratio=0.0,
                  sample_max_value=1.0)
    x, mu = problem(dtype=torch.float16)
    out = run(sched, x, mu)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
