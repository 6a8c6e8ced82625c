"""Smoke test of benchmarks/arch_per_cpu_hour.py: the plan, a whole tiny study (one training
step per network), and reruns that skip, resume or refuse, never overwrite."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from helpers import benchmark_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "arch_per_cpu_hour.py"
SIBLINGS = ("arch_per_cpu_hour", "default_model_eval", "example_images")
TINY = ["--configs", "unet-nf8,nafnet-w8", "--minutes", "1", "--max-steps", "1",
        "--patch-size", "16", "--batch-size", "2", "--crop", "16", "--crops", "1",
        "--steps", "2", "--forward-size", "32", "--forward-repeats", "1", "--threads", "1",
        "--curve-crops", "1"]


@pytest.fixture(scope="module")
def arch():
    """The benchmark script, imported as a module (its folder on sys.path, as when run)."""
    with benchmark_module(SCRIPT, SIBLINGS) as module:
        yield module


@pytest.fixture(autouse=True)
def _no_onednn():
    """Tiny convolutions: oneDNN's per-shape kernel set-up costs far more than the maths."""
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration")
        with torch.backends.mkldnn.flags(enabled=False):
            yield
    torch.set_num_threads(threads)


def test_dry_run_prints_the_plan_and_does_nothing(arch, tmp_path, capsys):
    work = tmp_path / "runs"
    assert arch.main(["--dry-run", "--work-dir", str(work), "--out", str(tmp_path / "res")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("unet-nf16: MRUNet2DModel") and "2,198,819 parameters" in lines[0]
    assert lines[1].startswith("nafnet-w16: MRNAFNetModel") and '"width": 16' in lines[1]
    assert lines[2].startswith("unet-nf8: MRUNet2DModel") and lines[2].endswith(": new")
    assert lines[3].startswith("training: 3 x 10 min = 30 min on 2 thread(s)")
    assert not work.exists() and not (tmp_path / "res").exists()
    with pytest.raises(SystemExit):
        arch.main(["--dry-run", "--configs", "unet-nf16,resnet"])


def test_tiny_study_end_to_end_then_reruns(arch, tmp_path, capsys):
    work, out = tmp_path / "runs", tmp_path / "results"
    argv = [*TINY, "--work-dir", str(work), "--out", str(out)]
    assert arch.main(argv) == 0
    result = json.loads((out / "arch_per_cpu_hour.json").read_text())
    rows = {r["config"]: r for r in result["rows"]}
    assert list(rows) == ["unet-nf8", "nafnet-w8"]
    assert rows["nafnet-w8"]["network"] == "MRNAFNetModel"
    assert rows["nafnet-w8"]["network_config"]["width"] == 8
    for r in rows.values():
        assert r["steps"] == 1 and r["seconds_per_step"] > 0 and r["parameters"] > 0
        assert r["seconds_per_forward_32px"] > 0
        assert r["final_train_loss"] > 0  # the logged loss of its one step
        # the learning curve: one checkpoint, whose EMA weights are the saved pipeline's
        (point,) = r["curve"]
        assert point["step"] == 1 and point["train_minutes"] == pytest.approx(
            r["train_seconds"] / 60, abs=1e-3)
        assert point["gain"] == pytest.approx({k: q["gain"] for k, q in r["psnr"].items()},
                                              abs=1e-5)
        assert set(r["psnr"]) == {"noise", "lowlight"}
        for q in r["psnr"].values():
            assert q["gain"] == pytest.approx(q["output"] - q["input"])
        mean = (r["psnr"]["noise"]["gain"] + r["psnr"]["lowlight"]["gain"]) / 2
        assert r["gain_per_cpu_hour"] == pytest.approx(mean / (r["train_seconds"] / 3600))
    md = (out / "arch_per_cpu_hour.md").read_text()
    assert md.startswith("Command: `python benchmarks/arch_per_cpu_hour.py --configs")
    assert "| nafnet-w8 | MRNAFNetModel | 316,851 | 1 |" in md
    assert "| nafnet-w8 | " + f"{rows['nafnet-w8']['train_seconds'] / 60:.1f} min (1 steps)" in md
    weights = work / "nafnet-w8" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns

    # a rerun: finished runs are not trained again; an interrupted one resumes
    (work / "unet-nf8" / "final_metrics.json").unlink()
    capsys.readouterr()
    assert arch.main([*argv, "--dry-run"]) == 0
    assert [line.rsplit(": ", 1)[1] for line in capsys.readouterr().out.splitlines()[:2]] == [
        "resume", "done"]
    assert arch.main(argv) == 0
    assert weights.stat().st_mtime_ns == stamp
    assert json.loads((work / "unet-nf8" / "final_metrics.json").read_text())["step"] == 1

    # other settings in the same folders: refused before any work, nothing touched
    with pytest.raises(SystemExit, match="patch_size: 16 -> 32"):
        arch.main([*argv, "--patch-size", "32"])
    assert weights.stat().st_mtime_ns == stamp
    stranger = tmp_path / "other" / "unet-nf8"
    stranger.mkdir(parents=True)
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not a run of this benchmark"):
        arch.main([*TINY, "--work-dir", str(tmp_path / "other"), "--out", str(out)])
