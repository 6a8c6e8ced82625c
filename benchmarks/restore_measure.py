"""Timing one restoration: seconds, peak memory, host-device synchronisations, and
interleaved repeats of several runners (every runner once per round)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from diffusers_mrs.host_sync import HostSyncRecorder

#: A restoration: ``run(mu, seed)`` -> the restored image.
Runner = Callable[[torch.Tensor, int], torch.Tensor]


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block: CUDA peak allocated, or on Linux the peak RSS above the RSS
    before the block (the kernel's high-water mark, reset through ``clear_refs``)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.mib = device, float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
                self.before = _proc_status_kib("VmRSS")
            except OSError:
                self.before = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.before) / 2**20
        elif self.before is not None:
            peak = _proc_status_kib("VmHWM")
            self.mib = (peak - self.before) / 1024 if peak is not None else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(run: Runner, mu: torch.Tensor, seed: int) -> tuple[float, float, torch.Tensor]:
    """(seconds, peak MiB, output) of one restoration."""
    with PeakMemory(mu.device) as mem:
        _sync(mu.device)
        start = time.perf_counter()
        out = run(mu, seed)
        _sync(mu.device)
        seconds = time.perf_counter() - start
    return seconds, mem.mib, out.detach().float().cpu()


def count_syncs(run: Runner, mu: torch.Tensor, seed: int) -> int | None:
    """Host-device synchronisations in one restoration (CUDA only, else None)."""
    if mu.device.type != "cuda":
        return None
    with HostSyncRecorder(cuda=True, read_backs=False) as rec:
        run(mu, seed)
        torch.cuda.synchronize(mu.device)
    return sum(call.startswith("cuda:") for call in rec.calls)


def measure_group(
    runners: dict[tuple, Runner], mu: torch.Tensor, seed: int, repeats: int, desc: str = ""
) -> dict[tuple, dict[str, Any]]:
    """Interleaved repeats: every runner once per round, in the same order each round."""
    stats: dict[tuple, dict[str, Any]] = {
        key: {"seconds": [], "peak_mib": float("nan")} for key in runners
    }
    for key, run in runners.items():
        if "compile" in key[2]:  # first call compiles: timed on its own
            stats[key]["first_call_s"] = time_once(run, mu, seed)[0]
    from tqdm.auto import tqdm  # shown although TQDM_DISABLE silences the original loops

    bar = tqdm(total=repeats * len(runners), unit="run", desc=desc, disable=False)
    for _ in range(repeats):
        for key, run in runners.items():
            bar.set_postfix_str("/".join(map(str, key)))
            seconds, peak, out = time_once(run, mu, seed)
            stats[key]["seconds"].append(seconds)
            stats[key]["peak_mib"] = peak if peak == peak else stats[key]["peak_mib"]
            stats[key].setdefault("output", out)
            bar.update()
    bar.close()
    for key, run in runners.items():
        if key[2] != "original":
            stats[key]["syncs"] = count_syncs(run, mu, seed)
    return stats
