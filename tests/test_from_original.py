"""``MRRestorationPipeline.from_original``: DA-CLIP's pairs by Hub repo id, offline.

A Hugging Face cache laid out as ``huggingface_hub`` writes it (blobs named by SHA-256,
snapshot links, ``refs/main``) holds the random-weight original files of all three pairs
under the real repo id (``original_files.write_hub_cache``); the tests run with
``HF_HUB_OFFLINE=1``. The restorations are compared with the original code's MR Sampler run
from the same latents (``fixtures/original_pairs_tiny.safetensors``).
"""

from __future__ import annotations

import pytest
import torch
from original_files import (
    FILES,
    REPO,
    cache_file,
    load_run,
    lq_image,
    write_hub_cache,
    write_pair,
)

from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler
from diffusers_mrs import original_checkpoints as oc
from diffusers_mrs.cli import main as cli_main
from diffusers_mrs.convert import ConversionError
from diffusers_mrs.models import IRSDECheckpointError
from diffusers_mrs.models.daclip_text import DEGRADATION_NAMES

PAIRS = list(FILES)


@pytest.fixture(scope="module")
def run() -> dict:
    return load_run()


@pytest.fixture(scope="module")
def hub_cache(run, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf-cache")
    write_hub_cache(run, cache)
    return cache


@pytest.fixture
def conversions(monkeypatch) -> list:
    """Counts the conversions ``from_original`` runs."""
    calls = []
    convert = oc.convert_checkpoint

    def counting(*args, **kwargs):
        calls.append(args[0])
        return convert(*args, **kwargs)

    monkeypatch.setattr(oc, "convert_checkpoint", counting)
    return calls


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("converted")


def ode_scheduler(pipe: MRRestorationPipeline, run: dict) -> MRSamplerScheduler:
    """The fixture run's sampler: ODE, the official linspace grid, second order throughout."""
    sampler = run["sampler"]
    return MRSamplerScheduler.from_config(
        pipe.scheduler.config, algorithm_type=sampler["solver_type"],
        lambda_min=sampler["lambda_min"], timestep_spacing="linspace", lower_order_final=False,
    )  # fmt: skip


@pytest.mark.parametrize("pair", PAIRS)
def test_restores_like_the_original_and_converts_once(
    pair, run, hub_cache, converted_dir, conversions
):
    pipe = MRRestorationPipeline.from_original(
        REPO, model=pair, cache_dir=hub_cache, converted_dir=converted_dir
    )
    assert conversions == ["daclip"]
    config = pipe.scheduler.config  # the paper's setting
    paper = (config.algorithm_type, config.parameterization, config.solver_order)
    assert paper == ("sde", "data", 2)
    pipe.scheduler = ode_scheduler(pipe, run)
    pipe.set_progress_bar_config(disable=True)
    last = {}

    def keep_state(pipe, i, t, tensors):
        last["latents"] = tensors["latents"].clone()
        return {}

    out = pipe(image=lq_image(run, pair), num_inference_steps=run["sampler"]["num_sample_steps"],
               latents=run[f"{pair}.latents"], output_type="pt",
               callback_on_step_end=keep_state)  # fmt: skip
    assert pipe.scheduler.timesteps.tolist() == run[pair]["timesteps"][:-1]
    # before the final clip: random weights give values of a few hundred
    reference = run[f"{pair}.output_unclipped"]
    assert (last["latents"] - reference).abs().max() < 1e-5 * reference.abs().max()
    assert (out.images - run[f"{pair}.output"]).abs().max() < 1e-3
    probabilities = run[f"{pair}.probabilities"][0]
    best = int(probabilities.argmax())
    assert out.degradation == [DEGRADATION_NAMES[best]]
    assert abs(out.degradation_probability[0] - float(probabilities[best])) < 1e-4
    expected = dict(zip(DEGRADATION_NAMES, probabilities.tolist(), strict=True))
    assert out.degradation_probabilities[0] == pytest.approx(expected, abs=1e-4)

    again = MRRestorationPipeline.from_original(
        REPO, model=pair, cache_dir=hub_cache, converted_dir=converted_dir
    )
    assert conversions == ["daclip"]  # the second call only loads
    assert torch.equal(again.unet.conv_in.weight, pipe.unet.conv_in.weight)


def test_missing_files_offline_give_one_line(tmp_path, conversions):
    with pytest.raises(oc.OriginalFilesNotCachedError) as info:
        oc.load_original_pipeline(REPO, "wild-ir", cache_dir=tmp_path, converted_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and REPO in message
    assert f"hf download {REPO} wild-daclip_ViT-L-14.pt wild-ir.pth" in message
    assert conversions == []


def test_bad_inputs_fail_before_any_work(run, hub_cache, tmp_path, conversions, monkeypatch):
    with pytest.raises(ConversionError, match=r"unknown model 'wild'.*universal-ir-mix"):
        oc.load_original_pipeline(REPO, "wild", cache_dir=hub_cache, converted_dir=tmp_path)
    # a ViT-B-32 encoder paired with Wild-IR's network (16 vs 24 here; 512 vs 768 for real)
    folder = tmp_path / "mixed"
    encoder, _ = write_pair(run, "universal-ir", folder)
    write_pair(run, "wild-ir", tmp_path / "wild")[1].rename(folder / "wild-ir.pth")
    encoder.rename(folder / "wild-daclip_ViT-L-14.pt")
    with pytest.raises(ConversionError, match=r"16-dim embeddings.*context_dim=24.*not a pair"):
        oc.load_original_pipeline(folder, "wild-ir", converted_dir=tmp_path / "out")
    # a truncated file
    network = folder / "wild-ir.pth"
    network.write_bytes(network.read_bytes()[: network.stat().st_size // 2])
    (tmp_path / "wild" / "wild-daclip_ViT-L-14.pt").rename(folder / "wild-daclip_ViT-L-14.pt")
    with pytest.raises(IRSDECheckpointError, match="truncated"):
        oc.load_original_pipeline(folder, "wild-ir", converted_dir=tmp_path / "out")
    with pytest.raises(ConversionError, match=r"no daclip_ViT-B-32_mix\.pt, universal-ir-mix\.pth"):
        oc.load_original_pipeline(folder, "universal-ir-mix", converted_dir=tmp_path / "out")
    assert conversions == [] and not (tmp_path / "out").exists()


def test_repo_without_the_files_is_refused_before_downloading(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                        lambda self, repo, **kw: ["README.md", "universal-ir.pth"])  # fmt: skip

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    with pytest.raises(ConversionError, match=r"some/repo holds no daclip_ViT-B-32.pt; .*"):
        oc.load_original_pipeline("some/repo", converted_dir=tmp_path)


def test_local_folder_and_the_convert_command_agree(run, tmp_path, conversions):
    encoder, network = write_pair(run, "wild-ir", tmp_path / "files")
    pipe = MRRestorationPipeline.from_original(tmp_path / "files", model="wild-ir",
                                               converted_dir=tmp_path / "cache")  # fmt: skip
    assert conversions == ["daclip"] and pipe.unet.config.inner_scale == 0.5
    out = tmp_path / "by-cli"
    argv = ["convert-daclip", "--daclip", str(encoder), "--unet", str(network), "-o", str(out)]
    assert cli_main(argv) == 0
    cli = MRRestorationPipeline.from_pretrained(out)
    for a, b in zip(cli.components.values(), pipe.components.values(), strict=True):
        if isinstance(a, torch.nn.Module):
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert cli.image_encoder.config.degradation_names == list(DEGRADATION_NAMES)


def test_single_network_file(tmp_path, conversions):
    from safetensors.torch import load_file

    from helpers import FIXTURES

    tensors = load_file(FIXTURES / "irsde_unet_nf8_d2.safetensors")
    prefix = "irsde."
    state_dict = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
    torch.save(state_dict, tmp_path / "latest_G.pth")
    pipe = oc.load_original_pipeline(tmp_path / "latest_G.pth", converted_dir=tmp_path / "c")
    assert conversions == ["irsde"] and pipe.image_encoder is None
    with torch.no_grad():
        pred = pipe.unet(tensors["x2"], tensors["t2"], tensors["mu2"]).sample
    torch.testing.assert_close(pred, tensors["out2"], atol=1e-5, rtol=0)
    with pytest.raises(ConversionError, match="single network file"):
        oc.load_original_pipeline(tmp_path / "latest_G.pth", "wild-ir")
    # the same file in a Hub repo (cached), as owner/name/path and as a URL
    cache_file(tmp_path / "hf", "someone/irsde", tmp_path / "latest_G.pth")
    for source in ("someone/irsde/latest_G.pth",
                   "https://huggingface.co/someone/irsde/resolve/main/latest_G.pth"):
        hub = oc.load_original_pipeline(source, cache_dir=tmp_path / "hf",
                                        converted_dir=tmp_path / "c")  # fmt: skip
        assert torch.equal(hub.unet.conv_in.weight, pipe.unet.conv_in.weight)
    assert conversions == ["irsde"]  # the same SHA-256: converted once


def test_model_argument_loads_pairs_files_and_folders(hub_cache, converted_dir, tmp_path):
    pipe = oc.load_model_argument(f"{REPO}:wild-ir", cache_dir=hub_cache,
                                  converted_dir=converted_dir)  # fmt: skip
    assert pipe.unet.config.inner_scale == 0.5
    (folder,) = [p for p in converted_dir.iterdir() if p.name.startswith("wild-ir-")]
    same = oc.load_model_argument(str(folder))  # a pipeline folder: from_pretrained
    assert torch.equal(same.unet.conv_in.weight, pipe.unet.conv_in.weight)


def test_model_spec_names_a_pair():
    assert oc.original_model_spec("wild-ir") == (REPO, "wild-ir")
    assert oc.original_model_spec(f"{REPO}:universal-ir-mix") == (REPO, "universal-ir-mix")
    assert oc.original_model_spec("./downloads:universal-ir") == ("./downloads", "universal-ir")
    for text in (REPO, "./pipe", "user/repo:other", ":wild-ir", "C:/models/pipe"):
        assert oc.original_model_spec(text) is None
