"""One check of the CUDA paths, written to run unchanged the first time a GPU is there.

Four parts, each timed and recorded on its own (a part that fails or is skipped says why
and the others still run):

1. ``tests``: the device-parametrised tests (the ``device`` fixture) with
   ``MRS_TEST_DEVICE=cuda``: CPU noise on CUDA gives the CPU run's images, no host sync in
   the sampling loop (CUDA's own sync reports), the seeded generator's device
   (``--full-suite``: every test, the rest on the CPU as usual);
2. ``syncs``: host synchronisations of whole restorations and of their sampling loops
   (:class:`diffusers_mrs.host_sync.HostSyncRecorder`), for a device generator, one
   generator per image with an ensemble, CPU noise drawn up front, tiling and posterior
   sampling;
3. ``restore``: ``bench_restore.py``'s rows on the device against the original loops:
   float32 with TensorFloat-32 off, bfloat16, compiled (the original loops need the public
   checkouts, ``--original-repo``; without them those rows are skipped with a message);
4. ``tiled_memory``: peak memory and time of a tiled 2048 x 2048 restoration (256 px tiles).

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` (default
``benchmarks/results``). Without CUDA the CUDA parts are skipped with a message;
``--cpu-smoke`` runs every part on the CPU at tiny sizes instead (the test of this script).

    python benchmarks/gpu_check.py --original-repo /path/to/mr-sampler \
        --original-repo /path/to/image-restoration-sde --original-repo /path/to/daclip-uir
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: What the recorded commands show in place of a checkout's path.
PLACEHOLDER = "/path/to/checkout"
#: The tests that take the ``device`` fixture (tests/conftest.py).
DEVICE_TESTS = ("tests/test_host_sync.py", "tests/test_sampling_noise.py",
                "tests/test_tile_plan.py")
SMOKE_TESTS = ("tests/test_host_sync.py", "-k", "recorder")


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the real check, or the CPU smoke test."""

    image: int  # restorations of the syncs part and bench_restore's --size
    steps: int
    tiled_image: int
    tile: int
    test_timeout_s: int
    bench_timeout_s: int


FULL = Sizes(image=256, steps=10, tiled_image=2048, tile=256, test_timeout_s=180,
             bench_timeout_s=330)
SMOKE = Sizes(image=32, steps=2, tiled_image=48, tile=32, test_timeout_s=300,
              bench_timeout_s=300)


def check_pipeline(device: torch.device, sizes: Sizes) -> Any:
    """The shipped default model (full check), or a tiny random network (smoke test)."""
    from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler, MRUNet2DModel

    if sizes is FULL:
        pipe = MRRestorationPipeline.from_pretrained()
    else:
        torch.manual_seed(0)
        unet = MRUNet2DModel(nf=8, depth=2, attention_heads=1, attention_head_dim=8).eval()
        pipe = MRRestorationPipeline(unet=unet, scheduler=MRSamplerScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# ----------------------------------------------------------------------------- the parts
def run_tests(args: argparse.Namespace, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """pytest on the device-parametrised tests with ``MRS_TEST_DEVICE`` set to ``device``."""
    selection = list(SMOKE_TESTS if args.cpu_smoke else DEVICE_TESTS)
    if args.full_suite:
        selection = ["tests"]
    env = {**os.environ, "MRS_TEST_DEVICE": str(device), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=sizes.test_timeout_s, check=False)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        raise RuntimeError(f"pytest exited {done.returncode}: {summary}\n{done.stdout[-3000:]}")
    return {"command": " ".join(["MRS_TEST_DEVICE=" + str(device), "pytest", *selection]),
            "summary": summary}


SYNC_CASES: dict[str, dict[str, Any]] = {
    "device generator": {"generator": "device"},
    "generator per image, ensemble of 4": {"generator": "per image", "num_samples": 4},
    "CPU generator (noise drawn up front)": {"generator": "cpu"},
    "tiling (tile = image / 2)": {"generator": "device", "tile": True},
    "posterior sampler, device generator": {"generator": "device", "posterior": True},
}


def _sync_case(pipe: Any, case: dict[str, Any], device: torch.device, sizes: Sizes) -> dict:
    """Syncs of one restoration of two images: the whole call and its sampling loop."""
    from diffusers_mrs import MRPosteriorScheduler
    from diffusers_mrs.host_sync import HostSyncRecorder, recorded_calls
    from diffusers_mrs.restore_settings import seeded_generator

    scheduler = pipe.scheduler
    if case.get("posterior"):
        pipe.scheduler = MRPosteriorScheduler.from_config(scheduler.config)
    kind = case.get("generator")
    generator = {"device": seeded_generator(device, 0), "cpu": torch.Generator().manual_seed(0),
                 "per image": [seeded_generator(device, i) for i in range(2)]}[kind]
    images = torch.rand(2, 3, sizes.image, sizes.image, generator=torch.Generator().manual_seed(1))
    cuda = device.type == "cuda"
    try:
        with recorded_calls(pipe, "denoise", cuda) as loops, HostSyncRecorder(cuda) as whole:
            pipe(list(images), num_inference_steps=sizes.steps, generator=generator,
                 output_type="pt", num_samples=case.get("num_samples", 1), keep_clean=False,
                 tile_size=sizes.image // 2 if case.get("tile") else None)
    finally:
        pipe.scheduler = scheduler
    cuda_in_loops = sum(c.startswith("cuda:") for loop in loops for c in loop)
    return {"whole_call": len(whole.calls) + cuda_in_loops, "sampling_loop": sum(map(len, loops)),
            "loop_calls": sorted({c for loop in loops for c in loop})[:10]}


def sync_counts(args: argparse.Namespace, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Host syncs per case (CUDA reports them too; the CPU counts read-backs only)."""
    pipe = check_pipeline(device, sizes)
    rows = {name: _sync_case(pipe, case, device, sizes) for name, case in SYNC_CASES.items()}
    return {"steps": sizes.steps, "image": sizes.image, "cases": rows}


def restore_rows(args: argparse.Namespace, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """``bench_restore.py`` on the device (a subprocess: its own compile caches and memory)."""
    repos = [r for r in args.original_repo if Path(r).is_dir()]
    for missing in sorted(set(args.original_repo) - set(repos)):
        print(f"[skip] original checkout {missing}: not a directory", flush=True)
    if not repos:
        print("[skip] original-loop rows: no --original-repo checkout given", flush=True)
    out = _shown(args.out / "gpu_check_restore")
    if args.cpu_smoke:
        extra = ["--networks", "irsde", "--nfe", "2", "--posterior-nfe", "0", "--repeats", "1",
                 "--variants", "--threads", "1"]
    else:
        extra = ["--networks", "default", "irsde", "--nfe", "10", "20", "--posterior-nfe", "100",
                 "--variants", "bf16", "bf16+compile", "--repeats", "3"]
    command = [sys.executable, "benchmarks/bench_restore.py", "--device",
               str(device), "--size", str(sizes.image), "--out", str(out), "--name", "restore",
               *extra, *[a for r in repos for a in ("--original-repo", r)]]
    (ROOT / out / "restore.json").unlink(missing_ok=True)  # never an earlier run's rows
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=sizes.bench_timeout_s, check=False)
    except subprocess.TimeoutExpired:  # the networks finished so far are in its results
        done = None
        print(f"[warn] bench_restore ran past {sizes.bench_timeout_s} s: partial rows", flush=True)
    if done is not None and done.returncode != 0:
        raise RuntimeError(f"bench_restore exited {done.returncode}:\n{done.stderr[-3000:]}")
    if not (ROOT / out / "restore.json").exists():
        raise RuntimeError(f"bench_restore wrote no results within {sizes.bench_timeout_s} s")
    result = json.loads((ROOT / out / "restore.json").read_text())
    table = (ROOT / out / "restore.md").read_text()
    shown = [PLACEHOLDER if a in repos else a for a in command[1:]]
    return {"command": " ".join(shown), "original_repos": len(repos), "rows": result["rows"],
            "complete": done is not None,
            "table": table.replace(str(ROOT) + os.sep, "")}


def _shown(path: Path) -> Path:
    """``path`` relative to the repository where it lies inside it (no machine paths in the
    recorded commands)."""
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def tiled_memory(args: argparse.Namespace, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Peak memory (CUDA: allocated; CPU: resident set) and seconds of one tiled restoration."""
    from bench_restore import PeakMemory

    from diffusers_mrs.restore_settings import seeded_generator

    pipe = check_pipeline(device, sizes)
    size = sizes.tiled_image
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(2))
    rows = {}
    for dtype in (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,):
        pipe.to(dtype=dtype)
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            pipe(image, num_inference_steps=2, generator=seeded_generator(device, 0),
                 tile_size=sizes.tile, tile_batch_size=4, output_type="pt", keep_clean=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
        rows[str(dtype).removeprefix("torch.")] = {"peak_mib": mem.mib, "seconds_2_steps": seconds}
    return {"image": size, "tile": sizes.tile, "tile_batch_size": 4, "rows": rows}


PARTS: dict[str, Callable[[argparse.Namespace, torch.device, Sizes], dict[str, Any]]] = {
    "tests": run_tests,
    "syncs": sync_counts,
    "restore": restore_rows,
    "tiled_memory": tiled_memory,
}


# ----------------------------------------------------------------------------- running
def run_part(name: str, args: argparse.Namespace, device: torch.device, sizes: Sizes) -> dict:
    """One part: ``ran`` with its result, ``skipped`` (no CUDA, not --cpu-smoke) or
    ``failed`` with the error; timed."""
    if device.type != "cuda" and not args.cpu_smoke:
        message = f"no CUDA here: {name} skipped (--cpu-smoke runs it on the CPU, tiny sizes)"
        print(f"[skip] {message}", flush=True)
        return {"status": "skipped", "message": message}
    print(f"[run] {name}", flush=True)
    start = time.perf_counter()
    try:
        result = PARTS[name](args, device, sizes)
    except Exception as err:  # one part's failure must not stop the others
        print(f"[fail] {name}: {type(err).__name__}: {err}", flush=True)
        return {"status": "failed", "seconds": time.perf_counter() - start,
                "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    return {"status": "ran", "seconds": time.perf_counter() - start, "result": result}


def environment(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from diffusers_mrs.restore_settings import tf32_enabled

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    argv = [PLACEHOLDER if a in args.original_repo else a for a in sys.argv[1:]]
    return {"command": "python benchmarks/gpu_check.py " + " ".join(argv),
            "device": str(device), "gpu": gpu, "torch": torch.__version__,
            "cuda": torch.version.cuda, "tf32": tf32_enabled(), "platform": platform.platform(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: environment, each part's status and its numbers."""
    env = report["environment"]
    lines = [f"Command: `{env['command']}`", "",
             f"Device {env['device']} ({env['gpu'] or 'no GPU'}), torch {env['torch']}, CUDA "
             f"{env['cuda']}, TF32 {'on' if env['tf32'] else 'off'}.", ""]
    for name, part in report["parts"].items():
        seconds = f", {part['seconds']:.1f} s" if "seconds" in part else ""
        lines += [f"## {name}: {part['status']}{seconds}", ""]
        if part["status"] != "ran":
            lines += [part.get("message") or part.get("error", ""), ""]
            continue
        result = part["result"]
        if name == "tests":
            lines += [f"`{result['command']}`: {result['summary']}", ""]
        elif name == "syncs":
            lines += [f"{result['image']} px, {result['steps']} steps, two images.", "",
                      "| case | syncs, whole call | syncs, sampling loop |", "|---|---|---|"]
            lines += [f"| {case} | {row['whole_call']} | {row['sampling_loop']} |"
                      for case, row in result["cases"].items()]
        elif name == "restore":
            partial = "" if result["complete"] else " (timed out: the networks done so far)"
            lines += [f"`{result['command']}`{partial}", "", result["table"]]
        elif name == "tiled_memory":
            lines += [f"{result['image']} px, {result['tile']} px tiles, "
                      f"{result['tile_batch_size']} per call, 2 steps.", "",
                      "| dtype | peak MiB | seconds |", "|---|---|---|"]
            lines += [f"| {dtype} | {row['peak_mib']:.0f} | {row['seconds_2_steps']:.2f} |"
                      for dtype, row in result["rows"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original-repo", action="append", default=[],
                   help="checkout of mr-sampler, image-restoration-sde or daclip-uir "
                   "(repeatable; the original-loop rows are skipped without one)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run every part on the CPU at tiny sizes (tests this script)")
    p.add_argument("--full-suite", action="store_true", help="the tests part runs every test")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the parts and writes ``gpu_check.json`` / ``.md`` to ``--out``."""
    from diffusers_mrs.restore_settings import set_tf32

    args = parse_args(argv)
    set_tf32(False)  # float32 is a reference here: IEEE (bench_restore sets it again)
    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    sizes = SMOKE if args.cpu_smoke else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment(device, args), "parts": {}}
    for name in args.parts:
        report["parts"][name] = run_part(name, args, device, sizes)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / "gpu_check.md").write_text(markdown(report))  # after every part
    print(f"wrote {args.out / 'gpu_check.json'} and .md", flush=True)
    return report


if __name__ == "__main__":
    main()
