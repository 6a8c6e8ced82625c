"""The one writer of measured numbers in the documentation.

Every measured table or number in ``README.md``, ``docs/`` and the default model's card
sits in a marked block::

    <!-- report_pages: NAME -->
    ...generated...
    <!-- /report_pages: NAME -->

and this script rewrites each block from ``benchmarks/results/`` (the ``.json`` files the
benchmarks write, and ``recorded.json``, where the scripts that only print write their
table with ``--record``, :mod:`recorded`). It reuses the benchmarks' own renderers
(``nfe_report``, ``default_model_eval``, ``arch_per_cpu_hour``, ``bench_restore``) where
they exist, so a table reads the same in the docs as in the ``.md`` the benchmark wrote
next to its ``.json``.

    python benchmarks/report_pages.py            # rewrite every block
    python benchmarks/report_pages.py --check    # exit 1 if any block is out of date

Text outside the blocks is never touched; a block name with no renderer is an error.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import report_blocks

ROOT = Path(__file__).resolve().parent.parent
# Files that may hold blocks (docs/reference/ is generated at build time, not here).
TARGETS = ("README.md", "docs/*.md", "docs/*/*.md", "model_cards/*.md",
           "diffusers_mrs/default_model/README.md", "benchmarks/testbed_model/README.md")
BLOCK = re.compile(
    r"(?P<open><!-- report_pages: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /report_pages: (?P=name) -->)",
    re.DOTALL,
)


def target_files(root: Path) -> Iterator[Path]:
    """The files this script may rewrite, in a fixed order."""
    seen: set[Path] = set()
    for pattern in TARGETS:
        for path in sorted(root.glob(pattern)):
            if path not in seen:
                seen.add(path)
                yield path


def render_file(text: str, path: Path) -> str:
    """``text`` with every marked block replaced by its rendering."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in report_blocks.RENDERERS:
            raise SystemExit(f"{path}: unknown report_pages block {name!r} (known: "
                             f"{', '.join(sorted(report_blocks.RENDERERS))})")
        body = report_blocks.RENDERERS[name]().strip("\n")
        return f"{match['open']}{body}\n{match['close']}"

    return BLOCK.sub(replace, text)


def run(root: Path, check: bool) -> list[Path]:
    """Rewrites (or, with ``check``, only compares) every target; returns the stale ones."""
    stale = []
    for path in target_files(root):
        text = path.read_text(encoding="utf-8")
        new = render_file(text, path.relative_to(root))
        if new != text:
            stale.append(path.relative_to(root))
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a generated block is out of date")
    args = parser.parse_args(argv)
    stale = run(ROOT, args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'rewrote'}: {path}")
    if args.check and stale:
        print("run `python benchmarks/report_pages.py` and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
