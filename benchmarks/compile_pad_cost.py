"""What padding to a fixed multiple (``enable_compile(pad_to_multiple=M)``) changes in a
restoration: PSNR of the padded against the unpadded result, over the whole image and
without its last ``k`` rows and columns (where the padding adds reflected content).

The padding is applied without compiling (the compiled graph computes the same), so this
runs in seconds. Same image, seed and sampler for both results.

    python benchmarks/compile_pad_cost.py --sizes 40x44 100x90 --multiple 64 128
"""

from __future__ import annotations

import argparse

import torch
from _common import image_psnr

from diffusers_mrs import MRRestorationPipeline


def restore(pipe: MRRestorationPipeline, image: torch.Tensor, multiple: int, steps: int):
    pipe._compile_pad_multiple = multiple  # what enable_compile(pad_to_multiple=...) sets
    generator = torch.Generator().manual_seed(0)
    out = pipe(image=image, num_inference_steps=steps, generator=generator, output_type="pt")
    return out.images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default model)")
    parser.add_argument("--sizes", nargs="+", default=["40x44", "100x90"], help="HxW")
    parser.add_argument("--multiple", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if len(args.multiple) != len(args.sizes):
        parser.error("give one --multiple per --sizes entry")
    torch.set_num_threads(args.threads)
    pipe = MRRestorationPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    own = pipe._unet_pad_multiple()
    print(f"network pads to a multiple of {own} ({pipe._unet_pad_mode()}); {args.steps} steps")
    print("| size | M | PSNR dB | without last 2 | 4 | 8 | 16 |\n|---|---|---|---|---|---|---|")
    for size, multiple in zip(args.sizes, args.multiple, strict=True):
        h, w = map(int, size.split("x"))
        image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(1))
        ref = restore(pipe, image, 1, args.steps)
        pad = restore(pipe, image, multiple, args.steps)
        crops = [
            image_psnr(pad[..., : h - k, : w - k], ref[..., : h - k, : w - k])
            for k in (2, 4, 8, 16)
        ]
        print(
            f"| {h}x{w} | {multiple} | {image_psnr(pad, ref):.1f} | "
            + " | ".join(f"{c:.1f}" for c in crops)
            + " |"
        )


if __name__ == "__main__":
    main()
