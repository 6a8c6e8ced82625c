"""The tile plan (pipelines/tiling.py): everything fixed per image is computed once per
image, not per step, without changing the result; with a compiled network the last tile
batch is padded to the full batch, so every network call has one shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffusers_mrs.pipelines.pipeline_mr_restoration as pipeline_module
from diffusers_mrs import MRRestorationPipeline
from diffusers_mrs.pipelines.tiling import plan_tiles, tiled_model_output
from diffusers_mrs.restore_settings import tf32_mode

from helpers import tiny_pipeline


def conv_fn(seed: int = 0, device: torch.device | str = "cpu"):
    """A nonlinear function of ``(x, mu)`` with a 3x3 receptive field: tiles disagree
    near their borders, so the blend matters."""
    weight = torch.randn(3, 6, 3, 3, generator=torch.Generator().manual_seed(seed)).to(device)

    def fn(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.nn.functional.conv2d(torch.cat([x, mu], 1), weight, padding=1))

    return fn


@pytest.mark.parametrize("multiple", [1, 4])
def test_a_plan_applied_per_step_equals_tiling_from_scratch(
    multiple: int, device: torch.device
) -> None:
    """One plan (padded mu, mu tiles, windows, weight sum) applied to several states gives
    exactly what planning afresh for every state gives."""
    mu = torch.rand(2, 3, 45, 38, generator=torch.Generator().manual_seed(1)).to(device)
    plan = plan_tiles(mu, (16, 16), (4, 4), 3, multiple, "reflect")
    fn = conv_fn(device=device)
    for step in range(3):
        x = torch.randn(2, 3, 45, 38, generator=torch.Generator().manual_seed(10 + step))
        x = x.to(device)
        fresh = tiled_model_output(fn, x, mu, (16, 16), (4, 4), 3, multiple, "reflect")
        assert torch.equal(plan.apply(fn, x), fresh)


def test_padded_last_batch_gives_one_shape_and_the_same_result() -> None:
    mu = torch.rand(1, 3, 45, 38, generator=torch.Generator().manual_seed(2))
    x = torch.randn(1, 3, 45, 38, generator=torch.Generator().manual_seed(3))
    shapes: list[tuple[int, ...]] = []
    fn = conv_fn()

    def recording(xt: torch.Tensor, mt: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(xt.shape))
        return fn(xt, mt)

    padded = plan_tiles(mu, (16, 16), (4, 4), 5, pad_last_batch=True)
    unpadded = plan_tiles(mu, (16, 16), (4, 4), 5)
    assert [len(c.starts) for c in unpadded.batches] == [5, 5, 2]  # 12 tiles, 5 per call
    out = padded.apply(recording, x)
    assert shapes == [(5, 3, 16, 16)] * 3
    torch.testing.assert_close(out, unpadded.apply(fn, x), atol=1e-6, rtol=0)


def test_one_plan_per_image_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiling plans once per batch of same-size images, whatever the step count."""
    planned: list[tuple[int, ...]] = []
    original = pipeline_module.plan_tiles

    def counting(mu: torch.Tensor, *args, **kwargs):
        planned.append(tuple(mu.shape))
        return original(mu, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "plan_tiles", counting)
    pipe = tiny_pipeline()
    rng = np.random.default_rng(0)
    imgs = [rng.random((24, 20, 3), dtype=np.float32) for _ in range(2)]
    imgs.append(rng.random((16, 28, 3), dtype=np.float32))
    pipe(imgs, num_inference_steps=5, tile_size=12, output_type="pt")
    assert planned == [(2, 3, 24, 20), (1, 3, 16, 28)]


def test_compiled_pipeline_pads_the_last_tile_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a compiled network (faked here: compiling is slow on a CPU), every network call
    of a tiled restoration has one batch shape and the images are unchanged."""
    pipe = tiny_pipeline()
    image = np.random.default_rng(1).random((30, 26, 3), dtype=np.float32)
    kwargs = {"num_inference_steps": 2, "tile_size": 12, "tile_batch_size": 5,
              "output_type": "pt"}
    eager = pipe(image, generator=torch.Generator().manual_seed(0), **kwargs).images
    shapes: set[tuple[int, ...]] = set()
    handle = pipe.unet.register_forward_pre_hook(lambda m, args: shapes.add(tuple(args[0].shape)))
    monkeypatch.setattr(MRRestorationPipeline, "is_compiled", property(lambda self: True))
    padded = pipe(image, generator=torch.Generator().manual_seed(0), **kwargs).images
    handle.remove()
    assert shapes == {(5, 3, 12, 12)}  # 12 tiles: calls of 5, 5 and 2 padded to 5
    torch.testing.assert_close(padded, eager, atol=1e-6, rtol=0)


def test_tiled_restoration_on_the_device_matches_the_cpu(device: torch.device) -> None:
    """Tiles, a padded network multiple and an ensemble on the test device (CUDA under
    gpu_check.py, TF32 off) against the CPU, with the CPU's noise."""
    pipe = tiny_pipeline()
    image = np.random.default_rng(2).random((30, 26, 3), dtype=np.float32)
    kwargs = {"num_inference_steps": 3, "tile_size": 12, "tile_batch_size": 5,
              "num_samples": 2, "output_type": "pt"}
    on_cpu = pipe(image, generator=torch.Generator().manual_seed(0), **kwargs).images
    pipe.to(device)
    with tf32_mode(False):
        moved = pipe(image, generator=torch.Generator().manual_seed(0), cpu_noise=True,
                     **kwargs).images
    torch.testing.assert_close(moved.cpu(), on_cpu, atol=1e-4, rtol=0)
