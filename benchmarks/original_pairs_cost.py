"""What ``MRRestorationPipeline.from_original`` costs per DA-CLIP pair: the first call
(conversion), the second (load only), the converted folder's size, and one restoration at
the MR Sampler paper's setting (SDE, data, order 2).

The files are the real-size originals with random weights that
``tests/fixtures/make_original_pairs_fixture.py --write-full-size DIR`` writes (the timings
do not depend on the weights' values); a folder holding the real downloads works the same.

    python benchmarks/original_pairs_cost.py DIR --size 256 --steps 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from diffusers_mrs import MRRestorationPipeline
from diffusers_mrs.original_checkpoints import PAIRS


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(files: Path, pair: str, cache: Path, size: int, steps: int) -> dict[str, float]:
    """Seconds of the first and second ``from_original`` and of one restoration (wall
    clock, and CPU seconds of all threads), and MB."""
    start = time.perf_counter()
    MRRestorationPipeline.from_original(files, model=pair, converted_dir=cache)
    first = time.perf_counter() - start
    start = time.perf_counter()
    pipe = MRRestorationPipeline.from_original(files, model=pair, converted_dir=cache)
    second = time.perf_counter() - start
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    start, cpu = time.perf_counter(), time.process_time()
    out = pipe(image=image, num_inference_steps=steps, generator=torch.Generator().manual_seed(1))
    restore, restore_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert out.images[0].size == (size, size)
    (folder,) = [p for p in cache.iterdir() if p.name.startswith(pair + "-")]
    return {"convert": first, "load": second, "restore": restore, "restore_cpu": restore_cpu,
            "originals_mb": sum((files / f).stat().st_size for f in
                                (PAIRS[pair].encoder, PAIRS[pair].network)) / 2**20,
            "converted_mb": folder_size(folder) / 2**20}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, help="folder with the pairs' original files")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; {args.size} px, {args.steps} steps")
    print("| pair | originals MB | converted MB | first call s | second call s | restore s "
          "| restore CPU s |\n|---|---|---|---|---|---|---|")  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        for pair in args.pairs:
            m = measure(args.files, pair, Path(cache), args.size, args.steps)
            print(f"| {pair} | {m['originals_mb']:.0f} | {m['converted_mb']:.0f} | "
                  f"{m['convert']:.1f} | {m['load']:.1f} | {m['restore']:.1f} | "
                  f"{m['restore_cpu']:.1f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
