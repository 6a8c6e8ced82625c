"""``diffusers-mrs demo``: starts the web demo of :mod:`diffusers_mrs.demo`, which needs the
``demo`` extra (Gradio), imported only when the command runs."""

from __future__ import annotations

import argparse
import sys

from .checks import EXIT_OK, EXIT_USAGE

__all__ = ["run_demo_command"]


def run_demo_command(args: argparse.Namespace) -> int:
    """The ``demo`` sub-command: imports Gradio only now, with a clear message if missing."""
    try:
        from ..demo import run_demo
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
