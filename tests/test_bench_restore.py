"""Smoke tests of benchmarks/bench_restore.py without the original code (CI has no
checkout of it): the DA-CLIP-shaped row runs end to end, and a degradation-aware default
model hands the original side the context our pipeline gives its network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from diffusers_mrs import MRRestorationPipeline

from helpers import benchmark_module, tiny_pipeline

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_restore.py"
#: The script's own modules (forgotten after the tests, with the original-code loader).
SIBLINGS = ("original_code", "restore_measure", "restore_networks", "restore_original_loops",
            "restore_report", "restore_runners")


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (its folder on sys.path, as when run); the
    ``TQDM_DISABLE`` it sets for the original loops is undone afterwards."""
    saved = os.environ.get("TQDM_DISABLE")
    try:
        with benchmark_module(SCRIPT, SIBLINGS) as module:
            yield module
    finally:
        if saved is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved


def test_daclip_row_runs_without_the_original_code(bench, tmp_path):
    bench.main(["--networks", "daclip", "--size", "32", "--nfe", "2", "--posterior-nfe", "0",
                "--repeats", "1", "--variants", "--threads", "1", "--out", str(tmp_path),
                "--name", "smoke"])  # fmt: skip
    result = json.loads((tmp_path / "smoke.json").read_text())
    rows = result["rows"]
    assert [(r["network"], r["method"], r["nfe"], r["variant"]) for r in rows] == [
        ("daclip-nf32", "mrs", 2, "fp32")
    ]
    assert rows[0]["median_s"] > 0
    assert result["networks"]["daclip-nf32"]["original"] == "our network"
    with pytest.raises(SystemExit, match="multiple of 32"):
        bench.daclip_network(bench.OriginalCode(), 16)


def test_degradation_aware_default_gets_one_context_on_both_sides(bench, tmp_path):
    from diffusers_mrs.training.degradation_aware import make_model

    base = tiny_pipeline()
    model = make_model(base.unet, ["noise", "lowlight", "clean"], context_dim=8, width=4)
    torch.nn.init.normal_(model.unet.degradation_embedding.linear_out.weight, std=0.2)
    MRRestorationPipeline(
        unet=model.unet, scheduler=base.scheduler, degradation_encoder=model.encoder
    ).save_pretrained(tmp_path / "model")
    net = bench.default_network(bench.OriginalCode(), tmp_path / "model")
    assert net.degradation_encoder is not None and net.original_kind == "our network"
    seen = []
    hook = net.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["degradation_context"]), with_kwargs=True
    )
    mu = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = bench.ours_runner(net, "mrs", 2, "fp32")(mu, 0)
        hook.remove()
        theirs = net.original_contexts(mu)["text_context"]
        plain = net.original(mu, mu, 50)
        given = net.original(mu, mu, 50, text_context=theirs)
    assert out.shape == mu.shape and len(seen) == 2
    for ours in seen:
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    assert (given - plain).abs().max() > 1e-4  # the context reaches the network


def test_merge_takes_each_network_from_the_last_run_having_it(bench, tmp_path, capsys):
    """``--merge``: one report from several runs; no run is repeated, each command is kept."""
    def run(command: str, nets: dict[str, float]) -> Path:
        rows = [{"network": n, "method": "mrs", "nfe": 5, "variant": v, "median_s": s,
                 "seconds": [s], "peak_mib": 1.0, "syncs": None, "compile_s": None}
                for n, s in nets.items() for v in ("fp32", "original")]
        env = {"command": command, "device": "cpu", "threads": 2,
               "load_average_at_start": [0, 0, 0], "load_average_at_end": [0, 0, 0]}
        path = tmp_path / f"{command.split()[-1]}.json"
        networks = {n: {"original": "x", "notes": []} for n in nets}
        path.write_text(json.dumps({"environment": env, "networks": networks, "rows": rows}))
        return path

    first = run("bench --size 64 first", {"a": 1.0, "b": 2.0})
    second = run("bench --size 64 second", {"b": 3.0})
    bench.main(["--merge", str(first), str(second), "--out", str(tmp_path / "m")])
    merged = json.loads((tmp_path / "m" / "restore.json").read_text())
    assert {(r["network"], r["median_s"]) for r in merged["rows"]} == {("a", 1.0), ("b", 3.0)}
    report = (tmp_path / "m" / "restore.md").read_text()
    assert "run 1 (a): `bench --size 64 first`" in report and "run 2 (b)" in report
    assert (tmp_path / "m" / "restore_vs_nfe.png").stat().st_size > 0
