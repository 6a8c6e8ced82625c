"""Smoke test of benchmarks/nfe_quality.py: the plan, and a whole tiny run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from diffusers_mrs import MRSamplerScheduler, MRUNet2DModel

from helpers import benchmark_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "nfe_quality.py"


SIBLINGS = ("nfe_quality", "nfe_plan", "nfe_run", "nfe_report", "nfe_plots")


@pytest.fixture(scope="module")
def nq():
    """The benchmark script, imported as a module (its folder on sys.path, as when run)."""
    with benchmark_module(SCRIPT, SIBLINGS) as module:
        yield module


@pytest.fixture(scope="module")
def plan(nq):
    """benchmarks/nfe_plan.py, as the script imported it."""
    return sys.modules["nfe_plan"]


def test_plan_dedupes_identical_runs(nq):
    """irsde == jump at NFE = T, and 'MRS default' == the variant with its settings."""
    config = MRSamplerScheduler(prediction_type="v_prediction").config  # sde, data, order 2
    methods = nq.select_methods(nq.build_methods(), "posterior-*,mrs-default,mrs-sde-data-2")
    runs = nq.plan_runs(methods, config, nfes=[100, 10])
    by_cell = {(r.method.key, r.nfe): r.key for r in runs}
    assert by_cell[("posterior-irsde", 100)] == by_cell[("posterior-jump", 100)]
    assert by_cell[("posterior-irsde", 10)] != by_cell[("posterior-jump", 10)]
    assert by_cell[("mrs-default", 10)] == by_cell[("mrs-sde-data-2", 10)]
    assert nq.unique_evaluations(runs) == 100 + 10 + 10 + 100 + 10  # post x2 @10, MRS @100/10
    default_plan = nq.plan_runs(nq.build_methods(), config)
    # + the one-step x0 estimate + MR UniPC (2 rho x 2 parameterizations x 2 B(h) x 3 orders
    # at NFE 20, 10, 5)
    assert nq.unique_evaluations(default_plan) == 1137 + 1 + 24 * 35


def test_smoke_end_to_end(nq, tmp_path):
    """A tiny random model, T = 3, NFE 3 and 2, two degradations: every output is written."""
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=8, depth=1, attention_heads=1, attention_head_dim=8)
    sched = MRSamplerScheduler(num_train_timesteps=3, prediction_type="v_prediction")
    from diffusers_mrs import MRRestorationPipeline

    model_dir = tmp_path / "pipe"
    MRRestorationPipeline(unet=unet, scheduler=sched).save_pretrained(model_dir)
    out = tmp_path / "results"
    argv = [
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--crop",
        "16",
        "--threads",
        "1",
        "--kinds",
        "noise,jpeg",
        "--nfes",
        "3,2",
        "--no-progress",
        "--methods",
        "posterior-*,em-irsde,mrs-default,mrs-sde-data-2,mrs-ode-noise-1,x0-estimate",
    ]
    assert nq.main(argv) == 0

    for name in ("results.json", "results.md", "psnr_vs_nfe.png", "grid.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text(), parse_constant=pytest.fail)
    assert results["meta"]["num_images"] == 6  # 3 held-out photos x 2 degradations
    assert set(results["input"]["psnr"]) == {"noise", "jpeg", "average"}
    runs = results["methods"]["posterior-jump"]["runs"]
    assert runs["3"]["same_as"] == "posterior-irsde@3"  # NFE = T: computed once
    assert "same_as" not in runs["2"]
    assert results["methods"]["mrs-sde-data-2"]["runs"]["2"]["same_as"] == "mrs-default@2"
    for method in results["methods"].values():
        for run in method["runs"].values():
            assert len(run["per_image"]["psnr"]) == 6
            assert all(map(torch.isfinite, torch.tensor(run["per_image"]["psnr"])))
            assert 0.0 < run["seconds_per_image"] < 60.0
    report = (out / "results.md").read_text()
    assert "## Fast-sampling targets" in report and "## Degradation: jpeg" in report
    assert "| NFE | Posterior (IR-SDE) |" in report

    # --report-only rewrites the report from results.json alone, runs nothing
    (out / "results.md").unlink()
    assert nq.main(["--report-only", "--out", str(out)]) == 0
    assert (out / "results.md").read_text() == report


def test_x0_estimate_is_the_networks_posterior_mean_at_T(nq, plan):
    """The 'x0 estimate' method: one step from T, exactly the network's x0 prediction there."""
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=8, depth=1, attention_heads=1, attention_head_dim=8).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)  # a non-trivial network output
    base = MRSamplerScheduler(prediction_type="v_prediction", max_sigma=10 / 255).config
    (method,) = nq.select_methods(nq.build_methods(), "x0-estimate")
    (run,) = nq.plan_runs([method], base, nfes=[10, 5])  # always one step
    assert run.nfe == 1
    sched = plan.make_scheduler(base, method)
    sched.set_timesteps(1)
    mu = torch.rand(2, 3, 16, 16)
    x_T = mu + sched.init_noise_sigma * torch.randn(2, 3, 16, 16)
    t = sched.timesteps[0]
    with torch.no_grad():
        out = unet(x_T, t.expand(2), mu).sample
        stepped = sched.step(out, t, x_T, mu=mu).prev_sample
        x0 = sched.predict_original_sample(out, t, x_T, mu=mu)
    torch.testing.assert_close(stepped, x0, rtol=0, atol=1e-6)


def test_draws_are_independent_samples_of_the_same_inputs(nq):
    """``--draws 2``: the image set twice, each copy restored from its own noise."""
    data = nq.load_data(["noise"], crop=16, seed=0, draws=2)
    assert data.lq.shape[0] == 6 and data.photos[:3] == data.photos[3:]
    torch.testing.assert_close(data.lq[:3], data.lq[3:], rtol=0, atol=0)
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=8, depth=1, attention_heads=1, attention_head_dim=8)
    from diffusers_mrs import MRRestorationPipeline

    sched = MRSamplerScheduler(num_train_timesteps=3, prediction_type="v_prediction")
    pipe = MRRestorationPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    images, _ = sys.modules["nfe_run"].restore(pipe, sched, data.lq, nfe=2, seed=0)
    assert (images[:3] - images[3:]).abs().amax() > 1e-3
    with pytest.raises(ValueError, match="draws"):
        nq.load_data(["noise"], crop=16, seed=0, draws=0)


def test_paired_delta_reports_mean_and_standard_error():
    """The targets' delta is the mean of per-image differences with its standard error."""
    report = sys.modules["nfe_report"]
    runs = {"a": [10.0, 12.0, 14.0, 16.0], "b": [10.0, 11.0, 12.0, 13.0]}  # diffs 0, 1, 2, 3
    results = {
        "methods": {k: {"runs": {"10": {"per_image": {"psnr": v}}}} for k, v in runs.items()}
    }
    se = torch.tensor([0.0, 1.0, 2.0, 3.0]).std().item() / 2
    assert report._paired_delta(results, ("a", 10), ("b", 10)) == f"delta +1.50 +- {se:.2f} dB"


def test_draws_below_one_is_refused_before_any_work(nq, capsys):
    assert nq.main(["--draws", "0", "--dry-run"]) == 2
    assert "--draws must be >= 1" in capsys.readouterr().err
    assert nq.main(["--samples", "0", "--dry-run"]) == 2
    assert "--samples must be >= 1" in capsys.readouterr().err


def test_timestep_spacing_replaces_the_models_grid(nq, capsys):
    """``--timestep-spacing`` re-plans with another time grid; a name that is none is refused
    before any work, naming the option."""
    assert nq.main(["--timestep-spacing", "linspace", "--methods", "mrs-default", "--nfes",
                    "10", "--dry-run"]) == 0
    assert nq.main(["--timestep-spacing", "uniform-ish", "--dry-run"]) == 2
    assert "timestep_spacing" in capsys.readouterr().err


def test_samples_scores_the_pipelines_ensemble_mean(nq):
    """``--samples 3``: each output is the pipeline's mean of 3 samples from the image's seed."""
    from diffusers_mrs import MRRestorationPipeline

    data = nq.load_data(["noise"], crop=16, seed=0)
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=8, depth=1, attention_heads=1, attention_head_dim=8)
    sched = MRSamplerScheduler(num_train_timesteps=3, prediction_type="v_prediction")
    pipe = MRRestorationPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    restore = sys.modules["nfe_run"].restore
    images, _ = restore(pipe, sched, data.lq, nfe=2, seed=5, samples=3)
    single, _ = restore(pipe, sched, data.lq, nfe=2, seed=5)
    expected = pipe(image=data.lq[1:2], num_inference_steps=2, num_samples=3, output_type="pt",
                    generator=[torch.Generator().manual_seed(6)]).images
    torch.testing.assert_close(images[1:2], expected, rtol=0, atol=1e-6)
    assert images.shape == single.shape and (images - single).abs().amax() > 1e-3
    report = sys.modules["nfe_report"]
    assert "mean of 3 samples" in report._sampling_text({"draws": 1, "samples": 3})
