"""DA-CLIP end to end: checkpoint files -> ``diffusers-mrs convert-daclip`` -> pipeline
folder -> restoration, equal to the original encoder + network + the official MR Sampler.

``fixtures/daclip_pipeline_tiny.safetensors`` holds the original run (see
``fixtures/make_daclip_pipeline_fixture.py``): a tiny DA-CLIP encoder (the weights of
``daclip_encoder_tiny.safetensors``), a DA-CLIP ``ConditionalUNet`` with seeded weights,
a 20 x 20 degraded image, the latents, and the MR Sampler's 10-step ODE output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler, MRUNet2DModel
from diffusers_mrs.cli import main as cli_main
from diffusers_mrs.models.irsde_checkpoint import convert_to_irsde_state_dict

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from seeded_weights import seeded_tensor

FIXTURES = Path(__file__).parent / "fixtures"
RUN = FIXTURES / "daclip_pipeline_tiny.safetensors"
ENCODER = FIXTURES / "daclip_encoder_tiny.safetensors"


@pytest.fixture(scope="module")
def run() -> dict:
    with safe_open(RUN, framework="pt") as f:
        meta = f.metadata()
    return {
        **load_file(RUN),
        **{k: json.loads(v) for k, v in meta.items() if not k.startswith("source")},
    }


def write_original_files(run: dict, folder: Path) -> tuple[Path, Path]:
    """The two files a DA-CLIP user downloads, with the fixture's weights and the original
    names and formats (``torch.save`` of the state dicts)."""
    tensors = load_file(ENCODER)
    encoder = {k[len("daclip.") :]: v.float() for k, v in tensors.items() if "daclip." in k}
    encoder.update({k[len("clip.") :]: v for k, v in encoder.items() if "clip.visual." in k})
    torch.save(encoder, folder / "daclip_tiny.pt")
    cfg = run["unet"]
    skeleton = MRUNet2DModel(
        nf=cfg["nf"], ch_mult=cfg["ch_mult"], context_dim=cfg["context_dim"],
        use_image_context=True, use_degra_context=True,
    )  # fmt: skip
    names = convert_to_irsde_state_dict(skeleton.state_dict())
    unet = {name: seeded_tensor(name, t.shape, cfg["seed"]) for name, t in names.items()}
    torch.save({"params": {f"module.{k}": v for k, v in unet.items()}}, folder / "ir.pth")
    return folder / "daclip_tiny.pt", folder / "ir.pth"


@pytest.fixture(scope="module")
def converted(run, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("daclip")
    daclip, unet = write_original_files(run, folder)
    out = folder / "pipe"
    argv = ["convert-daclip", "--daclip", str(daclip), "--unet", str(unet), "--output", str(out)]
    assert cli_main(argv) == 0
    return out


def ode_pipeline(folder: Path, run: dict) -> MRRestorationPipeline:
    """The converted pipeline with the fixture run's sampler: ODE, the official linspace
    grid, second order up to the last step (the official loop lowers the order only below
    10 steps)."""
    pipe = MRRestorationPipeline.from_pretrained(folder)
    sampler = run["sampler"]
    assert sampler["time_schedule"] == "linspace" and sampler["num_sample_steps"] >= 10
    pipe.scheduler = MRSamplerScheduler.from_config(
        pipe.scheduler.config,
        algorithm_type=sampler["solver_type"],
        lambda_min=sampler["lambda_min"],
        timestep_spacing="linspace",
        lower_order_final=False,
    )
    return pipe


def lq_image(run: dict) -> torch.Tensor:
    return run["lq_uint8"].permute(2, 0, 1).float() / 255


def test_converted_folder_matches_the_original_run(converted, run):
    pipe = ode_pipeline(converted, run)
    assert type(pipe.image_encoder).__name__ == "DACLIPImageEncoder"
    assert pipe.scheduler.config.solver_order == 2
    contexts = pipe.encode_image(lq_image(run)[None])
    assert (contexts.image - run["image_context"]).abs().max() < 1e-4
    assert (contexts.degradation - run["degradation_context"]).abs().max() < 1e-4
    last = {}

    def keep_state(pipe, i, t, tensors):
        last["latents"] = tensors["latents"].clone()
        return {}

    out = pipe(
        image=lq_image(run), num_inference_steps=run["sampler"]["num_sample_steps"],
        latents=run["latents"], output_type="pt", callback_on_step_end=keep_state,
    ).images  # fmt: skip
    assert pipe.scheduler.timesteps.tolist() == run["timesteps"][:-1]
    assert (out - run["output"]).abs().max() < 1e-3
    # before the final clip: random weights give values of a few hundred
    reference = run["output_unclipped"]
    assert (last["latents"] - reference).abs().max() < 1e-5 * reference.abs().max()


def test_contexts_once_per_image_tiled_too(converted, run):
    pipe = ode_pipeline(converted, run)
    calls = []
    original_forward = pipe.image_encoder.forward

    def counting_forward(pixel_values, *args, **kwargs):
        calls.append(pixel_values.shape[0])
        return original_forward(pixel_values, *args, **kwargs)

    pipe.image_encoder.forward = counting_forward
    images = [lq_image(run), lq_image(run).flip(-1)]
    seeds = [torch.Generator().manual_seed(i) for i in range(2)]
    untiled = pipe(image=images, num_inference_steps=4, output_type="pt", generator=seeds).images
    assert calls == [2]  # one batch of two images, not once per step
    seeds = [torch.Generator().manual_seed(i) for i in range(2)]
    tiled = pipe(image=images, num_inference_steps=4, output_type="pt", tile_size=16,
                 tile_overlap=8, tile_batch_size=3, generator=seeds).images  # fmt: skip
    assert calls == [2, 2]
    assert torch.isfinite(tiled).all() and tiled.shape == untiled.shape
    ensemble = pipe(image=images[0], num_inference_steps=2, num_samples=3, output_type="pt")
    assert calls == [2, 2, 1] and ensemble.uncertainty is not None


def test_model_card_and_folder(converted):
    card = (converted / "README.md").read_text()
    for text in ("DA-CLIP", "license: mit", "github.com/Algolzw/daclip-uir", "daclip_tiny.pt",
                 "ir.pth", "MRSamplerScheduler", "luo2024daclip", "li2025mrs"):  # fmt: skip
        assert text in card, text
    index = json.loads((converted / "model_index.json").read_text())
    assert index["image_encoder"] == ["diffusers_mrs", "DACLIPImageEncoder"]
    assert index["feature_extractor"][0] == "transformers"
    scheduler = json.loads((converted / "scheduler" / "scheduler_config.json").read_text())
    expected = {"num_train_timesteps": 100, "theta_schedule": "cosine", "eps": 0.005,
                "prediction_type": "epsilon", "algorithm_type": "sde",
                "parameterization": "data", "solver_order": 2}  # fmt: skip
    assert {k: scheduler[k] for k in expected} == expected
    assert scheduler["max_sigma"] == pytest.approx(50 / 255)
    assert list(converted.glob("**/*.safetensors"))
    assert not list(converted.glob("**/*.bin"))


def test_cli_restores_with_the_converted_folder(converted, run, tmp_path):
    from PIL import Image

    Image.fromarray(run["lq_uint8"].numpy()).save(tmp_path / "lq.png")
    argv = ["restore", str(tmp_path / "lq.png"), "--output", str(tmp_path / "out"),
            "--model", str(converted), "--steps", "2", "--seed", "0", "-q"]  # fmt: skip
    assert cli_main(argv) == 0
    assert Image.open(next((tmp_path / "out").glob("lq*.png"))).size == (20, 20)


def test_convert_refuses_bad_inputs_before_work(run, tmp_path, capsys):
    daclip, unet = write_original_files(run, tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("a result")
    argv = ["convert-daclip", "--daclip", str(daclip), "--unet", str(unet)]
    assert cli_main([*argv, "--output", str(tmp_path / "taken")]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "a result"
    # a DA-CLIP network without its encoder, and an encoder file that is not one
    assert cli_main(["convert", "--family", "irsde", "--checkpoint", str(unet),
                     "--output", str(tmp_path / "a")]) == 2  # fmt: skip
    assert "convert-daclip" in capsys.readouterr().err
    assert cli_main(["convert-daclip", "--daclip", str(unet), "--unet", str(unet),
                     "--output", str(tmp_path / "b")]) == 2  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_latents_are_checked(converted, run):
    pipe = ode_pipeline(converted, run)
    with pytest.raises(ValueError, match="latents"):
        pipe(image=lq_image(run), latents=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="latents"):
        pipe(image=lq_image(run), num_samples=2, latents=run["latents"])
