"""benchmarks/default_model_eval.py's low-light range: the settings reach the degradation,
and the brightness ratio and PSNR are those of what the pipeline returns."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import benchmark_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "default_model_eval.py"


@pytest.fixture(scope="module")
def evaluation():
    with benchmark_module(SCRIPT, ("default_model_eval", "example_images")) as module:
        yield module


class IdentityPipeline:
    """Returns its input unchanged and detects every image as low light."""

    def __init__(self) -> None:
        def encoder(images: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(probabilities=torch.tensor([[0.0, 1.0]]).expand(len(images), 2))

        encoder.dtype = torch.float32
        encoder.degradations = ["noise", "lowlight"]
        self.degradation_encoder = encoder

    def __call__(self, image: torch.Tensor, **kwargs) -> SimpleNamespace:
        return SimpleNamespace(images=image.clone())


def test_crops_follow_the_given_lowlight_parameters(evaluation):
    """Each setting's input is gain * clean**gamma plus noise of the given std."""
    for params in evaluation.LOWLIGHT_RANGE:
        lq, gt = evaluation.held_out_crops("lowlight", 1, 32, 0, params)
        dark = params["gain"] * gt ** params["gamma"]
        residual = lq - dark
        inside = dark > 0.05  # away from the clipping at 0
        assert residual[inside].mean().abs() < 1e-3
        assert residual[inside].std() == pytest.approx(params["std"], rel=0.15)


def test_lowlight_range_measures_what_the_pipeline_returns(evaluation):
    """An identity 'restoration' keeps the input's PSNR and its darkness: the ratio is
    mean(input) / mean(clean), below 1 and rising with the gain."""
    args = SimpleNamespace(crops=1, crop=32, seed=0, steps=2)
    rows = evaluation.lowlight_range(IdentityPipeline(), args)
    assert [r["gain"] for r in rows] == [p["gain"] for p in evaluation.LOWLIGHT_RANGE]
    for row, params in zip(rows, evaluation.LOWLIGHT_RANGE, strict=True):
        lq, gt = evaluation.held_out_crops("lowlight", 1, 32, 0, params)
        assert row["single"] == pytest.approx(row["input"])
        assert row["detected_lowlight"] == 1.0
        expected = (lq.mean((1, 2, 3)) / gt.mean((1, 2, 3))).median().item()
        assert row["brightness_ratio"] == pytest.approx(expected, rel=1e-6)
    ratios = [r["brightness_ratio"] for r in rows]
    assert ratios == sorted(ratios) and ratios[-1] < 1.0
    assert np.isfinite([r["input"] for r in rows]).all()


def test_ensemble_target_is_checked_on_the_faithful_sampler(evaluation):
    """The mean-of-K target uses the faithful sampler's own one sample and mean; the
    default sampler's numbers are reported beside them, not checked."""
    def row(single: float, mean: float) -> dict[str, float]:
        return {"input": 20.0, "single": single, "mean_of_8": mean, "error_over_std": 1.1}

    result = {"claimed": ["noise"], "rows": {
        "noise": {**row(27.0, 27.2), "detected": {"noise": 1.0}, "faithful": row(25.0, 26.5)},
        "clean": {**row(float("inf"), float("inf")), "detected": {"clean": 1.0}},
    }}
    checks = {name: (value, met) for name, value, _, met in evaluation.check_targets(result, 8)}
    value, met = checks["noise: mean of 8 over one sample, faithful sampler (dB)"]
    assert value == pytest.approx(1.5) and met
    table = "\n".join(evaluation.ensemble_table(result, 8))
    assert "| noise | default | 27.00 | 27.20 | +0.20 | 1.10 |" in table
    assert "| noise | faithful | 25.00 | 26.50 | +1.50 | 1.10 |" in table


def test_scheduler_overrides_are_undone(evaluation):
    from diffusers_mrs import MRSamplerScheduler

    pipe = SimpleNamespace(scheduler=MRSamplerScheduler(solver_order=1, max_sigma=0.1))
    original = pipe.scheduler
    with evaluation.scheduler_overrides(pipe, **evaluation.FAITHFUL_SAMPLER) as faithful:
        assert faithful.scheduler.config.solver_order == 2
        assert faithful.scheduler.config.max_sigma == 0.1
    assert pipe.scheduler is original
