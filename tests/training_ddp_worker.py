"""One process of a 2-process CPU (gloo) training run, started by
tests/test_training_devices.py. ``grads``: builds a tiny Trainer, takes two optimiser steps
and writes the gradients the optimiser saw to ``OUT/grads_<rank>.safetensors``. ``run``: a
whole tiny run (``train``) with time-based validation and checkpoints. ``steps``: a run
that checkpoints every 2 steps, or resumes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusers_mrs.training import Trainer, TrainingConfig, train

TINY = {"nf": 4, "depth": 2, "unet_kwargs": {"attention_heads": 1, "attention_head_dim": 4},
        "patch_size": 16, "train_batch_size": 2, "lr_warmup_steps": 0, "num_threads": 1,
        "cpu": True, "validation_crop": 16, "validation_kinds": ["noise"],
        "validation_num_inference_steps": 1}


def run(out: Path, options: dict) -> None:
    """3 steps, logging every 2: validation and checkpoints by the clock (due whenever the
    clock is shared), a time budget that does not end the run."""
    train(TrainingConfig(output_dir=str(out / "run"), max_train_steps=3, log_every=2,
                         checkpointing_steps=None, checkpointing_minutes=1e-6,
                         validation_steps=None, validation_minutes=1e-6, max_minutes=600.0,
                         **TINY, **options))


def steps(out: Path, options: dict) -> None:
    """A run in ``OUT/<options["run"]>`` checkpointing every 2 steps (``options``: also the
    steps and whether it resumes); accelerate's process group ends with the run, so each
    run is its own launch."""
    train(TrainingConfig(output_dir=str(out / options.pop("run")), checkpointing_steps=2,
                         validation_steps=None, report_to="none", ema_decay=0.9,
                         lr_scheduler="constant", **TINY, **options))


def grads(out: Path, options: dict) -> None:
    rank = int(os.environ["RANK"])
    config = TrainingConfig(
        output_dir=str(out / "run"), max_train_steps=2, lr_scheduler="constant",
        checkpointing_steps=None, validation_steps=None, use_ema=False, report_to="none",
        **TINY, **options)
    trainer = Trainer(config)
    trainer.setup()
    model = trainer.accelerator.unwrap_model(trainer.unet)
    names = {id(p): n for n, p in model.named_parameters()}
    seen: dict[str, torch.Tensor] = {}

    def record(optimizer: torch.optim.Optimizer, *_: object) -> None:
        step = len({k.split("/")[0] for k in seen})
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    seen[f"{step}/{names[id(p)]}"] = p.grad.detach().clone().contiguous()

    trainer.optimizer.optimizer.register_step_pre_hook(record)
    batches = iter(trainer.dataloader)
    for _ in range(2):
        trainer.train_step(*next(batches))
    save_file(seen, str(out / f"grads_{rank}.safetensors"))


if __name__ == "__main__":
    torch.backends.mkldnn.enabled = False
    modes = {"grads": grads, "run": run, "steps": steps}
    modes[sys.argv[1]](Path(sys.argv[2]), json.loads(sys.argv[3]))
