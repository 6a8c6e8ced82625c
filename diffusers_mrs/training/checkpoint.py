"""Resumable checkpoints that resuming never unpickles arbitrary objects from.

A checkpoint folder ``OUTPUT/checkpoints/checkpoint_<n>`` holds accelerate's files
(``model.safetensors``; ``optimizer.bin``, ``scheduler.bin`` and ``random_states_<rank>.pkl``,
which accelerate pickles) and the trainer's own, written without pickle:

- ``trainer_state.json``: the loop counters (:class:`TrainState`) and the EMA's settings;
- ``ema.safetensors``: the EMA weights, by parameter name.

Before a run resumes, :func:`check_checkpoint` reads every pickle file of the folder with
``torch.load(weights_only=True)`` and a short allow-list (numpy arrays and their dtypes, for
the random states): a file that needs any other object is refused with an error naming it,
before anything is built or loaded. Checkpoints of earlier versions, whose counters and EMA
accelerate pickled as ``custom_checkpoint_<i>.pkl`` (and would unpickle with
``weights_only=False``), are read the same way and rewritten in this layout on resuming
(:func:`upgrade_legacy_checkpoint`).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAINER_STATE = "trainer_state.json"
EMA_WEIGHTS = "ema.safetensors"
#: Names of the files torch/accelerate pickle (``torch.save``) in a checkpoint folder.
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")
_CKPT_NUMBER = re.compile(r"(\d+)$")


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
    more than :func:`load_pickle` allows, or when it lacks the trainer's state."""
    for path in sorted(p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES):
        load_pickle(path)
    if not (folder / TRAINER_STATE).is_file() and not any(folder.glob("custom_checkpoint_*.pkl")):
        raise ValueError(f"{folder} has no {TRAINER_STATE}: not a complete checkpoint of this "
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
