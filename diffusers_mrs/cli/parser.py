"""The argument parser of ``diffusers-mrs``: its sub-commands and their arguments.

Each sub-command's parser names the function that runs it (``set_defaults(func=...)``):
``restore`` (:mod:`~diffusers_mrs.cli.restore`), ``demo`` (:mod:`~diffusers_mrs.cli.demo`),
``convert`` and ``convert-daclip`` (:mod:`~diffusers_mrs.cli.convert`, which adds its own
parsers). Argument values are checked by their argparse types and, where arguments depend on
each other, once after parsing (:func:`parse_arguments`); everything about files, devices
and models is checked by :mod:`~diffusers_mrs.cli.checks` when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..image_limits import DEFAULT_MAX_PIXELS
from ..restore_settings import MIN_TILE_SIZE, SCHEDULERS
from .checks import UsageError, check_tile_overlap, non_negative_int, positive_int, whole_number
from .convert import add_convert_parsers
from .demo import run_demo_command
from .limits import AUTO_TILE_PIXELS, AUTO_TILE_SIZE, MAX_SAMPLES, MAX_SEED, MAX_STEPS
from .restore import run_restore

__all__ = ["DTYPES", "build_parser", "parse_arguments"]

#: ``--dtype`` choices: the network's dtype (the sampler stays float32).
DTYPES = ("float32", "float16", "bfloat16")

#: ``--model`` of ``restore`` and ``demo`` (read by
#: :func:`diffusers_mrs.original_checkpoints.load_model_argument`).
MODEL_HELP = (
    "a pipeline folder or Hub repo id; original DA-CLIP checkpoints as SOURCE:PAIR or a bare"
    " PAIR (universal-ir, universal-ir-mix, wild-ir; SOURCE a Hub repo id or a folder,"
    " default weblzw/daclip-uir-ViT-B-32-irsde), converted once and cached; or a single"
    " original IR-SDE / Refusion .pth (default: the model shipped with the package)"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``diffusers-mrs``."""
    parser = argparse.ArgumentParser(
        prog="diffusers-mrs",
        description="Image restoration with mean-reverting diffusion and the MR Sampler.",
    )
    parser.set_defaults(check_combination=_no_combination_rules)
    sub = parser.add_subparsers(dest="command", required=True)
    add_restore_parser(sub)
    add_demo_parser(sub)
    add_convert_parsers(sub)  # convert / convert-daclip: original checkpoints -> pipeline
    return parser


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses a command line; ``args.func(args)`` then runs it.

    A combination of arguments the sub-command does not allow (its ``check_combination``)
    exits like any other argparse error: the usage, one line, exit status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.check_combination(args)
    except UsageError as err:
        parser.error(str(err))
    return args


def _no_combination_rules(args: argparse.Namespace) -> None:
    """The sub-commands whose arguments combine freely."""


def _check_restore_combination(args: argparse.Namespace) -> None:
    check_tile_overlap(args.tile, args.tile_overlap)


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
    restore.set_defaults(func=run_restore, check_combination=_check_restore_combination)
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
        metavar="MODEL",
        help=MODEL_HELP,
    )
    restore.add_argument(
        "--steps", type=whole_number(1, MAX_STEPS), default=10,
        help=f"sampler steps, 1..{MAX_STEPS} (default: 10; the posterior and Euler samplers"
        " take at most the model's num_train_timesteps)",
    )
    restore.add_argument(
        "--scheduler",
        choices=sorted(SCHEDULERS),
        default=None,
        help="mrs = MR Sampler, unipc = MR UniPC (ODE predictor-corrector), posterior ="
        " IR-SDE posterior sampling, euler = Euler-Maruyama (default: the model's own"
        " scheduler)",
    )
    restore.add_argument(
        "--solver-order",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="MR Sampler and MR UniPC only: the order of the solver (default: the model's"
        " config; the default model's is 1, the highest PSNR for one sample). With the MR"
        " Sampler, 2 draws faithful posterior samples at 10 steps: use it with --samples for"
        " an uncertainty map that matches the error",
    )
    restore.add_argument(
        "--seed", type=whole_number(0, MAX_SEED), default=None,
        help="seed of every image's noise, 0..2**64-1 (default: random)",
    )
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
        type=whole_number(1, MAX_SAMPLES),
        default=1,
        metavar="K",
        help=f"posterior ensemble: restore each image K times (1..{MAX_SAMPLES}) in one"
        " batch, write their mean as NAME.png and their per-pixel std as a colour map with"
        " its scale, NAME.std.png",
    )


def _add_tiling_args(restore: argparse.ArgumentParser) -> None:
    """``restore``: tiled inference (large images, bounded memory)."""
    restore.add_argument(
        "--tile",
        type=positive_int,
        default=None,
        metavar="SIZE",
        help="run the network on SIZE x SIZE tiles (large images, bounded memory);"
        f" at least {MIN_TILE_SIZE} (smaller tiles leave seams). Default: untiled, but"
        f" {AUTO_TILE_SIZE} px tiles (said in the output) where pixels x K exceed"
        f" {AUTO_TILE_PIXELS:,}; a SIZE of at least the image's larger side runs untiled",
    )
    restore.add_argument(
        "--tile-overlap",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="overlap between tiles in pixels (default: SIZE // 4)",
    )
    restore.add_argument(
        "--tile-batch-size",
        type=positive_int,
        default=4,
        metavar="N",
        help="tiles per network call (default: 4)",
    )


def _add_device_args(restore: argparse.ArgumentParser) -> None:
    """``restore``: device, network dtype, TF32, where the noise is drawn, torch.compile."""
    restore.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: the accelerate process's device)",
    )
    restore.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="network dtype (the sampler stays float32); see docs/guide/pipeline.md for"
        " speed and accuracy",
    )
    restore.add_argument(
        "--tf32",
        action="store_true",
        help="float32 on CUDA may use TensorFloat-32 (faster, ~3 significant digits; default: "
        "IEEE float32)",
    )
    restore.add_argument(
        "--cpu-noise",
        action="store_true",
        help="draw the noise on the CPU (up front, copied without waiting): a --seed gives "
        "the CPU's images on any device (default: drawn on the sampling device)",
    )
    restore.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network once for all images and steps (slow first image)",
    )
    restore.add_argument(
        "--compile-pad-multiple",
        type=positive_int,
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
        "--overwrite", action="store_true",
        help="replace this input's own earlier output; without --samples, its NAME.std.png of"
        " an earlier --samples run is removed (it would not describe the new NAME.png)",
    )
    overwrite.add_argument(
        "--skip-existing", action="store_true", help="skip inputs whose output file exists"
    )
    restore.add_argument(
        "--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help="refuse an input whose header declares more than N pixels, before decoding it"
        f" (default: {DEFAULT_MAX_PIXELS:,})",
    )
    restore.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def add_demo_parser(sub: Any) -> None:
    """The ``demo`` sub-command: the Gradio web app of :mod:`diffusers_mrs.demo`."""
    demo = sub.add_parser("demo", help="start the web demo (needs the [demo] extra)")
    demo.add_argument("--model", default=None, metavar="MODEL", help=MODEL_HELP)
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default: 127.0.0.1, this machine only)")
    demo.add_argument("--port", type=positive_int, default=None,
                      help="port (default: Gradio's, 7860 or the next free one)")
    demo.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    demo.set_defaults(func=run_demo_command)
