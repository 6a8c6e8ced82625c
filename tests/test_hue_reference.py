"""benchmarks/hue_reference.py: the hue angles of the truth and of a model against the
degraded input, on synthetic tensors (no photograph is read, no model restores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import benchmark_module

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SIBLINGS = ("hue_reference", "held_out_crops", "real_photo_metrics", "_common", "recorded")


@pytest.fixture(scope="module")
def bench():
    with benchmark_module(BENCH / "hue_reference.py", SIBLINGS) as module:
        yield module


def flat_crops(colour: tuple[float, float, float], n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.tensor(colour).view(1, 3, 1, 1).expand(n, 3, size, size).clone()


def test_a_darkened_copy_keeps_hues_and_sensor_noise_turns_them(bench):
    clean = flat_crops((0.6, 0.45, 0.3))
    dark = 0.2 * clean
    still = bench.angle_stats(clean, dark)
    assert max(still.values()) < 1e-4
    noisy = dark + torch.randn(dark.shape, generator=torch.Generator().manual_seed(0)) * 4 / 255
    turned = bench.angle_stats(clean, noisy)
    assert turned["median"] > 5 * turned["median_low_pass"]
    assert turned["p90"] >= turned["median"]


def test_the_table_has_the_truth_and_the_model_where_measured(bench):
    stats = {"median": 12.0, "p90": 40.0, "median_low_pass": 2.8, "p90_low_pass": 5.7}
    rows = [{"setting": "nominal", "input_psnr": 10.75, "truth": stats,
             "model": {**stats, "psnr": 15.2}},
            {"setting": "darkest and noisiest", "input_psnr": 9.8, "truth": stats}]
    meta = {"model": "m", "model_name": "v9", "steps": 10, "crops": 2, "crop": 128,
            "command": "python benchmarks/hue_reference.py --model m", "seconds": 60.0}
    text = bench.markdown({"meta": meta, "rows": rows})
    assert "of one sample of v9 (10 steps" in text
    assert ("| nominal | 10.75 | 12.00 / 40.00 | 2.80 / 5.70 | 12.00 / 40.00 | 2.80 / 5.70 |"
            " 15.20 |") in text
    assert "| darkest and noisiest | 9.80 | 12.00 / 40.00 | 2.80 / 5.70 | - | - | - |" in text
    truth_only = bench.markdown({"meta": {**meta, "model": None, "model_name": None},
                                 "rows": rows[1:]})
    assert "one sample" not in truth_only


@pytest.mark.parametrize("argv, message", [(["--crops", "0"], "--crops"),
                                           (["--crop", "8"], "--crop")])
def test_bad_settings_are_refused_before_anything_loads(bench, argv, message):
    with pytest.raises(SystemExit, match=message):
        bench.check_args(bench.build_parser().parse_args(argv))


def test_every_fixed_setting_has_every_low_light_parameter(bench):
    names = {"gain", "gamma", "color_gain", "shot_noise", "read_std"}
    fixed = [p for p in bench.SETTINGS.values() if p is not None]
    assert fixed and all(set(p) == names for p in fixed)
    assert None in bench.SETTINGS.values()


def test_a_missing_photo_cache_stops_it_before_any_model_loads(bench, tmp_path):
    with pytest.raises(SystemExit, match="error:"):
        bench.main(["--photos", str(tmp_path / "none"), "--model", str(tmp_path / "no-model"),
                    "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
