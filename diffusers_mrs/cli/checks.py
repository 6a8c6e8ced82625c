"""What ``diffusers-mrs restore`` checks before it loads a network.

Each check raises :class:`UsageError` with a one-line message; the command exits with
status 2 and has written nothing but, at most, an empty output folder. None of them touches
the network: for a Hub repo id the step count and ``--degradation`` are checked right after
loading, before any image is restored.
"""

from __future__ import annotations

import argparse
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..restore_settings import AUTO_DEGRADATION, MIN_TILE_SIZE

__all__ = [
    "EXIT_FAILURES",
    "EXIT_OK",
    "EXIT_USAGE",
    "MIN_TILE_SIZE",
    "PROBE_BYTES",
    "UsageError",
    "check_degradation_choice",
    "check_device",
    "check_model_location",
    "check_scheduler_steps",
    "check_solver_order_applies",
    "check_tile_overlap",
    "check_tile_size",
    "local_degradation_types",
    "local_model_folder",
    "local_scheduler_config",
    "non_negative_int",
    "positive_int",
    "prepare_output_dir",
    "scheduler_class_named",
    "whole_number",
]

_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")

#: Exit statuses of every sub-command: done, some inputs failed, usage error.
EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with the command line or the inputs, found before any work is done (exit
    status :data:`EXIT_USAGE`)."""


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` and, if given, <= ``maximum``
    (``2.5`` and ``x`` get a clear message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {text}")
        return value

    bounds = f">= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
    parse.__name__ = f"whole number {bounds}"
    return parse


#: argparse types of counts and sizes.
positive_int = whole_number(1)
non_negative_int = whole_number(0)


def check_device(name: str | None) -> None:
    """``--device``: a torch device string whose backend is present on this machine."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(
            f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)"
        ) from None
    if device.type not in _DEVICE_TYPES:
        raise UsageError(f"--device {name!r}: use one of {', '.join(_DEVICE_TYPES)}")
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if device.type == "mps":
        backend = torch.backends.mps
    if backend is not None and not backend.is_available():
        raise UsageError(f"--device {name!r}: no {device.type} device on this machine")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.type != "cpu" and device.index >= count:
        raise UsageError(f"--device {name!r}: this machine has {count} {device.type} device(s)")


def check_tile_size(tile: int | None) -> None:
    """``--tile``: at least :data:`MIN_TILE_SIZE`."""
    if tile is not None and tile < MIN_TILE_SIZE:
        raise UsageError(
            f"--tile {tile} is below the smallest useful tile, {MIN_TILE_SIZE}: smaller tiles"
            " leave visible seams (under ~45 dB PSNR against the untiled result on the default"
            " model; docs/guide/tiling.md, 'The smallest useful tile')"
        )


def check_tile_overlap(tile: int | None, overlap: int | None) -> None:
    """``--tile-overlap``: only with ``--tile``, and smaller than it (a command-line error,
    reported with the usage by the parser)."""
    if overlap is None:
        return
    if tile is None:
        raise UsageError("--tile-overlap needs --tile")
    if overlap >= tile:
        raise UsageError("--tile-overlap must be smaller than --tile")


def check_model_location(model: str | None) -> None:
    """``--model``: an existing pipeline folder, something shaped like a Hub repo id, a
    DA-CLIP pair of original checkpoints (``SOURCE:PAIR`` or a bare pair name) or a single
    original IR-SDE / Refusion network file (``.pth``)."""
    from diffusers_mrs.original_checkpoints import original_model_spec

    if model is None or original_model_spec(model) is not None:
        return
    path = Path(os.path.expanduser(model))
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UsageError(f"--model {model}: not a pipeline folder (no model_index.json in it)")
        return
    if path.exists():
        raise UsageError(
            f"--model {model}: is a file; pass a pipeline folder or an original .pth checkpoint"
        )
    parts = model.split("/")
    if len(parts) != 2 or not all(parts) or model.startswith((".", "~")) or "\\" in model:
        raise UsageError(
            f"--model {model}: no such folder (and not a Hub repo id, which has the form"
            " owner/name)"
        )


#: Bytes the probe file of :func:`prepare_output_dir` writes (and flushes to disk).
PROBE_BYTES = 64 * 1024


def prepare_output_dir(output: Path) -> None:
    """Creates ``output`` if needed and proves it writable, with room left, by a probe file
    of :data:`PROBE_BYTES` written to disk (``fsync``) and removed again: a read-only or
    full file system is refused before the model loads."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: is a file, not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--output {output}: cannot create the folder ({err.strerror})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=output, prefix=".diffusers-mrs-probe-") as probe:
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        problem = "no space left" if err.errno == errno.ENOSPC else "folder is not writable"
        raise UsageError(f"--output {output}: {problem} ({err.strerror})") from None


def local_scheduler_config(model: str | None) -> dict | None:
    """The scheduler config of the default model or a local folder (None for a repo id)."""
    import json

    from diffusers_mrs.pipelines.pipeline_mr_restoration import default_model_path

    folder = Path(os.path.expanduser(model)) if model is not None else default_model_path()
    config_file = folder / "scheduler" / "scheduler_config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text(encoding="utf-8"))


def scheduler_class_named(config: dict) -> type | None:
    """The scheduler class a scheduler config names (``_class_name``), if this package has it."""
    import diffusers_mrs

    return getattr(diffusers_mrs, str(config.get("_class_name")), None)


def check_solver_order_applies(scheduler_class: type | None) -> None:
    """``--solver-order``: only the MR Sampler and MR UniPC have a solver order."""
    from diffusers_mrs import MRSamplerScheduler, MRUniPCScheduler

    ordered = (MRSamplerScheduler, MRUniPCScheduler)
    if scheduler_class is not None and not issubclass(scheduler_class, ordered):
        raise UsageError(
            f"--solver-order applies to the MR Sampler and MR UniPC (--scheduler mrs or unipc)"
            f" only; this run uses {scheduler_class.__name__}"
        )


def check_scheduler_steps(config: dict, scheduler_class: type | None, steps: int) -> None:
    """``--steps``: allowed by the scheduler the run will use, built from its config alone.

    ``scheduler_class`` None means the config's own class.
    """
    cls = scheduler_class or scheduler_class_named(config)
    if cls is None:
        return
    try:
        cls.from_config(config).set_timesteps(steps)
    except ValueError as err:
        raise UsageError(f"--steps {steps} is not possible with {cls.__name__}: {err}") from None


def local_model_folder(model: str | None) -> Path | None:
    """The folder of the default model (``model`` None) or of a local ``--model``; ``None``
    for a Hub repo id (known only after loading)."""
    from diffusers_mrs.pipelines.pipeline_mr_restoration import default_model_path

    folder = Path(os.path.expanduser(model)) if model is not None else default_model_path()
    return folder if (folder / "model_index.json").is_file() else None


def local_degradation_types(folder: Path) -> list[str] | None:
    """The degradation types of a pipeline folder's ``degradation_encoder`` (from its
    ``config.json``), or ``None`` where ``model_index.json`` names no degradation encoder
    (the model is not degradation-aware)."""
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"--model {folder}: cannot read its model_index.json ({err})") from None
    entry = index.get("degradation_encoder") if isinstance(index, dict) else None
    if not isinstance(entry, list) or not entry or entry[0] is None:
        return None
    config_file = folder / "degradation_encoder" / "config.json"
    try:
        types = json.loads(config_file.read_text(encoding="utf-8"))["degradations"]
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(
            f"--model {folder}: its degradation encoder has no readable config ({config_file}:"
            f" {type(err).__name__})"
        ) from None
    return [str(t) for t in types]


def check_degradation_choice(types: list[str] | None, degradation: str) -> None:
    """``--degradation``: ``auto``, or one of the model's degradation types (``types``;
    ``None`` for a model without a degradation encoder, which takes only ``auto``)."""
    if degradation == AUTO_DEGRADATION:
        return
    if types is None:
        raise UsageError(
            f"--degradation {degradation}: this model is not degradation-aware (it has no"
            " degradation encoder); leave --degradation out"
        )
    if degradation not in types:
        raise UsageError(
            f"--degradation {degradation}: unknown degradation type; this model knows"
            f" {', '.join(types)} (or auto to detect it)"
        )
