"""Tests of MRNAFNetModel and of loading Refusion ``ConditionalNAFNet`` checkpoints.

The fixture ``fixtures/refusion_nafnet_w8.safetensors`` holds a tiny Refusion network
(original parameter names, float16-exact random weights with every parameter perturbed),
inputs of odd sizes and the outputs of the original code on them (see
``fixtures/make_nafnet_fixture.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusers_mrs import MRNAFNetModel
from diffusers_mrs.models import MRUNet2DOutput
from diffusers_mrs.models.irsde_checkpoint import IRSDECheckpointError
from diffusers_mrs.models.nafnet_checkpoint import (
    NAFNetCheckpointError,
    convert_nafnet_state_dict,
    infer_nafnet_config,
    map_nafnet_key,
    nafnet_original_names,
)
from diffusers_mrs.pipelines.tiling import tiled_model_output

from helpers import CreatesMarker, load_checkpoint_fixture, save_pth

FIXTURE = Path(__file__).parent / "fixtures" / "refusion_nafnet_w8.safetensors"
ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture() -> dict:
    original, data, meta = load_checkpoint_fixture(FIXTURE, "refusion.")
    return {"state_dict": original, "config": meta["config"], "t1": int(meta["t1"]), **data}


@pytest.fixture(scope="module")
def ported(fixture) -> MRNAFNetModel:
    model = MRNAFNetModel(**fixture["config"]).eval()
    model.load_state_dict(convert_nafnet_state_dict(fixture["state_dict"]), strict=True)
    return model


def test_mapping_is_one_to_one_with_equal_shapes(fixture):
    original = fixture["state_dict"]
    converted = convert_nafnet_state_dict(original)
    expected = MRNAFNetModel(**fixture["config"]).state_dict()
    assert len(converted) == len(original)
    assert set(converted) == set(expected)
    for key, value in converted.items():
        assert value.shape == expected[key].shape, key
    back = nafnet_original_names(expected)
    assert sorted(back.values()) == sorted(original)
    assert all(map_nafnet_key(theirs) == ours for ours, theirs in back.items())


def test_mapping_examples():
    assert map_nafnet_key("intro.weight") == "conv_in.weight"
    assert map_nafnet_key("time_mlp.3.bias") == "time_embedding.linear_2.bias"
    assert map_nafnet_key("encoders.1.0.mlp.1.weight") == "down_blocks.1.0.time_emb_proj.weight"
    assert map_nafnet_key("middle_blks.0.sca.1.bias") == "mid_blocks.0.channel_attention.bias"
    assert map_nafnet_key("decoders.0.1.norm2.g") == "up_blocks.0.1.norm2.weight"
    assert map_nafnet_key("ups.1.0.weight") == "upsamplers.1.conv.weight"
    assert map_nafnet_key("downs.0.bias") == "downsamplers.0.bias"
    assert map_nafnet_key("ending.weight") == "conv_out.weight"
    assert map_nafnet_key("ups.0.0.bias") is None  # the original has no such parameter
    assert map_nafnet_key("init_conv.weight") is None  # IR-SDE U-Net, not NAFNet


def test_config_is_inferred_from_shapes(fixture):
    assert infer_nafnet_config(fixture["state_dict"]) == fixture["config"]


def test_default_config_is_refusions():
    with torch.device("meta"):
        model = MRNAFNetModel()
    assert (model.config.width, model.config.middle_blk_num) == (64, 1)
    assert list(model.config.enc_blk_nums) == [1, 1, 1, 28]
    assert list(model.config.dec_blk_nums) == [1, 1, 1, 1]
    assert model.pad_multiple == 16


def test_forward_matches_original(fixture, ported):
    with torch.no_grad():
        out1 = ported(fixture["x1"], fixture["t1"], fixture["mu1"])
        out2 = ported(fixture["x2"], fixture["t2"], fixture["mu2"], return_dict=False)
    assert isinstance(out1, MRUNet2DOutput) and isinstance(out2, tuple)
    assert out1.sample.shape == fixture["out1"].shape == fixture["x1"].shape
    torch.testing.assert_close(out1.sample, fixture["out1"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out2[0], fixture["out2"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("wrap", ["plain", "module", "params"])
def test_from_irsde_checkpoint(fixture, tmp_path, wrap):
    sd = fixture["state_dict"]
    if wrap == "module":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrap == "params":
        obj = {"params": {f"module.{k}": v for k, v in sd.items()}, "iter": 5}
    else:
        obj = dict(sd)
    model = MRNAFNetModel.from_irsde_checkpoint(save_pth(obj, tmp_path / "latest_G.pth"))
    assert not model.training
    for key, value in fixture["config"].items():
        assert model.config[key] == value
    with torch.no_grad():
        out = model(fixture["x2"], fixture["t2"], fixture["mu2"]).sample
    torch.testing.assert_close(out, fixture["out2"], atol=ATOL, rtol=0)


def test_wrong_or_broken_checkpoints_give_clear_errors(fixture, tmp_path):
    path = save_pth(fixture["state_dict"], tmp_path / "g.pth")
    with pytest.raises(NAFNetCheckpointError, match=r"(?s)shape mismatch.*intro\.weight"):
        MRNAFNetModel.from_irsde_checkpoint(path, width=16)
    with pytest.raises(NAFNetCheckpointError, match=r"(?s)missing.*encoders\.1\.2\.beta"):
        MRNAFNetModel.from_irsde_checkpoint(path, enc_blk_nums=[1, 3])

    sd = dict(fixture["state_dict"])
    sd["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(IRSDECheckpointError, match=r"extra_head\.weight"):
        MRNAFNetModel.from_irsde_checkpoint(save_pth(sd, tmp_path / "extra.pth"))

    sd = {k: v for k, v in fixture["state_dict"].items() if not k.startswith("decoders.0.")}
    with pytest.raises(NAFNetCheckpointError, match=r"decoders levels are not numbered"):
        MRNAFNetModel.from_irsde_checkpoint(save_pth(sd, tmp_path / "partial.pth"))

    unet = {
        "init_conv.weight": torch.zeros(8, 6, 7, 7),
        "final_conv.weight": torch.zeros(3, 8, 3, 3),
    }
    with pytest.raises(NAFNetCheckpointError, match=r"intro\.weight"):
        MRNAFNetModel.from_irsde_checkpoint(save_pth(unet, tmp_path / "unet.pth"))

    with pytest.raises(NAFNetCheckpointError, match=r"no such checkpoint"):
        MRNAFNetModel.from_irsde_checkpoint(tmp_path / "missing.pth")


def test_loading_never_runs_pickled_code(fixture, tmp_path):
    marker = tmp_path / "pwned"
    obj = {"params": dict(fixture["state_dict"]), "hook": CreatesMarker(marker)}
    path = save_pth(obj, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(IRSDECheckpointError, match="weights_only"):
        MRNAFNetModel.from_irsde_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (13, 9), (8, 8)])
def test_any_size_gives_same_size(ported, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = ported(x, 10, 0.5 * x).sample
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_pads_with_zeros_and_crops(ported):
    """An input already a multiple of pad_multiple, with zeros on the right and bottom,
    gives the same top-left output as the unpadded input (the original pads with zeros)."""
    torch.manual_seed(0)
    x, mu = torch.rand(1, 3, 5, 6), torch.rand(1, 3, 5, 6)
    m = ported.pad_multiple
    assert m == 4
    padded = [torch.nn.functional.pad(v, (0, 8 - 6, 0, 8 - 5)) for v in (x, mu)]
    with torch.no_grad():
        small = ported(x, 20, mu).sample
        big = ported(padded[0], 20, padded[1]).sample
    torch.testing.assert_close(small, big[..., :5, :6], atol=1e-6, rtol=0)


def test_one_tile_equals_the_untiled_network(ported):
    """The tiled path pads like the network (``pad_mode``: zeros for Refusion's NAFNet), so
    one tile covering an image whose size is not a multiple of pad_multiple reproduces the
    untiled output."""
    torch.manual_seed(0)
    x, mu = torch.rand(1, 3, 10, 13), torch.rand(1, 3, 10, 13)
    assert ported.pad_mode == "constant"
    with torch.no_grad():
        whole = ported(x, 20, mu).sample
        tiled = tiled_model_output(
            lambda xt, mut: ported(xt, 20, mut).sample,
            x,
            mu,
            tile_size=(16, 16),
            tile_overlap=(4, 4),
            pad_multiple=ported.pad_multiple,
            pad_mode=ported.pad_mode,
        )
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_timestep_forms_and_per_item_timesteps(ported):
    torch.manual_seed(1)
    x, mu = torch.rand(3, 3, 9, 10), torch.rand(3, 3, 9, 10)
    with torch.no_grad():
        ref = ported(x, 50, mu).sample
        for t in (50.0, torch.tensor(50), torch.full((3,), 50.0)):
            torch.testing.assert_close(ported(x, t, mu).sample, ref, atol=1e-6, rtol=0)
        batched = ported(x, torch.tensor([3, 50, 97]), mu).sample
        torch.testing.assert_close(batched[1:2], ref[1:2], atol=1e-6, rtol=0)
        assert not torch.allclose(ported(x, 51, mu).sample, ref)
    with pytest.raises(ValueError, match="timestep has 2 entries"):
        ported(x, torch.tensor([1, 2]), mu)
    with pytest.raises(ValueError, match="shape of sample"):
        ported(x, 1, mu[:, :, :5])


def test_invalid_configs():
    with pytest.raises(ValueError, match="same number of levels"):
        MRNAFNetModel(width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1])
    with pytest.raises(ValueError, match="even number"):
        MRNAFNetModel(width=7, enc_blk_nums=[1], dec_blk_nums=[1])
    with pytest.raises(ValueError, match="upscale"):
        MRNAFNetModel(width=8, enc_blk_nums=[1], dec_blk_nums=[1], upscale=4)


def test_save_and_load_pretrained(ported, fixture, tmp_path):
    ported.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = MRNAFNetModel.from_pretrained(tmp_path)
    with torch.no_grad():
        out = loaded(fixture["x2"], fixture["t2"], fixture["mu2"]).sample
    torch.testing.assert_close(out, fixture["out2"], atol=ATOL, rtol=0)


def test_pipeline_tiles_a_nafnet_like_the_untiled_pipeline(ported):
    """The pipeline hands the network's ``pad_mode`` to the tiler: with one tile covering
    the image, a NAFNet pipeline restores exactly as without tiling."""
    from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler

    scheduler = MRSamplerScheduler(
        num_train_timesteps=100, algorithm_type="ode", solver_order=1, prediction_type="epsilon"
    )
    pipe = MRRestorationPipeline(unet=ported, scheduler=scheduler)
    torch.manual_seed(0)
    image, latents = torch.rand(1, 3, 10, 13), torch.rand(1, 3, 10, 13)
    kwargs = dict(image=image, num_inference_steps=2, latents=latents, output_type="pt")
    whole = pipe(**kwargs).images
    tiled = pipe(**kwargs, tile_size=16, tile_overlap=4).images
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
