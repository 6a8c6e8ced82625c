"""MRUniPCScheduler as a diffusers scheduler: config round trips, swaps with the MR family,
dtypes, clear errors, a sync-free step and a pipeline run."""

from __future__ import annotations

import pytest
import torch
from test_scheduler_api import SyncRecorder

from diffusers_mrs import MRPosteriorScheduler, MRSamplerScheduler, MRUniPCScheduler

from helpers import tiny_pipeline
from oracles import GaussianOracle, make_gaussian_problem, run_sampler

public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731


def test_save_and_from_pretrained_round_trip(tmp_path):
    sched = MRUniPCScheduler(
        solver_order=3,
        solver_type="bh1",
        parameterization="noise",
        disable_corrector=[0, 2],
        timestep_spacing="karras",
        prediction_type="v_prediction",
        max_sigma=30 / 255,
    )
    sched.save_pretrained(tmp_path)
    loaded = MRUniPCScheduler.from_pretrained(tmp_path)
    assert public(loaded.config) == public(sched.config)


@pytest.mark.parametrize("source", [MRSamplerScheduler, MRPosteriorScheduler])
def test_from_config_swaps_keep_the_schedule(source):
    shared = dict(num_train_timesteps=50, theta_schedule="linear", max_sigma=0.1, eps=0.01,
                  prediction_type="sample")
    unipc = MRUniPCScheduler.from_config(source(**shared).config)
    assert {k: unipc.config[k] for k in shared} == shared
    back = source.from_config(unipc.config)
    assert {k: back.config[k] for k in shared} == shared
    assert MRSamplerScheduler in unipc.compatibles and MRUniPCScheduler in unipc.compatibles


def test_shares_the_mr_samplers_time_grid():
    """Same config names, same grid: the two differ only in the update."""
    for spacing in ("logsnr", "karras", "trailing"):
        mrs = MRSamplerScheduler(timestep_spacing=spacing, algorithm_type="ode")
        unipc = MRUniPCScheduler.from_config(mrs.config)
        mrs.set_timesteps(7)
        unipc.set_timesteps(7)
        torch.testing.assert_close(unipc.timesteps, mrs.timesteps, rtol=0, atol=0)
        assert unipc.init_noise_sigma == mrs.init_noise_sigma


def test_order_1_without_corrector_is_the_first_order_mr_sampler():
    """UniP-1 is DDIM / DPM-Solver-1 (docs/math.md#mr-unipc)."""
    outs = []
    for sched in (MRUniPCScheduler(solver_order=1, disable_corrector=list(range(6))),
                  MRSamplerScheduler(solver_order=1, algorithm_type="ode")):
        sched.set_timesteps(6)
        m, v, mu = make_gaussian_problem(sched.noise_schedule)
        oracle = GaussianOracle(sched.noise_schedule, m, v, mu, "epsilon")
        x = mu + sched.init_noise_sigma * torch.ones_like(mu)
        outs.append(run_sampler(sched, oracle, x, mu))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("order", [1, 3])
def test_half_precision_stays_finite_and_keeps_its_dtype(dtype, order):
    sched = MRUniPCScheduler(prediction_type="v_prediction", solver_order=order)
    m, v, mu = make_gaussian_problem(sched.noise_schedule, shape=(2, 3, 16, 16),
                                     dtype=torch.float32)
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


@pytest.mark.parametrize(
    "scheduler",
    [
        MRUniPCScheduler(solver_order=3),
        MRUniPCScheduler(solver_order=2, parameterization="noise", solver_type="bh1"),
        MRUniPCScheduler(thresholding=True, disable_corrector=[2]),
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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"solver_type": "bh3"}, "solver_type"),
        ({"parameterization": "score"}, "parameterization"),
        ({"prediction_type": "flow"}, "prediction_type"),
        ({"timestep_spacing": "cosine"}, "timestep_spacing"),
        ({"final_sigmas_type": "one"}, "final_sigmas_type"),
        ({"solver_order": 4}, "solver_order"),
        ({"disable_corrector": [1.5]}, "disable_corrector"),
        ({"disable_corrector": 3}, "disable_corrector"),
        ({"thresholding": True, "parameterization": "noise"}, "thresholding"),
        ({"max_sigma": 0.0}, "max_sigma"),
    ],
)
def test_invalid_config_is_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MRUniPCScheduler(**kwargs)


def test_step_before_set_timesteps_and_past_the_end_are_refused():
    sched = MRUniPCScheduler()
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(x, 100, x)
    with pytest.raises(ValueError, match="exactly one"):
        sched.set_timesteps()
    sched.set_timesteps(1)
    sched.step(x, sched.timesteps[0], x)
    with pytest.raises(ValueError, match="set_timesteps again"):
        sched.step(x, sched.timesteps[0], x)


def test_restarting_forgets_the_previous_run():
    """``set_timesteps`` clears the history: a second run equals the first."""
    sched = MRUniPCScheduler(solver_order=3)
    x0, mu = torch.randn(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    outs = []
    for _ in range(2):
        sched.set_timesteps(5)
        x = x0
        for t in sched.timesteps:
            x = sched.step(torch.tanh(x), t, x, mu=mu).prev_sample
        outs.append(x)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_drops_into_the_restoration_pipeline():
    """The pipeline runs with the scheduler swapped in; ODE: the same seed gives the same
    image, and it differs from the MR Sampler's."""
    pipe = tiny_pipeline()
    mrs_config = pipe.scheduler.config
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    images = {}
    for name, sched in (("unipc", MRUniPCScheduler.from_config(mrs_config)),
                        ("mrs", MRSamplerScheduler.from_config(mrs_config))):
        pipe.scheduler = sched
        images[name] = pipe(image=lq, num_inference_steps=5, output_type="pt",
                            generator=torch.Generator().manual_seed(1)).images
    pipe.scheduler = MRUniPCScheduler.from_config(mrs_config)
    again = pipe(image=lq, num_inference_steps=5, output_type="pt",
                 generator=torch.Generator().manual_seed(1)).images
    torch.testing.assert_close(again, images["unipc"], rtol=0, atol=0)
    assert torch.isfinite(images["unipc"]).all()
    assert (images["unipc"] - images["mrs"]).abs().amax() > 1e-4
