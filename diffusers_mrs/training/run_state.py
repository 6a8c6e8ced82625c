"""What a checkpoint holds besides the trainer's counters and EMA: the network, the
optimiser, the LR schedule, the gradient scaler (fp16) and every random generator, saved
and restored through an :class:`accelerate.Accelerator`'s prepared objects as safetensors +
JSON (:mod:`.portable_state`), never pickle.

Files (``R`` is the process index; each process writes and reads its own)::

    model.safetensors                         the network's weights (safetensors' save_model)
    optimizer.json, optimizer.safetensors     param_groups, state (tensors: state.<i>.<name>)
    scheduler.json                            the LR scheduler's state_dict
    scaler.json                               the GradScaler's state_dict (fp16 runs only)
    random_states_R.json, random_states_R.safetensors
        python ``random``, numpy, torch CPU, CUDA (all devices), the data loader's generator
        and accelerate's step counter, under accelerate's key names

Restoring a CUDA state on a machine with fewer (or no) GPUs restores the devices present.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .portable_state import load_state_files, save_state_files

MODEL_WEIGHTS = "model.safetensors"
OPTIMIZER, SCHEDULER, SCALER = "optimizer", "scheduler", "scaler"
#: The random states of process ``R`` are ``random_states_R.json`` (+ ``.safetensors``).
RANDOM_STATES = "random_states_{}"
_CUDA = "torch_cuda_manual_seed"
_LOADER = "dataloader_generator"


def random_states(step: int, loader_generator: torch.Generator | None) -> dict[str, Any]:
    """This process's random generators (accelerate's names, plus the loader's generator)."""
    states: dict[str, Any] = {"step": step, "random_state": random.getstate(),
                              "numpy_random_seed": np.random.get_state(),
                              "torch_manual_seed": torch.get_rng_state()}
    if torch.cuda.is_available():
        states[_CUDA] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        states[_LOADER] = loader_generator.get_state()
    return states


def set_random_states(states: dict[str, Any], loader_generator: torch.Generator | None) -> None:
    """Restore :func:`random_states` (CUDA: the devices this machine has)."""
    random.setstate(states["random_state"])
    np.random.set_state(states["numpy_random_seed"])
    torch.set_rng_state(states["torch_manual_seed"])
    if torch.cuda.is_available() and _CUDA in states:
        for device, state in enumerate(states[_CUDA][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
    if loader_generator is not None and _LOADER in states:
        loader_generator.set_state(states[_LOADER])


def save_run_state(folder: Path, accelerator: Any, model: torch.nn.Module, optimizer: Any,
                   lr_scheduler: Any, loader_generator: torch.Generator | None) -> None:
    """Write the files of the module doc (the shared ones from the main process only)."""
    from safetensors.torch import save_model

    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), str(folder / MODEL_WEIGHTS),
                   metadata={"format": "pt"})
        save_state_files(folder, OPTIMIZER, optimizer.state_dict())
        save_state_files(folder, SCHEDULER, lr_scheduler.state_dict())
        if accelerator.scaler is not None:
            save_state_files(folder, SCALER, accelerator.scaler.state_dict())
    save_state_files(folder, RANDOM_STATES.format(accelerator.process_index),
                     random_states(accelerator.step, loader_generator))


def load_run_state(folder: Path, accelerator: Any, model: torch.nn.Module, optimizer: Any,
                   lr_scheduler: Any, loader_generator: torch.Generator | None) -> bool:
    """Restore what :func:`save_run_state` wrote. False when ``folder`` holds no random
    states for this process (a run resumed on more processes): the caller seeds them."""
    from safetensors.torch import load_model

    # read to the CPU; load_state_dict copies into the parameters wherever they live
    load_model(accelerator.unwrap_model(model), str(folder / MODEL_WEIGHTS))
    optimizer.load_state_dict(load_state_files(folder, OPTIMIZER))
    lr_scheduler.load_state_dict(load_state_files(folder, SCHEDULER))
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(load_state_files(folder, SCALER))
    stem = RANDOM_STATES.format(accelerator.process_index)
    if not (folder / f"{stem}.json").is_file():
        return False
    states = load_state_files(folder, stem)
    accelerator.step = int(states.get("step", 0))
    set_random_states(states, loader_generator)
    return True
