"""DA-CLIP's context U-Net, and checkpoint loading (inference, validation, safety).

``fixtures/daclip_unet_nf64.safetensors`` holds inputs and the outputs of DA-CLIP's
original ``ConditionalUNet`` at its real size (nf=64, ch_mult [1, 2, 4, 8], both contexts)
with every parameter set by ``fixtures/seeded_weights.py`` from its original name (see
``fixtures/make_daclip_unet_fixture.py``); the test rebuilds the same weights for our port.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from diffusers_mrs.models import IRSDECheckpointError, MRUNet2DModel
from diffusers_mrs.models.irsde_checkpoint import (
    convert_irsde_state_dict,
    convert_to_irsde_names,
    convert_to_irsde_state_dict,
    infer_irsde_config,
)

from helpers import CreatesMarker, save_pth

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from seeded_weights import fill_seeded

FIXTURE = Path(__file__).parent / "fixtures" / "daclip_unet_nf64.safetensors"
IRSDE_FIXTURE = Path(__file__).parent / "fixtures" / "irsde_unet_nf8_d2.safetensors"
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def fixture() -> dict:
    with safe_open(FIXTURE, framework="pt") as f:
        meta = f.metadata()
    return {**load_file(FIXTURE), "meta": meta, "config": json.loads(meta["config"])}


def small_daclip(**kwargs) -> MRUNet2DModel:
    """A DA-CLIP-shaped network small enough for loader tests (transformer at level 3 and
    in the middle, degradation prompt), every parameter random."""
    config = {"nf": 32, "ch_mult": [1, 1, 1, 1], "context_dim": 16, **kwargs}
    config.setdefault("use_image_context", True)
    config.setdefault("use_degra_context", True)
    model = MRUNet2DModel(**config).eval()
    return fill_seeded(model, seed=3)


def contexts(batch: int = 1, dim: int = 16) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {
        "image_context": torch.randn(batch, dim, generator=gen),
        "degradation_context": torch.randn(batch, dim, generator=gen),
    }


# --------------------------------------------------------------------------- equality


def test_matches_original_daclip_unet_at_real_width(fixture):
    model = MRUNet2DModel(**fixture["config"]).eval()
    fill_seeded(model, convert_to_irsde_names(dict(model.named_parameters())))
    weights_sum = sum(float(p.detach().double().abs().sum()) for p in model.parameters())
    assert weights_sum == pytest.approx(float(fixture["meta"]["weights_abs_sum"]), rel=1e-12)
    t1 = int(fixture["meta"]["t1"])
    with torch.no_grad():
        out1 = model(
            fixture["x1"],
            t1,
            fixture["mu1"],
            image_context=fixture["image_context1"],
            degradation_context=fixture["degradation_context1"],
        ).sample
        kwargs = {"image_context": fixture["image_context2"]}
        out2_plain = model(fixture["x2"], fixture["t2"], fixture["mu2"], **kwargs).sample
        kwargs["degradation_context"] = fixture["degradation_context2"]
        out2 = model(fixture["x2"], fixture["t2"], fixture["mu2"], **kwargs).sample
    for ours, theirs in ((out1, "out1"), (out2, "out2"), (out2_plain, "out2_no_degradation")):
        assert ours.shape == fixture[theirs].shape
        assert (ours - fixture[theirs]).abs().max() < 1e-4, theirs
    # the contexts matter: a wrong mapping of either path could not hide
    assert (fixture["out2"] - fixture["out2_no_degradation"]).abs().max() > 1e-2


def test_image_context_is_required_and_checked():
    model = small_daclip()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="image_context"):
        model(x, 3, x)
    with pytest.raises(ValueError, match=r"image_context must have shape \[2, 16\]"):
        model(x, 3, x, image_context=torch.zeros(2, 15))
    ctx = contexts(1)
    with torch.no_grad():  # one context for the whole batch = the same context per item
        shared = model(x, 3, x, **ctx).sample
        per_item = model(x, 3, x, **{k: v.expand(2, -1) for k, v in ctx.items()}).sample
    torch.testing.assert_close(shared, per_item)
    plain = MRUNet2DModel(nf=8, depth=2, attention_head_dim=8)
    plain(x, 3, x, **contexts(2))  # contexts are ignored by networks without them


def test_invalid_context_configs():
    with pytest.raises(ValueError, match="context_dim"):
        MRUNet2DModel(nf=32, ch_mult=[1, 1, 1, 1], use_image_context=True)
    with pytest.raises(ValueError, match="divisible by 32"):
        MRUNet2DModel(nf=8, ch_mult=[1, 1, 1, 1], context_dim=16, use_image_context=True)
    with pytest.raises(ValueError, match="contradicts"):
        MRUNet2DModel(nf=8, depth=3, ch_mult=[1, 2])


def test_save_pretrained_round_trip(tmp_path):
    model = small_daclip()
    model.save_pretrained(tmp_path / "unet")
    loaded = MRUNet2DModel.from_pretrained(tmp_path / "unet").eval()
    assert loaded.config.ch_mult == [1, 1, 1, 1] and loaded.config.depth == 4
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, 9, x, **contexts()).sample, loaded(x, 9, x, **contexts()).sample
        )


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("variant", ["daclip", "image-only", "degradation-only", "irsde-mult"])
def test_infers_architecture_from_original_names(variant, tmp_path):
    kwargs = {
        "daclip": {},
        "image-only": {"use_degra_context": False},
        "degradation-only": {"use_image_context": False, "ch_mult": [1, 2]},
        "irsde-mult": {"use_image_context": False, "use_degra_context": False, "ch_mult": [2, 4]},
    }[variant]
    model = small_daclip(**kwargs)
    original = convert_to_irsde_state_dict(model.state_dict())
    assert len(original) == len(model.state_dict())
    inferred = infer_irsde_config(original)
    path = save_pth({f"module.{k}": v for k, v in original.items()}, tmp_path / "ir.pth")
    loaded = MRUNet2DModel.from_irsde_checkpoint(path)
    for key in ("nf", "depth", "use_image_context", "use_degra_context"):
        assert loaded.config[key] == model.config[key], key
    if "use_image_context" not in kwargs or "use_degra_context" not in kwargs:
        assert loaded.config.context_dim == 16
    assert inferred.get("ch_mult", [2, 4]) == list(model.config.ch_mult)
    x = torch.rand(2, 3, 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, 4, x, **contexts(2)).sample, model(x, 4, x, **contexts(2)).sample
        )


def test_explicit_arguments_are_checked_against_the_weights(tmp_path):
    original = convert_to_irsde_state_dict(small_daclip().state_dict())
    path = save_pth(original, tmp_path / "ir.pth")
    MRUNet2DModel.from_irsde_checkpoint(path, nf=32, ch_mult=[1, 1, 1, 1], context_dim=16)
    with pytest.raises(IRSDECheckpointError, match=r"(?s)shape mismatch.*text_mlp\.0\.weight"):
        MRUNet2DModel.from_irsde_checkpoint(path, context_dim=24)
    with pytest.raises(IRSDECheckpointError, match=r"(?s)unexpected.*downs\.3\.2\.fn\.fn\.norm"):
        MRUNet2DModel.from_irsde_checkpoint(path, use_image_context=False)


def test_stray_key_fails_fast_under_a_memory_limit(tmp_path):
    """A stray ``downs.9`` entry must be named, not turned into a 10-level network (which
    needed 22 GB); the check runs before any parameter memory exists (3 GB limit)."""
    sd = {k[len("irsde.") :]: v for k, v in load_file(IRSDE_FIXTURE).items() if "irsde." in k}
    sd["downs.9.0.block1.proj.weight"] = torch.zeros(1)
    path = save_pth(sd, tmp_path / "stray.pth")
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from diffusers_mrs.models import MRUNet2DModel, IRSDECheckpointError
        for config in ({{}}, {{"depth": 10}}):  # inferred, and a deep net asked for
            try:
                MRUNet2DModel.from_irsde_checkpoint({str(path)!r}, **config)
            except IRSDECheckpointError as err:
                print("ERROR", err)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    errors = result.stdout.split("ERROR")[1:]
    assert len(errors) == 2
    assert all("downs.9.0.block1.proj.weight" in error for error in errors)


def test_nested_checkpoints(tmp_path, caplog):
    sd = convert_to_irsde_state_dict(small_daclip().state_dict())
    for obj, used in (
        ({"iter": 5, "params": sd}, "params"),
        ({"params_ema": {}, "params": sd}, "params"),
        ({"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}}, "params_ema"),
        ({"net": sd, "epoch": 3}, "net"),
    ):
        path = save_pth(obj, tmp_path / "nested.pth")
        model = MRUNet2DModel.from_irsde_checkpoint(path)
        assert model.conv_in.weight.detach().abs().sum() > 0
        assert f"nested under {used!r}" in caplog.text
        caplog.clear()


def test_unreadable_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(IRSDECheckpointError, match=r"empty\.pth.*empty \(0 bytes\)"):
        MRUNet2DModel.from_irsde_checkpoint(empty)
    good = save_pth(convert_to_irsde_state_dict(small_daclip().state_dict()), tmp_path / "g.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(IRSDECheckpointError, match=r"truncated\.pth.*not a readable"):
        MRUNet2DModel.from_irsde_checkpoint(truncated)
    with pytest.raises(IRSDECheckpointError, match=r"missing\.pth: no such"):
        MRUNet2DModel.from_irsde_checkpoint(tmp_path / "missing.pth")


def test_no_pickle_code_runs(tmp_path):
    marker = tmp_path / "pwned"
    sd = convert_to_irsde_state_dict(small_daclip().state_dict())
    path = save_pth({"params": sd, "hook": CreatesMarker(marker)}, tmp_path / "evil.pth")
    torch.load(path, weights_only=False)  # the file does run code when unpickled freely
    assert marker.exists()
    marker.unlink()
    with pytest.raises(IRSDECheckpointError, match=r"evil\.pth: refused"):
        MRUNet2DModel.from_irsde_checkpoint(path)
    assert not marker.exists()


def test_safetensors_checkpoint_and_key_mapping_is_total(tmp_path):
    from safetensors.torch import save_file

    model = small_daclip()
    original = convert_to_irsde_state_dict(model.state_dict())
    assert set(convert_irsde_state_dict(original)) == set(model.state_dict())
    save_file({k: v.contiguous() for k, v in original.items()}, tmp_path / "g.safetensors")
    loaded = MRUNet2DModel.from_irsde_checkpoint(tmp_path / "g.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
