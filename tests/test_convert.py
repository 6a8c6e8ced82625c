"""``diffusers-mrs convert`` for IR-SDE and Refusion checkpoints (DA-CLIP: test_daclip_pipeline).

The converted folders must reproduce the original networks' outputs stored in the
fixtures, carry the paper's scheduler (or the option file's / command line's values) and a
model card naming the original work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusers_mrs import MRRestorationPipeline
from diffusers_mrs.cli import main as cli_main

FIXTURES = Path(__file__).parent / "fixtures"


def original_checkpoint(fixture: str, prefix: str, path: Path) -> tuple[Path, dict]:
    tensors = load_file(FIXTURES / fixture)
    state_dict = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
    torch.save({"iter": 5, "params": state_dict}, path)
    return path, tensors


@pytest.mark.parametrize(
    "family, fixture, prefix",
    [("irsde", "irsde_unet_nf8_d2.safetensors", "irsde."),
     ("refusion", "refusion_nafnet_w8.safetensors", "refusion.")],
)  # fmt: skip
def test_convert_restores_the_original_network(family, fixture, prefix, tmp_path):
    checkpoint, tensors = original_checkpoint(fixture, prefix, tmp_path / "latest_G.pth")
    out = tmp_path / "pipe"
    argv = ["convert", "--family", family, "--checkpoint", str(checkpoint), "--output", str(out)]
    assert cli_main([*argv, "--solver-order", "1"]) == 0
    pipe = MRRestorationPipeline.from_pretrained(out)
    assert pipe.image_encoder is None and pipe.feature_extractor is None
    with torch.no_grad():
        pred = pipe.unet(tensors["x2"], tensors["t2"], tensors["mu2"]).sample
    torch.testing.assert_close(pred, tensors["out2"], atol=1e-5, rtol=0)
    config = pipe.scheduler.config
    assert (config.solver_order, config.algorithm_type, config.num_train_timesteps) == (
        1,
        "sde",
        100,
    )
    card = (out / "README.md").read_text()
    assert {"irsde": "IR-SDE", "refusion": "Refusion"}[family] in card
    assert "license: mit" in card and "latest_G.pth" in card
    index = json.loads((out / "model_index.json").read_text())
    assert index["image_encoder"] == [None, None]
    image = torch.rand(3, 12, 12)
    restored = pipe(image=image, num_inference_steps=2, output_type="pt").images
    assert restored.shape == (1, 3, 12, 12)


def test_option_file_values_and_family_check(tmp_path, capsys):
    checkpoint, _ = original_checkpoint(
        "irsde_unet_nf8_d2.safetensors", "irsde.", tmp_path / "g.pth"
    )
    options = tmp_path / "ir-sde.yml"
    options.write_text(
        "sde:\n  max_sigma: 10\n  T: 100\n  schedule: cosine\n  eps: 0.005\n"
        "network_G:\n  which_model_G: ConditionalUNet\n"
        "  setting:\n    in_nc: 3\n    out_nc: 3\n    nf: 8\n    depth: 2\n"
    )
    argv = ["convert", "--checkpoint", str(checkpoint), "--options", str(options)]
    assert cli_main([*argv, "--family", "irsde", "--output", str(tmp_path / "a"), "--T", "80"]) == 0
    config = MRRestorationPipeline.from_pretrained(tmp_path / "a").scheduler.config
    assert config.max_sigma == pytest.approx(10 / 255)
    assert config.num_train_timesteps == 80  # the command line wins
    assert cli_main([*argv, "--family", "refusion", "--output", str(tmp_path / "b")]) == 2
    assert "ConditionalNAFNet" in capsys.readouterr().err
    options.write_text(options.read_text().replace("nf: 8", "nf: 16"))
    assert cli_main([*argv, "--family", "irsde", "--output", str(tmp_path / "c")]) == 2
    assert "init_conv.weight" in capsys.readouterr().err  # the option file is checked too
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
