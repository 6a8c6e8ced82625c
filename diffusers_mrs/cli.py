"""The ``diffusers-mrs`` command line.

``diffusers-mrs restore INPUT... --output DIR`` restores image files and folders with an
:class:`~diffusers_mrs.MRRestorationPipeline` and writes ``DIR/<input stem>.png``.

Behaviour, in order:

1. Inputs are collected: files as given (any format Pillow reads), folders by image
   extension (``--recursive`` to descend; the sub-folder layout is then mirrored in the
   output). A path that does not exist, no image at all, two inputs that would write the
   same output file, or an output that would overwrite an input are usage errors: nothing
   is written and the exit status is 2.
2. Existing outputs are not silently replaced: without ``--overwrite`` (replace them) or
   ``--skip-existing`` (keep them and skip those inputs) the command stops with status 2
   before restoring anything.
3. Under ``accelerate launch --num_processes N`` the work list is split between the
   processes with ``PartialState().split_between_processes`` (contiguous chunks, no
   padding): every input is restored by exactly one process, which writes its output.
   Each process uses its accelerate device (``--device`` overrides it). On a machine
   without GPUs, start CPU processes with ``accelerate launch --multi_gpu --num_processes
   N`` (torchrun underneath; the CLI then sets accelerate up for CPU/gloo) or ``torchrun
   --nproc_per_node N -m diffusers_mrs.cli ...``; ``accelerate launch --cpu
   --num_processes N`` starts a single process unless MPI is configured.
4. A file that cannot be read or restored is reported on stderr and skipped; the others
   are still restored, and the exit status is 1 at the end (0 if everything worked).
   Outputs are written to a temporary name and renamed, so an interrupted run leaves no
   truncated PNG behind.

With ``--seed`` every image gets its own generator seeded with that value, so the result of
an image does not depend on how the inputs are split between processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}
)
SCHEDULERS = {
    "mrs": "MRSamplerScheduler",
    "posterior": "MRPosteriorScheduler",
    "euler": "MREulerMaruyamaScheduler",
}
DTYPES = ("float32", "float16", "bfloat16")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with the command line or the inputs, found before any work is done."""


@dataclass(frozen=True)
class Job:
    """One image to restore: where it is read from and where its result goes."""

    source: Path
    target: Path


# ----------------------------------------------------------------------------- planning
def collect_inputs(
    paths: Sequence[str | os.PathLike], recursive: bool = False
) -> list[tuple[Path, Path]]:
    """Expands files and folders into ``(file, relative output stem)`` pairs, in a stable order.

    Files given directly are taken whatever their extension; folders contribute their files
    with an image extension (:data:`IMAGE_EXTENSIONS`, case-insensitive), sorted, hidden
    files skipped. The relative output stem is the file stem, prefixed by the sub-folder
    inside the given folder when ``recursive``.

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
            found.extend((p, p.relative_to(path).with_suffix("")) for p in files)
        elif path.is_file():
            found.append((path, Path(path.stem)))
        else:
            raise UsageError(f"input not found: {raw}")
    return found


def plan_jobs(
    inputs: Sequence[tuple[Path, Path]],
    output_dir: Path,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> tuple[list[Job], list[Job]]:
    """Maps inputs to ``output_dir/<stem>.png``; returns ``(jobs to run, jobs skipped)``.

    Raises:
        UsageError: no inputs, two inputs with the same output, an output that is an input
            file, or existing outputs without ``overwrite``/``skip_existing``.
    """
    if not inputs:
        raise UsageError("no input images found")
    jobs = [Job(src, output_dir / rel.with_suffix(".png")) for src, rel in inputs]

    by_target: dict[Path, list[Path]] = {}
    for job in jobs:
        by_target.setdefault(job.target.resolve(), []).append(job.source)
    clashes = {t: s for t, s in by_target.items() if len(s) > 1}
    if clashes:
        lines = [f"  {t}: " + ", ".join(map(str, s)) for t, s in clashes.items()]
        raise UsageError("several inputs would write the same output file:\n" + "\n".join(lines))
    sources = {job.source.resolve() for job in jobs}
    onto_inputs = [job for job in jobs if job.target.resolve() in sources]
    if onto_inputs:
        names = ", ".join(str(j.target) for j in onto_inputs)
        raise UsageError(f"outputs would overwrite input files: {names}; choose another --output")

    existing = [job for job in jobs if job.target.exists()]
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
def load_pipeline(model: str | None, scheduler: str | None, device: Any, dtype_name: str) -> Any:
    """Loads the pipeline (default model if ``model`` is None) and sets the scheduler."""
    import torch

    import diffusers_mrs

    dtype = getattr(torch, dtype_name)
    pipe = diffusers_mrs.MRRestorationPipeline.from_pretrained(model)
    if scheduler is not None:
        cls = getattr(diffusers_mrs, SCHEDULERS[scheduler])
        if type(pipe.scheduler) is not cls:
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
    pipe.to(device)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def read_image(path: Path) -> Any:
    """Opens an image with EXIF orientation applied (raises on unreadable files)."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.load()
        return ImageOps.exif_transpose(img)


def restore_one(pipe: Any, job: Job, args: argparse.Namespace, device: Any) -> None:
    """Restores one file and writes its PNG (via a temporary file and a rename)."""
    import torch

    image = read_image(job.source)
    generator = None
    if args.seed is not None:
        gen_device = device if torch.device(device).type == "cuda" else "cpu"
        generator = torch.Generator(gen_device).manual_seed(args.seed)
    result = pipe(
        image=image,
        num_inference_steps=args.steps,
        generator=generator,
        output_type="pil",
        tile_size=args.tile,
        tile_overlap=args.tile_overlap,
        tile_batch_size=args.tile_batch_size,
        num_samples=args.samples,
    )
    job.target.parent.mkdir(parents=True, exist_ok=True)
    write_png(result.images[0], job.target)
    if result.uncertainty is not None:
        from .uncertainty_map import uncertainty_map

        write_png(uncertainty_map(result.uncertainty[0]), std_map_path(job.target))


def std_map_path(target: Path) -> Path:
    """Where ``--samples K`` writes the uncertainty map of ``NAME.png``: ``NAME.std.png``."""
    return target.with_name(f"{target.stem}.std.png")


def write_png(image: Any, target: Path) -> None:
    """Writes a PIL image as PNG via a temporary file and a rename (never a truncated file)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, target)
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


def run_restore(args: argparse.Namespace) -> int:
    """The ``restore`` sub-command; returns the exit status."""
    from accelerate import PartialState
    from tqdm.auto import tqdm

    state = PartialState(cpu=_use_cpu(args.device))
    prefix = f"[process {state.process_index}] " if state.num_processes > 1 else ""
    try:
        inputs = collect_inputs(args.inputs, recursive=args.recursive)
        jobs, skipped = plan_jobs(
            inputs, Path(args.output), overwrite=args.overwrite, skip_existing=args.skip_existing
        )
    except UsageError as err:
        if state.is_main_process:
            print(f"diffusers-mrs restore: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if skipped and state.is_main_process:
        print(f"skipping {len(skipped)} input(s) whose output exists", file=sys.stderr)
    # Every process has checked the same file system state; nobody writes before all have.
    state.wait_for_everyone()

    device = args.device if args.device is not None else state.device
    load_error: Exception | None = None
    with state.main_process_first():  # one download into the Hub cache, the others reuse it
        try:  # no exception may leave this block early: the others wait at its barrier
            with _diffusers_progress_bars(enabled=not args.quiet):
                pipe = load_pipeline(args.model, args.scheduler, device, args.dtype)
        except Exception as err:
            load_error = err
    if load_error is not None:
        what = args.model if args.model is not None else "the default model"
        message = f"{type(load_error).__name__}: {load_error}"
        print(
            f"{prefix}diffusers-mrs restore: error: cannot load {what}: {message}", file=sys.stderr
        )
        return EXIT_USAGE

    failures: list[tuple[Path, str]] = []
    done = 0
    with state.split_between_processes(jobs) as my_jobs:
        bar = tqdm(
            my_jobs,
            desc=f"{prefix}restoring",
            unit="img",
            position=state.process_index,
            disable=args.quiet or None,
        )
        for job in bar:
            try:
                restore_one(pipe, job, args, device)
                done += 1
            except Exception as err:  # report, continue with the other files
                message = f"{type(err).__name__}: {err}"
                failures.append((job.source, message))
                tqdm.write(
                    f"{prefix}error: cannot restore {job.source}: {message}", file=sys.stderr
                )
    print(f"{prefix}restored {done} image(s) into {args.output}", file=sys.stderr)
    if failures:
        print(f"{prefix}{len(failures)} input(s) failed:", file=sys.stderr)
        for source, message in failures:
            print(f"  {source}: {message}", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK


# ----------------------------------------------------------------------------- parsing
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``diffusers-mrs``."""
    parser = argparse.ArgumentParser(
        prog="diffusers-mrs",
        description="Image restoration with mean-reverting diffusion and the MR Sampler.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    restore = sub.add_parser(
        "restore",
        help="restore image files and folders",
        description=(
            "Restore images and write OUTPUT/<input stem>.png. Folders contribute their image"
            " files. Run under `accelerate launch --num_processes N` to split the inputs"
            " between N processes. Exit status: 0 ok, 1 some inputs failed, 2 usage error."
        ),
    )
    restore.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    restore.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
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
    restore.add_argument("--seed", type=int, default=None, help="seed of every image's noise")
    restore.add_argument(
        "--samples",
        type=_positive_int,
        default=1,
        metavar="K",
        help="posterior ensemble: restore each image K times in one batch, write their mean as"
        " NAME.png and their per-pixel std as a colour map with its scale, NAME.std.png",
    )
    restore.add_argument(
        "--tile",
        type=_positive_int,
        default=None,
        metavar="SIZE",
        help="run the network on SIZE x SIZE tiles (large images, bounded memory)",
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
    restore.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: the accelerate process's device)",
    )
    restore.add_argument("--dtype", choices=DTYPES, default="float32", help="network dtype")
    restore.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    overwrite = restore.add_mutually_exclusive_group()
    overwrite.add_argument("--overwrite", action="store_true", help="replace existing output files")
    overwrite.add_argument(
        "--skip-existing", action="store_true", help="skip inputs whose output file exists"
    )
    restore.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_demo_parser(sub)
    # ---- convert / convert-daclip: original checkpoints -> pipeline folder (convert.py)
    from diffusers_mrs.convert import add_convert_parsers

    add_convert_parsers(sub)
    return parser


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
