"""Build-time copy of the benchmark figures into the site (``figures/``).

The figures live beside the results they plot (``benchmarks/results/``), outside the docs
folder; ``mkdocs-gen-files`` serves them to the site without a second copy in git.
"""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def copy_figures() -> None:
    """``benchmarks/results/<path>.png`` -> ``figures/<path>.png`` in the built site."""
    for path in sorted(RESULTS.rglob("*.png")):
        target = Path("figures") / path.relative_to(RESULTS)
        with mkdocs_gen_files.open(target.as_posix(), "wb") as handle:
            handle.write(path.read_bytes())


copy_figures()
