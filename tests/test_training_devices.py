"""Training as it runs on GPUs, checked on the CPU, for the plain and the degradation-aware
objective: with several processes (gloo DDP) the gradients are averaged over them; under
accelerate's mixed precision the network runs in bfloat16; a training step reads nothing
back from the device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_scheduler_api import SyncRecorder

WORKER = Path(__file__).resolve().parent / "training_ddp_worker.py"
OBJECTIVES = {
    "plain": {},
    "degradation_aware": {"degradation_aware": True, "kinds": ["noise", "lowlight", "clean"],
                          "context_dim": 4, "encoder_width": 4},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two_processes(mode: str, out: Path, options: dict) -> None:
    """Run the worker (``mode``: ``grads`` or ``run``) as ranks 0 and 1 of a gloo process
    group on the CPU."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), mode, str(out), json.dumps(options)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for rank, (proc, log) in enumerate(zip(procs, logs, strict=True)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{log[-3000:]}"


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_two_processes_see_the_same_averaged_gradients(tmp_path: Path, objective: str) -> None:
    """Each rank trains on its own shard of the batch; DDP must average the gradients, so
    the optimiser of every rank sees the same ones (else each rank trains its own copy and
    only rank 0's weights are saved)."""
    _launch_two_processes("grads", tmp_path, OBJECTIVES[objective])
    grads = [load_file(tmp_path / f"grads_{rank}.safetensors") for rank in (0, 1)]
    assert grads[0].keys() == grads[1].keys()
    steps = {k.split("/")[0] for k in grads[0]}
    assert steps == {"0", "1"}
    if objective == "degradation_aware":  # both parts train
        assert any("/encoder." in k for k in grads[0]) and any("/unet." in k for k in grads[0])
    for name, g0 in grads[0].items():
        assert torch.equal(g0, grads[1][name]), f"{name} differs between the ranks"
    assert any(g.abs().sum() > 0 for g in grads[0].values())


def test_two_processes_run_a_timed_degradation_aware_training_to_its_end(tmp_path: Path) -> None:
    """A whole 2-process run whose validation and checkpoints are due by the clock: the
    processes share the main process's clock at logging steps only, so both take the same
    decisions (a mismatch would hang a collective) and the run ends with its pipeline."""
    _launch_two_processes("run", tmp_path, OBJECTIVES["degradation_aware"])
    run = tmp_path / "run"
    assert json.loads((run / "final_metrics.json").read_text())["step"] == 3
    assert (run / "pipeline" / "degradation_encoder").is_dir()
    records = [json.loads(line) for line in
               (run / "logs" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 3]
    assert {"denoise", "ce", "accuracy"} <= set(records[0])
    assert [r["step"] for r in records if "val/psnr_out" in r] == [2, 3]
    states = [json.loads((c / "trainer_state.json").read_text())["trainer"]["step"]
              for c in sorted((run / "checkpoints").iterdir())]
    assert states == [2, 3]


def test_two_processes_resume_from_their_own_random_states(tmp_path: Path) -> None:
    """Each rank saves its random generators in its own files (safetensors + JSON, no
    pickle) and restores them on resuming: 2 steps, a checkpoint, 2 more give the weights
    of 4 steps in one go."""
    _launch_two_processes("steps", tmp_path, {"run": "resumed", "max_train_steps": 2})
    _launch_two_processes("steps", tmp_path, {"run": "resumed", "max_train_steps": 4,
                                              "resume_from_checkpoint": "latest"})
    _launch_two_processes("steps", tmp_path, {"run": "straight", "max_train_steps": 4})
    first = tmp_path / "resumed" / "checkpoints" / "checkpoint_0"
    names = {p.name for p in first.iterdir()}
    assert {"random_states_0.json", "random_states_1.json", "random_states_0.safetensors",
            "random_states_1.safetensors", "optimizer.safetensors"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pkl", ".pt", ".pth"))]
    weights = [load_file(tmp_path / run / "pipeline" / "unet" / "diffusion_pytorch_model"
                         ".safetensors") for run in ("resumed", "straight")]
    assert weights[0].keys() == weights[1].keys()
    for name, weight in weights[1].items():
        assert torch.equal(weights[0][name], weight), name


@pytest.fixture
def _fresh_accelerator_state():
    """accelerate keeps one process-wide state; a mixed-precision run must start from none."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("_fresh_accelerator_state")
@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_bf16_mixed_precision_runs_the_network_in_bfloat16(tmp_path: Path, objective: str) -> None:
    """Under ``mixed_precision="bf16"`` the training step goes through accelerate's autocast:
    the network's first convolution computes in bfloat16 (its weights stay float32);
    validation computes in float32, as the saved pipeline does."""
    from diffusers_mrs.training import Trainer, TrainingConfig

    config = TrainingConfig(
        output_dir=str(tmp_path / "run"), nf=4, depth=2,
        unet_kwargs={"attention_heads": 1, "attention_head_dim": 4}, patch_size=16,
        train_batch_size=2, max_train_steps=1, checkpointing_steps=None, validation_steps=None,
        use_ema=False, report_to="none", num_threads=1, cpu=True, mixed_precision="bf16",
        validation_kinds=["noise"], validation_crop=16, validation_num_inference_steps=1,
        **OBJECTIVES[objective])
    trainer = Trainer(config)
    trainer.setup()
    seen: list[torch.dtype] = []
    conv_in = trainer._network().conv_in
    conv_in.register_forward_hook(lambda _m, _args, out: seen.append(out.dtype))
    batch = next(iter(trainer.dataloader))
    with torch.backends.mkldnn.flags(enabled=False):
        trainer.train_step(*batch)
        assert seen == [torch.bfloat16]
        # validation runs the network as the saved pipeline does: float32, no autocast ...
        seen.clear()
        trainer.validate()
        assert seen and set(seen) == {torch.float32}
        # ... and training has its autocast back afterwards
        seen.clear()
        trainer.train_step(*batch)
        assert seen == [torch.bfloat16]
    assert conv_in.weight.dtype == torch.float32


class ReadBackCallers(SyncRecorder):
    """The project's read-back recorder, noting where each read-back was called from."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        before = len(self.calls)
        out = super().__torch_function__(func, types, args, kwargs)
        if len(self.calls) > before:
            caller = sys._getframe(1).f_code.co_filename
            self.calls[-1] = f"{self.calls[-1]} from {caller}"
        return out


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path: Path, objective: str) -> None:
    """Between two logging steps the loop (data, forward, backward, clip, optimiser, EMA,
    counters and the decisions about validation and checkpoints) never waits for the device:
    the losses stay on it until a logging step. torch's AdamW reads its step counter, which
    it keeps on the CPU whatever the device (no device sync), so its calls are left out."""
    from tqdm.auto import tqdm

    from diffusers_mrs.training import Trainer, TrainingConfig
    from diffusers_mrs.training.loop import Clock

    config = TrainingConfig(
        output_dir=str(tmp_path / "run"), nf=4, depth=2,
        unet_kwargs={"attention_heads": 1, "attention_head_dim": 4}, patch_size=16,
        train_batch_size=2, max_train_steps=100, checkpointing_steps=50, validation_steps=50,
        log_every=50, checkpointing_minutes=60.0, report_to="none", num_threads=1,
        **OBJECTIVES[objective])
    trainer = Trainer(config)
    trainer.setup()
    trainer._clock, trainer._bar = Clock(time.time(), 0.0, 0), tqdm(disable=True)
    batches = iter(trainer.dataloader)
    with torch.backends.mkldnn.flags(enabled=False):
        trainer._means.add(trainer.train_step(*next(batches)))  # first step: lazy set-up
        trainer._after_optimizer_step()
        with ReadBackCallers() as recorder:
            for _ in range(2):
                trainer._means.add(trainer.train_step(*next(batches)))
                assert not trainer._after_optimizer_step()
    assert trainer.state.step == 3 and trainer._means.count == 3
    optimizer_dir = str(Path(torch.optim.__file__).parent)
    assert [c for c in recorder.calls if optimizer_dir not in c] == []


def test_tf32_setting_is_explicit() -> None:
    """``--allow_tf32`` sets torch's float32 precision of matmuls and cuDNN convolutions
    (whose own defaults differ: convolutions TF32, matmuls IEEE) through the same switch as
    sampling; off means IEEE for both."""
    from diffusers_mrs.restore_settings import set_tf32, tf32_mode
    from diffusers_mrs.training import parse_args

    assert parse_args([]).allow_tf32 is False and parse_args(["--allow_tf32"]).allow_tf32
    backends = torch.backends
    with tf32_mode(False):  # restores torch's settings afterwards
        for allow in (True, False):
            set_tf32(allow)
            assert backends.cuda.matmul.allow_tf32 is allow
            assert backends.cudnn.allow_tf32 is allow
