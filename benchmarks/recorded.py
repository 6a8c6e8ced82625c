"""``benchmarks/results/recorded.json``: the tables of the scripts that print their results
and write no result file of their own (``bench_step.py``, ``bench_daclip.py``,
``seam_cost.py``, ``compile_pad_cost.py``, ``ensemble_gain.py``).

Each of these scripts takes ``--record`` (:func:`add_record_option`); with it, after
printing, it calls :func:`record_table` with the table it printed, which replaces that
script's one entry ``{"command", "setting", "columns", "rows"}`` in the file and leaves the
other entries and the ``about`` text as they were. ``report_blocks.recorded`` renders an
entry into the docs (docs/benchmarks.md).

Every entry comes from one run, so its command is one command line: ``bench_daclip.py
--sizes 64 256`` measures a column per size, ``ensemble_gain.py --solver-order 1 2`` a row
per image and sampler, ``bench_step.py --threads 1`` sets the threads that an
``OMP_NUM_THREADS=1`` prefix used to.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusers_mrs.atomic_files import write_atomic

__all__ = ["RECORDED", "add_record_option", "format_recorded", "record_table",
           "rounded", "script_command"]

RECORDED = Path(__file__).resolve().parent / "results" / "recorded.json"
Cell = str | int | float


def add_record_option(parser: argparse.ArgumentParser, entry: str) -> None:
    """Adds ``--record`` to a script's options: write the printed table as ``entry``."""
    parser.add_argument("--record", action="store_true",
                        help=f"after printing, write the table into {RECORDED.parent.name}/"
                             f"{RECORDED.name} as its {entry!r} entry")


def script_command(script: str, argv: Sequence[str] | None = None) -> str:
    """The command line that ran ``script`` (its ``__file__``) from the repository root,
    ``python benchmarks/<script> ARGS`` shell-quoted; ``argv`` defaults to ``sys.argv[1:]``."""
    words = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *words])


def rounded(value: float, digits: int) -> float | str:
    """``value`` rounded for a table; an infinite PSNR (identical images) as ``"inf"``,
    which JSON has no number for."""
    return round(value, digits) if math.isfinite(value) else str(value)


def record_table(name: str, columns: Sequence[str], rows: Sequence[Sequence[Cell]],
                 command: str, setting: str, path: Path | None = None) -> None:
    """Writes ``{"command", "setting", "columns", "rows"}`` as entry ``name`` of ``path``
    (default :data:`RECORDED`; a new file if there is none): an existing entry is replaced
    in its place, a new one goes last; the other entries and ``about`` are kept as they
    were. The file is written whole into a temporary file, then renamed onto ``path``.

    Raises:
        ValueError: an empty name, command, setting or column list, no rows, a row whose
            length differs from the columns, or a cell that is not a string, an integer or
            a finite float; nothing is written.
    """
    _check_table(name, columns, rows, command, setting)
    path = RECORDED if path is None else Path(path)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    data[name] = {"command": command, "setting": setting, "columns": list(columns),
                  "rows": [list(row) for row in rows]}
    text = format_recorded(data).encode("utf-8")
    write_atomic(path, lambda file: file.write(text))


def _check_table(name: str, columns: Sequence[str], rows: Sequence[Sequence[Cell]],
                 command: str, setting: str) -> None:
    for label, text in (("entry name", name), ("command", command), ("setting", setting)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"recorded table: the {label} must be a non-empty string")
    if name == "about":
        raise ValueError("recorded table: 'about' is the file's description, not an entry")
    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise ValueError(f"recorded table {name!r}: columns must be non-empty strings, "
                         f"got {list(columns)!r}")
    if not rows:
        raise ValueError(f"recorded table {name!r}: no rows")
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"recorded table {name!r}: row {i} has {len(row)} cells for "
                             f"{len(columns)} columns: {list(row)!r}")
        for cell in row:
            if isinstance(cell, bool) or not isinstance(cell, (str, int, float)) or (
                    isinstance(cell, float) and not math.isfinite(cell)):
                raise ValueError(f"recorded table {name!r}: row {i} has {cell!r}; a cell is "
                                 "a string, an integer or a finite float")


def format_recorded(data: dict[str, Any]) -> str:
    """The file's layout: one key per line, ``columns`` and each row on one line."""
    items = [f" {json.dumps(key)}: {_format_value(value)}" for key, value in data.items()]
    return "{\n" + ",\n".join(items) + "\n}\n"


def _format_value(value: Any) -> str:
    if isinstance(value, dict):
        items = [f"  {json.dumps(key)}: {_format_value(item)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n }"
    if isinstance(value, list) and value and all(isinstance(item, list) for item in value):
        items = [f"   {_one_line(item)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n  ]"
    return _one_line(value)


def _one_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
