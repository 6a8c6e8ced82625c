"""The ``diffusers-mrs`` command line.

``diffusers-mrs restore INPUT... --output DIR`` restores image files and folders with an
:class:`~diffusers_mrs.MRRestorationPipeline` and writes ``DIR/<input name>.png``: the whole
input name with only its final extension replaced (``frame.0001.tif`` ->
``frame.0001.png``, ``photo 2024.06.01.jpg`` -> ``photo 2024.06.01.png``).

Behaviour, in order:

1. Everything that can be checked before the network loads is checked, and any problem is
   a usage error: one line on stderr, exit status 2, nothing written
   (:func:`check_before_loading`): ``--device`` (a device this machine has), ``--tile`` (at
   least :data:`~diffusers_mrs.cli_checks.MIN_TILE_SIZE`), the inputs (a path that does not
   exist, no image at all, two inputs that would write the same output file, an output
   that would overwrite an input), existing outputs (below), ``--model`` (an existing
   pipeline folder or an ``owner/name`` repo id), the output folder (created if missing,
   then proven writable with a probe file), ``--steps`` against the chosen scheduler's
   config and ``--degradation`` against the model's degradation types (for a Hub repo id
   both right after loading, still before any image).
2. Existing outputs are never silently replaced. ``DIR/.diffusers-mrs-outputs.json`` records
   which input each output belongs to. ``--overwrite`` replaces, and ``--skip-existing``
   keeps, only an input's *own* earlier output; an existing file that belongs to another
   input, or that the manifest does not know, stops the run (status 2) even with
   ``--overwrite``: no run ever writes two inputs to one path, across runs too.
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
   multi-frame files are refused). A file that cannot be read or restored is reported on
   stderr and skipped; the others are still restored, and the exit status is 1 at the end
   (0 if everything worked). Outputs are written to a temporary name and renamed, so an
   interrupted run leaves no truncated PNG behind.

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
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_checks import (
    MIN_TILE_SIZE,
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
from .image_io import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from .image_io import DecodedImage

SCHEDULERS = {
    "mrs": "MRSamplerScheduler",
    "posterior": "MRPosteriorScheduler",
    "euler": "MREulerMaruyamaScheduler",
}
DTYPES = ("float32", "float16", "bfloat16")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2

#: In every output folder: which input each output file belongs to (see :func:`plan_jobs`).
MANIFEST_NAME = ".diffusers-mrs-outputs.json"

__all__ = ["UsageError", "collect_inputs", "main", "plan_jobs"]


@dataclass(frozen=True)
class Job:
    """One image to restore: where it is read from and where its result goes."""

    source: Path
    target: Path
    std_target: Path | None = None  # the uncertainty map of ``--samples K``

    @property
    def targets(self) -> tuple[Path, ...]:
        return (self.target,) if self.std_target is None else (self.target, self.std_target)


# ----------------------------------------------------------------------------- planning
def collect_inputs(
    paths: Sequence[str | os.PathLike], recursive: bool = False
) -> list[tuple[Path, Path]]:
    """Expands files and folders into ``(file, relative name)`` pairs, in a stable order.

    Files given directly are taken whatever their extension; folders contribute their files
    with an image extension (:data:`IMAGE_EXTENSIONS`, case-insensitive), sorted, hidden
    files skipped. The relative name is the whole file name, prefixed by the sub-folder
    inside the given folder when ``recursive``; the output is that name with its final
    extension replaced by ``.png`` (``frame.0001.tif`` -> ``frame.0001.png``).

    Raises:
        UsageError: a path does not exist.
    """
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(
                p
                for p in path.glob(pattern)
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            found.extend((p, p.relative_to(path)) for p in files)
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise UsageError(f"input not found: {raw}")
    return found


def output_name(relative: Path) -> Path:
    """The output path (relative to ``--output``): only the final extension becomes ``.png``."""
    return relative.with_suffix(".png") if relative.suffix else relative.with_name(
        relative.name + ".png"
    )


def read_manifest(output_dir: Path) -> dict[str, str]:
    """``{output relative path: source absolute path}`` of earlier runs into ``output_dir``."""
    try:
        data = json.loads((output_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    outputs = data.get("outputs") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in outputs.items()} if isinstance(outputs, dict) else {}


def write_manifest(output_dir: Path, jobs: Sequence[Job]) -> None:
    """Records which input each planned output belongs to (atomically, merged with earlier runs)."""
    entries = read_manifest(output_dir)
    for job in jobs:
        for target in job.targets:
            entries[target.relative_to(output_dir).as_posix()] = str(job.source.resolve())
    tmp = output_dir / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"version": 1, "outputs": entries}, indent=1), encoding="utf-8")
    os.replace(tmp, output_dir / MANIFEST_NAME)


def _check_unique_targets(jobs: Sequence[Job]) -> None:
    by_target: dict[Path, list[Path]] = {}
    for job in jobs:
        for target in job.targets:
            by_target.setdefault(target.resolve(), []).append(job.source)
    clashes = {t: s for t, s in by_target.items() if len(s) > 1}
    if clashes:
        shown = "; ".join(f"{t} <- " + ", ".join(map(str, s)) for t, s in clashes.items())
        raise UsageError(f"several inputs would write the same output file: {shown}")
    sources = {job.source.resolve() for job in jobs}
    onto_inputs = [t for t in by_target if t in sources]
    if onto_inputs:
        names = ", ".join(map(str, onto_inputs))
        raise UsageError(f"outputs would overwrite input files: {names}; choose another --output")


def _check_owners(jobs: Sequence[Job], output_dir: Path) -> list[Job]:
    """The jobs with existing outputs; raises if one of those files is not the job's own."""
    existing = [(job, t) for job in jobs for t in job.targets if t.exists()]
    owners = read_manifest(output_dir) if existing else {}
    for job, target in existing:
        owner = owners.get(target.relative_to(output_dir).as_posix())
        if owner != str(job.source.resolve()):
            origin = f"the result of {owner}" if owner else "a file not written for this input"
            raise UsageError(
                f"an output file belongs to another input: {target} is {origin}; --overwrite"
                " replaces only an input's own output: choose another --output"
            )
    return list(dict.fromkeys(job for job, _ in existing))


def plan_jobs(
    inputs: Sequence[tuple[Path, Path]],
    output_dir: Path,
    overwrite: bool = False,
    skip_existing: bool = False,
    std_maps: bool = False,
) -> tuple[list[Job], list[Job]]:
    """Maps inputs to ``output_dir/<name>.png``; returns ``(jobs to run, jobs skipped)``.

    With ``std_maps`` (``--samples K``) each job also writes ``<name>.std.png``. An existing
    output is this input's own only if the manifest of earlier runs (:data:`MANIFEST_NAME`
    in ``output_dir``) says so; ``overwrite`` replaces and ``skip_existing`` keeps only such
    files. Any other existing file is never touched.

    Raises:
        UsageError: no inputs, two inputs with the same output, an output that is an input
            file, an existing output of another input (or of unknown origin), or existing
            own outputs without ``overwrite``/``skip_existing``.
    """
    if not inputs:
        raise UsageError("no input images found")
    jobs = []
    for src, rel in inputs:
        target = output_dir / output_name(rel)
        jobs.append(Job(src, target, std_map_path(target) if std_maps else None))
    _check_unique_targets(jobs)
    existing = _check_owners(jobs, output_dir)
    if existing and not (overwrite or skip_existing):
        shown = ", ".join(str(j.target) for j in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise UsageError(
            f"{len(existing)} output file(s) already exist ({shown}{more}); pass --overwrite to"
            " replace them or --skip-existing to keep them"
        )
    if skip_existing and not overwrite:
        skipped = set(existing)
        return [j for j in jobs if j not in skipped], existing
    return jobs, []


# ----------------------------------------------------------------------------- restoring
def load_pipeline(model: str | None, scheduler: str | None, device: Any, dtype_name: str,
                  solver_order: int | None = None) -> Any:
    """Loads the pipeline (default model if ``model`` is None) and sets the scheduler (and
    the MR Sampler's ``solver_order``, if given)."""
    import torch

    import diffusers_mrs

    dtype = getattr(torch, dtype_name)
    pipe = diffusers_mrs.MRRestorationPipeline.from_pretrained(model)
    if scheduler is not None:
        cls = getattr(diffusers_mrs, SCHEDULERS[scheduler])
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


def read_image(path: Path) -> DecodedImage:
    """Reads an input file by the rules of :mod:`diffusers_mrs.image_io`."""
    from .image_io import read_image as read

    return read(path)


def restore_one(
    pipe: Any, job: Job, args: argparse.Namespace, device: Any
) -> tuple[str, float] | None:
    """Restores one file and writes its PNG in the input's format (temporary file + rename).

    Returns the degradation type used and the encoder's probability of it (``None`` for a
    model without a degradation encoder)."""
    import torch

    from .image_io import write_image

    decoded = read_image(job.source)
    generator = None
    if args.seed is not None:
        gen_device = device if torch.device(device).type == "cuda" else "cpu"
        generator = torch.Generator(gen_device).manual_seed(args.seed)
    result = pipe(
        image=decoded.pixels,
        num_inference_steps=args.steps,
        generator=generator,
        output_type="np",
        tile_size=args.tile,
        tile_overlap=args.tile_overlap,
        tile_batch_size=args.tile_batch_size,
        num_samples=args.samples,
        degradation=None if args.degradation == "auto" else args.degradation,
        keep_clean=not getattr(args, "sample_clean", False),
    )
    job.target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(job.target, lambda tmp: write_image(tmp, result.images[0], decoded))
    if result.uncertainty is not None:
        from .uncertainty_map import uncertainty_map

        std_map = uncertainty_map(result.uncertainty[0])
        write_atomic(job.std_target or std_map_path(job.target),
                     lambda tmp: std_map.save(tmp, format="PNG"))
    if result.degradation is None:
        return None
    return result.degradation[0], result.degradation_probability[0]


def std_map_path(target: Path) -> Path:
    """Where ``--samples K`` writes the uncertainty map of ``NAME.png``: ``NAME.std.png``."""
    return target.with_name(f"{target.stem}.std.png")


def write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename to ``target`` (never a truncated file; errors name target)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError as err:
        raise OSError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


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

    Usage errors (:class:`UsageError`): device, tile size, inputs and output names, the
    ``--model`` location, ``--degradation`` against the model's types, the output folder
    (created and probed), the step count against the scheduler's config (local models;
    repo ids right after loading).
    """
    check_device(args.device)  # (run_restore checks it first, before accelerate starts)
    check_tile_size(args.tile)
    inputs = collect_inputs(args.inputs, recursive=args.recursive)
    output = Path(args.output)
    jobs, skipped = plan_jobs(
        inputs, output, overwrite=args.overwrite, skip_existing=args.skip_existing,
        std_maps=args.samples > 1,
    )
    check_model_location(args.model)
    folder = local_model_folder(args.model) if args.degradation != "auto" else None
    if folder is not None:
        check_degradation_choice(local_degradation_types(folder), args.degradation)
    prepare_output_dir(output)
    config = local_scheduler_config(args.model)
    if config is not None:
        cls = _scheduler_class(args.scheduler) or scheduler_class_named(config)
        if args.solver_order is not None:
            check_solver_order_applies(cls)
            config = {**config, "solver_order": args.solver_order}
        check_scheduler_steps(config, cls, args.steps)
    return jobs, skipped


def _scheduler_class(name: str | None) -> type | None:
    import diffusers_mrs

    return getattr(diffusers_mrs, SCHEDULERS[name]) if name is not None else None


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
            check_degradation_choice(_degradation_types(pipe), args.degradation)
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


def _degradation_types(pipe: Any) -> list[str] | None:
    """Every degradation type of the pipeline's encoder (``clean`` included), or None."""
    encoder = getattr(pipe, "degradation_encoder", None)
    return None if encoder is None else list(encoder.config.degradations)


def degradation_line(source: Path, degradation: tuple[str, float], forced: bool,
                     keep_clean: bool = True) -> str:
    """``source: TYPE (p=0.99)``, the line printed after an image (``forced, p=`` if forced;
    ``, written unchanged`` for a clean image returned as it is)."""
    name, probability = degradation
    line = f"{source}: {name} ({'forced, ' if forced else ''}p={probability:.2f})"
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
    forced = args.degradation != "auto"
    with state.split_between_processes(jobs) as my_jobs:
        bar = tqdm(my_jobs, desc=f"{prefix}images", unit="img", position=0,
                   disable=args.quiet or not state.is_main_process)
        for job in bar:
            try:
                degradation = restore_one(pipe, job, args, device)
                done += 1
            except Exception as err:  # report, continue with the other files
                message = _one_line(f"{type(err).__name__}: {err}")
                failures.append((job.source, message))
                tqdm.write(f"{prefix}error: cannot restore {job.source}: {message}",
                           file=sys.stderr)
                continue
            if degradation is not None:
                types[degradation[0]] = types.get(degradation[0], 0) + 1
                tqdm.write(prefix + degradation_line(job.source, degradation, forced,
                                                    not getattr(args, "sample_clean", False)),
                           file=sys.stdout)
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
    pipe = _load_everywhere(state, args, device, prefix)
    if pipe is None:
        return EXIT_USAGE
    if state.is_main_process:
        write_manifest(Path(args.output), jobs)
    state.wait_for_everyone()
    return _restore_all(pipe, jobs, args, device, state, prefix)


# ----------------------------------------------------------------------------- parsing
def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (``2.5`` and ``x`` get a clear message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``diffusers-mrs``."""
    parser = argparse.ArgumentParser(
        prog="diffusers-mrs",
        description="Image restoration with mean-reverting diffusion and the MR Sampler.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_restore_parser(sub)
    add_demo_parser(sub)
    # ---- convert / convert-daclip: original checkpoints -> pipeline folder (convert.py)
    from diffusers_mrs.convert import add_convert_parsers

    add_convert_parsers(sub)
    return parser


def add_restore_parser(sub: Any) -> None:
    """The ``restore`` sub-command: image files and folders -> restored PNGs."""
    restore = sub.add_parser(
        "restore",
        help="restore image files and folders",
        description=(
            "Restore images and write OUTPUT/<input name>.png (only the final extension"
            " changes; 16-bit, grayscale and alpha are kept). Folders contribute their image"
            " files. Run under `accelerate launch --num_processes N` to split the inputs"
            " between N processes. Exit status: 0 ok, 1 some inputs failed, 2 usage error."
        ),
    )
    restore.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    restore.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    _add_sampling_args(restore)
    _add_tiling_args(restore)
    _add_device_args(restore)
    _add_file_handling_args(restore)


def _add_sampling_args(restore: argparse.ArgumentParser) -> None:
    """``restore``: model, scheduler, steps, seed and posterior ensemble size."""
    restore.add_argument(
        "--model",
        default=None,
        metavar="PATH_OR_REPO",
        help="pipeline folder or Hub repo id (default: the model shipped with the package)",
    )
    restore.add_argument(
        "--steps", type=_positive_int, default=10, help="sampler steps (default: 10)"
    )
    restore.add_argument(
        "--scheduler",
        choices=sorted(SCHEDULERS),
        default=None,
        help="mrs = MR Sampler, posterior = IR-SDE posterior sampling, euler = Euler-Maruyama"
        " (default: the model's own scheduler)",
    )
    restore.add_argument(
        "--solver-order",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="MR Sampler only: the order of its solver (default: the model's config; the"
        " default model's is 1, the highest PSNR for one sample). 2 draws faithful posterior"
        " samples at 10 steps: use it with --samples for an uncertainty map that matches the"
        " error",
    )
    restore.add_argument("--seed", type=int, default=None, help="seed of every image's noise")
    restore.add_argument(
        "--degradation",
        default="auto",
        metavar="NAME",
        help="degradation-aware models: the degradation type of every input, one of the"
        " model's types (default: auto, detected per image); the type used and its"
        " probability are printed after each image",
    )
    restore.add_argument(
        "--sample-clean",
        action="store_true",
        help="degradation-aware models: sample images of type 'clean' too (default: they are"
        " written unchanged, the exact restoration of an undegraded image)",
    )
    restore.add_argument(
        "--samples",
        type=_positive_int,
        default=1,
        metavar="K",
        help="posterior ensemble: restore each image K times in one batch, write their mean as"
        " NAME.png and their per-pixel std as a colour map with its scale, NAME.std.png",
    )


def _add_tiling_args(restore: argparse.ArgumentParser) -> None:
    """``restore``: tiled inference (large images, bounded memory)."""
    restore.add_argument(
        "--tile",
        type=_positive_int,
        default=None,
        metavar="SIZE",
        help="run the network on SIZE x SIZE tiles (large images, bounded memory);"
        f" at least {MIN_TILE_SIZE} (smaller tiles leave seams)",
    )
    restore.add_argument(
        "--tile-overlap",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="overlap between tiles in pixels (default: SIZE // 4)",
    )
    restore.add_argument(
        "--tile-batch-size",
        type=_positive_int,
        default=4,
        metavar="N",
        help="tiles per network call (default: 4)",
    )


def _add_device_args(restore: argparse.ArgumentParser) -> None:
    """``restore``: device, network dtype and torch.compile."""
    restore.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: the accelerate process's device)",
    )
    restore.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="network dtype (the sampler stays float32); see the README for speed and accuracy",
    )
    restore.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network once for all images and steps (slow first image)",
    )
    restore.add_argument(
        "--compile-pad-multiple",
        type=_positive_int,
        default=None,
        metavar="M",
        help="with --compile (implied): pad every image up to a multiple of M pixels for the "
        "network, so all sizes in one M bucket share one compiled graph (changes the result "
        "near the bottom/right edges when M exceeds the network's own multiple)",
    )


def _add_file_handling_args(restore: argparse.ArgumentParser) -> None:
    """``restore``: folder recursion, existing outputs and progress display."""
    restore.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    overwrite = restore.add_mutually_exclusive_group()
    overwrite.add_argument(
        "--overwrite", action="store_true", help="replace this input's own earlier output"
    )
    overwrite.add_argument(
        "--skip-existing", action="store_true", help="skip inputs whose output file exists"
    )
    restore.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def add_demo_parser(sub: Any) -> None:
    """The ``demo`` sub-command: the Gradio web app of :mod:`diffusers_mrs.demo`."""
    demo = sub.add_parser("demo", help="start the web demo (needs the [demo] extra)")
    demo.add_argument("--model", default=None, metavar="DIR_OR_REPO",
                      help="pipeline folder or Hub repo id (default: the shipped model)")
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default: 127.0.0.1, this machine only)")
    demo.add_argument("--port", type=_positive_int, default=None,
                      help="port (default: Gradio's, 7860 or the next free one)")
    demo.add_argument("--device", default=None, help="torch device (default: cuda if present)")


def run_demo_command(args: argparse.Namespace) -> int:
    """The ``demo`` sub-command: imports Gradio only now, with a clear message if missing."""
    try:
        from .demo import run_demo
    except ImportError as err:
        if getattr(err, "name", None) and err.name.split(".")[0] in ("gradio", "gradio_client"):
            print(
                "diffusers-mrs demo: error: the demo needs Gradio; install it with"
                ' pip install "diffusers-mrs[demo]"',
                file=sys.stderr,
            )
            return EXIT_USAGE
        raise
    run_demo(model=args.model, host=args.host, port=args.port, device=args.device)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffusers-mrs`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("convert", "convert-daclip"):
        from diffusers_mrs.convert import run_convert

        return run_convert(args)
    if args.command == "restore":
        if args.tile is None and args.tile_overlap is not None:
            parser.error("--tile-overlap needs --tile")
        if (
            args.tile is not None
            and args.tile_overlap is not None
            and args.tile_overlap >= args.tile
        ):
            parser.error("--tile-overlap must be smaller than --tile")
        return run_restore(args)
    if args.command == "demo":
        return run_demo_command(args)
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse exits
    return EXIT_USAGE  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
