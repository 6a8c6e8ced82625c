"""Training either network (--architecture unet / nafnet): the saved pipeline restores, a
resumed run rebuilds its network, and options that do not fit the network are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusers_mrs import MRNAFNetModel, MRRestorationPipeline, MRSamplerScheduler
from diffusers_mrs.training import TrainingConfig, parse_args, train
from diffusers_mrs.training.architectures import checkpoint_network, network_kwargs

from helpers import onednn_disabled

TINY_NAFNET = {"width": 4}  # the other arguments from the nafnet defaults: 4 levels, 1 block


@pytest.fixture(autouse=True)
def _no_onednn():
    """Tiny convolutions: oneDNN's per-shape kernel set-up costs far more than the maths."""
    with onednn_disabled():
        yield


def _config(out: Path, steps: int, **kw) -> TrainingConfig:
    base = {"output_dir": str(out), "architecture": "nafnet", "unet_kwargs": TINY_NAFNET,
            "patch_size": 16, "train_batch_size": 2, "max_train_steps": steps,
            "lr_warmup_steps": 1, "checkpointing_steps": None, "validation_steps": None,
            "validation_num_inference_steps": 2, "validation_crop": 16,
            "validation_kinds": ("noise",), "num_threads": 1, "log_every": 1}
    base.update(kw)
    return TrainingConfig(**base)


def test_parse_args_architecture() -> None:
    cfg = parse_args(["--architecture", "nafnet", "--unet_kwargs", '{"width": 8}'])
    assert cfg.architecture == "nafnet" and cfg.unet_kwargs == {"width": 8}
    assert network_kwargs(cfg) == {"in_channels": 3, "out_channels": 3, "width": 8,
                                   "enc_blk_nums": [1, 1, 1, 1], "middle_blk_num": 1,
                                   "dec_blk_nums": [1, 1, 1, 1]}
    unet = network_kwargs(parse_args([]))  # the shipped default model's network
    assert unet == {"in_channels": 3, "out_channels": 3, "nf": 16, "depth": 3,
                    "attention_heads": 1, "attention_head_dim": 16}


def test_nafnet_training_saves_a_pipeline_that_restores_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "nafnet"
    train(_config(out, 2))
    pipe = MRRestorationPipeline.from_pretrained(out / "pipeline")
    assert isinstance(pipe.unet, MRNAFNetModel) and isinstance(pipe.scheduler, MRSamplerScheduler)
    assert pipe.unet.config.width == 4 and list(pipe.unet.config.enc_blk_nums) == [1, 1, 1, 1]
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers_mrs", "MRNAFNetModel"]
    image = torch.rand(1, 3, 16, 16)
    restored = pipe(image=image, num_inference_steps=2, output_type="pt").images
    assert restored.shape == image.shape and torch.isfinite(restored).all()

    # a checkpoint's network, rebuilt with its EMA weights: the saved pipeline's at the end
    (ckpt,) = (out / "checkpoints").iterdir()
    network, counters = checkpoint_network(out, ckpt)
    assert counters["step"] == 2 and isinstance(network, MRNAFNetModel)
    for mine, saved in zip(network.state_dict().values(), pipe.unet.state_dict().values(),
                           strict=True):
        assert torch.equal(mine, saved)

    # resuming rebuilds the same network and continues its step count
    train(_config(out, 3, resume_from_checkpoint="latest"))
    assert json.loads((out / "final_metrics.json").read_text())["step"] == 3
    # ... and refuses options that would build another one, before touching the run
    recorded = (out / "training_config.json").read_text()
    for other in ({"architecture": "unet", "unet_kwargs": {}},
                  {"unet_kwargs": {"width": 8}}):
        with pytest.raises(ValueError, match="holds checkpoints of a MRNAFNetModel"):
            train(_config(out, 4, resume_from_checkpoint="latest", **other))
    assert (out / "training_config.json").read_text() == recorded

    # a NAFNet pipeline is no starting point for a U-Net
    with pytest.raises(ValueError, match="holds a MRNAFNetModel, not a MRUNet2DModel"):
        train(_config(tmp_path / "unet", 1, architecture="unet", unet_kwargs={},
                      init_weights=str(out / "pipeline")))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nf": 8}, "--nf 8: --nf and --depth set the U-Net only"),
        ({"depth": 2}, "--depth 2: --nf and --depth set the U-Net only"),
        ({"degradation_aware": True, "kinds": ["noise", "clean"]},
         "MRNAFNetModel .* does not: use --architecture unet"),
        ({"unet_kwargs": {"attention_heads": 1}},
         r"\['attention_heads'\] that MRNAFNetModel"),
        ({"architecture": "unet", "unet_kwargs": {"width": 8}}, r"\['width'\] that MRUNet2DModel"),
        ({"architecture": "unet", "unet_kwargs": {"nf": 8}}, r"must not set \['nf'\]"),
        ({"architecture": "convnext"}, "architecture must be one of"),
    ],
)
def test_options_that_do_not_fit_the_network_are_refused_before_any_work(
    tmp_path: Path, options: dict, message: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train(_config(out, 1, **options))
    assert not out.exists()
