"""The NFE benchmark's figures: PSNR against NFE, and a grid of example restorations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from nfe_run import GRID_COLUMNS, BenchData

from diffusers_mrs.metrics import psnr


def _style(key: str) -> dict[str, Any]:
    """Line style of a method in the PSNR-vs-NFE plot."""
    fixed = {
        "mrs-default": {"color": "black", "lw": 2.6, "marker": "o", "zorder": 5},
        "posterior-irsde": {"color": "tab:red", "lw": 2.0, "ls": "--", "marker": "x"},
        "posterior-jump": {"color": "tab:red", "lw": 1.4, "ls": ":", "marker": "x"},
        "em-irsde": {"color": "tab:orange", "lw": 2.0, "ls": "--", "marker": "+"},
        "em-jump": {"color": "tab:orange", "lw": 1.4, "ls": ":", "marker": "+"},
        "x0-estimate": {"color": "tab:brown", "lw": 0, "marker": "*", "ms": 11, "zorder": 6},
    }
    if key in fixed:
        return fixed[key]
    if key.startswith("unipc-"):
        *_, solver_type, order = key.split("-")
        noise = "-noise-" in key
        color = {(False, "bh1"): "tab:cyan", (False, "bh2"): "tab:pink",
                 (True, "bh1"): "tab:blue", (True, "bh2"): "tab:gray"}[(noise, solver_type)]
        return {"color": color, "lw": 1.3,
                "ls": "--" if key.startswith("unipc-exact-") else "-",
                "marker": {"1": "o", "2": "s", "3": "^"}[order], "ms": 4}
    _, alg, param, order = key.split("-")
    color = {("sde", "data"): "tab:blue", ("sde", "noise"): "tab:green",
             ("ode", "data"): "tab:purple", ("ode", "noise"): "tab:olive"}[(alg, param)]
    return {"color": color, "lw": 1.0, "ls": "-" if alg == "sde" else "-.",
            "marker": {"1": "o", "2": "s", "3": "^"}[order], "ms": 3, "alpha": 0.85}


def plot_psnr_vs_nfe(results: dict[str, Any], path: Path) -> None:
    """The paper's Figure 2: PSNR against NFE (log x), a panel per degradation + average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in results["input"]["psnr"] if k != "average"] + ["average"]
    ncols = 3
    nrows = math.ceil((len(kinds) + 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    flat = axes.ravel()
    for ax, kind in zip(flat, kinds, strict=False):
        for key, m in results["methods"].items():
            pts = sorted((int(n), r["psnr"][kind]) for n, r in m["runs"].items())
            if pts:
                ax.plot(*zip(*pts, strict=True), label=m["label"], **_style(key))
        ax.axhline(results["input"]["psnr"][kind], color="gray", ls=":", lw=1.2,
                   label="degraded input")
        ax.set_xscale("log")
        ticks = sorted({int(n) for m in results["methods"].values() for n in m["runs"]})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(kind)
        ax.set_xlabel("NFE")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    handles, labels = flat[0].get_legend_handles_labels()
    for ax in flat[len(kinds):]:
        ax.axis("off")
    flat[len(kinds)].legend(handles, labels, loc="center", fontsize=7, ncol=2, frameon=False)
    samples = int(results["meta"].get("samples", 1))
    each = f", each output the mean of {samples} samples" if samples > 1 else ""
    fig.suptitle(f"PSNR vs NFE ({results['meta']['model_short']}{each})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ode_distance(results: dict[str, Any], path: Path) -> bool:
    """RMS distance (8-bit levels) of each PF-ODE solver to the converged ODE solution
    against NFE, log-log, average over the images; False (nothing written) where no
    ``ode_distance`` was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {key: sorted((int(n), 255 * r["ode_distance"]["average"])
                          for n, r in m["runs"].items() if "ode_distance" in r)
              for key, m in results["methods"].items()}
    curves = {key: pts for key, pts in curves.items() if pts and key.startswith(
        ("mrs-ode-", "unipc-"))}
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(9, 5))
    for key, pts in curves.items():
        ax.plot(*zip(*pts, strict=True), label=results["methods"][key]["label"], **_style(key))
    ticks = sorted({n for pts in curves.values() for n, _ in pts})
    ax.set(xscale="log", yscale="log", xlabel="NFE",
           ylabel="RMS distance to the converged ODE (x 1/255)",
           title=f"Distance to the converged PF-ODE solution ({results['meta']['model_short']})")
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_grid(
    data: BenchData,
    grid_images: dict[tuple[str, int], torch.Tensor],
    path: Path,
    photo: str | None = None,
) -> None:
    """One example per degradation: degraded | posterior@100 | posterior@10 | MRS@10 |
    MRS@5 | clean, PSNR under each image; a column whose run was not in the plan is blank.
    ``photo`` defaults to flower (the most detailed centre crop), else the first photo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if photo not in data.photos:
        photo = "flower" if "flower" in data.photos else data.photos[0]
    rows = [i for i, p in enumerate(data.photos) if p == photo][: len(data.kind_names)]
    cols: list[tuple[str, torch.Tensor | None]] = [("degraded", data.lq)]
    cols += [(title, grid_images.get((k, n))) for k, n, title in GRID_COLUMNS]
    cols.append(("clean", data.gt))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.9 * len(cols), 2.1 * len(rows)),
                             squeeze=False)
    for r, idx in enumerate(rows):
        for c, (title, images) in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(data.kinds[idx], fontsize=9)
            if images is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=8)
                continue
            img = images[idx].clamp(0, 1)
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            if title != "clean":
                (value,) = psnr(img[None], data.gt[idx : idx + 1])
                ax.set_xlabel(f"{value:.2f} dB", fontsize=8)
    fig.suptitle(f"{photo}: one example per degradation (PSNR vs clean)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

