"""Build-time API reference: one page per public module of ``diffusers_mrs``.

Run by ``mkdocs-gen-files`` (``mkdocs.yml``). The modules are found by walking the
imported package, so a module that is added, split or moved appears without editing
this file or ``mkdocs.yml``. A module is public when no part of its dotted name starts
with an underscore; each page renders the module's docstring and every public class and
function defined in it (mkdocstrings, from the docstrings). ``literate-nav`` reads the
``SUMMARY.md`` written here as the navigation of the reference section.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "reference"


def installed_packages() -> list[str]:
    """The import packages ``pyproject.toml`` installs (``pipelines/`` and ``model_cards/``
    are mapped into ``diffusers_mrs`` there, so a walk of the folder alone misses them)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(pyproject["tool"]["setuptools"]["packages"])


def is_public(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


def public_modules(packages: list[str]) -> list[str]:
    """Dotted names of the packages and of every public module below them, sorted."""
    names = set()
    for package_name in packages:
        package = importlib.import_module(package_name)
        names.add(package_name)
        walk = pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")
        names.update(info.name for info in walk)
    return sorted(name for name in names if is_public(name))


def source_name(name: str) -> str:
    """The dotted name of the module's file relative to the repository root, which is
    where griffe (mkdocstrings, ``paths: [.]``) reads it: ``pipelines/`` is installed as
    ``diffusers_mrs.pipelines`` but lives beside ``diffusers_mrs/``."""
    spec = importlib.util.find_spec(name)  # imports the parent packages, not the module
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} has no source file")
    path = Path(spec.origin).resolve()
    try:
        relative = path.relative_to(ROOT)
    except ValueError:
        raise RuntimeError(f"{name} is imported from {path}, outside {ROOT}") from None
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def write_pages() -> None:
    """One ``reference/<dotted/path>.md`` page per module, and the section's nav."""
    import mkdocs_gen_files

    nav = mkdocs_gen_files.Nav()
    for name in public_modules(installed_packages()):
        parts = tuple(name.split("."))
        page = "/".join(parts) + ".md"
        nav[parts] = page
        with mkdocs_gen_files.open(f"{REFERENCE}/{page}", "w") as handle:
            handle.write(f"# `{name}`\n\n::: {source_name(name)}\n")
    with mkdocs_gen_files.open(f"{REFERENCE}/SUMMARY.md", "w") as handle:
        handle.writelines(nav.build_literate_nav())


if __name__ in {"__main__", "<run_path>"}:  # run by mkdocs-gen-files, not when imported
    write_pages()
