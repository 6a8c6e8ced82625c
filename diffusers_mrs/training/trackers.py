"""Experiment tracking through accelerate's tracker API.

``report_to`` names accelerate trackers (``"tensorboard"``, ``"wandb"``, ... where they are
installed). ``"jsonl"`` is a small built-in :class:`~accelerate.tracking.GeneralTracker`
that needs no extra package: it appends one JSON object per ``accelerator.log`` call to
``OUTPUT/logs/<run>/metrics.jsonl`` and stores the run's config beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker, on_main_process


class JSONLinesTracker(GeneralTracker):
    """Appends ``{"step": step, **values}`` lines to ``<logging_dir>/<run_name>/metrics.jsonl``."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | Path) -> None:
        super().__init__()
        self.run_dir = Path(logging_dir) / run_name
        self.path = self.run_dir / "metrics.jsonl"

    @property
    def tracker(self) -> Path:
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(values, indent=2) + "\n")

    @on_main_process
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


def read_jsonl_log(path: str | Path) -> list[dict[str, Any]]:
    """The records a :class:`JSONLinesTracker` wrote."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def make_trackers(report_to: str, run_name: str, logging_dir: str | Path) -> list[Any]:
    """``log_with`` for :class:`accelerate.Accelerator` from a comma-separated ``report_to``."""
    names = [n.strip() for n in report_to.split(",") if n.strip() and n.strip() != "none"]
    return [JSONLinesTracker(run_name, logging_dir) if n == "jsonl" else n for n in names]


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config with list/dict values as JSON strings (trackers take scalars only)."""
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)
            for k, v in config.items()}
