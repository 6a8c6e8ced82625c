"""No host sync in the pipeline's per-step loop: with a generator (one, or one per image),
with CPU noise drawn up front, with tiling, with ensembles and with a degradation-aware
model, the sampling loop (``denoise``) reads nothing back from the device. On CUDA
(``MRS_TEST_DEVICE=cuda``, benchmarks/gpu_check.py) CUDA's own sync reports count too."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from diffusers_mrs import MRPosteriorScheduler, MRSamplerScheduler
from diffusers_mrs.host_sync import HostSyncRecorder, recorded_calls
from diffusers_mrs.restore_settings import seeded_generator

from helpers import tiny_degradation_aware_pipeline, tiny_pipeline

CASES: dict[str, dict[str, Any]] = {
    "device generator": {"generator": "device"},
    "generator per image, ensemble of 3": {"generator": "per image", "num_samples": 3},
    "cpu noise drawn up front": {"generator": "cpu", "cpu_noise": True},
    "tiling": {"generator": "device", "tile_size": 12, "tile_batch_size": 3},
    "tiling, ensemble, cpu noise": {"generator": "cpu", "cpu_noise": True, "tile_size": 12,
                                    "num_samples": 2},
    "no generator": {},
}


def generator_for(kind: str | None, device: torch.device, n: int) -> Any:
    if kind == "device":
        return seeded_generator(device, 0)
    if kind == "cpu":
        return torch.Generator().manual_seed(0)
    if kind == "per image":
        return [seeded_generator(device, i) for i in range(n)]
    return None


def images(n: int, h: int = 24, w: int = 20) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((h, w, 3), dtype=np.float32) for _ in range(n)]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("scheduler", ["mrs", "posterior"])
def test_sampling_loop_reads_nothing_back(case: str, scheduler: str, device: torch.device) -> None:
    settings = dict(CASES[case])
    pipe = tiny_pipeline().to(device)
    if scheduler == "posterior":
        pipe.scheduler = MRPosteriorScheduler.from_config(pipe.scheduler.config)
    generator = generator_for(settings.pop("generator", None), device, 2)
    with recorded_calls(pipe, "denoise", cuda=device.type == "cuda") as loops:
        pipe(images(2), num_inference_steps=4, generator=generator, output_type="pt", **settings)
    assert loops == [[]]


def test_degradation_aware_loop_reads_nothing_back(device: torch.device) -> None:
    pipe = tiny_degradation_aware_pipeline().to(device)
    with recorded_calls(pipe, "denoise", cuda=device.type == "cuda") as loops:
        pipe(images(2, 32, 32), num_inference_steps=3, generator=seeded_generator(device, 0),
             output_type="pt", keep_clean=False, tile_size=16)
    assert loops == [[]]


def test_recorder_sees_read_backs(device: torch.device) -> None:
    """The recorder itself: a loop with ``.item()`` per step is caught."""
    x = torch.ones(3, device=device)
    with HostSyncRecorder(cuda=device.type == "cuda") as rec:
        for _ in range(2):
            x = x * 2
            float(x.sum().item())
    assert rec.calls[:2] == ["item", "item"] or rec.calls.count("item") == 2
    sched = MRSamplerScheduler()
    sched.set_timesteps(3)
    sched.set_begin_index(0)
    with HostSyncRecorder(cuda=device.type == "cuda") as rec:
        for t in sched.timesteps:
            x = sched.step(torch.zeros(1, 3, 4, 4, device=device), t,
                           torch.ones(1, 3, 4, 4, device=device)).prev_sample
    assert rec.calls == []
