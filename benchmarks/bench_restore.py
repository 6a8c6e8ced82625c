"""Seconds per restored image: this package's pipeline against the original sampling loops.

For each network (random weights unless it is the shipped default model) and each method,
the same 256 px degraded image is restored end to end: with ``MRRestorationPipeline``
(MR Sampler at each NFE of ``--nfe``, IR-SDE posterior sampling at ``--posterior-nfe``),
optionally in bfloat16/float16 and/or compiled, and, when ``--original-repo`` points to
checkouts of github.com/grrrute/mr-sampler, github.com/Algolzw/image-restoration-sde
and/or github.com/Algolzw/daclip-uir, with the original ``MRSampler.sampling`` and
``IRSDE.reverse_posterior`` loops on the original network class loaded with the same
weights (or on our network, where the original code has no such class). The original code
is imported from that path at run time; without it those rows are skipped with a message.

The DA-CLIP-shaped network (``--daclip-nf``) gets two fixed random context vectors in
place of DA-CLIP's image encoder output, given once per image: to our pipeline through
``encode_image``, to the original loops as ``text_context`` / ``image_context``, the way
DA-CLIP's test script passes them. The encoder itself is not timed (bench_daclip.py).

Repeats are interleaved (every method once per round); the table shows the median seconds
per image, the median of the per-round ratio to the original loop at the same NFE, the peak
memory of one restoration (CPU: peak resident set size above the level before the call,
Linux only; CUDA: peak allocated), and the largest difference between our output and the
original's for the same seed (float32; both draw their noise from one seeded CPU generator
in the same order: a seeded generator on the device, so CUDA timings hold no copies of
CPU-drawn noise). Float32 runs with TensorFloat-32 off unless ``--tf32`` is given (the
float32 rows are references). Compile time is reported separately (first call minus a
normal call). On CUDA the host-device synchronisations of a whole restoration are counted
with ``torch.cuda.set_sync_debug_mode``.

    python benchmarks/bench_restore.py --original-repo /path/to/mr-sampler \
        --original-repo /path/to/image-restoration-sde --original-repo /path/to/daclip-uir

Outputs: ``benchmarks/results/restore.json``, ``restore.md`` and ``restore_vs_nfe.png``.
The original code needs ``einops`` (its network modules import it).

This file is the command line and the run; its parts are ``restore_networks.py`` (the
networks and their original counterparts), ``restore_runners.py`` (our pipeline),
``restore_original_loops.py`` (the original loops), ``restore_measure.py`` (timing, memory,
syncs) and ``restore_report.py`` (table, plot, result files, ``--merge``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: the original loops
import torch
from _common import image_psnr
from original_code import OriginalCode, load_original_code
from restore_measure import PeakMemory as PeakMemory  # re-exported: gpu_check.py
from restore_measure import Runner, measure_group
from restore_networks import Network, build_networks, network_device
from restore_networks import daclip_network as daclip_network  # re-exported
from restore_networks import default_network as default_network  # re-exported
from restore_original_loops import (
    original_mrs_runner,
    original_posterior_runner,
    original_sde_class,
)
from restore_report import HEADER, format_row, merge_results, write_results
from restore_runners import ours_runner

from diffusers_mrs.restore_settings import set_tf32, tf32_enabled

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "diffusers_mrs" / "default_model"


# ------------------------------------------------------------------------------ the run
def runners_for(
    net: Network, code: OriginalCode, method: str, nfes: list[int], variants: list[str]
) -> dict[tuple, Runner]:
    """(method, nfe, variant) -> runner; variant "original" is the original loop."""
    runners: dict[tuple, Runner] = {}
    for nfe in nfes:
        for variant in variants:
            runners[(method, nfe, variant)] = ours_runner(net, method, nfe, variant)
        if method == "mrs" and code.mr_sampler is not None:
            runners[(method, nfe, "original")] = original_mrs_runner(code, net, nfe)
        if method == "posterior" and original_sde_class(code, net) is not None:
            runners[(method, nfe, "original")] = original_posterior_runner(code, net, nfe)
    return runners


def summarise(net: Network, stats: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for (method, nfe, variant), s in stats.items():
        original = stats.get((method, nfe, "original"))
        reference = stats.get((method, nfe, "fp32"))
        row = {
            "network": net.name,
            "method": method,
            "nfe": nfe,
            "variant": variant,
            "median_s": statistics.median(s["seconds"]),
            "seconds": s["seconds"],
            "peak_mib": s["peak_mib"],
            "syncs": s.get("syncs"),
            "compile_s": s["first_call_s"] - statistics.median(s["seconds"])
            if "first_call_s" in s
            else None,
        }
        if original is not None and variant != "original":
            pairs = zip(s["seconds"], original["seconds"], strict=True)
            row["ratio_vs_original"] = statistics.median(a / b for a, b in pairs)
            # Same noise from one seeded generator of the device (the original seeds the
            # device's default one); the original's posterior loop reads the output as noise.
            same_noise = network_device(net).type in ("cpu", "cuda")
            same_target = method == "mrs" or net.scheduler_config["prediction_type"] == "epsilon"
            if variant == "fp32" and same_target and same_noise:
                row["max_abs_diff_vs_original"] = (
                    (s["output"] - original["output"]).abs().max().item()
                )
        if reference is not None and variant not in ("fp32", "original"):
            row["ratio_vs_fp32"] = statistics.median(
                a / b for a, b in zip(s["seconds"], reference["seconds"], strict=True)
            )
            row["psnr_vs_fp32_db"] = image_psnr(s["output"], reference["output"])
        rows.append(row)
    return rows


def run_network(
    net: Network, code: OriginalCode, args: argparse.Namespace, mu: torch.Tensor
) -> list[dict[str, Any]]:
    variants = ["fp32"] + (args.variants if net.name in args.variant_networks else [])
    rows: list[dict[str, Any]] = []
    mrs = runners_for(net, code, "mrs", args.nfe, ["fp32"])
    if variants[1:]:
        mrs.update(runners_for(net, code, "mrs", [args.variant_nfe], variants))
    rows += summarise(net, measure_group(mrs, mu, args.seed, args.repeats, net.name))
    if args.posterior_nfe and net.name.split("-")[0] in args.posterior_networks:
        post = runners_for(net, code, "posterior", [args.posterior_nfe], ["fp32"])
        rows += summarise(
            net, measure_group(post, mu, args.seed, args.posterior_repeats, net.name)
        )
    for row in rows:
        print(format_row(row), flush=True)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--original-repo",
        action="append",
        default=[],
        help="checkout of mr-sampler or image-restoration-sde (repeatable)",
    )
    p.add_argument("--networks", nargs="+", default=["default", "irsde", "refusion", "daclip"])
    p.add_argument(
        "--default-model", type=Path, default=DEFAULT_MODEL, help="pipeline folder of 'default'"
    )
    p.add_argument("--irsde-nf", type=int, default=8, help="width of the IR-SDE-shaped net")
    p.add_argument(
        "--daclip-nf", type=int, default=32, help="width of the DA-CLIP-shaped net (x32)"
    )
    p.add_argument("--size", type=int, default=256)
    p.add_argument(
        "--spacing",
        default="linspace",
        help="timestep_spacing of every MRS run ('model': the network's own config); "
        "the default integer grid is where the original's table interpolation is exact",
    )
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--posterior-nfe", type=int, default=100, help="0 skips posterior sampling")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--posterior-repeats", type=int, default=1)
    p.add_argument(
        "--variants",
        nargs="*",
        default=None,
        help="extra variants of our pipeline: bf16, fp16, fp32+compile, ... (default: bf16"
        " and bf16+compile where bfloat16 is native: CUDA, or a CPU with AVX-512 BF16/AMX;"
        " none elsewhere, where it is emulated and takes hours)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSON",
        help="run nothing: one report (json, md, plot) from earlier results; a network's"
        " rows come from the last file that has it, and each file's command is kept",
    )
    p.add_argument("--variant-networks", nargs="*", default=["default"])
    p.add_argument("--variant-nfe", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--tf32", action="store_true",
                   help="let float32 use TensorFloat-32 on CUDA (default: IEEE float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="restore", help="stem of the output files")
    p.add_argument(
        "--posterior-networks", nargs="*", default=["default"], help="networks timed at posterior"
    )
    return p.parse_args(argv)


def environment(args: argparse.Namespace, code: OriginalCode) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "command": "python benchmarks/bench_restore.py " + " ".join(sys.argv[1:]),
        "device": str(args.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tf32": tf32_enabled(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "platform": platform.platform(),
        "original_code": code.sources,
        "original_code_problems": code.problems,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def default_variants(device: str) -> list[str]:
    """bf16 and bf16+compile where bfloat16 is native; none (with a message) elsewhere."""
    if torch.device(device).type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return ["bf16", "bf16+compile"]
    print("[skip] bf16 variants: this CPU has no native bfloat16 (it would be emulated);"
          " pass --variants bf16 bf16+compile to time them anyway")
    return []


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        merge_results(args.merge, args.out, args.name)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    set_tf32(args.tf32)  # explicit: the float32 rows are references
    code = load_original_code(args.original_repo)
    if not args.original_repo:
        print("[skip] original loops: no --original-repo given")
    for problem in code.problems:
        print(f"[warn] {problem}")
    if args.variants is None:
        args.variants = default_variants(args.device)
    env = environment(args, code)
    mu = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(123))
    mu = mu.to(args.device)
    print(json.dumps(env))
    print(HEADER)
    rows: list[dict[str, Any]] = []
    nets = build_networks(args.networks, code, args)
    for i, net in enumerate(nets):
        net.to(args.device)
        if args.spacing != "model":
            net.scheduler_config["timestep_spacing"] = args.spacing
        rows += run_network(net, code, args, mu)
        env["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        write_results(args, env, nets[: i + 1], rows)  # after every network: nothing is lost


if __name__ == "__main__":
    main()
