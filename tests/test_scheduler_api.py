"""MRSamplerScheduler as a diffusers scheduler: every option combination, dtypes,
reproducibility, config round trips, clear errors, a sync-free and eager step, noise from
other devices and thresholding of large images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from diffusers_mrs import MREulerMaruyamaScheduler, MRPosteriorScheduler, MRSamplerScheduler
from diffusers_mrs.scheduling_common import draw_noise
from diffusers_mrs.thresholding import per_sample_quantile

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


SYNC_CHECKED = [
    MRSamplerScheduler(solver_order=3),
    MRSamplerScheduler(algorithm_type="ode", thresholding=True),
    MRSamplerScheduler(thresholding=True),
    MRPosteriorScheduler(),
    MREulerMaruyamaScheduler(step_mode="jump"),
]


@pytest.mark.parametrize("scheduler", SYNC_CHECKED)
@pytest.mark.parametrize("seeded", [False, True])
def test_step_reads_nothing_back_from_the_device(scheduler, seeded):
    """No read-back with no generator or with a generator on the sample's device: the
    noise is drawn where the sample lives."""
    scheduler.set_timesteps(8)
    scheduler.set_begin_index(0)
    x, mu = torch.randn(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    g = torch.Generator(device=x.device).manual_seed(0) if seeded else None
    with SyncRecorder() as rec:
        for t in scheduler.timesteps:
            x = scheduler.step(torch.tanh(x), t, x, mu=mu, generator=g).prev_sample
    assert rec.calls == []


# --------------------------------------------------------------------------- devices
@pytest.mark.parametrize(
    "scheduler_cls", [MRSamplerScheduler, MRPosteriorScheduler, MREulerMaruyamaScheduler]
)
class DeviceMixWatch(torch.overrides.TorchFunctionMode):
    """Records ops whose tensor arguments live on more than one device (what fails on a
    real accelerator, e.g. ``cuda_tensor.add_(cpu_tensor)``; ``meta`` kernels let it pass)."""

    def __init__(self):
        super().__init__()
        self.mixed: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in (*args, *(kwargs or {}).values())
                   if isinstance(a, torch.Tensor) and a.ndim > 0]
        if len({a.device for a in tensors}) > 1 and getattr(func, "__name__", "") != "to":
            self.mixed.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "scheduler_cls", [MRSamplerScheduler, MRPosteriorScheduler, MREulerMaruyamaScheduler]
)
def test_noise_from_another_device_is_moved_to_the_sample(scheduler_cls):
    """``variance_noise`` or a generator on the CPU with a sample elsewhere (``meta``
    stands in for an accelerator): the noise is moved to the sample's device before any
    arithmetic, and the result stays there."""
    sched = scheduler_cls()
    x = torch.zeros(2, 3, 4, 4, device="meta")
    for noise in ({"variance_noise": torch.randn(2, 3, 4, 4)},
                  {"generator": torch.Generator().manual_seed(0)}):
        sched.set_timesteps(3)
        sched.set_begin_index(0)
        with DeviceMixWatch() as watch:
            for t in sched.timesteps:
                x = sched.step(x * 0.5, t, x, mu=torch.zeros_like(x), **noise).prev_sample
        assert watch.mixed == []
        assert x.device.type == "meta" and x.shape == (2, 3, 4, 4)


def test_a_cpu_generator_draws_the_same_noise_for_any_sample_device():
    """The documented seed behaviour: a CPU generator's stream does not depend on where
    the sample lives; no generator or a device generator draws on the sample's device."""
    expected = torch.randn(2, 3, generator=torch.Generator().manual_seed(4))
    got = draw_noise((2, 3), torch.Generator().manual_seed(4), torch.device("cpu"), torch.float32)
    assert torch.equal(got, expected)
    on_meta = draw_noise((2, 3), torch.Generator().manual_seed(4), torch.device("meta"),
                         torch.float32)
    assert on_meta.device.type == "meta"
    assert draw_noise((2, 3), None, torch.device("meta"), torch.float16).dtype == torch.float16


# --------------------------------------------------------------------------- thresholding
def test_per_sample_quantile_is_the_linear_interpolation_quantile():
    g = torch.Generator().manual_seed(0)
    for shape in ((3, 1), (3, 2), (2, 97), (4, 1000)):
        flat = torch.randn(shape, generator=g).abs()
        for q in (0.0, 0.5, 0.87, 0.995, 1.0):
            ours = per_sample_quantile(flat, q)
            exact = torch.from_numpy(np.quantile(flat.double().numpy(), q, axis=1)).float()
            torch.testing.assert_close(ours, exact, rtol=2e-7, atol=0)  # float32 lerp
            # torch.quantile places the rank in float32: agreement to its round-off.
            torch.testing.assert_close(ours, torch.quantile(flat, q, dim=1), rtol=1e-5, atol=0)


def test_thresholding_works_above_two_to_the_24_elements_per_sample():
    """torch.quantile refuses more than 2^24 elements; 3 x 2400 x 2400 is 17.3 M. The
    data prediction is clipped at s = clamp(quantile(|x0|, ratio), 1, sample_max_value)
    and divided by s, with the quantile from numpy in float64 as the reference."""
    ratio, max_value = 0.995, 2.0
    sched = MRSamplerScheduler(thresholding=True, dynamic_thresholding_ratio=ratio,
                               sample_max_value=max_value, prediction_type="sample")
    sched.set_timesteps(3)
    x0 = 0.6 * torch.randn(1, 3, 2400, 2400, generator=torch.Generator().manual_seed(0))
    assert x0.numel() > 2**24
    out = sched.step(x0, sched.timesteps[0], torch.zeros_like(x0)).pred_original_sample
    s = min(max(float(np.quantile(x0.abs().double().numpy(), ratio)), 1.0), max_value)
    assert 1.0 < s < max_value
    torch.testing.assert_close(out, x0.clamp(-s, s) / s, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- eager step
@pytest.mark.parametrize(
    "scheduler_cls", [MRSamplerScheduler, MRPosteriorScheduler, MREulerMaruyamaScheduler]
)
def test_step_is_eager_inside_compiled_code(scheduler_cls):
    """``step`` is never traced: compiled code calling it compiles the same frames
    whatever the step index (no guard on ``_step_index``, no graph per step), and gives
    the eager result."""
    from torch._dynamo.testing import CompileCounter

    def denoise_and_step(sched, x, t, mu, noise):
        out = torch.tanh(x) * 0.9
        return sched.step(out, t, x, mu=mu, variance_noise=noise).prev_sample

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(denoise_and_step, backend=counter)
    g = torch.Generator().manual_seed(0)
    x, mu = torch.randn(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    noise = torch.randn(6, 1, 3, 8, 8, generator=g)
    sched, eager = scheduler_cls(), scheduler_cls()
    for s in (sched, eager):
        s.set_timesteps(6)
        s.set_begin_index(0)
    xc = xe = x
    frames = []
    for i, t in enumerate(sched.timesteps):
        xc = compiled(sched, xc, t, mu, noise[i])
        xe = denoise_and_step(eager, xe, t, mu, noise[i])
        frames.append(counter.frame_count)
    torch._dynamo.reset()
    assert frames[1] == frames[-1], frames
    torch.testing.assert_close(xc, xe, rtol=1e-6, atol=1e-7)
