"""benchmarks/training_curve.py: gains read from default_model_eval's json, in order, with
bad stages named before anything is written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from helpers import benchmark_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "training_curve.py"


@pytest.fixture(scope="module")
def curve():
    with benchmark_module(SCRIPT, ("training_curve",)) as module:
        yield module


def _results(folder: Path, noise_single: float) -> Path:
    rows = {"noise": {"input": 20.0, "x0": 26.0, "single": noise_single, "posterior100": 24.0,
                      "faithful": {"single": 23.0, "mean_of_8": 25.5}},
            "clean": {"input": float("inf"), "x0": float("inf"), "single": float("inf")}}
    folder.mkdir(parents=True)
    (folder / "default_model.json").write_text(
        json.dumps({"claimed": ["noise", "clean"], "rows": rows}))
    return folder


def test_gains_over_the_input_per_stage_in_order(curve, tmp_path: Path) -> None:
    a, b = _results(tmp_path / "a", 25.0), _results(tmp_path / "b", 27.0)
    out = tmp_path / "out"
    assert curve.main(["--stage", f"first=1.5={a}", "--stage", f"second=3={b}",
                       "--out", str(out)]) == 0
    data = json.loads((out / "training_curve.json").read_text())
    assert [s["label"] for s in data["stages"]] == ["first", "second"]
    assert [s["cpu_hours"] for s in data["stages"]] == [1.5, 3.0]
    first = data["stages"][0]["gains"]
    assert list(first) == ["noise"]  # a clean input has no gain to show
    assert first["noise"] == {"x0": 6.0, "single": 5.0, "posterior100": 4.0, "mean_of_8": 5.5}
    assert data["stages"][1]["gains"]["noise"]["single"] == 7.0
    assert "| second | 3.0 | noise | +6.00 | +7.00 | +4.00 | +5.50 | +7.5 |" in (
        out / "training_curve.md").read_text()
    assert (out / "training_curve.png").stat().st_size > 0


@pytest.mark.parametrize(("stage", "message"), [
    ("no-hours", "LABEL=HOURS=DIR"), ("v=many=.", "not a number"), ("v=1=/nowhere", "no ")])
def test_bad_stages_are_named(curve, stage: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        curve.parse_stage(stage)
