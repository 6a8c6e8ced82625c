"""Serve the repository's top-level ``pipelines/`` and ``model_cards/`` folders as
sub-packages of ``diffusers_mrs`` when the code runs from a plain checkout.

An install maps them (``pyproject.toml``: ``package-dir``); a checkout on ``sys.path`` has
them beside ``diffusers_mrs/`` instead. This finder resolves exactly those names to the
sibling folders, so a checkout and an install import the same code, and a second
checkout (a git worktree) never picks up another checkout's editable install.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

_PROJECT_MARKER = 'name = "diffusers-mrs"'


def _checkout_root(package_dir: Path) -> Path | None:
    """The repository root when ``package_dir`` lies in a checkout of this project."""
    root = package_dir.parent
    pyproject = root / "pyproject.toml"
    try:
        return root if _PROJECT_MARKER in pyproject.read_text(encoding="utf-8") else None
    except OSError:
        return None


class _SiblingFolderFinder(importlib.abc.MetaPathFinder):
    """Finds ``<package>.<name>`` (and below) in ``<root>/<name>/``."""

    def __init__(self, package: str, root: Path, names: Iterable[str]) -> None:
        self.package = package
        self.folders = {f"{package}.{n}": root / n for n in names if (root / n).is_dir()}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def serve_checkout_folders(package: str, names: Iterable[str]) -> None:
    """Install the finder for ``package`` if it runs from a checkout (idempotent)."""
    package_dir = Path(sys.modules[package].__file__).resolve().parent
    root = _checkout_root(package_dir)
    if root is None or (package_dir / "pipelines").is_dir():
        return
    if any(isinstance(f, _SiblingFolderFinder) and f.package == package for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _SiblingFolderFinder(package, root, names))
