"""The three DA-CLIP pairs loaded from their original files, against the original code.

``fixtures/original_pairs_tiny.safetensors`` holds, per pair, the original DA-CLIP encoder's
contexts and degradation probabilities, the original network's output and an MR Sampler
run, all by the public code on seeded random weights (``make_original_pairs_fixture.py``).
Wild-IR differs from universal-ir in its ViT-L-14-like encoder, its image context only,
its cross-attention on the deepest level only and the ``scale: 0.5`` resampling pair.
"""

from __future__ import annotations

import pytest
import torch
from original_files import FILES, load_run, lq_image, write_pair

from diffusers_mrs import DACLIPImageEncoder, MRUNet2DModel
from diffusers_mrs.models.daclip_encoder import daclip_feature_extractor
from diffusers_mrs.models.daclip_text import (
    DEGRADATION_NAMES,
    DEGRADATION_TOKEN_IDS,
    degradation_token_batch,
)
from diffusers_mrs.models.irsde_checkpoint import convert_to_irsde_state_dict

PAIRS = list(FILES)


@pytest.fixture(scope="module")
def run() -> dict:
    return load_run()


@pytest.fixture(scope="module")
def files(run, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("original")
    return {pair: write_pair(run, pair, folder / pair) for pair in PAIRS}


def test_token_ids_are_the_original_tokenizers(run):
    assert run["names"] == list(DEGRADATION_NAMES)
    assert torch.equal(degradation_token_batch(77), run["token_ids"])
    assert all(ids[0] == 49406 and ids[-1] == 49407 for ids in DEGRADATION_TOKEN_IDS.values())


@pytest.mark.parametrize("pair", PAIRS)
def test_encoder_and_names_equal_the_original(pair, run, files):
    encoder = DACLIPImageEncoder.from_daclip_checkpoint(files[pair][0])
    assert encoder.config.degradation_names == list(DEGRADATION_NAMES)
    text = encoder.degradation_text_embeds
    assert (text - run[f"{pair}.text_features"]).abs().max() < 1e-5
    size = encoder.config.image_size
    pixels = daclip_feature_extractor(size)(
        images=[run[f"{pair}.lq_uint8"].numpy()], return_tensors="pt"
    ).pixel_values
    with torch.no_grad():
        out = encoder(pixels)
    assert (out.image_embeds - run[f"{pair}.image_context"]).abs().max() < 1e-4
    assert (out.degradation_embeds - run[f"{pair}.degradation_context"]).abs().max() < 1e-4
    assert (out.degradation_probabilities - run[f"{pair}.probabilities"]).abs().max() < 1e-4


def test_wild_ir_encoder_is_the_vit_l_14_layout(files):
    encoder = DACLIPImageEncoder.from_daclip_checkpoint(files["wild-ir"][0])
    assert (encoder.config.patch_size, encoder.config.image_size) == (14, 28)
    assert encoder.config.projection_dim == 24


@pytest.mark.parametrize("pair", PAIRS)
def test_network_equals_the_original(pair, run, files):
    net = MRUNet2DModel.from_irsde_checkpoint(files[pair][1])
    with torch.no_grad():
        out = net(run[f"{pair}.latents"], run[pair]["t_network"], lq_image(run, pair)[None],
                  image_context=run[f"{pair}.image_context"],
                  degradation_context=run[f"{pair}.degradation_context"]).sample  # fmt: skip
    reference = run[f"{pair}.network_output"]
    assert (out - reference).abs().max() < 1e-4 * max(1.0, float(reference.abs().max()))


def test_wild_ir_network_options_are_inferred(files):
    config = MRUNet2DModel.from_irsde_checkpoint(files["wild-ir"][1]).config
    assert config.inner_scale == 0.5 and config.use_image_context
    assert not config.use_degra_context and config.context_dim == 24
    assert config.transformer_start_level == config.depth - 1 == 2  # deepest level only
    universal = MRUNet2DModel.from_irsde_checkpoint(files["universal-ir"][1]).config
    assert universal.inner_scale == 1 and universal.transformer_start_level == 3


def test_wild_ir_names_round_trip():
    net = MRUNet2DModel(nf=32, ch_mult=[1, 1, 1], context_dim=24, use_image_context=True,
                        transformer_start_level=2, inner_scale=0.5)  # fmt: skip
    names = convert_to_irsde_state_dict(net.state_dict())
    for key in ("downsample.weight", "downsample.bias", "upsample.1.weight", "upsample.1.bias"):
        assert key in names
    with pytest.raises(ValueError, match="inner_scale"):
        MRUNet2DModel(nf=8, depth=2, inner_scale=0.25)


def test_wild_ir_option_file_settings(tmp_path):
    from diffusers_mrs.convert import read_options

    options = tmp_path / "test.yml"
    options.write_text(
        "sde:\n  max_sigma: 50\n  T: 100\n  schedule: cosine\n  eps: 0.005\n"
        "  sampling_mode: posterior\nnetwork_G:\n  which_model_G: ConditionalUNet\n"
        "  setting:\n    in_nc: 3\n    out_nc: 3\n    nf: 64\n    ch_mult: [1, 2, 4, 8]\n"
        "    context_dim: 768\n    use_degra_context: false\n    use_image_context: true\n"
        "    scale: 0.5\n"
    )
    scheduler, network = read_options(options, "daclip")
    assert network["inner_scale"] == 0.5 and network["context_dim"] == 768
    assert not network["use_degra_context"] and network["ch_mult"] == [1, 2, 4, 8]
    assert scheduler["num_train_timesteps"] == 100
