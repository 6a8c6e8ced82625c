"""``diffusers-mrs restore --cpu-noise / --tf32``: the noise's device and TensorFloat-32
are set explicitly; on the CPU, CPU noise drawn up front gives the per-step images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_mrs.cli import main
from diffusers_mrs.pipelines import pipeline_mr_restoration as pipeline_module
from diffusers_mrs.restore_settings import tf32_mode

from helpers import fresh_accelerate_state, save_tiny_pipeline


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield from fresh_accelerate_state()


def test_cpu_noise_and_tf32_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = save_tiny_pipeline(tmp_path / "model")
    source = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)).save(source)
    seen: list[dict[str, Any]] = []
    call = pipeline_module.MRRestorationPipeline.__call__

    def spy(self, *args: Any, **kwargs: Any) -> Any:
        generator = kwargs.get("generator")
        seen.append({"cpu_noise": kwargs.get("cpu_noise"), "generator": generator.device.type})
        return call(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_module.MRRestorationPipeline, "__call__", spy)
    common = ["--model", str(model_dir), "--steps", "3", "--seed", "4", "--quiet",
              "--device", "cpu"]
    with tf32_mode(True):  # torch's flags come back after the block
        assert main(["restore", str(source), "--output", str(tmp_path / "a"), *common]) == 0
        assert not torch.backends.cuda.matmul.allow_tf32  # float32 stays IEEE
        assert not torch.backends.cudnn.allow_tf32
        assert main(["restore", str(source), "--output", str(tmp_path / "b"), "--cpu-noise",
                     "--tf32", *common]) == 0
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert seen == [{"cpu_noise": False, "generator": "cpu"},
                    {"cpu_noise": True, "generator": "cpu"}]
    assert (tmp_path / "a" / "in.png").read_bytes() == (tmp_path / "b" / "in.png").read_bytes()
