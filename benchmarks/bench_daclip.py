"""Seconds per image for a DA-CLIP-shaped pipeline: MR Sampler at 10 steps vs IR-SDE
posterior sampling at 100 steps, measured side by side in one run.

The pipeline is the converted DA-CLIP layout at its real size, with random weights: the
ViT-B/32 ``DACLIPImageEncoder`` (run once per image) and the context U-Net of
``universal-ir.pth`` (nf=64, ch_mult [1, 2, 4, 8], cross-attention at the deepest level and
the middle, degradation prompt), restoring one random RGB image. Each method runs
``--repeats`` times, interleaved (MRS, posterior, MRS, ...), at each of ``--sizes``; the
script prints every time, then one table (a column of medians per size) and the ratios.
``--record`` writes that table as the ``daclip_speed`` entry of ``results/recorded.json``
(:mod:`recorded`).

    python benchmarks/bench_daclip.py [--sizes 64 256] [--repeats 1] [--threads 2] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch
from nfe_report import markdown_table
from recorded import add_record_option, record_table, script_command

from diffusers_mrs import (
    MRPosteriorScheduler,
    MRRestorationPipeline,
    MRSamplerScheduler,
    MRUNet2DModel,
)
from diffusers_mrs.convert import PAPER_SCHEDULER
from diffusers_mrs.models.daclip_encoder import DACLIPImageEncoder, daclip_feature_extractor

DACLIP_UNET = {"nf": 64, "ch_mult": [1, 2, 4, 8], "context_dim": 512,
               "use_image_context": True, "use_degra_context": True}  # fmt: skip


def build_pipeline() -> MRRestorationPipeline:
    torch.manual_seed(0)
    unet = MRUNet2DModel(**DACLIP_UNET).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.01)  # not the all-zero output
    return MRRestorationPipeline(
        unet=unet,
        scheduler=MRSamplerScheduler(**PAPER_SCHEDULER),
        image_encoder=DACLIPImageEncoder().eval(),
        feature_extractor=daclip_feature_extractor(),
    )


def time_call(pipe: MRRestorationPipeline, image: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    pipe(image=image, num_inference_steps=steps, output_type="pt",
         generator=torch.Generator().manual_seed(0))  # fmt: skip
    return time.perf_counter() - start


METHODS = (("MR Sampler", "MRS @10", 10), ("posterior (IR-SDE)", "posterior @100", 100))


def daclip_table(medians: dict[int, dict[str, float]]) -> tuple[list[str], list[list]]:
    """``(columns, rows)``: one row per method (name, NFE, then the median seconds per
    image at each size), from ``medians[size][key]`` with the keys of :data:`METHODS`."""
    columns = ["method", "NFE", *(f"s / image, {size}x{size}" for size in medians)]
    rows = [[label, steps, *(round(by_key[key], 1) for by_key in medians.values())]
            for label, key, steps in METHODS]
    return columns, rows


def daclip_setting(params: int, threads: int, repeats: int) -> str:
    """The recorded entry's setting (the U-Net's size, the threads, the repeats)."""
    median = f", median of {repeats} runs" if repeats > 1 else ""
    return ("random weights at the size of the published DA-CLIP files (ViT-B/32 encoder "
            f"once per image, {params / 1e6:.1f} M-parameter context U-Net), one random RGB "
            f"image, {threads} CPU threads{median}")


def time_size(pipe: MRRestorationPipeline, size: int, repeats: int) -> dict[str, float]:
    """Median seconds per image of each method at ``size`` x ``size`` (times printed)."""
    schedulers = {"MRS @10": pipe.scheduler,
                  "posterior @100": MRPosteriorScheduler.from_config(pipe.scheduler.config)}
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(1))
    time_call(pipe, image, 1)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in schedulers}
    for _ in range(repeats):
        for _label, name, steps in METHODS:
            pipe.scheduler = schedulers[name]
            times[name].append(time_call(pipe, image, steps))
            print(f"  {size}x{size} {name}: {times[name][-1]:.1f} s")
    pipe.scheduler = schedulers["MRS @10"]
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", "--size", type=int, nargs="+", default=[256],
                        help="image sizes, one column each")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    add_record_option(parser, "daclip_speed")
    args = parser.parse_args(argv)
    if len(set(args.sizes)) != len(args.sizes):
        parser.error(f"--sizes: each size once, got {args.sizes}")
    torch.set_num_threads(args.threads)

    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    params = sum(p.numel() for p in pipe.unet.parameters())
    print(f"DA-CLIP-shaped pipeline, U-Net {params / 1e6:.1f} M parameters, "
          f"{args.threads} CPU threads")  # fmt: skip
    medians = {size: time_size(pipe, size, args.repeats) for size in args.sizes}
    columns, rows = daclip_table(medians)
    print(markdown_table(columns, [[str(cell) for cell in row] for row in rows]))
    for size, by_key in medians.items():
        print(f"speed-up at {size}x{size}: "
              f"{by_key['posterior @100'] / by_key['MRS @10']:.1f}x")
    if args.record:
        record_table("daclip_speed", columns, rows, script_command(__file__, argv),
                     daclip_setting(params, args.threads, args.repeats))


if __name__ == "__main__":
    main()
