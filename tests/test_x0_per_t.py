"""benchmarks/x0_per_t.py: the x0 estimate at each forward time, on a tiny pipeline and
synthetic crops (no photograph is read)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import benchmark_module, tiny_pipeline

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SIBLINGS = ("x0_per_t", "held_out_crops", "_common", "recorded")


@pytest.fixture(scope="module")
def bench():
    with benchmark_module(BENCH / "x0_per_t.py", SIBLINGS) as module:
        yield module


class Oracle(torch.nn.Module):
    """Predicts the clean crop exactly (sample prediction), whatever the input."""

    def __init__(self, clean: torch.Tensor) -> None:
        super().__init__()
        self.clean = clean

    def forward(self, sample, timestep, mu, **kwargs):
        return type("Out", (), {"sample": self.clean})()


def test_a_network_that_knows_x0_scores_it_exactly_and_a_copy_of_mu_does_not(bench):
    pipe = tiny_pipeline()  # sample prediction: the network's output is the x0 estimate
    gen = torch.Generator().manual_seed(0)
    gt = 0.2 + 0.6 * torch.rand(2, 3, 16, 16, generator=gen)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    pipe.unet = Oracle(gt)
    assert bench.x0_psnr_at(pipe, lq, gt, "noise", 50.0) == float("inf")
    assert bench.x0_psnr_at(pipe, lq, gt, "noise", 100.0, sampler_start=True) == float("inf")
    pipe.unet = Oracle(lq)
    assert bench.x0_psnr_at(pipe, lq, gt, "noise", 50.0) == pytest.approx(
        float(torch.tensor([10 * torch.log10(1 / ((a - b) ** 2).mean()) for a, b in
                            zip(lq, gt, strict=True)]).mean()), abs=1e-4)


def test_the_table_has_a_row_per_model_and_kind(bench):
    rows = [{"model": m, "kind": k, "num_train_timesteps": 100,
             "psnr": {str(t): 30.0 + i for i, t in enumerate(bench.TIMES)},
             "sampler_start": 20.0}
            for m in ("v3", "v4") for k in ("noise", "lowlight")]
    meta = {"times": list(bench.TIMES), "crops": 2, "crop": 128,
            "command": "python benchmarks/x0_per_t.py --model v3=a"}
    text = bench.markdown({"meta": meta, "rows": rows})
    assert "(of T = 100)" in text and "| t = 100 | t = 70 |" in text
    assert text.count("| lowlight |") == 2 and text.count("| noise |") == 2
    assert "| noise | v4 | 30.00 | 31.00 |" in text and "| 37.00 | 20.00 |" in text


@pytest.mark.parametrize("items, message", [(["v3"], "NAME=FOLDER"), (["=x"], "NAME=FOLDER"),
                                            (["a=x", "a=y"], "twice")])
def test_bad_model_options_are_refused(bench, items, message):
    with pytest.raises(SystemExit, match=message):
        bench.parse_models(items)
    assert bench.parse_models(["v3=a", "v4=b"]) == {"v3": "a", "v4": "b"}
