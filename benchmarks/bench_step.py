"""Cost of ``step``: MRSamplerScheduler against diffusers' DPMSolverMultistepScheduler.

Both schedulers run the same order on the same tensor (default 1x3x512x512), side by side
in one process, interleaved; the script prints the median time per step and the ratio
MRS / DPM-Solver (target <= 1.0). On a CUDA device it also counts host-device
synchronisations inside ``step`` with ``torch.cuda.set_sync_debug_mode`` (target 0).

    python benchmarks/bench_step.py [--device cuda] [--size 512] [--dtype float16]
        [--threads 1] [--record]

``--record`` writes the table as the ``step_cost`` entry of ``results/recorded.json``
(:mod:`recorded`).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Sequence

import torch
from diffusers import DPMSolverMultistepScheduler
from recorded import add_record_option, record_table, script_command

from diffusers_mrs import MRSamplerScheduler

PAIRS = {  # MRS (algorithm_type, parameterization) -> diffusers algorithm_type
    ("sde", "data"): "sde-dpmsolver++",
    ("ode", "data"): "dpmsolver++",
}


def make_pair(algorithm: str, parameterization: str, order: int, nfe: int, device):
    dpm = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, algorithm_type=PAIRS[(algorithm, parameterization)],
        solver_type="heun", solver_order=order, final_sigmas_type="sigma_min")
    mrs = MRSamplerScheduler.from_config(dpm.config, algorithm_type=algorithm,
                                         parameterization=parameterization)
    times = None

    def reset_dpm() -> None:
        nonlocal times
        dpm.set_timesteps(nfe, device=device)
        times = dpm.timesteps.cpu()

    def reset_mrs() -> None:
        mrs.set_timesteps(timesteps=times, device=device)

    reset_dpm()
    return (mrs, reset_mrs), (dpm, reset_dpm)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_run(pair, x, model_out, mu, device) -> float:
    """Seconds per step over one full pass of the schedule (model output fixed)."""
    scheduler, reset = pair
    reset()
    scheduler.set_begin_index(0)
    kwargs = {"mu": mu} if mu is not None else {}
    sync(device)
    start = time.perf_counter()
    sample = x
    for t in scheduler.timesteps:
        sample = scheduler.step(model_out, t, sample, **kwargs).prev_sample
    sync(device)
    return (time.perf_counter() - start) / len(scheduler.timesteps)


def count_syncs(pair, x, model_out, mu, device) -> int | None:
    if device.type != "cuda":
        return None
    scheduler, reset = pair
    reset()
    scheduler.set_begin_index(0)
    kwargs = {"mu": mu} if mu is not None else {}
    count = 0
    sample = x
    for t in scheduler.timesteps:
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sample = scheduler.step(model_out, t, sample, **kwargs).prev_sample
        torch.cuda.set_sync_debug_mode("default")
        count += sum("synchroniz" in str(w.message).lower() for w in caught)
    return count


COLUMNS = ["variant", "DPM-Solver ms", "MRS ms", "MRS+mu ms", "ratio", "ratio+mu"]


def step_row(name: str, medians_ms: dict[str, float], syncs: int | None) -> list:
    """One table row: the median ms per step of DPM-Solver, MRS and MRS with ``mu``, the
    ratios MRS / DPM-Solver, and (on CUDA) the host-device synchronisations in ``step``."""
    dpm, mrs, mrs_mu = (medians_ms[key] for key in ("dpm", "mrs", "mrs_mu"))
    row = [name, round(dpm, 3), round(mrs, 3), round(mrs_mu, 3), round(mrs / dpm, 2),
           round(mrs_mu / dpm, 2)]
    return row if syncs is None else [*row, syncs]


def step_setting(device: torch.device, threads: int, shape: tuple[int, ...], dtype: str,
                 nfe: int, repeats: int) -> str:
    """The recorded entry's setting, e.g. ``CPU, 1 thread, a (1, 3, 512, 512) float32
    tensor, 10 steps, median of 5``."""
    return (f"{device.type.upper()}, {threads} thread{'s' if threads != 1 else ''}, a "
            f"{shape} {dtype} tensor, {nfe} steps, median of {repeats}")


def measure_variant(variant: tuple[str, str, int], tensors: Sequence[torch.Tensor], nfe: int,
                    repeats: int, device: torch.device) -> tuple[dict[str, float], int | None]:
    """``(median ms per step of "dpm", "mrs" and "mrs_mu", sync count or None)`` of one
    solver ``variant`` ``(algorithm, parameterization, order)`` on ``tensors``
    ``(x, model output, mu)``."""
    x, out, mu = tensors
    mrs, dpm = make_pair(*variant, nfe, device)
    runs: dict[str, list[float]] = {"dpm": [], "mrs": [], "mrs_mu": []}
    for _ in range(repeats):  # interleaved, so drift hits all three alike
        runs["dpm"].append(time_run(dpm, x, out, None, device))
        runs["mrs"].append(time_run(mrs, x, out, None, device))
        runs["mrs_mu"].append(time_run(mrs, x, out, mu, device))
    medians = {k: statistics.median(v) * 1e3 for k, v in runs.items()}
    return medians, count_syncs(mrs, x, out, mu, device)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16",
                                                                "bfloat16"])
    parser.add_argument("--nfe", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    add_record_option(parser, "step_cost")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    shape = (1, 3, args.size, args.size)
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(2)]
    tensors.append(torch.rand(shape, generator=g).to(device, dtype))  # mu

    print(f"step cost on {device} ({torch.get_num_threads()} threads), {tuple(shape)} "
          f"{args.dtype}, {args.nfe} steps, median of {args.repeats}")
    print(f"{'variant':<28}{'DPM-Solver ms':>15}{'MRS ms':>10}{'MRS+mu ms':>11}"
          f"{'ratio':>8}{'ratio+mu':>10}{'syncs':>7}")
    rows = []
    for (algorithm, param), order in [(k, o) for k in PAIRS for o in (1, 2, 3)]:
        if algorithm == "sde" and order == 3:
            continue  # diffusers has no third-order SDE solver
        med, syncs = measure_variant((algorithm, param, order), tensors, args.nfe,
                                     args.repeats, device)
        rows.append(step_row(f"{algorithm}-{param} order {order}", med, syncs))
        print(f"{rows[-1][0]:<28}{med['dpm']:>15.3f}{med['mrs']:>10.3f}{med['mrs_mu']:>11.3f}"
              f"{med['mrs'] / med['dpm']:>8.2f}{med['mrs_mu'] / med['dpm']:>10.2f}"
              f"{'n/a' if syncs is None else syncs:>7}")
    if args.record:
        columns = COLUMNS if len(rows[0]) == len(COLUMNS) else [*COLUMNS, "syncs"]
        setting = step_setting(device, torch.get_num_threads(), shape, args.dtype, args.nfe,
                               args.repeats)
        record_table("step_cost", columns, rows, script_command(__file__, argv), setting)


if __name__ == "__main__":
    main()
