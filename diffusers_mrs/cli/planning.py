"""Output planning of ``diffusers-mrs restore``: which file each input is written to, and the
manifest that says which input each output belongs to.

Inputs are files and folders (:func:`collect_inputs`); each becomes ``OUTPUT/<input
name>.png``, only the final extension replaced (:func:`output_name`). Existing outputs are
never silently replaced: ``OUTPUT/.diffusers-mrs-outputs.json`` (:data:`MANIFEST_NAME`)
records which input each output belongs to, and :func:`plan_jobs` lets ``--overwrite``
replace, and ``--skip-existing`` keep, only an input's *own* earlier output; any other
existing file stops the run, so no run ever writes two inputs to one path, across runs too.
A run without ``--samples`` treats the input's own ``NAME.std.png`` of an earlier
``--samples`` run as an existing output: ``--overwrite`` removes it, with its manifest entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..atomic_files import write_atomic
from ..image_io import IMAGE_EXTENSIONS
from .checks import UsageError

__all__ = [
    "MANIFEST_NAME",
    "Job",
    "check_manifest_path",
    "collect_inputs",
    "output_name",
    "plan_jobs",
    "read_manifest",
    "remove_stale_std_maps",
    "std_map_path",
    "write_manifest",
]

#: In every output folder: which input each output file belongs to (see :func:`plan_jobs`).
MANIFEST_NAME = ".diffusers-mrs-outputs.json"


@dataclass(frozen=True)
class Job:
    """One image to restore: where it is read from and where its result goes."""

    source: Path
    target: Path
    std_target: Path | None = None  # the uncertainty map of ``--samples K``
    #: This input's own ``NAME.std.png`` of an earlier ``--samples`` run, which a run
    #: without ``--samples`` removes (it would not describe the new ``NAME.png``).
    stale_std: Path | None = None

    @property
    def targets(self) -> tuple[Path, ...]:
        return (self.target,) if self.std_target is None else (self.target, self.std_target)



def collect_inputs(
    paths: Sequence[str | os.PathLike], recursive: bool = False
) -> list[tuple[Path, Path]]:
    """Expands files and folders into ``(file, relative name)`` pairs, in a stable order.

    Files given directly are taken whatever their extension; folders contribute their files
    with an image extension (:data:`IMAGE_EXTENSIONS`, case-insensitive), sorted, hidden
    files skipped. The relative name is the whole file name, prefixed by the sub-folder
    inside the given folder when ``recursive``; the output is that name with its final
    extension replaced by ``.png`` (``frame.0001.tif`` -> ``frame.0001.png``).

    Raises:
        UsageError: a path does not exist, or is neither a regular file nor a folder.
    """
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(
                p
                for p in path.glob(pattern)
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            found.extend((p, p.relative_to(path)) for p in files)
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif path.exists():  # a FIFO, socket or device: reading it would block or never end
            raise UsageError(f"input {raw} is not a regular file (a FIFO, socket or device);"
                             " pass image files or folders")
        else:
            raise UsageError(f"input not found: {raw}")
    return found


def output_name(relative: Path) -> Path:
    """The output path (relative to ``--output``): only the final extension becomes ``.png``."""
    return relative.with_suffix(".png") if relative.suffix else relative.with_name(
        relative.name + ".png"
    )


def read_manifest(output_dir: Path) -> dict[str, str]:
    """``{output relative path: source absolute path}`` of earlier runs into ``output_dir``
    (empty unless the manifest is a regular file: a FIFO or device there is never read)."""
    path = output_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    outputs = data.get("outputs") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in outputs.items()} if isinstance(outputs, dict) else {}


def check_manifest_path(output_dir: Path) -> None:
    """The manifest's path in ``output_dir`` must be free or a regular file (it is replaced
    by a new file on every run).

    Raises:
        UsageError: a folder (or anything else but a regular file) has the manifest's name.
    """
    path = output_dir / MANIFEST_NAME
    if path.is_symlink() or not path.exists() or path.is_file():
        return  # a symlink is replaced by the new manifest, never followed
    raise UsageError(
        f"{path} is not a file: the outputs manifest of {output_dir} has this name; remove it"
        " or choose another --output"
    )


def write_manifest(output_dir: Path, jobs: Sequence[Job]) -> None:
    """Records which input each planned output belongs to (merged with earlier runs, written
    by :func:`~diffusers_mrs.atomic_files.write_atomic`); the entries of the stale uncertainty
    maps :func:`remove_stale_std_maps` removes are dropped."""
    entries = read_manifest(output_dir)
    for job in jobs:
        if job.stale_std is not None:
            entries.pop(job.stale_std.relative_to(output_dir).as_posix(), None)
        for target in job.targets:
            entries[target.relative_to(output_dir).as_posix()] = str(job.source.resolve())
    text = json.dumps({"version": 1, "outputs": entries}, indent=1)
    write_atomic(output_dir / MANIFEST_NAME, lambda file: file.write(text.encode("utf-8")))


def remove_stale_std_maps(jobs: Sequence[Job]) -> None:
    """Removes the uncertainty maps of earlier ``--samples`` runs that the new outputs of
    ``jobs`` would leave stale (:attr:`Job.stale_std`)."""
    for job in jobs:
        if job.stale_std is not None:
            job.stale_std.unlink(missing_ok=True)


def _check_unique_targets(jobs: Sequence[Job]) -> None:
    by_target: dict[Path, list[Path]] = {}
    for job in jobs:
        for target in job.targets:
            by_target.setdefault(target.resolve(), []).append(job.source)
    clashes = {t: s for t, s in by_target.items() if len(s) > 1}
    if clashes:
        shown = "; ".join(f"{t} <- " + ", ".join(map(str, s)) for t, s in clashes.items())
        raise UsageError(f"several inputs would write the same output file: {shown}")
    sources = {job.source.resolve() for job in jobs}
    onto_inputs = [t for t in by_target if t in sources]
    if onto_inputs:
        names = ", ".join(map(str, onto_inputs))
        raise UsageError(f"outputs would overwrite input files: {names}; choose another --output")


def _check_owners(jobs: Sequence[Job], output_dir: Path) -> list[Job]:
    """The jobs with existing outputs; raises if one of those files is not the job's own."""
    existing = [(job, t) for job in jobs for t in job.targets if t.exists()]
    owners = read_manifest(output_dir) if existing else {}
    for job, target in existing:
        owner = owners.get(target.relative_to(output_dir).as_posix())
        if owner != str(job.source.resolve()):
            origin = f"the result of {owner}" if owner else "a file not written for this input"
            raise UsageError(
                f"an output file belongs to another input: {target} is {origin}; --overwrite"
                " replaces only an input's own output: choose another --output"
            )
    return list(dict.fromkeys(job for job, _ in existing))


def _with_stale_std_maps(jobs: Sequence[Job], output_dir: Path) -> list[Job]:
    """``jobs`` with :attr:`Job.stale_std` set where a job writes no uncertainty map but the
    manifest says its input's ``NAME.std.png`` of an earlier run exists."""
    present = [(job, std_map_path(job.target)) for job in jobs if job.std_target is None]
    present = [(job, path) for job, path in present if path.exists() or path.is_symlink()]
    owners = read_manifest(output_dir) if present else {}
    stale = {
        job: path for job, path in present
        if owners.get(path.relative_to(output_dir).as_posix()) == str(job.source.resolve())
    }
    return [replace(job, stale_std=stale[job]) if job in stale else job for job in jobs]


def plan_jobs(
    inputs: Sequence[tuple[Path, Path]],
    output_dir: Path,
    overwrite: bool = False,
    skip_existing: bool = False,
    std_maps: bool = False,
) -> tuple[list[Job], list[Job]]:
    """Maps inputs to ``output_dir/<name>.png``; returns ``(jobs to run, jobs skipped)``.

    With ``std_maps`` (``--samples K``) each job also writes ``<name>.std.png``. An existing
    output is this input's own only if the manifest of earlier runs (:data:`MANIFEST_NAME`
    in ``output_dir``) says so; ``overwrite`` replaces and ``skip_existing`` keeps only such
    files. Any other existing file is never touched. Without ``std_maps``, the input's own
    ``<name>.std.png`` of an earlier run counts as an existing output too: ``overwrite``
    removes it (:attr:`Job.stale_std`, :func:`remove_stale_std_maps`), as it would not
    describe the new ``<name>.png``.

    Raises:
        UsageError: no inputs, two inputs with the same output, an output that is an input
            file, an existing output of another input (or of unknown origin), or existing
            own outputs without ``overwrite``/``skip_existing``.
    """
    if not inputs:
        raise UsageError("no input images found")
    jobs = []
    for src, rel in inputs:
        target = output_dir / output_name(rel)
        jobs.append(Job(src, target, std_map_path(target) if std_maps else None))
    _check_unique_targets(jobs)
    jobs = _with_stale_std_maps(jobs, output_dir)
    existing = _check_owners(jobs, output_dir)
    existing += [j for j in jobs if j.stale_std is not None and j not in existing]
    if existing and not (overwrite or skip_existing):
        shown = ", ".join(str(j.target if j.target.exists() else j.stale_std)
                          for j in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise UsageError(
            f"{len(existing)} output file(s) already exist ({shown}{more}); pass --overwrite to"
            " replace them or --skip-existing to keep them"
        )
    if skip_existing and not overwrite:
        skipped = set(existing)
        return [j for j in jobs if j not in skipped], existing
    return jobs, []


def std_map_path(target: Path) -> Path:
    """Where ``--samples K`` writes the uncertainty map of ``NAME.png``: ``NAME.std.png``."""
    return target.with_name(f"{target.stem}.std.png")
