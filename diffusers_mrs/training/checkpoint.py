"""Resumable checkpoints without pickle: safetensors + JSON only, so that a run's state can
be copied (or committed) to another machine and resumed there.

A checkpoint folder ``OUTPUT/checkpoints/checkpoint_<n>`` holds

- ``model.safetensors``, ``optimizer.json``/``optimizer.safetensors``, ``scheduler.json``,
  ``scaler.json`` (fp16) and each process's ``random_states_<rank>.json``/``.safetensors``
  (:mod:`.run_state`);
- ``trainer_state.json``: the loop counters (:class:`TrainState`) and the EMA's settings,
  written last (a folder without it is incomplete);
- ``ema.safetensors``: the EMA weights, by parameter name.

Checkpoints of earlier versions are read with ``torch.load(weights_only=True)`` and a short
allow-list (numpy arrays and their dtypes, for the random states): before a run resumes,
:func:`check_checkpoint` reads every pickle file of the folder that way and refuses one that
needs any other object, with an error naming it. Resuming then rewrites them in this layout
(:func:`upgrade_checkpoint`; the pickles are kept as ``*.old``): accelerate's
``optimizer.bin``, ``scheduler.bin``, ``scaler.pt``, ``random_states_<rank>.pkl``, and the
counters and EMA that still earlier versions let accelerate pickle as
``custom_checkpoint_<i>.pkl``. ``python -m diffusers_mrs.training.export_checkpoint CKPT OUT``
writes a pickle-free copy of a checkpoint folder (:func:`export_checkpoint`) and leaves the
folder as it is, e.g. for a running job's latest checkpoint.
"""

from __future__ import annotations

import codecs
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .portable_state import save_state_files

TRAINER_STATE = "trainer_state.json"
EMA_WEIGHTS = "ema.safetensors"
#: Names of the files torch/accelerate pickle (``torch.save``) in a checkpoint folder.
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")
_CKPT_NUMBER = re.compile(r"(\d+)$")
#: accelerate's pickles in a checkpoint of an earlier version -> the stem of their
#: safetensors + JSON files in this layout (see :mod:`.run_state`).
_ACCELERATE_PICKLES = {"optimizer.bin": "optimizer", "scheduler.bin": "scheduler",
                       "scaler.pt": "scaler"}
_RANDOM_STATES_PKL = re.compile(r"^random_states_(\d+)\.pkl$")


class TrainState:
    """Loop counters saved with each checkpoint (in ``trainer_state.json``)."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.train_seconds = 0.0  # wall-clock seconds spent in the loop, over all resumes

    def state_dict(self) -> dict[str, float]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.step = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))


def checkpoint_number(folder: Path) -> int | None:
    """The number that ends a checkpoint folder's name (None when it has none)."""
    match = _CKPT_NUMBER.search(folder.name)
    return int(match.group(1)) if match else None


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (by the number that ends their name)."""
    if not ckpt_root.is_dir():
        return []
    found = [(n, p) for p in ckpt_root.iterdir()
             if p.is_dir() and (n := checkpoint_number(p)) is not None]
    return [p for _, p in sorted(found)]


def new_checkpoint_folder(ckpt_root: Path, iteration: int, total_limit: int | None,
                          is_main_process: bool) -> Path:
    """``ckpt_root/checkpoint_<iteration>``, as accelerate's automatic naming has it; the
    main process first deletes the oldest checkpoints beyond ``total_limit - 1``."""
    folder = ckpt_root / f"checkpoint_{iteration}"
    if folder.exists():
        raise ValueError(f"checkpoint folder {folder} already exists")
    if is_main_process and total_limit is not None:
        existing = list_checkpoints(ckpt_root)
        for old in existing[: max(len(existing) + 1 - total_limit, 0)]:
            shutil.rmtree(old)
    return folder


def resolve_checkpoint(resume: str, ckpt_root: Path) -> Path | None:
    """The folder ``resume`` names: ``"latest"`` (None when the run has none yet), a path,
    or a folder name inside ``ckpt_root``."""
    if resume == "latest":
        ckpts = list_checkpoints(ckpt_root)
        return ckpts[-1] if ckpts else None
    path = Path(resume)
    if not path.is_dir():
        path = ckpt_root / resume
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {resume!r} not found (looked in {ckpt_root})")
    return path


def _allowed_globals() -> list[Any]:
    """What a checkpoint's pickles may construct besides tensors and Python values: numpy
    arrays and dtypes (numpy's random state)."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)),
            codecs.encode]


def load_pickle(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with numpy arrays allowed; a ``ValueError``
    naming ``path`` when it holds anything else (or is no torch pickle at all)."""
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"refusing to load {path}: it is not a plain pickle of tensors, numbers and numpy"
            f" arrays (torch.load(weights_only=True): {reason}). Only resume from checkpoints"
            " you trust; delete this checkpoint folder or pass another one.") from None


def check_checkpoint(folder: Path) -> None:
    """Refuse ``folder`` (``ValueError`` naming the file) when any of its pickle files needs
    more than :func:`load_pickle` allows, or when it lacks the trainer's state, the network
    or the optimiser (in this layout or an earlier one)."""
    for path in sorted(p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES):
        load_pickle(path)
    required = {TRAINER_STATE: ("custom_checkpoint_0.pkl",), "model.safetensors": (),
                "optimizer.json": ("optimizer.bin",)}
    for name, earlier in required.items():
        if not any((folder / n).is_file() for n in (name, *earlier)):
            raise ValueError(f"{folder} has no {name}: not a complete checkpoint of this "
                             "trainer (was it interrupted while saving?); pass another one")


def save_trainer_state(folder: Path, state: TrainState, ema: Any | None,
                       param_names: Sequence[str]) -> None:
    """Write ``trainer_state.json`` and, with an EMA (diffusers' ``EMAModel`` over the
    parameters named ``param_names``), ``ema.safetensors``."""
    _write_trainer_state(folder, state.state_dict(),
                         None if ema is None else ema.state_dict(), param_names)


def _write_trainer_state(folder: Path, counters: dict[str, Any], ema_state: dict[str, Any] | None,
                         param_names: Sequence[str]) -> None:
    """``trainer_state.json`` (counters, EMA settings) and ``ema.safetensors`` from an
    ``EMAModel.state_dict()``."""
    from safetensors.torch import save_file

    record: dict[str, Any] = {"trainer": counters}
    if ema_state is not None:
        ema_state = dict(ema_state)
        shadow = ema_state.pop("shadow_params")
        if len(shadow) != len(param_names):
            raise ValueError(f"the EMA holds {len(shadow)} tensors, the model {len(param_names)}")
        record["ema"] = ema_state
        save_file({name: p.detach().cpu().contiguous() for name, p in zip(param_names, shadow,
                                                                           strict=True)},
                  str(folder / EMA_WEIGHTS))
    (folder / TRAINER_STATE).write_text(json.dumps(record, indent=2) + "\n")


def upgrade_legacy_checkpoint(folder: Path, param_names: Sequence[str]) -> bool:
    """Rewrite a checkpoint of an earlier version (counters and EMA pickled by accelerate as
    ``custom_checkpoint_<i>.pkl``, which accelerate's ``load_state`` would unpickle with
    ``weights_only=False``) in this layout: their contents, read with :func:`load_pickle`,
    go to ``trainer_state.json``/``ema.safetensors`` and the pickles are renamed
    ``*.pkl.old``. True when it did."""
    legacy = sorted(folder.glob("custom_checkpoint_*.pkl"))
    if not legacy or (folder / TRAINER_STATE).is_file():
        return False
    counters, ema_state = _legacy_trainer_state(folder)
    _write_trainer_state(folder, counters, ema_state, param_names)
    for path in legacy:
        path.rename(path.with_name(path.name + ".old"))
    return True


def _legacy_trainer_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Counters and EMA state of a checkpoint written by an earlier version (accelerate's
    ``custom_checkpoint_<i>.pkl``), read with :func:`load_pickle`."""
    states = [load_pickle(p) for p in sorted(folder.glob("custom_checkpoint_*.pkl"))]
    counters = next((s for s in states if isinstance(s, dict) and "step" in s), None)
    if counters is None:
        raise ValueError(f"{folder}: no loop counters in its custom_checkpoint_*.pkl")
    ema = next((s for s in states if isinstance(s, dict) and "shadow_params" in s), None)
    return counters, ema


def read_trainer_state(folder: Path, param_names: Sequence[str]
                       ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The loop counters and the EMA state (``EMAModel.state_dict()`` form, ``shadow_params``
    in the order of ``param_names``; None when the run kept no EMA) of a checkpoint."""
    from safetensors.torch import load_file

    path = folder / TRAINER_STATE
    if not path.is_file():
        return _legacy_trainer_state(folder)
    record = json.loads(path.read_text())
    if "ema" not in record:
        return record["trainer"], None
    weights = load_file(str(folder / EMA_WEIGHTS))
    missing = [n for n in param_names if n not in weights]
    if missing or len(weights) != len(param_names):
        raise ValueError(f"{folder / EMA_WEIGHTS} does not fit the model: missing {missing[:5]},"
                         f" {len(weights)} tensors for {len(param_names)} parameters")
    return record["trainer"], {**record["ema"], "shadow_params": [weights[n] for n in param_names]}


def _pickle_stem(name: str) -> str | None:
    """The stem of the safetensors + JSON files that replace accelerate's pickle ``name``
    (None: not one of accelerate's pickles that this trainer's checkpoints hold)."""
    match = _RANDOM_STATES_PKL.match(name)
    return f"random_states_{match.group(1)}" if match else _ACCELERATE_PICKLES.get(name)


def _accelerate_pickles(folder: Path) -> list[Path]:
    """accelerate's pickles in ``folder``; a ``ValueError`` names any other pickle file."""
    pickles = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES
                     and not p.name.startswith("custom_checkpoint_"))
    unknown = [p.name for p in pickles if _pickle_stem(p.name) is None]
    if unknown:
        raise ValueError(f"{folder}: unexpected pickle file(s) {unknown}; this trainer's "
                         f"checkpoints hold only {sorted(_ACCELERATE_PICKLES)} and "
                         "random_states_<rank>.pkl")
    return pickles


def convert_pickles(folder: Path, out: Path) -> list[Path]:
    """Write each of accelerate's pickles in ``folder`` (read with :func:`load_pickle`) as
    safetensors + JSON in ``out``; the pickles converted."""
    pickles = _accelerate_pickles(folder)
    for path in pickles:
        save_state_files(out, _pickle_stem(path.name), load_pickle(path))
    return pickles


def upgrade_checkpoint(folder: Path, param_names: Sequence[str]) -> list[str]:
    """Rewrite a checkpoint of an earlier version in this layout, in place (the pickles are
    renamed ``*.old``); what it did, one line per layout (none for a current checkpoint)."""
    notes = []
    if upgrade_legacy_checkpoint(folder, param_names):
        notes.append(f"{folder}: the counters and EMA of an earlier version's pickles are now "
                     "trainer_state.json and ema.safetensors")
    converted = convert_pickles(folder, folder)
    for path in converted:
        path.rename(path.with_name(path.name + ".old"))
    if converted:
        notes.append(f"{folder}: {', '.join(p.name for p in converted)} are now safetensors + "
                     "JSON (the pickles are kept as *.old)")
    return notes


def export_checkpoint(folder: Path, out: Path) -> list[Path]:
    """A copy of the checkpoint ``folder`` in ``out`` (a new folder) without pickle:
    accelerate's pickles converted, every other file copied but ``*.old`` ones; ``folder``
    is only read. The files written."""
    check_checkpoint(folder)
    if not (folder / TRAINER_STATE).is_file():
        raise ValueError(f"{folder} is a checkpoint of an early version (custom_checkpoint_*"
                         ".pkl): resume the run from it once, which upgrades it, then export")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; pass a new folder")
    out.mkdir(parents=True, exist_ok=True)
    convert_pickles(folder, out)
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix not in (*PICKLE_SUFFIXES, ".old"):
            shutil.copy2(path, out / path.name)
    return sorted(out.iterdir())

