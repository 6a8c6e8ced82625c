"""MRRestorationPipeline's tiling: the tile plan, the blend window, and tiled restorations
against untiled ones."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler, MRUNet2DModel
from diffusers_mrs.pipelines.tiling import (
    blend_window,
    normalize_tile_args,
    tile_starts,
    tiled_model_output,
)

from helpers import tiny_pipeline

H, W = 37, 29  # odd sizes on purpose
DEPTH = 2  # helpers.tiny_pipeline's network depth


@pytest.fixture()
def pipe() -> MRRestorationPipeline:
    return tiny_pipeline()


def image(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """A float HWC test image in [0, 1]."""
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_tile_starts_cover_the_axis() -> None:
    assert tile_starts(10, 16, 4) == [0]
    assert tile_starts(16, 16, 4) == [0]
    for length, tile, overlap in [(100, 32, 8), (37, 16, 5), (2048, 512, 128), (17, 16, 0)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] == length - tile
        assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    assert normalize_tile_args(64, None) == ((64, 64), (16, 16))
    assert normalize_tile_args((64, 32), (8, 4)) == ((64, 32), (8, 4))


def test_blend_window_is_a_partition_of_unity() -> None:
    # Two tiles of 16 overlapping by 6 on a 26-pixel axis: the weights add up to 1 everywhere.
    left = blend_window((1, 16), (0, 6), (True, True, True, False))[0, 0, 0]
    right = blend_window((1, 16), (0, 6), (True, True, False, True))[0, 0, 0]
    total = torch.zeros(26)
    total[:16] += left
    total[10:] += right
    torch.testing.assert_close(total, torch.ones(26))
    assert left.min() > 0 and right.min() > 0


def test_tiled_output_is_exact_for_pointwise_functions() -> None:
    x, mu = torch.randn(2, 3, 45, 38), torch.randn(2, 3, 45, 38)

    def fn(a, b):
        return 2 * a - b**2

    for tile, overlap in [((16, 16), (4, 4)), ((20, 13), (7, 3)), ((64, 64), (8, 8))]:
        for per_call in (1, 3, 100):
            for multiple in (1, 4, 8):
                out = tiled_model_output(fn, x, mu, tile, overlap, per_call, multiple)
                torch.testing.assert_close(out, fn(x, mu), atol=1e-5, rtol=1e-5)


def test_tiled_pads_like_the_network(pipe: MRRestorationPipeline) -> None:
    """One tile over an odd-sized image equals the untiled run: the image is padded to the
    network's multiple (2**depth = 4) exactly as the network pads it."""
    assert pipe._unet_pad_multiple() == 4
    x = image(H, W, seed=4)  # 37 x 29, not multiples of 4
    full = pipe(x, num_inference_steps=2, generator=gen(), output_type="pt").images
    one = pipe(x, num_inference_steps=2, generator=gen(), output_type="pt", tile_size=64).images
    torch.testing.assert_close(one, full, atol=1e-6, rtol=0)
    # Tiles start on the 4-pixel grid and cover the padded image.
    assert tile_starts(40, 24, 12, align=4) == [0, 12, 16]
    assert all(s % 4 == 0 for s in tile_starts(2048, 512, 100, align=8))


class PlainNetwork(torch.nn.Module):
    """A network without ``pad_multiple`` or a config: ``net(x, t, mu)`` returns a tensor."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, mu: torch.Tensor):
        return (0.5 * mu + 0.25,)


def test_pad_multiple_comes_from_the_network(pipe: MRRestorationPipeline) -> None:
    unet: MRUNet2DModel = pipe.unet
    assert unet.pad_multiple == 2**DEPTH
    plain = MRRestorationPipeline(unet=PlainNetwork(), scheduler=MRSamplerScheduler())
    assert plain._unet_pad_multiple() == 1  # no `pad_multiple`: nothing is padded
    compiled = MRRestorationPipeline(unet=torch.compile(unet), scheduler=MRSamplerScheduler())
    assert compiled._unet_pad_multiple() == unet.pad_multiple


def test_tiled_restoration_close_to_untiled(pipe: MRRestorationPipeline) -> None:
    x = image(40, 40, seed=5)
    full = pipe(x, num_inference_steps=3, generator=gen(), output_type="pt").images
    # A tile that covers the image is exactly the untiled run.
    whole = pipe(x, num_inference_steps=3, generator=gen(), output_type="pt", tile_size=64).images
    assert torch.equal(full, whole)
    # 2 x 2 tiles of 24 overlapping by 12, all four in one network call per step.
    tiled = pipe(
        x,
        num_inference_steps=3,
        generator=gen(),
        output_type="pt",
        tile_size=24,
        tile_overlap=12,
        tile_batch_size=4,
    ).images
    diff = tiled - full
    psnr = 10 * math.log10(1 / float((diff**2).mean()))
    relative = float(diff.norm() / (full - full.mean()).norm())
    assert psnr > 45, f"tiled vs untiled PSNR {psnr:.1f} dB"
    assert relative < 0.05, f"tiled vs untiled relative difference {relative:.3f}"


def test_tiled_batches_and_mixed_sizes(pipe: MRRestorationPipeline) -> None:
    a, b, c = image(24, 24, seed=1), image(24, 24, seed=2), image(20, 30, seed=3)
    kwargs = {"num_inference_steps": 1, "tile_size": 16, "tile_overlap": 4, "tile_batch_size": 16}
    out = pipe([a, b, c], generator=[gen(1), gen(2), gen(3)], output_type="np", **kwargs).images
    assert [o.shape for o in out] == [(24, 24, 3), (24, 24, 3), (20, 30, 3)]
    alone = pipe([c], generator=[gen(3)], output_type="np", **kwargs).images
    np.testing.assert_allclose(out[2], alone[0], atol=1e-5)
