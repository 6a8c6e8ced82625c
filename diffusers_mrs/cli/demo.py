"""``diffusers-mrs demo``: starts the web demo of :mod:`diffusers_mrs.demo`, which needs the
``demo`` extra (Gradio), imported only when the command runs, after the demo's temporary
folder exists and ``GRADIO_TEMP_DIR`` points into it. Ctrl-C and SIGTERM stop the server
and remove the folder."""

from __future__ import annotations

import argparse
import sys

from .checks import EXIT_OK, EXIT_USAGE

__all__ = ["run_demo_command"]


def run_demo_command(args: argparse.Namespace) -> int:
    """The ``demo`` sub-command: creates the demo's temporary folder and points
    ``GRADIO_TEMP_DIR`` at it (:func:`~diffusers_mrs.demo_workdir.demo_workdir`, SIGTERM
    handled like Ctrl-C), then imports Gradio, with a clear message if it is missing."""
    from ..demo_workdir import demo_workdir

    with demo_workdir() as workdir:
        try:
            from ..demo import run_demo
        except ImportError as err:
            if getattr(err, "name", None) and err.name.split(".")[0] in ("gradio",
                                                                          "gradio_client"):
                print(
                    "diffusers-mrs demo: error: the demo needs Gradio; install it with"
                    ' pip install "diffusers-mrs[demo]"',
                    file=sys.stderr,
                )
                return EXIT_USAGE
            raise
        run_demo(model=args.model, host=args.host, port=args.port, device=args.device,
                 workdir=workdir)
    return EXIT_OK
