"""Held-out quality of the default model against the CPU-hours spent training it.

Each ``--stage LABEL=HOURS=DIR`` is one trained model: ``HOURS`` the CPU-hours of training
that led to it (cumulative, counted from scratch, classifier fits included) and ``DIR`` the
folder where ``benchmarks/default_model_eval.py --out DIR`` wrote its ``default_model.json``
(the realistic held-out crops, so every stage is measured on the same degraded crops).
For each claimed degradation the curve gives the gain over the input of the one-step x0
estimate, of one MR Sampler sample at 10 steps, of posterior@100 and of the faithful
sampler's mean of 8, next to the issue's target for one sample::

    python benchmarks/training_curve.py --stage v3=6.9=benchmarks/results/v3 \\
        --stage "v4 candidate=9.6=benchmarks/results/v4_candidate" --out DIR

Outputs (``--out``): ``training_curve.json``, ``training_curve.md`` and
``training_curve.png`` (one panel per degradation, gain in dB against CPU-hours).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The issue's targets for one sample at 10 steps, dB over the input.
SINGLE_SAMPLE_TARGETS = {"noise": 7.5, "lowlight": 13.0}
#: The measures plotted, as (key in the json, label).
MEASURES = (("x0", "x0 estimate, 1 NFE"), ("single", "MR Sampler @10, one sample"),
            ("posterior100", "posterior@100, one sample"), ("mean_of_8", "faithful mean of 8"))


def parse_stage(text: str) -> dict[str, Any]:
    """``LABEL=HOURS=DIR`` -> ``{"label", "cpu_hours", "results"}``; a clear error otherwise."""
    parts = text.rsplit("=", 2)
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--stage {text!r}: expected LABEL=HOURS=DIR")
    label, hours, folder = parts
    try:
        cpu_hours = float(hours)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--stage {text!r}: HOURS {hours!r} is not a number") from None
    path = Path(folder) / "default_model.json"
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"--stage {text!r}: no {path} (run "
                                         "benchmarks/default_model_eval.py --out DIR first)")
    return {"label": label, "cpu_hours": cpu_hours, "results": str(folder)}


def stage_gains(stage: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per claimed degradation: each measure of :data:`MEASURES` minus the input's PSNR."""
    result = json.loads((Path(stage["results"]) / "default_model.json").read_text())
    gains = {}
    for kind in result["claimed"]:
        row = result["rows"][kind]
        if row["input"] == float("inf"):
            continue  # a clean input: nothing to gain
        values = {key: row.get(key) for key in ("x0", "single", "posterior100")}
        values["mean_of_8"] = row.get("faithful", {}).get("mean_of_8")
        gains[kind] = {k: v - row["input"] for k, v in values.items() if v is not None}
    return gains


def markdown(curve: dict[str, Any]) -> str:
    """The curve as a table, one row per stage and degradation, then the command."""
    lines = ["| model | CPU-hours | degradation | " + " | ".join(m for _, m in MEASURES)
             + " | target (one sample) |", "|---" * (4 + len(MEASURES)) + "|"]
    for stage in curve["stages"]:
        for kind, gains in stage["gains"].items():
            cells = [f"{gains[k]:+.2f}" if k in gains else "-" for k, _ in MEASURES]
            target = SINGLE_SAMPLE_TARGETS.get(kind)
            cells.append("-" if target is None else f"{target:+.1f}")
            lines.append(f"| {stage['label']} | {stage['cpu_hours']:.1f} | {kind} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Gains in dB over the degraded input, on the realistic held-out crops of "
              "`benchmarks/default_model_eval.py`. Command: `" + curve["command"] + "`."]
    return "\n".join(lines) + "\n"


def plot(curve: dict[str, Any], path: Path) -> None:
    """One panel per degradation: each measure's gain against CPU-hours, target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(k for s in curve["stages"] for k in s["gains"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
    hours = [s["cpu_hours"] for s in curve["stages"]]
    for ax, kind in zip(axes[0], kinds, strict=True):
        for key, label in MEASURES:
            ys = [s["gains"].get(kind, {}).get(key, float("nan")) for s in curve["stages"]]
            ax.plot(hours, ys, marker="o", label=label)
        if kind in SINGLE_SAMPLE_TARGETS:
            ax.axhline(SINGLE_SAMPLE_TARGETS[kind], ls="--", c="k", lw=1, label="target")
        for stage in curve["stages"]:
            ax.annotate(stage["label"], (stage["cpu_hours"], ax.get_ylim()[0]), fontsize=8,
                        xytext=(2, 4), textcoords="offset points")
        ax.set(title=kind, xlabel="training CPU-hours", ylabel="gain over input (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=parse_stage, action="append", required=True,
                        help="LABEL=HOURS=DIR, in training order (repeat)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    curve = {"command": shlex.join(["python", "benchmarks/training_curve.py", *argv]),
             "targets": SINGLE_SAMPLE_TARGETS,
             "stages": [{**s, "gains": stage_gains(s)} for s in args.stage]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_curve.json").write_text(json.dumps(curve, indent=2) + "\n")
    (args.out / "training_curve.md").write_text(markdown(curve))
    plot(curve, args.out / "training_curve.png")
    print(markdown(curve))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
