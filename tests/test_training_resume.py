"""Resuming a training run: it continues exactly where the checkpoint stopped; checkpoints
hold only safetensors and JSON, and resuming one of an earlier version (accelerate's pickles)
never unpickles anything but tensors, numbers and numpy arrays (issue 27 row 1)."""

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
from diffusers_mrs.training.export_checkpoint import main as export_main
from diffusers_mrs.training.portable_state import load_state_files, save_state_files
from diffusers_mrs.training.run_state import set_random_states

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


#: The files of a checkpoint (one process, no fp16 scaler): safetensors and JSON only.
NEW_LAYOUT = {"model.safetensors", "optimizer.json", "optimizer.safetensors", "scheduler.json",
              "random_states_0.json", "random_states_0.safetensors", "trainer_state.json",
              "ema.safetensors"}


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
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(NEW_LAYOUT)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["trainer"]["step"] == 2 and state["ema"]["optimization_step"] == 2
    assert set(load_file(ckpt / "ema.safetensors")) == set(load_file(ckpt / "model.safetensors"))
    assert {k.rsplit(".", 1)[1] for k in load_file(ckpt / "optimizer.safetensors")} == {
        "step", "exp_avg", "exp_avg_sq"}  # keys state.<param index>.<name>

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


class _Saved:
    """Stands for an optimiser or LR scheduler whose ``state_dict()`` is a saved one."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def _as_accelerate_saved_it(ckpt: Path) -> None:
    """Rewrite ``ckpt``'s optimiser, LR and random states as accelerate's ``save_state``
    wrote them before (its own writer: ``optimizer.bin``, ``scheduler.bin``,
    ``random_states_0.pkl``, with the global generators set to the saved states)."""
    from accelerate import PartialState
    from accelerate.checkpointing import save_accelerator_state

    PartialState()
    rng = load_state_files(ckpt, "random_states_0")
    set_random_states(rng, None)
    save_accelerator_state(str(ckpt), [], [_Saved(load_state_files(ckpt, "optimizer"))],
                           [_Saved(load_state_files(ckpt, "scheduler"))], [], 0, rng["step"])
    for name in NEW_LAYOUT - {"model.safetensors", "ema.safetensors", "trainer_state.json"}:
        (ckpt / name).unlink()


@pytest.fixture(scope="module")
def accelerate_layout_run(checkpointed_run: Path, tmp_path_factory) -> Path:
    """:func:`checkpointed_run` with its checkpoint in the layout before this one."""
    out = tmp_path_factory.mktemp("accelerate_layout") / "run"
    shutil.copytree(checkpointed_run, out)
    _as_accelerate_saved_it(next((out / "checkpoints").iterdir()))
    return out


def test_a_checkpoint_of_accelerates_pickles_resumes_and_is_rewritten(
    accelerate_layout_run: Path, straight_run: Path, tmp_path: Path
) -> None:
    """optimizer.bin, scheduler.bin and random_states_0.pkl are read with
    ``weights_only=True``, rewritten as safetensors + JSON (the pickles kept as ``*.old``),
    and the run goes on as the uninterrupted one."""
    run = tmp_path / "run"
    shutil.copytree(accelerate_layout_run, run)
    (ckpt,) = (run / "checkpoints").iterdir()
    assert {p.name for p in _pickles(ckpt)} == {"optimizer.bin", "scheduler.bin",
                                                 "random_states_0.pkl"}
    train(_config(run, 4, resume_from_checkpoint="latest"))
    _assert_same_pipeline(run, straight_run)
    assert not _pickles(ckpt)
    assert {p.name for p in ckpt.iterdir()} == NEW_LAYOUT | {
        "optimizer.bin.old", "scheduler.bin.old", "random_states_0.pkl.old"}


def test_export_writes_a_pickle_free_copy_that_resumes(
    accelerate_layout_run: Path, straight_run: Path, tmp_path: Path, capsys
) -> None:
    """``python -m diffusers_mrs.training.export_checkpoint CKPT OUT`` on a checkpoint of
    accelerate's pickles: OUT holds the new layout only, CKPT is left as it was, and a run
    whose checkpoint is OUT resumes as the uninterrupted one."""
    (ckpt,) = (accelerate_layout_run / "checkpoints").iterdir()
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    out = tmp_path / "export"
    assert export_main([str(ckpt), str(out)]) == 0
    assert "wrote 8 files" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == NEW_LAYOUT
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    with pytest.raises(SystemExit):  # refuses to write into a non-empty folder
        export_main([str(ckpt), str(out)])
    assert "not empty" in capsys.readouterr().err
    again = tmp_path / "again"  # a checkpoint of this layout is copied as it is
    assert export_main([str(out), str(again)]) == 0
    assert {p.name: p.read_bytes() for p in again.iterdir()} == {
        p.name: p.read_bytes() for p in out.iterdir()}

    run = tmp_path / "run"
    shutil.copytree(accelerate_layout_run, run, ignore=shutil.ignore_patterns("checkpoint_*"))
    shutil.copytree(out, run / "checkpoints" / ckpt.name)
    train(_config(run, 4, resume_from_checkpoint="latest"))
    _assert_same_pipeline(run, straight_run)


def test_states_round_trip_through_safetensors_and_json(tmp_path: Path) -> None:
    """An AdamW state (integer keys, tuples, 0-d tensors) and the random generators come
    back equal, types included; an object that is not plain data is refused by path."""
    import random

    import numpy as np

    from diffusers_mrs.training.run_state import random_states

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.8, 0.9))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    generator = torch.Generator().manual_seed(3)
    state = {"optimizer": opt.state_dict(), "random": random_states(7, generator)}
    save_state_files(tmp_path, "s", state)
    back = load_state_files(tmp_path, "s")
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    for index, entry in state["optimizer"]["state"].items():
        for name, value in entry.items():
            assert torch.equal(back["optimizer"]["state"][index][name], value)
    assert back["random"]["random_state"] == random.getstate()
    numpy_back, numpy_now = back["random"]["numpy_random_seed"], np.random.get_state()
    assert numpy_back[0] == numpy_now[0] and np.array_equal(numpy_back[1], numpy_now[1])
    assert numpy_back[1].dtype == numpy_now[1].dtype and numpy_back[2:] == numpy_now[2:]
    assert torch.equal(back["random"]["dataloader_generator"], generator.get_state())
    with pytest.raises(TypeError, match=r"at a\.b"):
        save_state_files(tmp_path, "bad", {"a": {"b": object()}})


def test_resume_refuses_a_pickle_payload_in_any_checkpoint_file(
    accelerate_layout_run: Path, tmp_path: Path
) -> None:
    """A payload (unpickling it would create a marker file) written into each pickled file
    of a real checkpoint in turn, and into a planted ``custom_checkpoint_0.pkl`` (what
    accelerate would unpickle with ``weights_only=False`` for registered objects): resuming
    refuses with an error naming the file, and the payload never runs."""
    run = tmp_path / "run"
    shutil.copytree(accelerate_layout_run, run)
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


def test_resume_refuses_a_checkpoint_without_one_of_its_files(
    checkpointed_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(checkpointed_run, run)
    (ckpt,) = (run / "checkpoints").iterdir()
    for name in ("optimizer.json", "model.safetensors", "trainer_state.json"):
        saved = (ckpt / name).read_bytes()
        (ckpt / name).unlink()
        with pytest.raises(ValueError, match=rf"no {re.escape(name)}"):
            train(_config(run, 3, resume_from_checkpoint="latest"))
        (ckpt / name).write_bytes(saved)


def test_a_run_recorded_before_a_network_setting_existed_still_resumes() -> None:
    """``network.json`` of a run started before a setting was added to the network class
    (``inner_scale``, say) matches a network built with that setting's default, and only
    then."""
    from diffusers_mrs import MRUNet2DModel
    from diffusers_mrs.training.architectures import describe_network
    from diffusers_mrs.training.trainer import _same_network

    built = json.loads(json.dumps(describe_network(MRUNet2DModel(nf=8, depth=2))))
    older = {"class": built["class"],
             "config": {k: v for k, v in built["config"].items() if k != "inner_scale"}}
    assert _same_network(older, built, MRUNet2DModel)
    changed = {**built, "config": {**built["config"], "inner_scale": 0.5}}
    assert not _same_network(older, changed, MRUNet2DModel)
    assert not _same_network({**older, "config": {**older["config"], "nf": 16}}, built,
                             MRUNet2DModel)
