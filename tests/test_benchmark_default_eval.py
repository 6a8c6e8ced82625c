"""benchmarks/default_model_eval.py and its crops (benchmarks/held_out_crops.py): the crops
of the held-out photos, the low-light range, the methods' wiring and the targets; on
made-up photos and a stand-in pipeline, so nothing is fetched or restored."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import benchmark_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "default_model_eval.py"
SIBLINGS = ("default_model_eval", "example_images", "held_out_crops", "nfe_plan")


@pytest.fixture(scope="module")
def evaluation():
    with benchmark_module(SCRIPT, SIBLINGS) as module:
        yield module


@pytest.fixture(scope="module")
def crops():
    with benchmark_module(SCRIPT.with_name("held_out_crops.py"), SIBLINGS) as module:
        yield module


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Two smooth made-up 'photos' (gradients), so that blur and noise are measurable."""
    y, x = np.mgrid[0:96, 0:120] / 120.0
    first = np.stack([x, y, 0.5 * (x + y)], axis=-1)
    second = np.stack([1 - x, 0.3 + 0.5 * y, x * y], axis=-1)
    return {f"p/{i}": (255 * im).astype(np.uint8) for i, im in enumerate((first, second))}


class IdentityPipeline:
    """Returns its input unchanged (no spread) and detects every image as ``detected``."""

    def __init__(self, detected: str = "lowlight") -> None:
        from diffusers_mrs import MRSamplerScheduler

        names = ["noise", "lowlight", "clean"]

        def encoder(images: torch.Tensor) -> SimpleNamespace:
            probabilities = torch.zeros(len(images), len(names))
            probabilities[:, names.index(detected)] = 1.0
            return SimpleNamespace(probabilities=probabilities)

        encoder.dtype = torch.float32
        encoder.degradations = names
        self.degradation_encoder = encoder
        self.scheduler = MRSamplerScheduler(max_sigma=0.1)
        self.steps: list[tuple[str, int]] = []

    def __call__(self, image: torch.Tensor, num_inference_steps: int, num_samples: int = 1,
                 **kwargs) -> SimpleNamespace:
        self.steps.append((type(self.scheduler).__name__, num_inference_steps))
        return SimpleNamespace(images=image.clone(), uncertainty=torch.zeros_like(image))


def test_photo_crops_share_positions_across_kinds_and_are_fixed_by_the_seed(crops, photos):
    _, clean = crops.photo_crops(photos, "clean", 2, 32, seed=3)
    for kind in ("noise", "lowlight", "blur", "jpeg"):
        lq, gt = crops.photo_crops(photos, kind, 2, 32, seed=3)
        assert lq.shape == gt.shape == (4, 3, 32, 32)
        assert torch.equal(gt, clean)
        assert not torch.equal(lq, gt)
        again, _ = crops.photo_crops(photos, kind, 2, 32, seed=3)
        assert torch.equal(lq, again)
    other, _ = crops.photo_crops(photos, "clean", 2, 32, seed=4)
    assert not torch.equal(other, clean)
    lq, gt = crops.photo_crops(photos, "clean", 2, 32, seed=3)
    assert torch.equal(lq, gt)


def test_photo_crops_refuse_bad_input_before_work(crops, photos):
    with pytest.raises(ValueError, match="unknown kind"):
        crops.photo_crops(photos, "rain", 1, 32, 0)
    with pytest.raises(ValueError, match="smaller than"):
        crops.photo_crops(photos, "noise", 1, 90, 0)


def test_lowlight_settings_reach_the_degradation(evaluation, crops, photos):
    """Each setting's input is ``gain * clean ** gamma`` plus unbiased noise: the mean of
    the residual is small where the dark image is away from the clipping at 0.
    (8-bit rounding and the noise average out over the pixels.)"""
    for params in evaluation.LOWLIGHT_RANGE:
        lq, gt = crops.photo_crops(photos, "lowlight", 2, 48, 0, params)
        dark = params["gain"] * gt ** params["gamma"]
        inside = dark > 0.03
        assert inside.sum() > 100
        assert (lq - dark)[inside].mean().abs() < 2e-3


def test_lowlight_range_measures_what_the_pipeline_returns(evaluation, crops, photos):
    """An identity 'restoration' keeps the input's PSNR and its darkness: the ratio is
    mean(input) / mean(clean), rising with the exposure."""
    args = SimpleNamespace(crops=1, crop=32, seed=0, steps=2)
    rows = evaluation.lowlight_range(IdentityPipeline(), photos, args)
    assert [r["gain"] for r in rows] == [p["gain"] for p in evaluation.LOWLIGHT_RANGE]
    for row, params in zip(rows, evaluation.LOWLIGHT_RANGE, strict=True):
        lq, gt = crops.photo_crops(photos, "lowlight", 1, 32, 0, params)
        assert row["single"] == pytest.approx(row["input"])
        assert row["detected_lowlight"] == 1.0
        expected = (lq.mean((1, 2, 3)) / gt.mean((1, 2, 3))).median().item()
        assert row["brightness_ratio"] == pytest.approx(expected, rel=1e-6)
    ratios = [r["brightness_ratio"] for r in rows]
    assert ratios == sorted(ratios)


def test_quality_runs_each_method_at_its_steps_and_restores_the_scheduler(evaluation, photos):
    """x0 estimate: 1 step of the MR Sampler; posterior: 100 steps of MRPosteriorScheduler;
    then one sample at ``steps`` with the pipeline's own scheduler; an ensemble is one
    sample and one call with ``num_samples=K``."""
    pipe = IdentityPipeline()
    original = pipe.scheduler
    lq = torch.rand(2, 3, 16, 16)
    gt = (lq + 0.01).clamp(0, 1)
    row = evaluation.quality(pipe, lq, gt, steps=10)
    assert pipe.steps == [("MRSamplerScheduler", 1), ("MRPosteriorScheduler", 100),
                          ("MRSamplerScheduler", 10)]
    assert pipe.scheduler is original
    for key in ("x0", "posterior100", "single"):
        assert row[key] == pytest.approx(row["input"])
    ensemble = evaluation.ensemble(pipe, lq, gt, steps=10, k=4)
    assert ensemble["single"] == ensemble["mean_of_4"] == pytest.approx(row["input"])
    assert ensemble["error_over_std"] is None  # no spread


def test_targets_use_issue_25_thresholds_and_the_faithful_ensemble(evaluation):
    def row(single: float, mean: float) -> dict[str, float]:
        return {"input": 20.0, "x0": 26.0, "posterior100": 24.0, "single": single,
                "mean_of_8": mean, "error_over_std": 1.1, "claimed": True}

    result = {"claimed": ["noise", "lowlight"], "rows": {
        "noise": {**row(27.4, 27.6), "detected": {"noise": 1.0}, "faithful": row(25.0, 26.5),
                  "default_ensemble": row(27.4, 27.6)},
        "lowlight": {**row(33.5, 33.6), "detected": {"lowlight": 0.9, "clean": 0.1},
                     "faithful": row(30.0, 30.5)},
        "clean": {**row(float("inf"), float("inf")), "detected": {"clean": 1.0}},
    }}
    checks = {name: (value, threshold, met)
              for name, value, threshold, met in evaluation.check_targets(result, 8)}
    assert checks["noise: one sample over its input (dB)"] == (pytest.approx(7.4), 7.5, False)
    assert checks["lowlight: one sample over its input (dB)"] == (pytest.approx(13.5), 13.0,
                                                                  True)
    value, _, met = checks["noise: mean of 8 over one sample, faithful sampler (dB)"]
    assert value == pytest.approx(1.5) and met
    assert not checks["lowlight: mean of 8 over one sample, faithful sampler (dB)"][2]
    value, _, met = checks["detection accuracy, claimed types and clean"]
    assert value == pytest.approx(29 / 30) and met
    table = "\n".join(evaluation.quality_table({**result, "meta": {"steps": 10}}))
    assert "| noise | yes | 20.00 | 26.00 | 27.40 | 24.00 | 26.50 | noise 100% |" in table
    assert "| clean | yes | 20.00 | 26.00 | inf | 24.00 | - | clean 100% |" in table
    ensembles = "\n".join(evaluation.ensemble_table(result, 8))
    assert "| noise | default | 27.40 | 27.60 | +0.20 | 1.10 |" in ensembles
    assert "| noise | faithful | 25.00 | 26.50 | +1.50 | 1.10 |" in ensembles
    assert "| lowlight | faithful | 30.00 | 30.50 | +0.50 | 1.10 |" in ensembles
    assert "| lowlight | default" not in ensembles


def test_scheduler_overrides_are_undone(evaluation):
    from diffusers_mrs import MRPosteriorScheduler, MRSamplerScheduler

    pipe = SimpleNamespace(scheduler=MRSamplerScheduler(solver_order=1, max_sigma=0.1))
    original = pipe.scheduler
    with evaluation.scheduler_overrides(pipe, **evaluation.FAITHFUL_SAMPLER) as faithful:
        assert faithful.scheduler.config.solver_order == 2
        assert faithful.scheduler.config.max_sigma == 0.1
    with evaluation.scheduler_overrides(pipe, evaluation.POSTERIOR) as posterior:
        assert isinstance(posterior.scheduler, MRPosteriorScheduler)
        assert posterior.scheduler.config.max_sigma == 0.1
    assert pipe.scheduler is original


def test_bad_settings_fail_before_loading(evaluation):
    for argv in (["--crops", "0"], ["--samples", "1"], ["--crop", "8"]):
        with pytest.raises(SystemExit, match="must be"):
            evaluation.check_args(evaluation.build_parser().parse_args(argv))
