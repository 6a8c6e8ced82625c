"""What padding to a fixed multiple (``enable_compile(pad_to_multiple=M)``) changes in a
restoration: PSNR of the padded against the unpadded result, over the whole image and
without its last ``k`` rows and columns (where the padding adds reflected content).

The padding is applied without compiling (the compiled graph computes the same), so this
runs in seconds. Same image, seed and sampler for both results. ``--record`` writes the
table as the ``compile_pad`` entry of ``results/recorded.json`` (:mod:`recorded`).

    python benchmarks/compile_pad_cost.py --sizes 40x44 100x90 --multiple 64 128 [--record]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from _common import image_psnr
from recorded import add_record_option, record_table, rounded, script_command

from diffusers_mrs import MRRestorationPipeline


def restore(pipe: MRRestorationPipeline, image: torch.Tensor, multiple: int, steps: int):
    pipe._compile_pad_multiple = multiple  # what enable_compile(pad_to_multiple=...) sets
    generator = torch.Generator().manual_seed(0)
    out = pipe(image=image, num_inference_steps=steps, generator=generator, output_type="pt")
    return out.images


CROPS = (2, 4, 8, 16)  # the rows and columns left out at the bottom and right
COLUMNS = ["size", "M", "PSNR dB", *(f"without last {k}" for k in CROPS)]


def pad_row(padded: torch.Tensor, unpadded: torch.Tensor, multiple: int) -> list:
    """One table row: ``HxW``, ``M``, then the PSNR in dB (rounded to 0.1) of the padded
    against the unpadded restoration over the whole image and without its last ``k`` rows
    and columns for each ``k`` of :data:`CROPS`."""
    h, w = unpadded.shape[-2:]
    if padded.shape != unpadded.shape or min(h, w) <= max(CROPS):
        raise ValueError(f"pad row: two images of the same size over {max(CROPS)} px expected,"
                         f" got {tuple(padded.shape)} and {tuple(unpadded.shape)}")
    crops = [image_psnr(padded[..., : h - k, : w - k], unpadded[..., : h - k, : w - k])
             for k in CROPS]
    whole = image_psnr(padded, unpadded)
    return [f"{h}x{w}", multiple, *(rounded(value, 1) for value in (whole, *crops))]


def pad_setting(model: str | None, steps: int, threads: int) -> str:
    """The recorded entry's setting (model, steps, threads)."""
    return (f"{model or 'default model'}, NFE {steps}, {threads} CPU thread"
            f"{'s' if threads != 1 else ''}, padded against unpadded, same seed; PSNR (dB) "
            "over the whole image and without its last k rows and columns")


def parse_size(parser: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    """``(H, W)`` of a ``--sizes`` entry ``HxW``; both over the largest crop of :data:`CROPS`."""
    try:
        h, w = map(int, text.split("x"))
    except ValueError:
        parser.error(f"--sizes: {text!r} is not HxW")
    if min(h, w) <= max(CROPS):
        parser.error(f"--sizes: {text} is too small; both sides over {max(CROPS)} px")
    return h, w


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder (default model)")
    parser.add_argument("--sizes", nargs="+", default=["40x44", "100x90"], help="HxW")
    parser.add_argument("--multiple", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    add_record_option(parser, "compile_pad")
    args = parser.parse_args(argv)
    if len(args.multiple) != len(args.sizes):
        parser.error("give one --multiple per --sizes entry")
    shapes = [parse_size(parser, size) for size in args.sizes]
    torch.set_num_threads(args.threads)
    pipe = MRRestorationPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    own = pipe._unet_pad_multiple()
    print(f"network pads to a multiple of {own} ({pipe._unet_pad_mode()}); {args.steps} steps")
    print("| size | M | PSNR dB | without last 2 | 4 | 8 | 16 |\n|---|---|---|---|---|---|---|")
    rows = []
    for (h, w), multiple in zip(shapes, args.multiple, strict=True):
        image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(1))
        ref = restore(pipe, image, 1, args.steps)
        rows.append(pad_row(restore(pipe, image, multiple, args.steps), ref, multiple))
        print("| " + " | ".join(map(str, rows[-1])) + " |")
    if args.record:
        record_table("compile_pad", COLUMNS, rows, script_command(__file__, argv),
                     pad_setting(args.model, args.steps, args.threads))


if __name__ == "__main__":
    main()
