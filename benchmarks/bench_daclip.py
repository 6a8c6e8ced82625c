"""Seconds per image for a DA-CLIP-shaped pipeline: MR Sampler at 10 steps vs IR-SDE
posterior sampling at 100 steps, measured side by side in one run.

The pipeline is the converted DA-CLIP layout at its real size, with random weights: the
ViT-B/32 ``DACLIPImageEncoder`` (run once per image) and the context U-Net of
``universal-ir.pth`` (nf=64, ch_mult [1, 2, 4, 8], cross-attention at the deepest level and
the middle, degradation prompt), restoring one random RGB image. Each method runs
``--repeats`` times, interleaved (MRS, posterior, MRS, ...); the script prints every time,
the medians and their ratio.

    python benchmarks/bench_daclip.py [--size 256] [--repeats 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    mrs = pipe.scheduler
    posterior = MRPosteriorScheduler.from_config(mrs.config)
    image = torch.rand(3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    params = sum(p.numel() for p in pipe.unet.parameters())
    print(f"DA-CLIP-shaped pipeline, U-Net {params / 1e6:.1f} M parameters, "
          f"{args.size}x{args.size}, {args.threads} CPU threads")  # fmt: skip
    time_call(pipe, image, 1)  # warm-up
    times: dict[str, list[float]] = {"MRS @10": [], "posterior @100": []}
    for _ in range(args.repeats):
        for name, scheduler, steps in (("MRS @10", mrs, 10), ("posterior @100", posterior, 100)):
            pipe.scheduler = scheduler
            times[name].append(time_call(pipe, image, steps))
            print(f"  {name}: {times[name][-1]:.1f} s")
    medians = {name: statistics.median(values) for name, values in times.items()}
    print("| method | NFE | s / image |\n| --- | --- | --- |")
    for name, steps in (("MRS @10", 10), ("posterior @100", 100)):
        print(f"| {name} | {steps} | {medians[name]:.1f} |")
    print(f"speed-up: {medians['posterior @100'] / medians['MRS @10']:.1f}x")


if __name__ == "__main__":
    main()
