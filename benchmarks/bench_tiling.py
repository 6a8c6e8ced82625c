"""Tiled restoration: peak memory of a large image, and the seam cost of tiling.

1. Peak memory: each setting restores a ``--size`` x ``--size`` image (default 2048) with
   the default model in a fresh process and reports that process's peak resident set size
   (``resource.getrusage``: everything, Python and torch included) and its RSS after
   loading the pipeline. Peak memory does not depend on the number of steps (every step
   holds the same tensors), so ``--memory-steps`` (default 1) keeps it cheap.
2. Seam cost: an image that fits untiled (``--seam-size``, default 512) is restored with
   and without tiling, same seed and steps; the PSNR of tiled against untiled (inf if
   equal) measures what tiling changes (``seam_cost.seam_cost``, the measurement
   ``benchmarks/seam_cost.py`` runs over many tile sizes on real images).

    python benchmarks/bench_tiling.py [--size 2048] [--tile 256 512] [--tile-batch 1 4]

Writes ``benchmarks/results/tiling.json`` and ``tiling.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def restore(
    size: int, steps: int, tile: int | None, overlap: int | None, batch: int, threads: int
) -> tuple[torch.Tensor, float]:
    """(restored image, seconds) of one restoration of a seeded random image."""
    from diffusers_mrs import MRRestorationPipeline

    torch.set_num_threads(threads)
    pipe = MRRestorationPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    tiling = (
        {}
        if tile is None
        else {"tile_size": tile, "tile_overlap": overlap, "tile_batch_size": batch}
    )
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = pipe(
        image=image,
        num_inference_steps=steps,
        output_type="pt",
        generator=torch.Generator().manual_seed(1),
        **tiling,
    ).images
    restore.rss_loaded_kib = rss_loaded  # type: ignore[attr-defined]
    return out, time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    """Run one memory setting and print its numbers as JSON (in a fresh process)."""
    _, seconds = restore(
        args.size,
        args.memory_steps,
        args.child_tile,
        args.child_overlap,
        args.child_batch,
        args.threads,
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mib": peak_kib / 1024,
                "rss_after_loading_mib": restore.rss_loaded_kib / 1024,
            }
        )
    )


def memory_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for tile, batch in itertools.product(args.tile, args.tile_batch):
        overlap = tile // 4
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--size",
            str(args.size),
            "--memory-steps",
            str(args.memory_steps),
            "--threads",
            str(args.threads),
            "--child-tile",
            str(tile),
            "--child-overlap",
            str(overlap),
            "--child-batch",
            str(batch),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        row = {
            "size": args.size,
            "tile": tile,
            "overlap": overlap,
            "tile_batch": batch,
            "steps": args.memory_steps,
            **json.loads(result.stdout.strip().splitlines()[-1]),
        }
        print(row, flush=True)
        rows.append(row)
    return rows


def seam_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Seam cost (:func:`seam_cost.seam_cost`) of each ``--tile`` below ``--seam-size``."""
    from seam_cost import seam_cost

    def restore_seam_image(tile: int | None) -> np.ndarray:
        overlap = None if tile is None else tile // 4
        out, _ = restore(args.seam_size, args.seam_steps, tile, overlap, 1, args.threads)
        return out.numpy()

    rows: list[dict[str, Any]] = []
    tiles = [tile for tile in args.tile if tile < args.seam_size]
    for tile, psnr, seconds in seam_cost(restore_seam_image, tiles):
        row = {"size": args.seam_size, "tile": tile, "steps": args.seam_steps, "seconds": seconds}
        if tile is not None:
            row.update(overlap=tile // 4, psnr_vs_untiled_db=psnr)
            print(row, flush=True)
        rows.append(row)
    return rows


def write(args: argparse.Namespace, memory: list[dict], seams: list[dict]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_tiling.py " + " ".join(sys.argv[1:])
    load = os.getloadavg()
    payload = {
        "command": command,
        "threads": args.threads,
        "load_average_at_end": load,
        "memory": memory,
        "seams": seams,
    }
    (args.out / "tiling.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [
        f"Command: `{command}` ({args.threads} thread(s), load average {load})",
        "",
        "| image | tile / overlap | tile batch | peak RSS MiB | RSS after loading MiB "
        "| s (steps) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['size']}² | {r['tile']} / {r['overlap']} | {r['tile_batch']} | "
        f"{r['peak_rss_mib']:.0f} | {r['rss_after_loading_mib']:.0f} | "
        f"{r['seconds']:.1f} ({r['steps']}) |"
        for r in memory
    ]
    lines += [
        "",
        "| image | tile / overlap | PSNR tiled vs untiled dB | s (steps) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['size']}² | {r.get('tile')} / {r.get('overlap')} | "
        f"{r.get('psnr_vs_untiled_db', float('nan')):.1f} | {r['seconds']:.1f} "
        f"({r['steps']}) |"
        for r in seams
    ]
    (args.out / "tiling.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'tiling.json'} and tiling.md")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--tile", type=int, nargs="+", default=[256, 512])
    p.add_argument("--tile-batch", type=int, nargs="+", default=[1])
    p.add_argument("--memory-steps", type=int, default=1)
    p.add_argument("--seam-size", type=int, default=512)
    p.add_argument("--seam-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--skip-memory", action="store_true", help="only the seam measurement")
    p.add_argument("--skip-seams", action="store_true", help="only the memory measurement")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-tile", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-overlap", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-batch", type=int, default=1, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    memory = [] if args.skip_memory else memory_rows(args)
    write(args, memory, [] if args.skip_seams else seam_rows(args))


if __name__ == "__main__":
    main()
