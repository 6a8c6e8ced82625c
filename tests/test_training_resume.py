"""Resuming a training run: it continues exactly where the checkpoint stopped, and it never
unpickles anything but tensors, numbers and numpy arrays (issue 27 row 1)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusers_mrs.training import TrainingConfig, train
from diffusers_mrs.training.checkpoint import PICKLE_SUFFIXES

from helpers import CreatesMarker, onednn_disabled, save_pth


@pytest.fixture(autouse=True)
def _no_onednn():
    with onednn_disabled():
        yield


def _config(out: Path, steps: int, **kw) -> TrainingConfig:
    base = {"output_dir": str(out), "nf": 4, "depth": 2,
            "unet_kwargs": {"attention_heads": 1, "attention_head_dim": 4}, "patch_size": 16,
            "train_batch_size": 2, "max_train_steps": steps, "lr_warmup_steps": 0,
            "lr_scheduler": "constant", "checkpointing_steps": 2, "validation_steps": None,
            "validation_num_inference_steps": 1, "validation_crop": 16,
            "validation_kinds": ("noise",), "log_every": 1, "num_threads": 1,
            "report_to": "none", "ema_decay": 0.9}
    base.update(kw)
    return TrainingConfig(**base)


def _pipeline_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory) -> Path:
    """A run of 2 steps that checkpointed at step 2 (with EMA)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    with onednn_disabled():
        train(_config(out, 2))
    return out


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """The same run as :func:`checkpointed_run`, 4 steps in one go."""
    out = tmp_path_factory.mktemp("straight") / "run"
    with onednn_disabled():
        train(_config(out, 4))
    return out


def _assert_same_pipeline(run: Path, reference: Path) -> None:
    for name, weight in _pipeline_weights(reference).items():
        assert torch.equal(weight, _pipeline_weights(run)[name]), name
    assert json.loads((run / "final_metrics.json").read_text())["step"] == 4


def test_resumed_training_equals_uninterrupted(
    checkpointed_run: Path, straight_run: Path, tmp_path: Path
) -> None:
    """2 steps, a checkpoint, then 2 more after resuming: the same network (EMA weights)
    and counters as 4 steps in one go; the checkpoint holds no pickle of the trainer's."""
    (ckpt,) = (checkpointed_run / "checkpoints").iterdir()
    assert not list(ckpt.glob("custom_checkpoint_*"))
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["trainer"]["step"] == 2 and state["ema"]["optimization_step"] == 2
    assert set(load_file(ckpt / "ema.safetensors")) == set(load_file(ckpt / "model.safetensors"))

    resumed = tmp_path / "resumed"
    shutil.copytree(checkpointed_run, resumed)
    train(_config(resumed, 4, resume_from_checkpoint="latest"))
    _assert_same_pipeline(resumed, straight_run)


def test_a_checkpoint_of_the_earlier_layout_resumes(
    checkpointed_run: Path, straight_run: Path, tmp_path: Path
) -> None:
    """Counters and EMA as accelerate pickled them before (``custom_checkpoint_0.pkl``,
    ``custom_checkpoint_1.pkl``, plain tensors and numbers) are read with
    ``weights_only=True``, rewritten in the new layout, and resume the run as the new files
    do."""
    from diffusers_mrs import MRUNet2DModel

    old = tmp_path / "old"
    shutil.copytree(checkpointed_run, old)
    (ckpt,) = (old / "checkpoints").iterdir()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    ema = load_file(ckpt / "ema.safetensors")
    network = MRUNet2DModel.from_config(json.loads((old / "network.json").read_text())["config"])
    shadow = [ema[name] for name, _ in network.named_parameters()]
    save_pth(state["trainer"], ckpt / "custom_checkpoint_0.pkl")
    save_pth({**state["ema"], "shadow_params": shadow}, ckpt / "custom_checkpoint_1.pkl")
    (ckpt / "trainer_state.json").unlink()
    (ckpt / "ema.safetensors").unlink()
    train(_config(old, 4, resume_from_checkpoint="latest"))
    _assert_same_pipeline(old, straight_run)
    assert sorted(p.name for p in ckpt.glob("custom_checkpoint_*")) == [
        "custom_checkpoint_0.pkl.old", "custom_checkpoint_1.pkl.old"]
    assert (ckpt / "trainer_state.json").is_file()  # upgraded to the new layout


def _pickles(ckpt: Path) -> list[Path]:
    return sorted(p for p in ckpt.iterdir() if p.suffix in PICKLE_SUFFIXES)


def test_resume_refuses_a_pickle_payload_in_any_checkpoint_file(
    checkpointed_run: Path, tmp_path: Path
) -> None:
    """A payload (unpickling it would create a marker file) written into each pickled file
    of a real checkpoint in turn, and into a planted ``custom_checkpoint_0.pkl`` (what
    accelerate would unpickle with ``weights_only=False`` for registered objects): resuming
    refuses with an error naming the file, and the payload never runs."""
    run = tmp_path / "run"
    shutil.copytree(checkpointed_run, run)
    (ckpt,) = (run / "checkpoints").iterdir()
    targets = [*_pickles(ckpt), ckpt / "custom_checkpoint_0.pkl"]
    assert {p.name for p in targets} >= {"optimizer.bin", "scheduler.bin",
                                         "random_states_0.pkl", "custom_checkpoint_0.pkl"}
    marker = tmp_path / "payload-ran"
    for target in targets:
        original = target.read_bytes() if target.exists() else None
        save_pth(CreatesMarker(marker), target)
        with pytest.raises(ValueError, match=re.escape(str(target))):
            train(_config(run, 3, resume_from_checkpoint="latest"))
        assert not marker.exists(), f"unpickling {target.name} ran the payload"
        if original is None:
            target.unlink()
        else:
            target.write_bytes(original)
    # the restored checkpoint resumes (its random states went through the allow-list)
    train(_config(run, 3, resume_from_checkpoint="latest", save_pipeline=False))
    assert json.loads((run / "final_metrics.json").read_text())["step"] == 3


def test_resume_refuses_a_checkpoint_without_the_trainer_state(
    checkpointed_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(checkpointed_run, run)
    (ckpt,) = (run / "checkpoints").iterdir()
    (ckpt / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match=r"no trainer_state\.json"):
        train(_config(run, 3, resume_from_checkpoint="latest"))
