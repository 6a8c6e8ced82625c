"""Tests of DACLIPImageEncoder and of loading DA-CLIP's image-encoder checkpoints.

The fixture ``fixtures/daclip_encoder_tiny.safetensors`` holds a tiny open_clip
``DaCLIP`` (original parameter names, float16-exact random weights with every parameter
perturbed), inputs, and the outputs of the original ``encode_image(x, control=True)`` on
them (see ``fixtures/make_daclip_encoder_fixture.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_mrs import DACLIPImageEncoder
from diffusers_mrs.models.daclip_encoder import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    DACLIPEncoderOutput,
    daclip_feature_extractor,
)
from diffusers_mrs.models.daclip_encoder_checkpoint import (
    DACLIPCheckpointError,
    convert_daclip_state_dict,
    infer_daclip_encoder_config,
)

from helpers import CreatesMarker, load_checkpoint_fixture, save_pth

FIXTURE = Path(__file__).parent / "fixtures" / "daclip_encoder_tiny.safetensors"
ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture() -> dict:
    original, data, meta = load_checkpoint_fixture(FIXTURE, "daclip.")
    # DaCLIP.visual is clip.visual: its state dict lists the same tensors twice.
    original.update(
        {k[len("clip.") :]: v for k, v in original.items() if k.startswith("clip.visual.")}
    )
    return {"state_dict": original, "config": meta["config"], **data}


@pytest.fixture(scope="module")
def ported(fixture) -> DACLIPImageEncoder:
    model = DACLIPImageEncoder(**fixture["config"]).eval()
    model.load_state_dict(convert_daclip_state_dict(fixture["state_dict"]), strict=True)
    return model


# --------------------------------------------------------------------------- mapping


def test_mapping_covers_the_model_with_equal_shapes(fixture):
    converted = convert_daclip_state_dict(fixture["state_dict"])
    expected = DACLIPImageEncoder(**fixture["config"]).state_dict()
    assert set(converted) == set(expected)
    for key, value in converted.items():
        assert value.shape == expected[key].shape, key


def test_config_is_inferred_from_shapes(fixture):
    inferred = infer_daclip_encoder_config(fixture["state_dict"])
    assert {k: inferred[k] for k in fixture["config"]} == fixture["config"]


def test_default_config_is_vit_b_32():
    with torch.device("meta"):
        model = DACLIPImageEncoder()
    config = model.config
    assert (config.image_size, config.patch_size, config.hidden_size) == (224, 32, 768)
    assert (config.num_hidden_layers, config.projection_dim, config.hidden_act) == (12, 512, "gelu")
    assert len(model.controller_outputs) == 12


def test_new_controller_outputs_start_at_zero():
    model = DACLIPImageEncoder(
        image_size=16,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        projection_dim=8,
    )
    for layer in model.controller_outputs:
        assert not layer.weight.any() and not layer.bias.any()


# --------------------------------------------------------------------------- equality


def test_forward_matches_original(fixture, ported):
    with torch.no_grad():
        out = ported(fixture["pixel_values"])
        tup = ported(fixture["pixel_values"], return_dict=False)
    assert isinstance(out, DACLIPEncoderOutput)
    assert out.image_embeds.shape == fixture["image_embeds"].shape
    torch.testing.assert_close(out.image_embeds, fixture["image_embeds"], atol=ATOL, rtol=0)
    torch.testing.assert_close(
        out.degradation_embeds, fixture["degradation_embeds"], atol=ATOL, rtol=0
    )
    assert isinstance(tup, tuple) and len(tup) == 2
    torch.testing.assert_close(tup[0], out.image_embeds, atol=0, rtol=0)
    torch.testing.assert_close(tup[1], out.degradation_embeds, atol=0, rtol=0)


def test_controls_enter_the_main_tower_in_reverse_layer_order(fixture, ported):
    """Swapping the two controller output layers changes the content embedding: the
    pairing of controller and main layers matters (and is checked by the fixture)."""
    swapped = DACLIPImageEncoder(**fixture["config"]).eval()
    swapped.load_state_dict(ported.state_dict())
    with torch.no_grad():
        a, b = swapped.controller_outputs
        a.weight, b.weight = b.weight, a.weight
        a.bias, b.bias = b.bias, a.bias
        out = swapped(fixture["pixel_values"])
    torch.testing.assert_close(
        out.degradation_embeds, fixture["degradation_embeds"], atol=ATOL, rtol=0
    )
    assert (out.image_embeds - fixture["image_embeds"]).abs().max() > 1e-2


@pytest.mark.parametrize("wrap", ["plain", "module", "state_dict"])
def test_from_daclip_checkpoint(fixture, tmp_path, wrap):
    sd = fixture["state_dict"]
    if wrap == "module":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrap == "state_dict":
        obj = {
            "epoch": 3,
            "name": "daclip",
            "state_dict": {f"module.{k}": v for k, v in sd.items()},
        }
    else:
        obj = dict(sd)
    model = DACLIPImageEncoder.from_daclip_checkpoint(save_pth(obj, tmp_path / "daclip.pt"))
    assert not model.training
    for key, value in fixture["config"].items():
        assert model.config[key] == value
    with torch.no_grad():
        image, degradation = model(fixture["pixel_values"], return_dict=False)
    torch.testing.assert_close(image, fixture["image_embeds"], atol=ATOL, rtol=0)
    torch.testing.assert_close(degradation, fixture["degradation_embeds"], atol=ATOL, rtol=0)


def test_checkpoint_without_text_tower_or_visual_copy(fixture, tmp_path):
    sd = {
        k: v
        for k, v in fixture["state_dict"].items()
        if k.startswith(("clip.visual.", "visual_control."))
    }
    model = DACLIPImageEncoder.from_daclip_checkpoint(save_pth(sd, tmp_path / "vision.pt"))
    with torch.no_grad():
        out = model(fixture["pixel_values"])
    torch.testing.assert_close(
        out.degradation_embeds, fixture["degradation_embeds"], atol=ATOL, rtol=0
    )


# --------------------------------------------------------------------------- bad input


def test_broken_checkpoints_give_clear_errors(fixture, tmp_path):
    sd = dict(fixture["state_dict"])
    del sd["visual_control.transformer.zero_modules.1.bias"]
    with pytest.raises(DACLIPCheckpointError, match=r"missing.*controller_outputs\.1\.bias"):
        DACLIPImageEncoder.from_daclip_checkpoint(save_pth(sd, tmp_path / "a.pt"))

    sd = dict(fixture["state_dict"])
    sd["visual_control.transformer.zero_modules.0.weight"] = torch.zeros(5, 5)
    with pytest.raises(
        DACLIPCheckpointError, match=r"shape mismatch.*controller_outputs\.0\.weight"
    ):
        DACLIPImageEncoder.from_daclip_checkpoint(save_pth(sd, tmp_path / "b.pt"))

    sd = dict(fixture["state_dict"])
    sd["visual_control.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(DACLIPCheckpointError, match=r"visual_control\.extra_head\.weight"):
        DACLIPImageEncoder.from_daclip_checkpoint(save_pth(sd, tmp_path / "c.pt"))

    sd = dict(fixture["state_dict"])
    sd["visual.ln_post.bias"] = sd["visual.ln_post.bias"] + 1
    with pytest.raises(DACLIPCheckpointError, match=r"differ"):
        DACLIPImageEncoder.from_daclip_checkpoint(save_pth(sd, tmp_path / "d.pt"))

    unet_like = {"init_conv.weight": torch.zeros(4, 6, 7, 7)}
    with pytest.raises(DACLIPCheckpointError, match=r"not a DA-CLIP"):
        DACLIPImageEncoder.from_daclip_checkpoint(save_pth(unet_like, tmp_path / "e.pt"))

    with pytest.raises(FileNotFoundError):
        DACLIPImageEncoder.from_daclip_checkpoint(tmp_path / "missing.pt")


def test_loading_never_runs_pickled_code(fixture, tmp_path):
    marker = tmp_path / "pwned"
    obj = {"state_dict": dict(fixture["state_dict"]), "hook": CreatesMarker(marker)}
    path = save_pth(obj, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(DACLIPCheckpointError, match="weights_only"):
        DACLIPImageEncoder.from_daclip_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content,message",
    [(b"", "empty"), (b"PK\x03\x04 cut short", "truncated"), (b"not a checkpoint", "readable")],
)
def test_unreadable_files_get_the_shared_clear_errors(tmp_path, content, message):
    """Empty and truncated files fail like the other loaders' (checkpoint_io), as
    DACLIPCheckpointError naming the file."""
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(DACLIPCheckpointError, match=message) as info:
        DACLIPImageEncoder.from_daclip_checkpoint(path)
    assert "bad.pt" in str(info.value)


def test_wrong_image_size_is_rejected(ported):
    with pytest.raises(ValueError, match=r"\[batch, 3, 32, 32\]"):
        ported(torch.zeros(1, 3, 31, 32))


# --------------------------------------------------------------------------- saving


def test_pipeline_component_round_trip(fixture, ported, tmp_path):
    from diffusers import DiffusionPipeline

    class EncoderPipeline(DiffusionPipeline):
        def __init__(self, image_encoder, feature_extractor):
            super().__init__()
            self.register_modules(image_encoder=image_encoder, feature_extractor=feature_extractor)

    pipe = EncoderPipeline(image_encoder=ported, feature_extractor=daclip_feature_extractor(32))
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "image_encoder" / "diffusion_pytorch_model.safetensors").is_file()
    # The entry MRRestorationPipeline writes for classes exported by diffusers_mrs.
    index_path = tmp_path / "model_index.json"
    index = json.loads(index_path.read_text())
    index["image_encoder"] = ["diffusers_mrs", "DACLIPImageEncoder"]
    index_path.write_text(json.dumps(index))

    loaded = EncoderPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.image_encoder, DACLIPImageEncoder)
    assert loaded.feature_extractor.crop_size == {"height": 32, "width": 32}
    with torch.no_grad():
        out = loaded.image_encoder(fixture["pixel_values"])
    torch.testing.assert_close(out.image_embeds, fixture["image_embeds"], atol=ATOL, rtol=0)
    torch.testing.assert_close(
        out.degradation_embeds, fixture["degradation_embeds"], atol=ATOL, rtol=0
    )


# --------------------------------------------------------------------------- preprocessing


def _torchvision_like(image: Image.Image, size: int, floor_offset: bool) -> np.ndarray:
    """DA-CLIP's transform (torchvision's math): short side to ``size`` (PIL bicubic; the
    long side truncated), centre crop with the offset rounded half to even (``round``) or,
    with ``floor_offset``, floored as ``transformers`` does; [0, 1]; CLIP mean/std."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    resized = np.asarray(image.resize((new_w, new_h), Image.BICUBIC), dtype=np.float32) / 255
    offset = (lambda d: d // 2) if floor_offset else (lambda d: round(d / 2))
    top, left = offset(new_h - size), offset(new_w - size)
    crop = resized[top : top + size, left : left + size].transpose(2, 0, 1)
    mean, std = np.array(OPENAI_CLIP_MEAN), np.array(OPENAI_CLIP_STD)
    return (crop - mean[:, None, None]) / std[:, None, None]


def _pixels(image: Image.Image, size: int) -> np.ndarray:
    return daclip_feature_extractor(size)(images=image, return_tensors="np")["pixel_values"][0]


@pytest.mark.parametrize("height,width", [(40, 56), (56, 40), (32, 32), (37, 90)])
def test_feature_extractor_is_resize_crop_normalise(height, width):
    """For these sizes the crop offset is the same whether rounded or floored: the
    processor reproduces DA-CLIP's preprocessing."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    pixels = _pixels(image, 32)
    assert pixels.shape == (3, 32, 32)
    np.testing.assert_allclose(pixels, _torchvision_like(image, 32, False), atol=1e-5)


def test_feature_extractor_crop_offset_where_it_differs():
    """The documented deviation: 35 - 32 = 3 excess pixels, torchvision crops from
    round(1.5) = 2, transformers from 1."""
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (32, 35, 3), dtype=np.uint8))
    pixels = _pixels(image, 32)
    np.testing.assert_allclose(pixels, _torchvision_like(image, 32, True), atol=1e-5)
    assert np.abs(pixels - _torchvision_like(image, 32, False)).max() > 0.1
