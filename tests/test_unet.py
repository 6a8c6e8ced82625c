"""Tests of MRUNet2DModel and of loading IR-SDE checkpoints.

The fixture ``fixtures/irsde_unet_nf8_d2.safetensors`` holds a tiny IR-SDE
``ConditionalUNet`` (original parameter names, float16-exact random weights), inputs, and
the outputs of the original code on them (see ``fixtures/make_irsde_fixture.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusers_mrs.models import (
    IRSDECheckpointError,
    MRUNet2DModel,
    MRUNet2DOutput,
    convert_irsde_state_dict,
    convert_to_irsde_state_dict,
)
from diffusers_mrs.models.irsde_checkpoint import infer_irsde_config, map_irsde_key

from helpers import load_checkpoint_fixture, save_pth

FIXTURE = Path(__file__).parent / "fixtures" / "irsde_unet_nf8_d2.safetensors"
ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture() -> dict:
    original, data, meta = load_checkpoint_fixture(FIXTURE, "irsde.")
    return {"state_dict": original, "config": meta["config"], "t1": int(meta["t1"]), **data}


@pytest.fixture(scope="module")
def ported(fixture) -> MRUNet2DModel:
    model = MRUNet2DModel(**fixture["config"]).eval()
    model.load_state_dict(convert_irsde_state_dict(fixture["state_dict"]), strict=True)
    return model


def tiny(**kwargs) -> MRUNet2DModel:
    """A small random network; its zero-initialised output layer gets random weights too,
    so outputs depend on the inputs."""
    torch.manual_seed(0)
    model = MRUNet2DModel(**{"nf": 8, "depth": 2, "attention_head_dim": 8, **kwargs}).eval()
    torch.nn.init.normal_(model.conv_out.weight, std=0.05)
    return model


# --------------------------------------------------------------------------- mapping


def test_mapping_is_one_to_one_with_equal_shapes(fixture):
    original = fixture["state_dict"]
    converted = convert_irsde_state_dict(original)
    model = MRUNet2DModel(**fixture["config"])
    expected = model.state_dict()
    assert len(converted) == len(original)
    assert set(converted) == set(expected)
    for key, value in converted.items():
        assert value.shape == expected[key].shape, key
    back = convert_to_irsde_state_dict(converted)
    assert set(back) == set(original)
    assert all(back[k] is original[k] for k in original)


def test_mapping_examples():
    assert map_irsde_key("init_conv.weight") == "conv_in.weight"
    assert map_irsde_key("module.time_mlp.3.bias") == "time_embedding.linear_2.bias"
    assert map_irsde_key("downs.1.0.mlp.1.weight") == "down_blocks.1.resnets.0.time_emb_proj.weight"
    assert map_irsde_key("downs.0.2.fn.fn.to_out.1.g") == "down_blocks.0.attention.out_norm.weight"
    assert map_irsde_key("ups.0.3.1.bias") == "up_blocks.0.out_conv.bias"
    assert map_irsde_key("ups.3.3.weight") == "up_blocks.3.out_conv.weight"
    assert map_irsde_key("mid_attn.fn.norm.g") == "mid_block.attention.norm.weight"
    assert map_irsde_key("final_res_block.res_conv.weight") == "final_resnet.conv_shortcut.weight"
    assert map_irsde_key("final_conv.weight") == "conv_out.weight"
    assert map_irsde_key("downs.0.0.block1.proj.bias") is None  # no such parameter
    assert map_irsde_key("encoder.weight") is None


def test_full_mid_attention_round_trip():
    model = tiny(mid_attention="full")
    ours = model.state_dict()
    original = convert_to_irsde_state_dict(ours)
    assert "mid_attn.fn.fn.to_out.weight" in original
    assert "downs.0.2.fn.fn.to_out.0.weight" in original
    assert infer_irsde_config(original)["mid_attention"] == "full"
    assert set(convert_irsde_state_dict(original)) == set(ours)


# --------------------------------------------------------------------------- equality


def test_forward_matches_original(fixture, ported):
    with torch.no_grad():
        out1 = ported(fixture["x1"], fixture["t1"], fixture["mu1"]).sample
        out2 = ported(fixture["x2"], fixture["t2"], fixture["mu2"]).sample
    assert out1.shape == fixture["out1"].shape
    torch.testing.assert_close(out1, fixture["out1"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out2, fixture["out2"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("wrap", ["plain", "module", "params", "state_dict"])
def test_from_irsde_checkpoint(fixture, tmp_path, wrap):
    sd = fixture["state_dict"]
    if wrap == "module":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrap in ("params", "state_dict"):
        obj = {wrap: {f"module.{k}": v for k, v in sd.items()}, "iter": torch.tensor(5)}
        obj = {wrap: obj[wrap], "meta": {"epoch": 3}}
    else:
        obj = sd
    path = save_pth(obj, tmp_path / "latest_G.pth")
    model = MRUNet2DModel.from_irsde_checkpoint(path)  # config inferred from shapes
    assert not model.training
    for key, value in fixture["config"].items():
        assert model.config[key] == value
    with torch.no_grad():
        out = model(fixture["x2"], fixture["t2"], fixture["mu2"]).sample
    torch.testing.assert_close(out, fixture["out2"], atol=ATOL, rtol=0)


def test_wrong_config_names_mismatched_keys(fixture, tmp_path):
    path = save_pth(fixture["state_dict"], tmp_path / "g.pth")
    mismatch = r"(?s)shape mismatch.*init_conv\.weight.*\(8, 6, 7, 7\)"
    with pytest.raises(IRSDECheckpointError, match=mismatch):
        MRUNet2DModel.from_irsde_checkpoint(path, nf=16)
    with pytest.raises(IRSDECheckpointError, match=r"(?s)missing.*downs\.2\.0\.mlp\.1\.weight"):
        MRUNet2DModel.from_irsde_checkpoint(path, depth=3)


def test_incomplete_or_foreign_checkpoint_errors(fixture, tmp_path):
    sd = dict(fixture["state_dict"])
    del sd["downs.1.2.fn.fn.to_qkv.weight"]
    path = save_pth(sd, tmp_path / "partial.pth")
    with pytest.raises(IRSDECheckpointError, match=r"down_blocks\.1\.attention\.to_qkv\.weight"):
        MRUNet2DModel.from_irsde_checkpoint(path)

    sd = dict(fixture["state_dict"])
    sd["extra_head.weight"] = torch.zeros(3)
    path = save_pth(sd, tmp_path / "extra.pth")
    with pytest.raises(IRSDECheckpointError, match=r"extra_head\.weight"):
        MRUNet2DModel.from_irsde_checkpoint(path)

    path = save_pth({"encoder.conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "foreign.pth")
    with pytest.raises(IRSDECheckpointError, match=r"init_conv\.weight"):
        MRUNet2DModel.from_irsde_checkpoint(path)

    path = save_pth({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(IRSDECheckpointError, match=r"no state dict found"):
        MRUNet2DModel.from_irsde_checkpoint(path)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (13, 9), (16, 16), (3, 30)])
def test_any_size_gives_same_size(size):
    model = tiny(depth=3)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(x, 10, 0.5 * x).sample
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_per_item_timesteps_and_timestep_types():
    model = tiny()
    torch.manual_seed(1)
    x, mu = torch.rand(3, 3, 12, 10), torch.rand(3, 3, 12, 10)
    ts = [3, 50, 97]
    with torch.no_grad():
        batched = model(x, torch.tensor(ts), mu).sample
        for i, t in enumerate(ts):
            single = model(x[i : i + 1], t, mu[i : i + 1]).sample
            torch.testing.assert_close(batched[i : i + 1], single, atol=1e-6, rtol=0)
        ref = model(x, 50, mu).sample
        for t in (50.0, torch.tensor(50), torch.tensor(50.0), torch.full((3,), 50.0)):
            torch.testing.assert_close(model(x, t, mu).sample, ref, atol=1e-6, rtol=0)
        assert not torch.allclose(model(x, 51, mu).sample, ref)
        out = model(x, 50, mu, return_dict=False)
    assert isinstance(out, tuple)
    torch.testing.assert_close(out[0], ref)
    with pytest.raises(ValueError, match="timestep"):
        model(x, torch.tensor([1.0, 2.0]), mu)
    with pytest.raises(ValueError, match="mu"):
        model(x, 1, mu[:, :, :5])


def test_save_pretrained_round_trip(tmp_path):
    model = tiny(mid_attention="full", out_channels=2)
    model.save_pretrained(tmp_path / "unet", safe_serialization=True)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = MRUNet2DModel.from_pretrained(tmp_path / "unet")
    saved = loaded.state_dict()
    assert set(saved) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    public = {k: v for k, v in model.config.items() if not k.startswith("_")}
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == public
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        a = model(x, 7, x.flip(-1))
        b = loaded(x, 7, x.flip(-1))
    assert isinstance(b, MRUNet2DOutput)
    assert b.sample.shape == (1, 2, 9, 11)
    torch.testing.assert_close(a.sample, b.sample, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_forward(ported, fixture, dtype):
    model = MRUNet2DModel(**fixture["config"])
    model.load_state_dict(ported.state_dict())
    model = model.to(dtype=dtype).eval()
    with torch.no_grad():
        out = model(fixture["x2"], fixture["t2"], fixture["mu2"]).sample
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    tol = 2e-3 if dtype == torch.float16 else 2e-2
    torch.testing.assert_close(out.float(), fixture["out2"], atol=tol, rtol=0)


def test_full_attention_matches_explicit_softmax():
    model = tiny(mid_attention="full")
    attn = model.mid_block.attention
    torch.manual_seed(2)
    x = torch.randn(2, attn.to_qkv.in_channels, 3, 5)
    b, _, h, w = x.shape
    q, k, v = attn.to_qkv(attn.norm(x)).reshape(b, 3, attn.heads, attn.dim_head, h * w).unbind(1)
    weights = (torch.einsum("bhdi,bhdj->bhij", q, k) * attn.dim_head**-0.5).softmax(-1)
    out = torch.einsum("bhij,bhdj->bhdi", weights, v).reshape(b, -1, h, w)
    expected = attn.to_out(out) + x
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected.detach(), atol=1e-5, rtol=0)


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(3)
    x, mu = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    grads = []  # a small model: checkpointing recomputes every block
    for checkpointing in (False, True):
        model = tiny().train()
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert model.is_gradient_checkpointing
        model(x, torch.tensor([4.0, 60.0]), mu).sample.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_invalid_configs():
    with pytest.raises(ValueError, match="upscale"):
        MRUNet2DModel(nf=8, depth=2, upscale=4)
    with pytest.raises(ValueError, match="nf"):
        MRUNet2DModel(nf=7, depth=2)
    with pytest.raises(ValueError, match="mid_attention"):
        MRUNet2DModel(nf=8, depth=2, mid_attention="flash")


# --------------------------------------------------------------------------- conversion script


def test_convert_script_end_to_end(fixture, tmp_path):
    import importlib.util

    script = Path(__file__).parents[1] / "examples" / "convert_irsde_checkpoint.py"
    spec = importlib.util.spec_from_file_location("convert_irsde_checkpoint", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler

    ckpt = save_pth(
        {f"module.{k}": v for k, v in fixture["state_dict"].items()}, tmp_path / "G.pth"
    )
    options = tmp_path / "ir-sde.yml"
    options.write_text(
        "sde:\n  max_sigma: 10\n  T: 100\n  schedule: cosine\n  eps: 0.005\n"
        "network_G:\n  which_model_G: ConditionalUNet\n"
        "  setting:\n    in_nc: 3\n    out_nc: 3\n    nf: 8\n    depth: 2\n"
    )
    out = tmp_path / "pipe"
    assert module.main([str(ckpt), str(out), "--options", str(options), "--T", "80"]) == 0
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert "IR-SDE" in (out / "README.md").read_text()
    pipe = MRRestorationPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, MRSamplerScheduler)
    assert pipe.scheduler.config.num_train_timesteps == 80  # the command line wins
    assert pipe.scheduler.config.max_sigma == pytest.approx(10 / 255)
    assert pipe.scheduler.config.prediction_type == "epsilon"
    with torch.no_grad():
        pred = pipe.unet(fixture["x2"], fixture["t2"], fixture["mu2"]).sample
    torch.testing.assert_close(pred, fixture["out2"], atol=ATOL, rtol=0)


def test_new_network_predicts_zero():
    """Zero output means "the input itself" for velocity/noise targets: training starts
    from the degraded image, not from noise."""
    model = MRUNet2DModel(nf=8, depth=2, attention_head_dim=8)
    out = model(torch.rand(1, 3, 8, 8), 50, torch.rand(1, 3, 8, 8)).sample
    assert torch.count_nonzero(out) == 0


def test_reflect_padding_is_numpy_reflect():
    """The one padding helper (network and tiles) equals numpy's iterated reflection, pads
    larger than the image included; a 1-pixel side is replicated (nothing to reflect)."""
    import numpy as np

    from diffusers_mrs.models.padding import pad_to_multiple, reflect_pad_bottom_right

    for h, w, ph, pw in [(5, 7, 3, 2), (3, 2, 9, 11), (2, 5, 7, 0), (4, 4, 15, 15)]:
        x = torch.randn(2, 3, h, w)
        ref = np.pad(x.numpy(), ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
        np.testing.assert_array_equal(reflect_pad_bottom_right(x, ph, pw).numpy(), ref)
    one = torch.randn(1, 1, 1, 3)
    assert torch.equal(reflect_pad_bottom_right(one, 2, 0), one.expand(1, 1, 3, 3))
    assert pad_to_multiple(torch.randn(1, 1, 9, 16), 8).shape == (1, 1, 16, 16)
