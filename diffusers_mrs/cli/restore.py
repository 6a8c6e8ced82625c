"""``diffusers-mrs restore``: checking, loading and restoring, also under accelerate.

``diffusers-mrs restore INPUT... --output DIR`` restores image files and folders with an
:class:`~diffusers_mrs.MRRestorationPipeline` and writes ``DIR/<input name>.png``: the whole
input name with only its final extension replaced (``frame.0001.tif`` ->
``frame.0001.png``, ``photo 2024.06.01.jpg`` -> ``photo 2024.06.01.png``).

Behaviour, in order:

1. Everything that can be checked before the network loads is checked, and any problem is
   a usage error: one line on stderr, exit status 2, nothing written (:func:`run_restore`,
   then :func:`check_before_loading`): ``--device`` (a device this machine has), ``--tile``
   (at least :data:`~diffusers_mrs.restore_settings.MIN_TILE_SIZE`), the inputs (a path
   that does not exist, no image at all, two inputs that would write the same output file,
   an output that would overwrite an input), existing outputs (below), ``--model`` (an
   existing pipeline folder or an ``owner/name`` repo id), the output folder (created if
   missing, then proven writable, with room left, by a probe file written to disk), the
   manifest's path (not a folder), ``--steps`` against the chosen
   scheduler's config and ``--degradation`` against the model's degradation types (for a
   Hub repo id both right after loading, still before any image). ``--tile-overlap``
   against ``--tile`` is an argument error of the parser (:mod:`~diffusers_mrs.cli.parser`).
2. Existing outputs are never silently replaced (:mod:`~diffusers_mrs.cli.planning`):
   ``DIR/.diffusers-mrs-outputs.json`` records which input each output belongs to.
   ``--overwrite`` replaces, and ``--skip-existing`` keeps, only an input's *own* earlier
   output; an existing file that belongs to another input, or that the manifest does not
   know, stops the run (status 2) even with ``--overwrite``: no run ever writes two inputs
   to one path, across runs too. ``--overwrite`` without ``--samples`` also removes the
   input's own ``NAME.std.png`` of an earlier ``--samples`` run (and its manifest entry).
3. Under ``accelerate launch --num_processes N`` the work list is split between the
   processes with ``PartialState().split_between_processes`` (contiguous chunks, no
   padding): every input is restored by exactly one process, which writes its output.
   Each process uses its accelerate device (``--device`` overrides it). On a machine
   without GPUs, start CPU processes with ``accelerate launch --multi_gpu --num_processes
   N`` (torchrun underneath; the CLI then sets accelerate up for CPU/gloo) or ``torchrun
   --nproc_per_node N -m diffusers_mrs.cli ...``; ``accelerate launch --cpu
   --num_processes N`` starts a single process unless MPI is configured. Progress: a
   per-image bar with a per-step bar nested inside, on the main process only (``-q`` turns
   both off).
4. Files are read and written by :mod:`diffusers_mrs.image_io` (EXIF orientation, 8/16 bit
   by the file's mode; output PNGs keep the bit depth, grayscale and alpha of the input;
   multi-frame files are refused; so is a file whose header declares more than
   ``--max-pixels`` pixels, before it is decoded). A file that cannot be read or restored
   is reported on stderr and skipped; the others are still restored, and the exit status
   is 1 at the end (0 if everything worked). Without ``--tile``, an image of more than
   :data:`~diffusers_mrs.cli.limits.AUTO_TILE_PIXELS` pixels x samples is restored with
   the network on tiles, and a line on stdout says so (:mod:`~diffusers_mrs.cli.limits`).
   Every file (outputs, uncertainty maps, the manifest) is written by
   :func:`~diffusers_mrs.atomic_files.write_atomic`: a new temporary file with a short
   random name, renamed onto the target, so an interrupted run (Ctrl-C: one line, exit
   status 130) leaves no truncated PNG behind and a planted symlink is never written
   through.

With ``--seed`` every image gets its own generator seeded with that value, so the result of
an image does not depend on how the inputs are split between processes.

Degradation-aware models (a ``degradation_encoder``): each image's degradation type is
detected (``--degradation auto``, the default) or forced (``--degradation NAME``, one of the
model's types). After each image one line on stdout names the type used and the encoder's
probability of it, e.g. ``photos/cat.png: noise (p=0.99)`` (``forced, p=0.12`` for a forced
type), and the closing summary counts the types.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic_files import write_atomic
from ..image_limits import DEFAULT_MAX_PIXELS, allow_pixels
from ..restore_settings import (
    degradation_label,
    degradation_types,
    forced_degradation,
    scheduler_class,
    seeded_generator,
    set_tf32,
)
from .checks import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    check_degradation_choice,
    check_device,
    check_model_location,
    check_scheduler_steps,
    check_solver_order_applies,
    check_tile_size,
    local_degradation_types,
    local_model_folder,
    local_scheduler_config,
    prepare_output_dir,
    scheduler_class_named,
)
from .limits import automatic_tile, automatic_tile_note
from .planning import (
    Job,
    check_manifest_path,
    collect_inputs,
    plan_jobs,
    remove_stale_std_maps,
    std_map_path,
    write_manifest,
)

if TYPE_CHECKING:
    from ..image_io import DecodedImage

__all__ = ["check_before_loading", "load_pipeline", "read_image", "restore_one", "run_restore"]


def load_pipeline(model: str | None, scheduler: str | None, device: Any, dtype_name: str,
                  solver_order: int | None = None) -> Any:
    """Loads the pipeline (default model if ``model`` is None) and sets the scheduler (and
    the MR Sampler's ``solver_order``, if given)."""
    import torch

    from diffusers_mrs.original_checkpoints import load_model_argument

    dtype = getattr(torch, dtype_name)
    pipe = load_model_argument(model)
    if scheduler is not None:
        cls = scheduler_class(scheduler)
        if type(pipe.scheduler) is not cls:
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
    if solver_order is not None:
        check_solver_order_applies(type(pipe.scheduler))
        pipe.scheduler = type(pipe.scheduler).from_config(
            pipe.scheduler.config, solver_order=solver_order
        )
    pipe.to(device)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    return pipe


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Reads an input file by the rules of :mod:`diffusers_mrs.image_io` (at most
    ``max_pixels`` pixels by its header)."""
    from ..image_io import read_image as read

    return read(path, max_pixels=max_pixels)


def restore_one(
    pipe: Any, job: Job, args: argparse.Namespace, device: Any,
    note: Callable[[str], None] = print,
) -> tuple[str, float] | None:
    """Restores one file and writes its PNG in the input's format
    (:func:`~diffusers_mrs.atomic_files.write_atomic`); ``note`` gets the line that says
    the image is tiled automatically (:func:`~diffusers_mrs.cli.limits.automatic_tile`).

    Returns the degradation type used and the encoder's probability of it (``None`` for a
    model without a degradation encoder)."""
    from ..image_io import write_image

    decoded = read_image(job.source, getattr(args, "max_pixels", DEFAULT_MAX_PIXELS))
    height, width = decoded.pixels.shape[:2]
    tile = automatic_tile(height, width, args.samples, args.tile)
    if tile is not None and args.tile is None:
        note(f"{job.source}: {automatic_tile_note(height, width, args.samples)}")
    cpu_noise = bool(getattr(args, "cpu_noise", False))
    generator = None if args.seed is None else seeded_generator(device, args.seed, cpu_noise)
    result = pipe(
        image=decoded.pixels,
        num_inference_steps=args.steps,
        generator=generator,
        output_type="np",
        tile_size=tile,
        tile_overlap=args.tile_overlap,
        tile_batch_size=args.tile_batch_size,
        num_samples=args.samples,
        degradation=forced_degradation(args.degradation),
        keep_clean=not getattr(args, "sample_clean", False),
        cpu_noise=cpu_noise,
    )
    job.target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(job.target, lambda file: write_image(file, result.images[0], decoded))
    if result.uncertainty is not None:
        from ..uncertainty_map import uncertainty_map

        std_map = uncertainty_map(result.uncertainty[0])
        write_atomic(job.std_target or std_map_path(job.target),
                     lambda file: std_map.save(file, format="PNG"))
    if result.degradation is None:
        return None
    return result.degradation[0], result.degradation_probability[0]


def _use_cpu(device: str | None) -> bool:
    """Whether accelerate should treat this run as CPU-only.

    ``PartialState()`` only sets up CPU multi-processing (gloo) when told the run is on the
    CPU; without that, processes started by ``torchrun`` / ``accelerate launch --multi_gpu``
    on a machine without GPUs would each believe they are alone and all restore everything.
    """
    import torch

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return True
    if device is not None:
        return torch.device(device).type == "cpu"
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    has_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    return not (torch.cuda.is_available() or has_mps or has_xpu)


@contextmanager
def _diffusers_progress_bars(enabled: bool) -> Iterator[None]:
    """Temporarily turns diffusers' progress bars (e.g. "Loading pipeline components") off."""
    from diffusers.utils import logging as diffusers_logging

    was_enabled = diffusers_logging.is_progress_bar_enabled()
    if not enabled:
        diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            diffusers_logging.enable_progress_bar()


def check_before_loading(args: argparse.Namespace) -> tuple[list[Job], list[Job]]:
    """Every check that needs no network weights, in order; returns ``plan_jobs``' result.

    Usage errors (:class:`UsageError`): tile size, inputs and output names, the ``--model``
    location, ``--degradation`` against the model's types, the output folder (created and
    probed: writable, not full), the manifest's path (not a folder), the step count against
    the scheduler's config (local models; repo ids right after loading). ``--device`` is
    checked before, by :func:`run_restore` (before accelerate parses it), and
    ``--tile-overlap``, ``--steps``, ``--samples`` and ``--seed`` by the parser.
    """
    check_tile_size(args.tile)
    inputs = collect_inputs(args.inputs, recursive=args.recursive)
    output = Path(args.output)
    jobs, skipped = plan_jobs(
        inputs, output, overwrite=args.overwrite, skip_existing=args.skip_existing,
        std_maps=args.samples > 1,
    )
    check_model_location(args.model)
    forced = forced_degradation(args.degradation) is not None
    folder = local_model_folder(args.model) if forced else None
    if folder is not None:
        check_degradation_choice(local_degradation_types(folder), args.degradation)
    prepare_output_dir(output)
    check_manifest_path(output)
    allow_pixels(args.max_pixels)  # Pillow's own limit must not refuse what --max-pixels allows
    config = local_scheduler_config(args.model)
    if config is not None:
        cls = scheduler_class(args.scheduler) if args.scheduler is not None else None
        cls = cls or scheduler_class_named(config)
        if args.solver_order is not None:
            check_solver_order_applies(cls)
            config = {**config, "solver_order": args.solver_order}
        check_scheduler_steps(config, cls, args.steps)
    return jobs, skipped


def _load_everywhere(state: Any, args: argparse.Namespace, device: Any, prefix: str) -> Any:
    """Loads the pipeline on every process (main first: one Hub download); None on failure."""
    load_error: Exception | None = None
    pipe = None
    with state.main_process_first():  # one download into the Hub cache, the others reuse it
        try:  # no exception may leave this block early: the others wait at its barrier
            with _diffusers_progress_bars(enabled=not args.quiet and state.is_main_process):
                pipe = load_pipeline(args.model, args.scheduler, device, args.dtype,
                                     solver_order=args.solver_order)
                if args.compile or args.compile_pad_multiple is not None:
                    pipe.enable_compile(pad_to_multiple=args.compile_pad_multiple)
            check_scheduler_steps(dict(pipe.scheduler.config), None, args.steps)
            check_degradation_choice(degradation_types(pipe), args.degradation)
        except Exception as err:
            load_error = err
    if load_error is None:
        # The per-step bar, nested under the per-image bar; only on the main process.
        pipe.set_progress_bar_config(
            disable=args.quiet or not state.is_main_process, leave=False, position=1,
            desc="steps",
        )
        return pipe
    what = args.model if args.model is not None else "the default model"
    message = str(load_error) if isinstance(load_error, UsageError) else (
        f"cannot load {what}: {type(load_error).__name__}: {load_error}"
    )
    print(f"{prefix}diffusers-mrs restore: error: {_one_line(message)}", file=sys.stderr)
    return None


def degradation_line(source: Path, degradation: tuple[str, float], forced: bool,
                     keep_clean: bool = True, types: list[str] | None = None) -> str:
    """``source: TYPE (p=0.99)``, the line printed after an image (``forced, p=`` if forced;
    ``, written unchanged`` for a clean image returned as it is). A detected ``clean`` reads
    ``no supported degradation found (noise, lowlight)`` (:func:`degradation_label`, with
    the model's ``types``)."""
    name, probability = degradation
    label = degradation_label(name, forced, types)
    line = f"{source}: {label} ({'forced, ' if forced else ''}p={probability:.2f})"
    return line + (", written unchanged" if name == "clean" and keep_clean else "")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _restore_all(pipe: Any, jobs: list[Job], args: argparse.Namespace, device: Any,
                 state: Any, prefix: str) -> int:
    """Restores this process's share; failures are reported and the others continue."""
    from tqdm.auto import tqdm

    failures: list[tuple[Path, str]] = []
    done = 0
    types: dict[str, int] = {}  # degradation type -> images restored as it
    forced = forced_degradation(args.degradation) is not None
    with state.split_between_processes(jobs) as my_jobs:
        bar = tqdm(my_jobs, desc=f"{prefix}images", unit="img", position=0,
                   disable=args.quiet or not state.is_main_process)
        for job in bar:
            try:
                degradation = restore_one(pipe, job, args, device, note=lambda line: tqdm.write(
                    prefix + line, file=sys.stdout))
                done += 1
            except Exception as err:  # report, continue with the other files
                message = _one_line(f"{type(err).__name__}: {err}")
                failures.append((job.source, message))
                tqdm.write(f"{prefix}error: cannot restore {job.source}: {message}",
                           file=sys.stderr)
                continue
            if degradation is not None:
                found = "none found" if degradation[0] == "clean" and not forced else degradation[0]
                types[found] = types.get(found, 0) + 1
                line = degradation_line(job.source, degradation, forced,
                                        not getattr(args, "sample_clean", False),
                                        degradation_types(pipe))
                tqdm.write(prefix + line, file=sys.stdout)
    counts = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
    summary = f" ({'forced ' if forced else ''}degradation: {counts})" if types else ""
    print(f"{prefix}restored {done} image(s) into {args.output}{summary}", file=sys.stderr)
    if failures:
        print(f"{prefix}{len(failures)} input(s) failed:", file=sys.stderr)
        for source, message in failures:
            print(f"  {source}: {message}", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK


def run_restore(args: argparse.Namespace) -> int:
    """The ``restore`` sub-command; returns the exit status."""
    from accelerate import PartialState

    try:  # before accelerate parses the device itself
        check_device(args.device)
    except UsageError as err:
        if os.environ.get("RANK", "0") == "0":  # one line, also under torchrun
            print(f"diffusers-mrs restore: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    state = PartialState(cpu=_use_cpu(args.device))
    prefix = f"[process {state.process_index}] " if state.num_processes > 1 else ""
    try:
        jobs, skipped = check_before_loading(args)
    except UsageError as err:
        if state.is_main_process:
            print(f"diffusers-mrs restore: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    if skipped and state.is_main_process:
        print(f"skipping {len(skipped)} input(s) whose output exists", file=sys.stderr)
    # Every process has checked the same file system state; nobody writes before all have.
    state.wait_for_everyone()

    device = args.device if args.device is not None else state.device
    set_tf32(bool(getattr(args, "tf32", False)))  # explicit: float32 is IEEE unless asked
    pipe = _load_everywhere(state, args, device, prefix)
    if pipe is None:
        return EXIT_USAGE
    if not _record_outputs(state, jobs, Path(args.output)):
        return EXIT_FAILURES
    return _restore_all(pipe, jobs, args, device, state, prefix)


def _record_outputs(state: Any, jobs: list[Job], output: Path) -> bool:
    """The main process removes stale uncertainty maps and writes the manifest; False on every
    process if that failed (e.g. the disk filled up since the checks; one line on stderr)."""
    failed = False
    if state.is_main_process:
        try:
            remove_stale_std_maps(jobs)
            write_manifest(output, jobs)
        except OSError as err:
            print(f"diffusers-mrs restore: error: {_one_line(err)}", file=sys.stderr)
            failed = True
    if state.num_processes > 1:  # the others must not restore without the manifest
        import torch
        from accelerate.utils import broadcast

        failed = bool(broadcast(torch.tensor([int(failed)], device=state.device)).item())
    state.wait_for_everyone()
    return not failed
