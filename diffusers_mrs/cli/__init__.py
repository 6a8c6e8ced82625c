"""The ``diffusers-mrs`` command line.

One module a job (dependencies point down this list):

- :mod:`~diffusers_mrs.cli.parser`: the argument parser; each sub-command names the function
  that runs it (``set_defaults(func=...)``);
- :mod:`~diffusers_mrs.cli.restore`: ``restore``, checking, loading and restoring, also
  under ``accelerate launch``;
- :mod:`~diffusers_mrs.cli.convert`: ``convert`` / ``convert-daclip``, the command line of
  :mod:`diffusers_mrs.convert`;
- :mod:`~diffusers_mrs.cli.demo`: ``demo``, the web app of :mod:`diffusers_mrs.demo`;
- :mod:`~diffusers_mrs.cli.planning`: which output file each input gets, and the manifest
  of earlier runs;
- :mod:`~diffusers_mrs.cli.checks`: what is checked before any work, the usage error and the
  exit statuses.

The settings the command line shares with the demo (sampler names, degradation choice,
smallest tile, generator device) are :mod:`diffusers_mrs.restore_settings`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .checks import UsageError
from .parser import build_parser, parse_arguments
from .planning import collect_inputs, plan_jobs, write_manifest
from .restore import read_image

__all__ = [
    "EXIT_INTERRUPTED",
    "UsageError",
    "build_parser",
    "collect_inputs",
    "main",
    "plan_jobs",
    "read_image",
    "write_manifest",
]


#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffusers-mrs`` console script; returns the exit status.

    Ctrl-C prints one line and returns :data:`EXIT_INTERRUPTED`, without a traceback; files
    are written atomically (:mod:`diffusers_mrs.atomic_files`), so none is left half-written.
    """
    args = parse_arguments(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"diffusers-mrs {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
