"""The NFE benchmark's MR UniPC methods and its distance to the converged ODE solution."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from diffusers_mrs import (
    MRRestorationPipeline,
    MRSamplerScheduler,
    MRUNet2DModel,
    MRUniPCScheduler,
)

from helpers import benchmark_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "nfe_quality.py"
SIBLINGS = ("nfe_quality", "nfe_plan", "nfe_run", "nfe_report", "nfe_plots")


@pytest.fixture(scope="module")
def nq():
    with benchmark_module(SCRIPT, SIBLINGS) as module:
        yield module


def test_unipc_methods_are_planned_like_the_mr_sampler(nq):
    """bh1/bh2 x orders 1-3 x data/noise, with rho = 1/2 and with the exact single weight,
    build MRUniPCScheduler on the model's schedule, and run at any
    NFE (they are not grid baselines)."""
    plan = sys.modules["nfe_plan"]
    config = MRSamplerScheduler(num_train_timesteps=20, prediction_type="v_prediction").config
    methods = nq.select_methods(nq.build_methods(), "unipc-*,mrs-ode-data-2")
    assert [m.key for m in methods] == ["mrs-ode-data-2"] + [
        f"unipc-{x}{p}{b}-{o}" for x in ("", "exact-") for p in ("", "noise-")
        for b in ("bh1", "bh2") for o in (1, 2, 3)]
    for method in methods[1:]:
        sched = plan.make_scheduler(config, method)
        assert isinstance(sched, MRUniPCScheduler)
        assert sched.config.prediction_type == "v_prediction"
        assert sched.config.num_train_timesteps == 20
        assert sched.config.single_point_rho == ("exact" if "exact" in method.key else "half")
        assert sched.config.parameterization == ("noise" if "noise" in method.key else "data")
    runs = nq.plan_runs(methods, config, nfes=[50, 5])
    assert {r.nfe for r in runs} == {50, 5}  # NFE > T too
    assert len({r.key for r in runs}) == len(runs)  # no two methods share a computation


def tiny_pipeline_folder(path: Path) -> Path:
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=8, depth=1, attention_heads=1, attention_head_dim=8)
    sched = MRSamplerScheduler(num_train_timesteps=3, prediction_type="v_prediction")
    MRRestorationPipeline(unet=unet, scheduler=sched).save_pretrained(path)
    return path


def test_ode_distance_end_to_end(nq, tmp_path):
    """A tiny run with ``--ode-reference-nfe``: every run has its distance to the reference;
    the run that is the reference computation scores 0 (same latents); the report and the
    plot show UniPC and the distances."""
    model = tiny_pipeline_folder(tmp_path / "pipe")
    out = tmp_path / "results"
    argv = ["--model", str(model), "--out", str(out), "--crop", "16", "--threads", "1",
            "--kinds", "noise", "--nfes", "3,2", "--no-progress", "--ode-reference-nfe", "3",
            "--methods", "unipc-bh1-2,unipc-bh2-3,mrs-ode-data-2,mrs-ode-noise-1"]
    assert nq.main(argv) == 0
    results = json.loads((out / "results.json").read_text(), parse_constant=pytest.fail)
    assert results["meta"]["ode_reference"]["nfe"] == 3
    for method in results["methods"].values():
        for run in method["runs"].values():
            assert len(run["per_image"]["ode_distance"]) == 3
            assert all(d >= 0 for d in run["per_image"]["ode_distance"])
    reference_run = results["methods"]["mrs-ode-data-2"]["runs"]["3"]
    assert reference_run["ode_distance"]["average"] == 0.0
    assert results["methods"]["unipc-bh1-2"]["runs"]["2"]["ode_distance"]["average"] > 0.0
    assert results["methods"]["unipc-bh2-3"]["scheduler"] == "MRUniPCScheduler"
    report = (out / "results.md").read_text()
    assert "## Distance to the converged ODE solution" in report
    assert "| NFE | MRS-ODE-d-2 | MRS-ODE-n-1 | UniPC-bh1-2 | UniPC-bh2-3 |" in report
    assert "MR UniPC (B(h), order" in report and "Best UniPC @" not in report  # no NFE 5
    assert (out / "psnr_vs_nfe.png").stat().st_size > 0
    assert (out / "ode_distance_vs_nfe.png").stat().st_size > 0


def test_ode_distance_is_the_rms_difference(nq):
    run = sys.modules["nfe_run"]
    ref = torch.zeros(2, 3, 4, 4)
    images = torch.stack([torch.full((3, 4, 4), 0.1), torch.zeros(3, 4, 4)])
    assert run.ode_distances(images, ref) == pytest.approx([0.1, 0.0])


def test_unipc_targets_compare_best_with_best(nq):
    """Issue 24's targets: the best UniPC against the best MR Sampler ODE at NFE 5."""
    report = sys.modules["nfe_report"]

    def run(psnrs, distance):
        return {"psnr": {"average": sum(psnrs) / len(psnrs)}, "per_image": {"psnr": psnrs},
                "ode_distance": {"average": distance}}

    results = {"methods": {
        "unipc-bh2-2": {"label": "UniPC-bh2-2", "runs": {"5": run([30.0, 31.0], 0.01)}},
        "unipc-bh1-2": {"label": "UniPC-bh1-2", "runs": {"5": run([29.0, 30.0], 0.02)}},
        "mrs-ode-data-2": {"label": "MRS-ODE-d-2", "runs": {"5": run([30.0, 30.0], 0.02)}},
        "posterior-irsde": {"label": "P", "runs": {"100": run([30.5, 30.7], 0.05)}},
    }}
    lines = report.unipc_lines(results)
    assert lines[0].startswith("- Best UniPC @5 (UniPC-bh2-2) vs best MRS-ODE @5 (MRS-ODE-d-2)")
    assert lines[0].endswith(">= +0.3 dB: yes")
    assert "ratio 0.50 <= 0.6: yes" in lines[1]
    assert lines[2].endswith("within 0.3 dB (20x): yes")


def test_negative_reference_nfe_is_refused(nq, capsys):
    assert nq.main(["--ode-reference-nfe", "-1", "--dry-run"]) == 2
    assert "--ode-reference-nfe must be >= 0" in capsys.readouterr().err
