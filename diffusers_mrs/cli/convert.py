"""``diffusers-mrs convert`` and ``convert-daclip``: original IR-SDE, Refusion and DA-CLIP
checkpoints into a pipeline folder. The conversion itself is :mod:`diffusers_mrs.convert`;
this module is its command line (arguments, scheduler overrides, error messages)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..convert import (
    FAMILIES,
    MAX_TRAIN_TIMESTEPS,
    ConversionError,
    convert_checkpoint,
    read_options,
)
from .checks import EXIT_OK, EXIT_USAGE

__all__ = ["add_convert_parsers", "run_convert"]


def _scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    """``--T``, ``--schedule``, ...: overrides of the scheduler config (default: the paper's)."""
    group = parser.add_argument_group(
        "scheduler (default: the MR Sampler paper's setting: SDE, data, order 2, T=100, "
        "cosine, max_sigma 50/255, eps 0.005, epsilon)"
    )
    group.add_argument("--T", type=int, dest="num_train_timesteps",
                       help=f"training steps (1 to {MAX_TRAIN_TIMESTEPS:,})")
    group.add_argument("--schedule", dest="theta_schedule", choices=["cosine", "linear"])
    group.add_argument(
        "--max-sigma", type=float,
        help="stationary noise in 1/255 units (50 means 50/255), finite and > 0",
    )
    group.add_argument("--eps", type=float, help="alpha at t = T, in (0, 1)")
    group.add_argument(
        "--prediction-type", choices=["epsilon", "sample", "v_prediction"], help="network output"
    )
    group.add_argument("--algorithm-type", choices=["sde", "ode"])
    group.add_argument("--parameterization", choices=["data", "noise"])
    group.add_argument("--solver-order", type=int, choices=[1, 2, 3])


def add_convert_parsers(sub: Any) -> None:
    """Add ``convert`` and ``convert-daclip`` to the ``diffusers-mrs`` sub-commands."""
    convert = sub.add_parser(
        "convert",
        help="convert an IR-SDE, Refusion or DA-CLIP checkpoint into a pipeline folder",
        description="Convert original checkpoint files into a pipeline folder (safetensors, "
        "model_index.json, scheduler, model card) for MRRestorationPipeline.from_pretrained "
        "and `diffusers-mrs restore --model DIR`.",
    )
    convert.add_argument("--family", required=True, choices=sorted(FAMILIES))
    convert.add_argument("--checkpoint", "--unet", required=True, dest="unet", metavar="FILE")
    convert.add_argument("--daclip", metavar="FILE", help="DA-CLIP encoder (--family daclip)")
    _output_and_settings_arguments(convert)
    daclip = sub.add_parser(
        "convert-daclip",
        help="convert DA-CLIP's daclip_ViT-B-32.pt and universal-ir.pth into a pipeline folder",
        description="Same as `convert --family daclip`.",
    )
    daclip.add_argument("--daclip", required=True, metavar="FILE", help="daclip_ViT-B-32.pt")
    daclip.add_argument("--unet", required=True, metavar="FILE", help="universal-ir.pth")
    _output_and_settings_arguments(daclip)
    daclip.set_defaults(family="daclip")


def _output_and_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """What both conversion commands take after their input files: the output folder, the
    model card title, the original option file and the scheduler overrides."""
    parser.set_defaults(func=run_convert)
    parser.add_argument("--output", "-o", required=True, metavar="DIR")
    parser.add_argument("--name", help="model card title (default: the folder name)")
    parser.add_argument(
        "--options", metavar="YML", help="the original option file (sde, network_G)"
    )
    _scheduler_arguments(parser)


def run_convert(args: argparse.Namespace) -> int:
    """Run a parsed ``convert``/``convert-daclip`` command; 0 on success, 2 on bad input:
    one ``error:`` line on stderr, no traceback, nothing written (an option file that is
    not YAML or holds the wrong kinds of values, scheduler settings out of bounds, weights
    that are not finite floats, a network too large, files that do not fit)."""
    from diffusers_mrs.models import IRSDECheckpointError
    from diffusers_mrs.models.daclip_encoder_checkpoint import DACLIPCheckpointError

    scheduler_config: dict[str, Any] = {}
    network_config: dict[str, Any] = {}
    try:
        if args.options:
            scheduler_config, network_config = read_options(args.options, args.family)
    except (ConversionError, OSError) as err:
        print(f"diffusers-mrs {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    overrides = {
        key: getattr(args, key)
        for key in (
            "num_train_timesteps", "theta_schedule", "eps", "prediction_type",
            "algorithm_type", "parameterization", "solver_order",
        )
        if getattr(args, key) is not None
    }  # fmt: skip
    if args.max_sigma is not None:
        overrides["max_sigma"] = args.max_sigma / 255
    try:
        out = convert_checkpoint(
            args.family, args.unet, args.output, daclip=args.daclip,
            scheduler_config={**scheduler_config, **overrides},
            network_config=network_config, model_name=args.name,
        )  # fmt: skip
    except (ConversionError, IRSDECheckpointError, DACLIPCheckpointError, FileNotFoundError) as err:
        print(f"diffusers-mrs {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"saved the pipeline to {out}; restore with: diffusers-mrs restore IMAGES --model {out}")
    return EXIT_OK
