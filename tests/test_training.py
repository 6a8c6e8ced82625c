"""Tests of diffusers_mrs.training: targets, conversions, the loss falls, a tiny run with save
and resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from diffusers_mrs.models.unet_mr import MRUNet2DModel
from diffusers_mrs.noise_schedule import MRNoiseSchedule
from diffusers_mrs.scheduling_mr_sampler import MRSamplerScheduler
from diffusers_mrs.training import (
    Trainer,
    TrainingConfig,
    denoising_loss,
    from_sampler_start,
    parse_args,
    predict_x0,
    sample_timesteps,
    schedule_alpha_sigma,
    train,
    training_loss,
    training_target,
)
from diffusers_mrs.training.trackers import read_jsonl_log

from helpers import onednn_disabled

MS = 50 / 255


@pytest.fixture(autouse=True)
def _no_onednn():
    """Tiny convolutions: oneDNN's per-shape kernel set-up costs far more than the maths."""
    with onednn_disabled():
        yield


def _scheduler(ptype: str) -> MRSamplerScheduler:
    return MRSamplerScheduler(
        num_train_timesteps=100,
        theta_schedule="cosine",
        max_sigma=MS,
        eps=0.005,
        prediction_type=ptype,
    )


def test_alpha_sigma_match_noise_schedule() -> None:
    sched = _scheduler("epsilon")
    ref = MRNoiseSchedule.from_config(100, "cosine", max_sigma=MS, eps=0.005)
    t = torch.tensor([0.0, 1.0, 37.5, 100.0])
    alpha, sigma = schedule_alpha_sigma(sched, t, torch.zeros(4, 3, 2, 2))
    assert alpha.shape == (4, 1, 1, 1)
    torch.testing.assert_close(
        alpha.flatten().double(), torch.from_numpy(ref.alpha(t.numpy())), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(
        sigma.flatten().double(), torch.from_numpy(ref.sigma(t.numpy())), rtol=1e-5, atol=1e-7
    )


def test_alpha_sigma_copies_the_schedule_to_a_device_once(monkeypatch) -> None:
    """Training asks for alpha and sigma every step: the log-alpha grid goes to the device
    on the first call only (one host-to-device copy per device, not per step)."""
    schedule = MRNoiseSchedule.from_config(100, "cosine", max_sigma=MS, eps=0.005)
    copies = []
    as_tensor = torch.as_tensor
    monkeypatch.setattr(torch, "as_tensor", lambda *a, **k: copies.append(1) or as_tensor(*a, **k))
    t = torch.tensor([3.0, 50.5])
    first = schedule.alpha_sigma(t)
    for _ in range(3):
        again = schedule.alpha_sigma(t)
    assert len(copies) == 1
    torch.testing.assert_close(again, first, rtol=0, atol=0)


@pytest.mark.parametrize("ptype", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("mode", ["discrete", "continuous"])
def test_targets_convert_back_to_x0(ptype: str, mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    sched = _scheduler(ptype)
    x0 = torch.rand(6, 3, 8, 8, generator=g)
    mu = torch.rand(6, 3, 8, 8, generator=g)
    noise = torch.randn(6, 3, 8, 8, generator=g)
    t = sample_timesteps(6, 100, mode, generator=g)
    x_t = sched.add_noise(x0, noise, t, mu=mu)
    target = training_target(sched, x0, noise, t, mu)
    x0_hat = predict_x0(sched, target, x_t, t, mu)
    # epsilon at large t divides by alpha_T = 0.005, so allow float32 round-off growth
    torch.testing.assert_close(x0_hat, x0, atol=2e-3 if ptype == "epsilon" else 1e-5, rtol=0)


@pytest.mark.parametrize("ptype", ["sample", "v_prediction"])
def test_sampler_start_rows_are_what_the_samplers_start_from(ptype: str) -> None:
    """The moved rows are at t = T with ``x_T = mu + sigma_T noise`` exactly (the pipeline's
    start, no ``alpha_T (x0 - mu)``), their targets still convert back to x0, and the other
    rows are the forward process's, untouched."""
    g = torch.Generator().manual_seed(1)
    sched = _scheduler(ptype)
    x0, mu = torch.rand(64, 3, 4, 4, generator=g), torch.rand(64, 3, 4, 4, generator=g)
    noise = torch.randn(64, 3, 4, 4, generator=g)
    t = sample_timesteps(64, 100, "continuous", generator=g)
    x_t = sched.add_noise(x0, noise, t, mu=mu)
    torch.manual_seed(0)
    t2, x2, noise2 = from_sampler_start(sched, x0, mu, noise, t, x_t, 0.5)
    moved = t2 == 100
    assert 10 < int(moved.sum()) < 54
    sigma_T = sched.init_noise_sigma
    torch.testing.assert_close(x2[moved], mu[moved] + sigma_T * noise[moved])
    assert torch.equal(x2[~moved], x_t[~moved]) and torch.equal(noise2[~moved], noise[~moved])
    target = training_target(sched, x0, noise2, t2, mu)
    torch.testing.assert_close(predict_x0(sched, target, x2, t2, mu), x0, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sampler_start_fraction"):
        from_sampler_start(sched, x0, mu, noise, t, x_t, 1.5)


def test_x0_weight_cap_spans_x0_and_target_losses() -> None:
    """For v-prediction the x0 loss weighted by ``1 / c_t^2`` is the target loss: an
    unbounded cap gives exactly the target loss, cap 1 the plain x0 loss, and a finite cap
    lies between them; a cap below 1, or one with the target loss, raises."""
    sched = _scheduler("v_prediction")
    g = torch.Generator().manual_seed(3)
    lq, gt = torch.rand(16, 3, 4, 4, generator=g), torch.rand(16, 3, 4, 4, generator=g)

    def net(x_t, t, mu):  # any fixed function of the inputs stands in for the network
        return SimpleNamespace(sample=0.3 * x_t - 0.1 * mu + 1e-3 * t.view(-1, 1, 1, 1))

    def loss(**options):
        torch.manual_seed(0)
        return denoising_loss(net, sched, lq, gt, timestep_sampling="continuous", **options)

    target, x0 = loss(loss_space="target"), loss(loss_space="x0")
    torch.testing.assert_close(loss(loss_space="x0", x0_weight_cap=float("inf")), target)
    assert torch.equal(loss(loss_space="x0", x0_weight_cap=1.0), x0)
    assert x0 < loss(loss_space="x0", x0_weight_cap=10.0) < target
    with pytest.raises(ValueError, match="x0_weight_cap"):
        loss(loss_space="x0", x0_weight_cap=0.5)
    with pytest.raises(ValueError, match="x0_weight_cap"):
        loss(loss_space="target", x0_weight_cap=10.0)


def test_velocity_target_formula() -> None:
    sched = _scheduler("v_prediction")
    x0, mu, noise = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([10.0, 90.0])
    alpha, sigma = schedule_alpha_sigma(sched, t, x0)
    v = training_target(sched, x0, noise, t, mu)
    torch.testing.assert_close(v, MS * alpha * noise - (sigma / MS) * (x0 - mu))


def test_sample_timesteps_ranges() -> None:
    g = torch.Generator().manual_seed(0)
    d = sample_timesteps(1000, 100, "discrete", generator=g)
    assert d.dtype == torch.float32 and d.min() >= 1 and d.max() <= 100
    assert torch.equal(d, d.round()) and len(d.unique()) > 90
    c = sample_timesteps(1000, 100, "continuous", generator=g)
    assert c.min() > 0 and c.max() <= 100 and not torch.equal(c, c.round())
    with pytest.raises(ValueError):
        sample_timesteps(2, 100, "log")


def test_parse_args_round_trip() -> None:
    cfg = parse_args(
        [
            "--output_dir",
            "x",
            "--nf",
            "8",
            "--kinds",
            "noise",
            "blur",
            "--resume",
            "latest",
            "--max_minutes",
            "none",
            "--checkpointing_minutes",
            "5",
            "--use_ema",
            "false",
            "--unet_kwargs",
            '{"attention_heads": 2}',
        ]
    )
    assert cfg.nf == 8 and list(cfg.kinds) == ["noise", "blur"]
    assert cfg.resume_from_checkpoint == "latest"
    assert cfg.max_minutes is None and cfg.checkpointing_minutes == 5.0 and cfg.use_ema is False
    assert cfg.unet_kwargs == {"attention_heads": 2}
    assert parse_args([]).prediction_type == "v_prediction"


@pytest.mark.parametrize("loss_type", ["mse", "l1"])
def test_relative_loss_is_one_for_returning_the_input_and_weighs_degradations_equally(
    loss_type: str,
) -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=g)
    # sample 0 mildly degraded, sample 1 strongly (100x the squared error)
    mu = x0 + torch.tensor([0.01, 0.1]).view(2, 1, 1, 1) * torch.randn(2, 3, 8, 8, generator=g)
    assert training_loss(mu, x0, mu, x0, loss_type, "relative") == pytest.approx(1.0)
    # halving the error of either sample lowers the relative loss by the same amount
    half0 = torch.stack([x0[0] + 0.5 * (mu[0] - x0[0]), mu[1]])
    half1 = torch.stack([mu[0], x0[1] + 0.5 * (mu[1] - x0[1])])
    rel0 = training_loss(half0, x0, mu, x0, loss_type, "relative")
    rel1 = training_loss(half1, x0, mu, x0, loss_type, "relative")
    assert rel0 == pytest.approx(rel1.item(), rel=1e-5)
    # unweighted, only the strong degradation matters
    plain0 = training_loss(half0, x0, mu, x0, loss_type, "none")
    plain1 = training_loss(half1, x0, mu, x0, loss_type, "none")
    assert plain1 < plain0
    ref = torch.nn.functional.mse_loss if loss_type == "mse" else torch.nn.functional.l1_loss
    assert plain0 == pytest.approx(ref(half0, x0).item(), rel=1e-6)
    # "sqrt" sits between: returning the input costs the mean root of the input losses
    d_in = ((mu - x0).square() if loss_type == "mse" else (mu - x0).abs()).flatten(1).mean(1)
    assert training_loss(mu, x0, mu, x0, loss_type, "sqrt") == pytest.approx(
        d_in.sqrt().mean().item(), rel=1e-5
    )
    with pytest.raises(ValueError, match="loss_weighting"):
        training_loss(mu, x0, mu, x0, loss_type, "psnr")


def test_weighted_losses_learn_a_posterior_biased_toward_explanations_close_to_mu() -> None:
    """The same degraded input ``mu`` explained two ways, equally likely (a dark photo that is
    either a clean dark scene, close to ``mu``, or a low-light shot of a bright one). The
    constant prediction that minimises the expected loss is what the network learns for
    this input. Unweighted: the posterior mean. Relative: the mean under the posterior
    reweighted by ``1 / d(mu, x0)``, which favours the explanation close to ``mu`` by the
    ratio of the input losses. This is why fine-tuning with it made low light bimodal."""
    mu = torch.full((1, 1, 2, 2), 0.10)
    near = torch.full_like(mu, 0.12)  # d(mu, near) = 4e-4
    far = torch.full_like(mu, 0.40)  # d(mu, far) = 0.09, 225x more
    c = torch.linspace(0.0, 0.5, 1001)  # step 5e-4

    def expected_loss(weighting: str) -> torch.Tensor:
        return torch.stack(
            [
                sum(
                    0.5 * training_loss(torch.full_like(mu, v), x0, mu, x0, "mse", weighting)
                    for x0 in (near, far)
                )
                for v in c.tolist()
            ]
        )

    best = {w: c[expected_loss(w).argmin()].item() for w in ("none", "sqrt", "relative")}
    assert best["none"] == pytest.approx(0.26, abs=5e-4)  # (0.12 + 0.40) / 2
    w_near, w_far = 1 / 4e-4, 1 / 0.09
    assert best["relative"] == pytest.approx(
        (w_near * 0.12 + w_far * 0.40) / (w_near + w_far), abs=5e-4
    )
    assert best["relative"] < best["sqrt"] < best["none"]


def _tiny_config(out: Path, steps: int, **kw) -> TrainingConfig:
    base = {
        "output_dir": str(out),
        "nf": 4,
        "depth": 2,
        "unet_kwargs": {"attention_heads": 1, "attention_head_dim": 4},
        "patch_size": 16,
        "train_batch_size": 2,
        "max_train_steps": steps,
        "lr_warmup_steps": 1,
        "checkpointing_steps": 3,
        "validation_steps": None,
        "validation_num_inference_steps": 2,
        "validation_crop": 16,
        "log_every": 1,
        "validation_kinds": ("noise",),
        "num_threads": 2,
    }
    base.update(kw)
    return TrainingConfig(**base)


def test_tiny_training_run_saves_pipeline_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_tiny_config(out, 2, checkpointing_steps=2))
    pipe_dir = out / "pipeline"
    assert (pipe_dir / "model_index.json").is_file()
    assert (pipe_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    unet = MRUNet2DModel.from_pretrained(pipe_dir, subfolder="unet")
    sched = MRSamplerScheduler.from_pretrained(pipe_dir, subfolder="scheduler")
    assert sched.config.prediction_type == "v_prediction" and unet.config.nf == 4
    x = torch.rand(1, 3, 16, 16)
    assert unet(x, torch.tensor([5.0]), x).sample.shape == x.shape
    from diffusers_mrs.pipelines import MRRestorationPipeline

    pipe = MRRestorationPipeline.from_pretrained(pipe_dir)
    assert pipe.unet.config.nf == 4 and pipe.scheduler.config.num_train_timesteps == 100
    restored = pipe(image=x, num_inference_steps=2, output_type="pt").images
    assert restored.shape[-2:] == (16, 16)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint_0"]
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["step"] == 2 and "psnr_out" in metrics["validation"]

    # resume: the step count continues from the checkpoint
    train(_tiny_config(out, 3, resume_from_checkpoint="latest", checkpoints_total_limit=1))
    assert json.loads((out / "final_metrics.json").read_text())["step"] == 3
    records = read_jsonl_log(out / "logs" / "train" / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in records if "val/psnr_out" in r] == [2, 3]
    # accelerate's total_limit = 1 kept only the newest checkpoint, numbered after the old one
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["checkpoint_1"]


def test_init_weights_fine_tunes_a_saved_pipeline(tmp_path: Path) -> None:
    first = tmp_path / "first"
    train(_tiny_config(first, 1, use_ema=False, checkpointing_steps=None))
    start = MRUNet2DModel.from_pretrained(first / "pipeline", subfolder="unet")
    sched_dir = first / "pipeline" / "scheduler"
    first_sched = MRSamplerScheduler.from_pretrained(sched_dir)
    MRSamplerScheduler.from_config(first_sched.config, solver_order=1).save_pretrained(sched_dir)
    # the saved network's architecture wins over nf/depth of the new config
    second = tmp_path / "second"
    train(_tiny_config(second, 1, nf=8, init_weights=str(first / "pipeline"), use_ema=False,
                       checkpointing_steps=None, learning_rate=0.0))
    tuned = MRUNet2DModel.from_pretrained(second / "pipeline", subfolder="unet")
    assert tuned.config.nf == 4
    # the sampler settings of the pipeline it started from are kept (training ones from the run)
    tuned_sched = MRSamplerScheduler.from_pretrained(second / "pipeline", subfolder="scheduler")
    assert first_sched.config.solver_order == 2 and tuned_sched.config.solver_order == 1
    for a, b in zip(start.parameters(), tuned.parameters(), strict=True):
        assert torch.equal(a, b)  # learning rate 0: the weights are the ones it started from
    with pytest.raises(ValueError, match="max_train_steps"):
        train(_tiny_config(tmp_path / "none", 0))
    with pytest.raises(ValueError, match="loss_weighting"):
        train(_tiny_config(tmp_path / "bad", 1, loss_weighting="psnr"))


def test_paired_folder_training(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    for sub in ("LQ", "GT"):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for i in range(3):
            arr = np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "data" / sub / f"{i}.png")
    out = tmp_path / "run"
    # max_minutes ends the run (after one step here) with a final checkpoint
    train(
        _tiny_config(
            out,
            5,
            train_data=str(tmp_path / "data"),
            prediction_type="sample",
            loss_type="l1",
            use_ema=False,
            save_pipeline=False,
            checkpointing_steps=None,
            max_minutes=1e-6,
        )
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_0"]
    assert not (out / "pipeline").exists()
    assert json.loads((out / "final_metrics.json").read_text())["step"] == 1


def test_training_steps_lower_the_loss(tmp_path: Path) -> None:
    """A few optimiser steps of the Trainer on one fixed batch lower that batch's loss,
    measured with the same noise and times before and after (a tiny net, seconds)."""
    cfg = _tiny_config(tmp_path / "run", 1, learning_rate=3e-3, lr_warmup_steps=0,
                       lr_scheduler="constant", use_ema=False, report_to="none")
    trainer = Trainer(cfg)
    trainer.setup()
    lq, gt = next(iter(trainer.dataloader))

    def measured_loss() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return sum(denoising_loss(trainer.unet, trainer.scheduler, lq, gt).item()
                       for _ in range(8)) / 8

    before = measured_loss()
    for _ in range(25):
        trainer.train_step(lq, gt)
    after = measured_loss()
    assert after < 0.7 * before, (before, after)


# ------------------------------------------------------------------ degradation-aware training
def test_degradation_context_starts_as_the_network_it_was_given() -> None:
    from diffusers_mrs.training.degradation_aware import with_degradation_context

    torch.manual_seed(0)
    base = MRUNet2DModel(nf=4, depth=2, attention_heads=1, attention_head_dim=4).eval()
    aware = with_degradation_context(base, context_dim=5).eval()
    x, mu, t = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.tensor([3.0, 70.0])
    context = torch.randn(2, 5)
    with torch.no_grad():
        expected = base(x, t, mu).sample
        got = aware(x, t, mu, degradation_context=context).sample
    assert torch.equal(got, expected)


def test_type_weights_scale_each_samples_loss() -> None:
    from diffusers_mrs.training.degradation_aware import type_weights
    from diffusers_mrs.training.objective import training_loss

    weights = type_weights(["noise", "lowlight", "clean"], {"lowlight": 0.5, "clean": 3.0})
    assert weights.tolist() == [1.0, 0.5, 3.0]
    with pytest.raises(ValueError, match="blur"):
        type_weights(["noise", "clean"], {"blur": 2.0})
    pred, target = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2) * torch.tensor([1.0, 2, 3])[
        :, None, None, None]
    per_sample = torch.tensor([1.0, 4.0, 9.0])
    loss = training_loss(pred, target, target, target, sample_weights=weights)
    assert torch.isclose(loss, (weights * per_sample).mean())


def test_degradation_aware_training_saves_a_pipeline_with_its_encoder(tmp_path: Path) -> None:
    from diffusers_mrs import MRDegradationEncoder
    from diffusers_mrs.data import DegradedPatchDataset, bundled_photos
    from diffusers_mrs.pipelines import MRRestorationPipeline

    data = DegradedPatchDataset(list(bundled_photos("train").values())[:1], patch_size=16,
                                kinds=("noise", "clean"), labels=("noise", "clean"), length=4)
    label = data[0][2]
    assert label.item() == ("noise", "clean").index(data.sample(0)[2])
    clean = [data[i] for i in range(4) if data[i][2].item() == 1]
    assert all(torch.equal(item[0], item[1]) for item in clean)  # clean: the input is the photo

    out = tmp_path / "aware"
    train(_tiny_config(out, 2, degradation_aware=True, kinds=["noise", "lowlight", "clean"],
                       validation_kinds=("noise", "clean"), type_loss_weights={"clean": 2.0},
                       context_dim=6, encoder_width=4))
    pipe = MRRestorationPipeline.from_pretrained(out / "pipeline")
    assert isinstance(pipe.degradation_encoder, MRDegradationEncoder)
    assert pipe.degradation_encoder.degradations == ["noise", "lowlight", "clean"]
    assert pipe.unet.config.use_degra_context and pipe.unet.config.context_dim == 6
    restored = pipe(image=torch.rand(1, 3, 16, 16), num_inference_steps=2, output_type="pt")
    assert restored.images.shape == (1, 3, 16, 16)
    records = read_jsonl_log(out / "logs" / "train" / "metrics.jsonl")
    assert {"denoise", "ce", "accuracy"} <= set(next(r for r in records if "loss" in r))

    # fine-tuning the saved pipeline keeps its encoder (the network learned its type vectors)
    tuned = tmp_path / "tuned"
    train(_tiny_config(tuned, 1, degradation_aware=True, kinds=["noise", "lowlight", "clean"],
                       validation_kinds=("noise",), init_weights=str(out / "pipeline"),
                       learning_rate=0.0, use_ema=False, checkpointing_steps=None))
    kept = MRDegradationEncoder.from_pretrained(tuned / "pipeline" / "degradation_encoder")
    for a, b in zip(pipe.degradation_encoder.parameters(), kept.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="same --kinds"):
        train(_tiny_config(tmp_path / "other", 1, degradation_aware=True,
                           kinds=["lowlight", "noise", "clean"], validation_kinds=("noise",),
                           init_weights=str(out / "pipeline")))


def test_classifier_refit_keeps_the_networks_type_vectors(tmp_path: Path) -> None:
    from diffusers_mrs import MRDegradationEncoder
    from diffusers_mrs.training.classifier import main as refit

    src = tmp_path / "pipe"
    encoder = MRDegradationEncoder(degradations=["noise", "lowlight", "clean"], context_dim=4,
                                   width=4)
    encoder.save_pretrained(src / "degradation_encoder")
    (src / "unet").mkdir()
    (src / "unet" / "marker.txt").write_text("network files are copied unchanged")
    out = tmp_path / "refit"
    assert refit([str(src), str(out), "--steps", "2", "--batch", "4"]) == 0
    refitted = MRDegradationEncoder.from_pretrained(out / "degradation_encoder")
    assert torch.equal(refitted.type_embeddings, encoder.type_embeddings)
    assert not torch.equal(refitted.head[0].weight, encoder.head[0].weight)
    assert (out / "unet" / "marker.txt").read_text() == "network files are copied unchanged"
    with pytest.raises(SystemExit, match="exists"):
        refit([str(src), str(out), "--steps", "1"])
    # features fitted elsewhere, joined with the pipeline's own type vectors
    joined = tmp_path / "joined"
    assert refit([str(src), str(joined), "--steps", "0",
                  "--features-from", str(out / "degradation_encoder")]) == 0
    result = MRDegradationEncoder.from_pretrained(joined / "degradation_encoder")
    assert torch.equal(result.head[0].weight, refitted.head[0].weight)
    assert torch.equal(result.type_embeddings, encoder.type_embeddings)


# ------------------------------------------------------------------ the command line
_WITHOUT_TRAIN_EXTRA = """
import runpy, sys
for name in ("transformers", "skimage", "sklearn"):
    sys.modules[name] = None  # as if not installed: importing them fails
sys.argv = ["train_mr_diffusion.py", *sys.argv[1:]]
runpy.run_path(sys.argv.pop(1), run_name="__main__")
"""


def _example_without_train_extra(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).resolve().parents[1] / "examples" / "train_mr_diffusion.py"
    return subprocess.run([sys.executable, "-c", _WITHOUT_TRAIN_EXTRA, str(script), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_example_help_works_on_the_base_install(tmp_path: Path) -> None:
    """``--help`` needs no package of the ``[train]`` extra (transformers, scikit-image,
    scikit-learn); training without them stops with one line naming the install command,
    before it writes anything."""
    helped = _example_without_train_extra("--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--output_dir" in helped.stdout and "--allow_tf32" in helped.stdout
    out = tmp_path / "run"
    started = _example_without_train_extra("--output_dir", str(out), cwd=tmp_path)
    assert started.returncode != 0
    assert started.stderr.strip().splitlines() == [
        'error: training needs scikit-image, scikit-learn (the [train] extra): '
        'pip install -e ".[train]"']
    assert not out.exists()


def test_command_line_flags_follow_the_dataclass_conventions() -> None:
    """Dashes or underscores, ``--flag`` / ``--flag false`` / ``--no_flag`` for booleans,
    ``none`` for optional numbers, JSON for dicts, choices checked."""
    cfg = parse_args(["--output-dir", "y", "--cpu", "--no_use_ema", "--save_pipeline", "no",
                      "--checkpoints_total_limit", "none", "--type_loss_weights",
                      '{"noise": 2}', "--max-sigma", "0.1"])
    assert cfg.output_dir == "y" and cfg.cpu is True and cfg.use_ema is False
    assert cfg.save_pipeline is False and cfg.checkpoints_total_limit is None
    assert cfg.type_loss_weights == {"noise": 2} and cfg.max_sigma == 0.1
    for bad in (["--kinds", "rain"], ["--prediction_type", "x0"], ["--cpu", "maybe"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
