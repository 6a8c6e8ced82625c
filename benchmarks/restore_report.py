"""The report of ``bench_restore.py``: the markdown table rows, the seconds-vs-NFE plot,
and the result files (``NAME.json``, ``NAME.md``, ``NAME_vs_nfe.png``) of one run or of
several merged runs (``--merge``)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from restore_networks import Network


def format_row(row: dict[str, Any]) -> str:
    def f(key: str, fmt: str) -> str:
        value = row.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    return (
        f"| {row['network']} | {row['method']}@{row['nfe']} | {row['variant']} | "
        f"{f('median_s', '.2f')} | {f('ratio_vs_original', '.2f')} | "
        f"{f('ratio_vs_fp32', '.2f')} | {f('peak_mib', '.0f')} | "
        f"{f('max_abs_diff_vs_original', '.1e')} | {f('psnr_vs_fp32_db', '.1f')} | "
        f"{f('compile_s', '.1f')} | {f('syncs', 'd')} |"
    )


HEADER = (
    "| network | method@NFE | variant | s/image (median) | x original | x fp32 | "
    "peak MiB | max abs diff vs original | PSNR vs fp32 dB | compile s | syncs |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def _points(rows: list[dict[str, Any]], net: str, variant: str, method: str) -> list[tuple]:
    return sorted(
        (r["nfe"], r["median_s"])
        for r in rows
        if r["network"] == net and r["variant"] == variant and r["method"] == method
    )


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Seconds per image against NFE (fp32): one colour per network, this pipeline solid
    with circles, the original loop dashed with squares; posterior sampling as big marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for i, net in enumerate(sorted({r["network"] for r in rows})):
        for variant, line, mark in (("fp32", "-", "o"), ("original", "--", "s")):
            who = "this pipeline" if variant == "fp32" else "original loop"
            mrs = _points(rows, net, variant, "mrs")
            post = _points(rows, net, variant, "posterior")
            if mrs:
                xs, ys = zip(*mrs, strict=True)
                ax.plot(xs, ys, line + mark, color=f"C{i}", label=f"{net}: MRS, {who}")
            if post:
                xs, ys = zip(*post, strict=True)
                ax.plot(xs, ys, mark, color=f"C{i}", markersize=9,
                        label=f"{net}: posterior, {who}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations)")
    ax.set_ylabel("seconds per image")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the points
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def merge_results(paths: list[Path], out: Path, name: str) -> None:
    """``--merge``: the rows of several result files as one report, each network's rows
    from the last file holding it; the md lists every file's command and environment."""
    runs = [json.loads(path.read_text()) for path in paths]
    source: dict[str, int] = {}
    for i, run in enumerate(runs):
        source.update({row["network"]: i for row in run["rows"]})
    rows = [r for i, run in enumerate(runs) for r in run["rows"] if source[r["network"]] == i]
    notes = {k: v for i, run in enumerate(runs) for k, v in run["networks"].items()
             if source.get(k) == i}
    envs = [run["environment"] for run in runs]
    out.mkdir(parents=True, exist_ok=True)
    payload = {"environments": envs, "networks": notes, "rows": rows}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = ["Merged from these runs (a network's rows come from the last run that has it):", ""]
    for i, env in enumerate(envs):
        nets = sorted(k for k, v in source.items() if v == i)
        lines.append(f"- run {i + 1} ({', '.join(nets) or 'no rows used'}): `{env['command']}`;"
                     f" {env['device']}, {env['threads']} threads, load average at start/end"
                     f" {env['load_average_at_start']} / {env.get('load_average_at_end')}")
    lines += ["", HEADER, *map(format_row, rows), ""]
    lines += [f"- {n}: original loops on {v['original']}. " + " ".join(v["notes"])
              for n, v in notes.items()]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    last = envs[-1]
    size = re.search(r"--size (\d+)", last["command"])
    px = f"{size.group(1)} px, " if size else ""
    title = f"{px}{last['device']}, {last['threads']} thread(s)"
    plot(rows, out / f"{name}_vs_nfe.png", title)
    print(f"wrote {out / name}.json, .md and _vs_nfe.png from {len(paths)} runs")


def write_results(
    args: argparse.Namespace, env: dict[str, Any], nets: list[Network], rows: list[dict[str, Any]]
) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    notes = {n.name: {"original": n.original_kind, "notes": n.notes} for n in nets}
    payload = {"environment": env, "networks": notes, "rows": rows}
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [
        f"Command: `{env['command']}`",
        "",
        f"Device {env['device']}, {env['threads']} torch threads, torch {env['torch']}, "
        f"load average at start/end {env['load_average_at_start']} / "
        f"{env['load_average_at_end']}.",
        "",
        HEADER,
        *map(format_row, rows),
        "",
    ]
    lines += [
        f"- {name}: original loops on {n['original']}. " + " ".join(n["notes"])
        for name, n in notes.items()
    ]
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    title = f"{args.size} px, {env['device']}, {env['threads']} thread(s)"
    if any(r["method"] == "mrs" for r in rows):
        plot(rows, args.out / f"{args.name}_vs_nfe.png", title)
    print(f"wrote {args.out / args.name}.json, .md and _vs_nfe.png")
