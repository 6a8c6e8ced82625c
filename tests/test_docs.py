"""The documentation: generated tables current, README short and self-contained, and the
API reference's module walk complete."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEST_COMMAND = (
    'pip install torch==2.13.0 && pip install -e ".[test]" && HF_HUB_OFFLINE=1 python -m pytest -q'
)
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
LINK_TARGET = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = re.compile(r"(?i)\b(?:https?|ftp)://|\bwww\.|\bmailto:")


def prose(text: str) -> str:
    """Markdown without code blocks, code spans and comments (where nothing is a link)."""
    return CODE_SPAN.sub("", FENCE.sub("", COMMENT.sub("", text)))


def external_addresses(path: Path) -> list[str]:
    return [m.group(0) for m in EXTERNAL.finditer(prose(path.read_text(encoding="utf-8")))]


def link_problems(path: Path) -> list[str]:
    """Links in ``path`` that leave the repository or point at nothing in it."""
    text = prose(path.read_text(encoding="utf-8"))
    problems = [f"external address {address!r}" for address in external_addresses(path)]
    for target in LINK_TARGET.findall(text):
        file_part = target.split("#", 1)[0]
        if not file_part:
            continue
        resolved = (path.parent / file_part).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            problems.append(f"link to {target!r}, which is not in the repository")
        elif "#" in target and target.split("#", 1)[1] not in anchors(resolved):
            problems.append(f"link to {target!r}, a heading that does not exist")
    return problems


def anchors(page: Path) -> set[str]:
    """The heading anchors of a markdown page, as GitHub and mkdocs' toc spell them."""
    if page.suffix != ".md":
        return set()
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")),
                          re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_generated_pages_are_current():
    """``report_pages.py --check``: every generated block equals its rendering from
    ``benchmarks/results`` (run ``python benchmarks/report_pages.py`` after a benchmark)."""
    result = subprocess.run([sys.executable, "benchmarks/report_pages.py", "--check"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_is_short_and_links_stay_in_the_repository():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200)"
    assert link_problems(README) == []


def test_docs_pages_link_only_inside_the_repository():
    """No web address in the site's pages (``mkdocs build --strict`` checks that every
    relative link and anchor resolves, figures copied in at build time included)."""
    found = {str(p.relative_to(ROOT)): external_addresses(p)
             for p in sorted((ROOT / "docs").rglob("*.md"))}
    assert {page: addresses for page, addresses in found.items() if addresses} == {}


def test_readme_test_command_is_the_one_ci_runs():
    readme = README.read_text(encoding="utf-8")
    assert "python -m venv .venv && . .venv/bin/activate\n" + TEST_COMMAND in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'python -m pip install --quiet -e ".[test]"' in ci
    assert "\nHF_HUB_OFFLINE=1 python -m pytest -q\n" in ci


def load_gen_api():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as err:  # tomllib / tomli
        pytest.skip(f"docs/gen_api.py needs {err.name}")
    return module


def source_modules() -> set[str]:
    """Every public module file of the installed packages, as an import name."""
    names = set()
    for folder, package in (("diffusers_mrs", "diffusers_mrs"),
                            ("pipelines", "diffusers_mrs.pipelines"),
                            ("model_cards", "diffusers_mrs.model_cards")):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            if all(not p.startswith("_") for p in parts):
                names.add(".".join((package, *parts)))
    return names


def test_api_reference_walk_covers_every_public_module_and_name():
    """The reference has a page per module the walk finds; the walk finds every module
    file, and every public class and function of the package is defined in one of them."""
    gen_api = load_gen_api()
    walked = set(gen_api.public_modules(gen_api.installed_packages()))
    assert source_modules() <= walked
    import diffusers_mrs

    for name in diffusers_mrs.__all__:
        obj = getattr(diffusers_mrs, name)
        assert inspect.getmodule(obj).__name__ in walked, name
    for module_name in walked:
        assert gen_api.source_name(module_name).split(".")[0] in {"diffusers_mrs", "pipelines",
                                                                  "model_cards"}
