"""Convert an official IR-SDE checkpoint into a diffusers-mrs pipeline folder.

A thin call of the command line (``diffusers-mrs convert --family irsde``), kept for the
old usage; ``diffusers-mrs convert --help`` lists every option (Refusion and DA-CLIP too).

Example::

    python examples/convert_irsde_checkpoint.py latest_G.pth out/derain \\
        --options codes/config/deraining/options/test/ir-sde.yml
    # the same as
    diffusers-mrs convert --family irsde --checkpoint latest_G.pth --output out/derain \\
        --options codes/config/deraining/options/test/ir-sde.yml
"""

from __future__ import annotations

import sys

from diffusers_mrs.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """``CHECKPOINT OUTPUT [convert options]``; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) < 2 or args[0].startswith("-"):
        print(__doc__)
        return 2
    checkpoint, output, *rest = args
    return cli_main(
        ["convert", "--family", "irsde", "--checkpoint", checkpoint, "--output", output, *rest]
    )


if __name__ == "__main__":
    sys.exit(main())
