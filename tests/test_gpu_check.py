"""benchmarks/gpu_check.py runs end to end here: every part on the CPU at tiny sizes
(``--cpu-smoke``), and without CUDA the real check skips each part with a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import benchmark_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    with pytest.MonkeyPatch.context() as patch:  # bench_restore sets TQDM_DISABLE: undone
        patch.setenv("TQDM_DISABLE", "1")
        siblings = ("bench_restore", "original_code", "_common", "restore_measure",
                    "restore_networks", "restore_original_loops", "restore_report",
                    "restore_runners")
        with benchmark_module(SCRIPT, siblings) as module:
            yield module


def test_cpu_smoke_runs_every_part(gpu_check, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkout"
    report = gpu_check.main(["--cpu-smoke", "--out", str(tmp_path), "--original-repo",
                             str(missing)])
    parts = report["parts"]
    assert {name: part["status"] for name, part in parts.items()} == dict.fromkeys(
        ("tests", "syncs", "restore", "tiled_memory"), "ran")
    assert "passed" in parts["tests"]["result"]["summary"]
    cases = parts["syncs"]["result"]["cases"]
    assert len(cases) == 5 and all(row["sampling_loop"] == 0 for row in cases.values())
    rows = parts["restore"]["result"]["rows"]
    assert [(r["method"], r["variant"]) for r in rows] == [("mrs", "fp32")]
    assert parts["restore"]["result"]["original_repos"] == 0
    assert str(missing) not in json.dumps(report)  # checkouts are shown as placeholders
    memory = parts["tiled_memory"]["result"]["rows"]["float32"]
    assert memory["seconds_2_steps"] > 0
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["parts"].keys() == parts.keys()
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## syncs: ran" in md and "| tiling (tile = image / 2) | " in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_without_cuda_every_part_is_skipped_with_a_message(gpu_check, tmp_path: Path) -> None:
    report = gpu_check.main(["--out", str(tmp_path)])
    for part in report["parts"].values():
        assert part["status"] == "skipped" and "no CUDA" in part["message"]
    assert "no CUDA here" in (tmp_path / "gpu_check.md").read_text()
