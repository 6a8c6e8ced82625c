"""``diffusers-mrs restore --samples K``: the ensemble mean and its uncertainty map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_mrs import MRRestorationPipeline
from diffusers_mrs.cli import main
from diffusers_mrs.uncertainty_map import LEGEND_HEIGHT, MIN_LEGEND_WIDTH, uncertainty_map

from helpers import fresh_accelerate_state, save_tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("model"))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield from fresh_accelerate_state()


def test_samples_writes_the_mean_and_the_std_map(model_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    common = ["--model", str(model_dir), "--steps", "2", "--seed", "0", "--quiet"]
    args = ["restore", str(tmp_path / "a.png"), "-o", str(out), "--samples", "3"]
    assert main([*args, *common]) == 0
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # no manifest
    assert visible == ["a.png", "a.std.png"]
    assert Image.open(out / "a.png").size == (24, 20)
    assert Image.open(out / "a.std.png").size == (MIN_LEGEND_WIDTH, 20 + LEGEND_HEIGHT)

    # The mean equals the pipeline's own ensemble with the same seed.
    pipe = MRRestorationPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(Image.open(tmp_path / "a.png"), num_inference_steps=2, num_samples=3,
                    generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), np.asarray(expected))


def test_solver_order_sets_the_samplers_order(model_dir: Path, tmp_path: Path) -> None:
    """``--solver-order 1`` restores as the pipeline does with a first-order MR Sampler,
    which differs from the model's own (second-order) one."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "a.png"), "-o", str(out), "--samples", "2",
                 "--solver-order", "1", "--model", str(model_dir), "--steps", "3", "--seed",
                 "0", "--quiet"]) == 0
    pipe = MRRestorationPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.solver_order == 2

    def mean_of_two(p: MRRestorationPipeline) -> np.ndarray:
        return np.asarray(p(Image.open(tmp_path / "a.png"), num_inference_steps=3, num_samples=2,
                            generator=torch.Generator().manual_seed(0)).images[0])

    own_order = mean_of_two(pipe)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, solver_order=1)
    written = np.asarray(Image.open(out / "a.png"))
    assert np.array_equal(written, mean_of_two(pipe))
    assert not np.array_equal(written, own_order)


def test_samples_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["restore", str(tmp_path), "-o", str(tmp_path / "o"), "--samples", "0"])


def test_std_map_colours_follow_the_std() -> None:
    """Zero std gets the colour map's low end, the largest std its high end."""
    std = np.zeros((8, 400, 3))
    std[:, 200:] = 0.1
    img = np.asarray(uncertainty_map(std))
    from matplotlib import colormaps

    lo, hi = (np.round(np.array(colormaps["magma"](x)[:3]) * 255) for x in (0.0, 1.0))
    assert np.abs(img[4, 10].astype(float) - lo).max() <= 1
    assert np.abs(img[4, 390].astype(float) - hi).max() <= 1
    assert img.shape == (8 + LEGEND_HEIGHT, 400, 3)
