"""MRSamplerScheduler as a diffusers scheduler: every option combination, dtypes,
reproducibility, config round trips, clear errors and a sync-free step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffusers_mrs import MREulerMaruyamaScheduler, MRPosteriorScheduler, MRSamplerScheduler

from oracles import GaussianOracle, make_gaussian_problem, run_sampler

SPACINGS = ("linspace", "leading", "trailing", "karras", "karras_time", "logsnr")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
#: NFE 1..100: all of the low counts, where things break, and a spread above.
NFES = (*range(1, 13), 15, 17, 20, 25, 30, 40, 50, 64, 75, 99, 100)


@pytest.mark.parametrize(
    ("algorithm_type", "parameterization", "order"),
    list(itertools.product(("sde", "ode"), ("data", "noise"), (1, 2, 3))),
)
def test_every_combination_is_finite_at_nfe_1_to_100(algorithm_type, parameterization, order):
    for spacing, prediction_type in itertools.product(SPACINGS, PREDICTIONS):
        sched = MRSamplerScheduler(
            algorithm_type=algorithm_type,
            parameterization=parameterization,
            solver_order=order,
            timestep_spacing=spacing,
            prediction_type=prediction_type,
        )
        m, v, mu = make_gaussian_problem(sched.noise_schedule, shape=(1, 1, 2, 2))
        oracle = GaussianOracle(sched.noise_schedule, m, v, mu, prediction_type)
        g = torch.Generator().manual_seed(0)
        for n in NFES:
            sched.set_timesteps(n)
            assert len(sched.timesteps) == n
            assert torch.all(sched.timesteps[1:] < sched.timesteps[:-1])
            x = mu + sched.init_noise_sigma * torch.randn(m.shape, generator=g, dtype=torch.float64)
            out = run_sampler(sched, oracle, x, mu, generator=g)
            assert torch.isfinite(out).all(), (spacing, prediction_type, n)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "scheduler_cls", [MRSamplerScheduler, MRPosteriorScheduler, MREulerMaruyamaScheduler]
)
def test_half_precision_stays_finite_and_keeps_its_dtype(dtype, scheduler_cls):
    sched = scheduler_cls(prediction_type="v_prediction")
    m, v, mu = make_gaussian_problem(
        sched.noise_schedule, shape=(2, 3, 16, 16), dtype=torch.float32
    )
    oracle = GaussianOracle(sched.noise_schedule, m, v, mu, "v_prediction")
    for n in (1, 5, 10, 50):
        sched.set_timesteps(n)
        x = (mu + sched.init_noise_sigma * torch.randn_like(mu)).to(dtype)
        for t in sched.timesteps:
            out = oracle(x.float(), t).to(dtype)
            x = sched.step(out, t, x, mu=mu.to(dtype)).prev_sample
            assert x.dtype == dtype
        assert torch.isfinite(x).all()
        assert (x.float() - oracle.m).abs().mean() < 0.3


def sample_once(seed: int | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    sched = MRSamplerScheduler()
    sched.set_timesteps(6)
    m, v, mu = make_gaussian_problem(sched.noise_schedule, dtype=torch.float32)
    oracle = GaussianOracle(sched.noise_schedule, m, v, mu, "epsilon")
    g = None if seed is None else torch.Generator().manual_seed(seed)
    x = mu + sched.init_noise_sigma
    return run_sampler(
        sched, oracle, x, mu, generator=g, noise=None if noise is None else (lambda i: noise[i])
    )


def test_generator_makes_runs_reproducible():
    torch.testing.assert_close(sample_once(seed=1), sample_once(seed=1), rtol=0, atol=0)
    assert not torch.equal(sample_once(seed=1), sample_once(seed=2))


def test_variance_noise_is_honoured():
    noise = torch.randn(6, 1, 3, 8, 8)
    first = sample_once(seed=1, noise=noise)
    torch.testing.assert_close(first, sample_once(seed=2, noise=noise), rtol=0, atol=0)
    assert not torch.equal(first, sample_once(seed=1, noise=torch.randn(6, 1, 3, 8, 8)))


def test_save_and_from_pretrained_round_trip(tmp_path):
    sched = MRSamplerScheduler(
        algorithm_type="ode",
        solver_order=3,
        timestep_spacing="karras",
        prediction_type="v_prediction",
        max_sigma=30 / 255,
    )
    sched.save_pretrained(tmp_path)
    loaded = MRSamplerScheduler.from_pretrained(tmp_path)
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(sched.config)


def test_trained_thetas_round_trip(tmp_path):
    thetas = [0.1 + 0.01 * i for i in range(11)]
    sched = MRSamplerScheduler(num_train_timesteps=10, trained_thetas=thetas)
    sched.save_pretrained(tmp_path)
    loaded = MRSamplerScheduler.from_pretrained(tmp_path)
    assert list(loaded.config.trained_thetas) == pytest.approx(thetas)
    assert loaded.noise_schedule.lambda_(5.5) == pytest.approx(sched.noise_schedule.lambda_(5.5))


@pytest.mark.parametrize(
    "source", [MRSamplerScheduler, MRPosteriorScheduler, MREulerMaruyamaScheduler]
)
@pytest.mark.parametrize(
    "target", [MRSamplerScheduler, MRPosteriorScheduler, MREulerMaruyamaScheduler]
)
def test_from_config_swaps_keep_the_schedule(source, target):
    shared = dict(
        num_train_timesteps=50,
        theta_schedule="linear",
        max_sigma=0.1,
        eps=0.01,
        prediction_type="sample",
    )
    swapped = target.from_config(source(**shared).config)
    assert isinstance(swapped, target)
    assert {k: swapped.config[k] for k in shared} == shared
    assert target in source().compatibles


def test_thresholding_bounds_the_data_prediction():
    sched = MRSamplerScheduler(thresholding=True, sample_max_value=1.0, prediction_type="sample")
    sched.set_timesteps(3)
    x = torch.zeros(1, 3, 4, 4)
    out = sched.step(torch.full_like(x, 5.0), sched.timesteps[0], x, mu=None)
    assert out.pred_original_sample.abs().max() <= 1.0


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm_type": "dpmsolver++"}, "algorithm_type"),
        ({"parameterization": "score"}, "parameterization"),
        ({"prediction_type": "flow"}, "prediction_type"),
        ({"timestep_spacing": "cosine"}, "timestep_spacing"),
        ({"theta_schedule": "sigmoid"}, "theta_schedule"),
        ({"final_sigmas_type": "one"}, "final_sigmas_type"),
        ({"solver_order": 4}, "solver_order"),
        ({"thresholding": True, "parameterization": "noise"}, "thresholding"),
        ({"trained_thetas": [0.1, 0.2]}, "trained_thetas"),
        ({"eps": 1.5}, "eps"),
        ({"max_sigma": 0.0}, "max_sigma"),
    ],
)
def test_invalid_config_is_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MRSamplerScheduler(**kwargs)


def test_impossible_step_counts_are_refused():
    sched = MRSamplerScheduler()
    with pytest.raises(ValueError, match="num_inference_steps"):
        sched.set_timesteps(0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        MRSamplerScheduler(timestep_spacing="leading").set_timesteps(101)
    with pytest.raises(ValueError, match="num_inference_steps"):
        MRPosteriorScheduler().set_timesteps(101)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sched.set_timesteps(timesteps=[50.0, 60.0])
    with pytest.raises(ValueError, match=r"\[0, num_train_timesteps"):
        sched.set_timesteps(timesteps=[150.0, 60.0])
    with pytest.raises(ValueError, match="exactly one"):
        sched.set_timesteps()


def test_wrong_mu_shape_is_refused():
    sched = MRSamplerScheduler()
    sched.set_timesteps(4)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="mu must have the shape"):
        sched.step(x, sched.timesteps[0], x, mu=torch.zeros(1, 3, 8, 9))


def test_step_before_set_timesteps_and_past_the_end_are_refused():
    sched = MRSamplerScheduler()
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(x, 100, x)
    sched.set_timesteps(1)
    sched.step(x, sched.timesteps[0], x)
    with pytest.raises(ValueError, match="set_timesteps again"):
        sched.step(x, sched.timesteps[0], x)


# --------------------------------------------------------------------------- speed hygiene
SYNCING = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.nonzero,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
}


class SyncRecorder(torch.overrides.TorchFunctionMode):
    """Records tensor methods that read values back to the host."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCING or getattr(func, "__name__", "") in ("item", "tolist", "nonzero"):
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "scheduler",
    [
        MRSamplerScheduler(solver_order=3),
        MRSamplerScheduler(algorithm_type="ode", thresholding=True),
        MRPosteriorScheduler(),
        MREulerMaruyamaScheduler(step_mode="jump"),
    ],
)
def test_step_reads_nothing_back_from_the_device(scheduler):
    scheduler.set_timesteps(8)
    scheduler.set_begin_index(0)
    x, mu = torch.randn(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    with SyncRecorder() as rec:
        for t in scheduler.timesteps:
            x = scheduler.step(torch.tanh(x), t, x, mu=mu).prev_sample
    assert rec.calls == []


def _inductor_unavailable() -> str | None:
    """Why torch.compile's default (inductor) backend cannot generate code here, or None."""
    try:
        torch.compile(lambda v: v * 2.0 + 1.0)(torch.ones(3))
    except Exception as err:  # a missing or broken C++ toolchain surfaces here
        return f"torch.compile (inductor) cannot build code on this machine: {err!r}"[:300]
    return None


def test_step_loop_under_torch_compile_equals_eager():
    """The scheduler step compiled by the default inductor backend (generated code, one
    recompile per step for its coefficients) gives the eager result to float32 round-off."""
    reason = _inductor_unavailable()
    if reason is not None:
        pytest.skip(reason)
    sched = MRSamplerScheduler(solver_order=2, prediction_type="v_prediction")
    eager = MRSamplerScheduler(solver_order=2, prediction_type="v_prediction")
    for s in (sched, eager):
        s.set_timesteps(3)
        s.set_begin_index(0)
    compiled = torch.compile(sched.step)
    g = torch.Generator().manual_seed(0)
    x, mu = torch.randn(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    noise = torch.randn(3, 1, 3, 8, 8, generator=g)
    xc = xe = x
    for i, t in enumerate(sched.timesteps):
        xc = compiled(torch.tanh(xc), t, xc, mu=mu, variance_noise=noise[i]).prev_sample
        xe = eager.step(torch.tanh(xe), t, xe, mu=mu, variance_noise=noise[i]).prev_sample
    torch.testing.assert_close(xc, xe, rtol=1e-5, atol=1e-6)
    assert not torch.equal(xe, x) and math.isfinite(float(xc.abs().max()))
