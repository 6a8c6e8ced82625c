"""Where the sampling noise is drawn (pipelines/noise.py, restore_settings.seeded_generator):
CPU noise drawn up front equals the per-step draws of a CPU run, draw for draw; it is drawn
once per batch of images; generators live on the sampling device by default."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import diffusers_mrs.pipelines.pipeline_mr_restoration as pipeline_module
from diffusers_mrs import MREulerMaruyamaScheduler, MRPosteriorScheduler, MRSamplerScheduler
from diffusers_mrs.pipelines.noise import noise_on_cpu, noisy_steps
from diffusers_mrs.restore_settings import seeded_generator, set_tf32, tf32_enabled, tf32_mode

from helpers import tiny_degradation_aware_pipeline, tiny_pipeline

SCHEDULERS = {
    "mrs": lambda: MRSamplerScheduler(prediction_type="sample"),
    "mrs-faithful": lambda: MRSamplerScheduler(prediction_type="sample", solver_order=2),
    "posterior": lambda: MRPosteriorScheduler(prediction_type="sample"),
    "euler": lambda: MREulerMaruyamaScheduler(prediction_type="sample"),
}


def images(n: int = 2, h: int = 20, w: int = 17) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.random((h, w, 3), dtype=np.float32) for _ in range(n)]


def generators(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_cpu_noise_drawn_up_front_equals_the_per_step_draws(name: str) -> None:
    """Same generators, per-image lists and an ensemble of 2: the noise drawn once up front
    (cpu_noise=True) gives the bit-identical images of the per-step draws."""
    pipe = tiny_pipeline()
    pipe.scheduler = SCHEDULERS[name]()
    kwargs = {"num_inference_steps": 4, "output_type": "pt", "num_samples": 2}
    per_step = pipe(images(), generator=generators(2), **kwargs)
    up_front = pipe(images(), generator=generators(2), cpu_noise=True, **kwargs)
    assert torch.equal(per_step.images, up_front.images)
    assert torch.equal(per_step.uncertainty, up_front.uncertainty)
    one = pipe(images(1), generator=torch.Generator().manual_seed(3), tile_size=12, **kwargs)
    one_up_front = pipe(images(1), generator=torch.Generator().manual_seed(3), tile_size=12,
                        cpu_noise=True, **kwargs)
    assert torch.equal(one.images, one_up_front.images)


def test_cpu_noise_with_given_latents_draws_only_the_step_noise() -> None:
    pipe = tiny_pipeline()
    latents = torch.rand(1, 3, 20, 17, generator=torch.Generator().manual_seed(9))
    kwargs = {"num_inference_steps": 3, "output_type": "pt", "latents": latents}
    per_step = pipe(images(1), generator=torch.Generator().manual_seed(1), **kwargs).images
    up_front = pipe(images(1), generator=torch.Generator().manual_seed(1), cpu_noise=True,
                    **kwargs).images
    assert torch.equal(per_step, up_front)


def test_cpu_noise_is_drawn_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two image sizes: two batches, so two up-front draws (not one per step)."""
    calls = []
    original = pipeline_module.draw_cpu_noise

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "draw_cpu_noise", counting)
    pipe = tiny_pipeline()
    mixed = [*images(2), *images(1, h=16, w=16)]
    pipe(mixed, num_inference_steps=5, generator=generators(3), cpu_noise=True, output_type="pt")
    assert calls == [(2, 3, 20, 17), (1, 3, 16, 16)]


def test_noisy_steps_follow_the_solver() -> None:
    """An ODE sampler draws no noise after x_T; the SDE samplers draw at every step whose
    noise coefficient is not zero (the up-front draws skip the others)."""
    ode = MRSamplerScheduler(algorithm_type="ode")
    ode.set_timesteps(6)
    assert noisy_steps(ode, 6) == [False] * 6
    for make in SCHEDULERS.values():
        sched = make()
        sched.set_timesteps(6)
        steps = noisy_steps(sched, len(sched.timesteps))
        assert steps[0] and len(steps) == len(sched.timesteps)
    assert noisy_steps(object(), 3) == [True, True, True]  # unknown scheduler: every step


def test_degradation_aware_cpu_noise_equals_per_step() -> None:
    pipe = tiny_degradation_aware_pipeline()
    kwargs = {"num_inference_steps": 3, "output_type": "pt", "keep_clean": False}
    per_step = pipe(images(1, 32, 32), generator=generators(1), **kwargs).images
    up_front = pipe(images(1, 32, 32), generator=generators(1), cpu_noise=True, **kwargs).images
    assert torch.equal(per_step, up_front)


def test_bad_cpu_noise_and_generator_device_are_refused_before_sampling() -> None:
    with pytest.raises(ValueError, match="cpu_noise"):
        noise_on_cpu("yes", None, torch.device("cpu"))
    on_cuda = SimpleNamespace(device=torch.device("cuda", 0))  # a CUDA generator's device
    with pytest.raises(ValueError, match="generator"):  # on another device than the sampling
        noise_on_cpu(False, on_cuda, torch.device("cpu"))
    with pytest.raises(ValueError, match="generator"):  # CPU noise from a CUDA generator
        noise_on_cpu(True, on_cuda, torch.device("cuda"))
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="cpu_noise"):
        pipe(images(1), cpu_noise=1, output_type="pt")


def test_noise_on_cpu_rule() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cpu_gen = torch.Generator()
    assert not noise_on_cpu(False, cpu_gen, cpu)  # CPU sampling: drawn per step, no copies
    assert noise_on_cpu(False, cpu_gen, cuda)  # a CPU generator on CUDA: drawn up front
    assert noise_on_cpu(False, [cpu_gen, cpu_gen], cuda)
    assert not noise_on_cpu(False, None, cuda)  # the device's own generator
    assert noise_on_cpu(True, None, cpu)


def test_seeded_generator_lives_on_the_sampling_device(device: torch.device) -> None:
    assert seeded_generator(device, 3).device.type == device.type
    assert seeded_generator(device, 3, cpu_noise=True).device.type == "cpu"
    assert seeded_generator("cpu", 3).initial_seed() == 3


def test_cpu_noise_on_the_test_device_gives_the_cpu_images(device: torch.device) -> None:
    """A CPU generator on the test device (CUDA under gpu_check.py): the images of the CPU
    run up to the device's float32 arithmetic (TF32 off)."""
    pipe = tiny_pipeline()
    kwargs = {"num_inference_steps": 4, "output_type": "pt", "num_samples": 2}
    on_cpu = pipe(images(), generator=generators(2), **kwargs).images
    pipe.to(device)
    with tf32_mode(False):
        moved = pipe(images(), generator=generators(2), **kwargs).images
    torch.testing.assert_close(moved.cpu(), on_cpu, atol=1e-4, rtol=0)


def test_tf32_is_set_explicitly_and_restored() -> None:
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with tf32_mode(True):
        assert tf32_enabled() and torch.backends.cuda.matmul.allow_tf32
        with tf32_mode(False):
            assert not tf32_enabled() and not torch.backends.cuda.matmul.allow_tf32
        assert tf32_enabled()
        set_tf32(False)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
