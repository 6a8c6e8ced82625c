"""Broken models and conversion inputs give one clear error naming the problem (issue 27,
rows 3, 7, 8 and the model-loading parts of 13): weights with NaN or in int8, missing
weights, a ``model_index.json`` that is a list, non-finite results, option files and
scheduler settings that make no sense, and architectures too large to allocate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler, MRUNet2DModel
from diffusers_mrs.cli import main
from diffusers_mrs.pipeline_folder import PipelineFolderError
from diffusers_mrs.pipelines.output import NonFiniteOutputError

from helpers import FIXTURES, fresh_accelerate_state, save_tiny_pipeline

WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield from fresh_accelerate_state()


@pytest.fixture(scope="module")
def good_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("model"))


def edited_copy(model: Path, folder: Path, edit) -> Path:
    """A copy of ``model`` whose unet weights ``edit`` changed (dict in, dict out)."""
    shutil.copytree(model, folder)
    save_file(edit(load_file(folder / WEIGHTS)), folder / WEIGHTS)
    return folder


def with_nan(weights: dict) -> dict:
    weights["conv_in.weight"] = weights["conv_in.weight"].clone()
    weights["conv_in.weight"].view(-1)[5] = float("nan")
    return weights


def save_png(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"diffusers-mrs {command}: error: "), err
    return lines[0]


# ------------------------------------------------------------------ row 3: weights, outputs
def test_a_nan_weight_is_refused_at_load_with_its_name(good_model, tmp_path, capsys):
    model = edited_copy(good_model, tmp_path / "nan", with_nan)
    with pytest.raises(PipelineFolderError, match=r"NaN or infinite.*'conv_in.weight' \(1 of"):
        MRRestorationPipeline.from_pretrained(model)
    out = tmp_path / "out"
    argv = ["restore", str(save_png(tmp_path / "a.png")), "-o", str(out), "--model", str(model)]
    assert main([*argv, "-q", "--steps", "2"]) == 2
    assert "conv_in.weight" in capsys.readouterr().err
    assert not list(out.glob("*.png"))


def test_int8_weights_are_refused_at_load_with_their_names(good_model, tmp_path):
    model = edited_copy(good_model, tmp_path / "int8",
                        lambda w: {k: v.to(torch.int8) for k, v in w.items()})
    with pytest.raises(PipelineFolderError, match=r"not floating point.*'conv_in.weight' \(I8\)"):
        MRRestorationPipeline.from_pretrained(model)


def test_half_precision_weights_still_load(good_model, tmp_path):
    model = edited_copy(good_model, tmp_path / "f16", lambda w: {k: v.half() for k, v in w.items()})
    MRRestorationPipeline.from_pretrained(model)


def test_a_non_finite_result_is_an_error_for_that_image_and_nothing_is_written(
    good_model, tmp_path, capsys
):
    """Finite weights whose output overflows float32: the CLI reports the image, exit 1."""

    def overflow(weights: dict) -> dict:
        weights["conv_out.weight"] = torch.full_like(weights["conv_out.weight"], 3e38)
        return weights

    model = edited_copy(good_model, tmp_path / "overflow", overflow)
    src, out = save_png(tmp_path / "photo.png"), tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "--model", str(model), "-q",
                 "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert f"cannot restore {src}" in err and "NaN or infinite" in err
    assert not (out / "photo.png").exists() and not list(out.glob("*.png"))


def test_a_callback_returning_nan_latents_is_an_error_naming_the_image(good_model):
    pipe = MRRestorationPipeline.from_pretrained(good_model)
    pipe.set_progress_bar_config(disable=True)

    def poison_second(pipe, i, t, kwargs):
        latents = kwargs["latents"].clone()
        latents[1] = float("nan")
        return {"latents": latents}

    images = [torch.rand(3, 16, 16), torch.rand(3, 16, 16)]
    with pytest.raises(NonFiniteOutputError, match=r"image 1 \(input order"):
        pipe(images, num_inference_steps=2, callback_on_step_end=poison_second)
    assert len(pipe(images, num_inference_steps=2).images) == 2  # a clean run still works


def original_checkpoint(path: Path, edit=lambda sd: sd) -> Path:
    tensors = load_file(FIXTURES / "irsde_unet_nf8_d2.safetensors")
    state_dict = {k[6:]: v.float() for k, v in tensors.items() if k.startswith("irsde.")}
    torch.save({"params": edit(state_dict)}, path)
    return path


@pytest.mark.parametrize("kind, expected", [("nan", "NaN or infinite"),
                                            ("int8", "not floating point")])
def test_convert_refuses_nan_and_integer_weights_naming_the_tensor(kind, expected, tmp_path,
                                                                    capsys):
    def edit(state_dict: dict) -> dict:
        name = "init_conv.weight"
        if kind == "nan":
            state_dict[name] = state_dict[name].clone()
            state_dict[name].view(-1)[0] = float("nan")
        else:
            state_dict[name] = state_dict[name].to(torch.int8)
        return state_dict

    checkpoint = original_checkpoint(tmp_path / "g.pth", edit)
    out = tmp_path / "pipe"
    assert main(["convert", "--family", "irsde", "--checkpoint", str(checkpoint),
                 "--output", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err, "convert")
    assert expected in line and "'init_conv.weight'" in line
    assert not out.exists()


# ------------------------------------------------------------------ row 7: convert's input
OPTIONS = {
    "broken YAML": ("sde: [1, 2\n", "not valid YAML"),
    "sde: 5": ("sde: 5\n", "sde must be a mapping"),
    "max_sigma: abc": ("sde:\n  max_sigma: abc\n", "max_sigma must be a number"),
    "a list": ("- 1\n- 2\n", "an option file is a mapping"),
    "setting: 3": ("network_G:\n  setting: 3\n", "network_G.setting must be a mapping"),
    "T: 1e9": ("sde:\n  T: 1.0e9\n", "T (num_train_timesteps) must be a whole number"),
    "nf: abc": ("network_G:\n  setting:\n    nf: abc\n", "describe no MRUNet2DModel"),
}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_bad_option_files_give_one_error_line(case, tmp_path, capsys):
    text, expected = OPTIONS[case]
    options = tmp_path / "opt.yml"
    options.write_text(text)
    checkpoint = original_checkpoint(tmp_path / "g.pth")
    assert main(["convert", "--family", "irsde", "--checkpoint", str(checkpoint),
                 "--options", str(options), "--output", str(tmp_path / "out")]) == 2
    assert expected in one_error_line(capsys.readouterr().err, "convert")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--T", "0", "must be a whole number from 1"),
    ("--T", "1000000000", "from 1 to 1,000,000"),
    ("--eps", "0", "eps must be a finite number > 0"),
    ("--eps", "1.5", "eps must lie in (0, 1)"),
    ("--max-sigma", "nan", "max_sigma must be a finite number > 0"),
])  # fmt: skip
def test_bad_scheduler_settings_give_one_error_line_before_the_scheduler_is_built(
    flag, value, expected, tmp_path, capsys, monkeypatch
):
    built = []
    original = MRSamplerScheduler.__init__

    def spy(self, **kw):
        built.append(kw)
        assert kw.get("num_train_timesteps", 0) <= 10**6, "would allocate T-sized tables"
        original(self, **kw)

    monkeypatch.setattr(MRSamplerScheduler, "__init__", spy)
    checkpoint = original_checkpoint(tmp_path / "g.pth")
    assert main(["convert", "--family", "irsde", "--checkpoint", str(checkpoint),
                 "--output", str(tmp_path / "out"), flag, value]) == 2
    assert expected in one_error_line(capsys.readouterr().err, "convert")
    if flag != "--eps" or value != "1.5":  # the scheduler's own check, after the bounds
        assert built == []


# ------------------------------------------------------------------ row 8: sizes
def test_an_oversized_unet_config_is_refused_before_allocating(good_model, tmp_path, monkeypatch):
    model = tmp_path / "huge"
    shutil.copytree(good_model, model)
    config = json.loads((model / "unet" / "config.json").read_text())
    (model / "unet" / "config.json").write_text(json.dumps({**config, "nf": 1_000_000}))
    monkeypatch.setattr(torch.nn.Conv2d, "__init__", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(ValueError, match="up to 4000000 channels; the supported maximum"):
        MRRestorationPipeline.from_pretrained(model)
    with pytest.raises(ValueError, match="9 levels"):
        MRUNet2DModel(nf=8, ch_mult=[1] * 9)


def test_convert_with_an_oversized_network_setting_is_checked_on_the_meta_device(
    tmp_path, capsys, monkeypatch
):
    """``nf: 1000000`` is compared with the checkpoint on a skeleton that holds nothing,
    and the mismatch named; no real parameter is ever made."""
    options = tmp_path / "opt.yml"
    options.write_text("network_G:\n  setting:\n    nf: 1000000\n")
    checkpoint = original_checkpoint(tmp_path / "g.pth")
    real = torch.nn.Parameter.__new__

    def meta_only(cls, data=None, requires_grad=True):
        assert data is None or data.device.type == "meta", "a real parameter was made"
        return real(cls, data, requires_grad)

    monkeypatch.setattr(torch.nn.Parameter, "__new__", meta_only)
    assert main(["convert", "--family", "irsde", "--checkpoint", str(checkpoint),
                 "--options", str(options), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "does not fit MRUNet2DModel(" in err and "nf=1000000" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ row 13: loading
def test_a_model_index_that_is_a_list_is_named(good_model, tmp_path, capsys):
    model = tmp_path / "list"
    shutil.copytree(good_model, model)
    (model / "model_index.json").write_text("[1, 2]")
    with pytest.raises(PipelineFolderError, match=r"must be a JSON object.*got a JSON list"):
        MRRestorationPipeline.from_pretrained(model)
    argv = ["restore", str(save_png(tmp_path / "a.png")), "-o", str(tmp_path / "o"), "-q"]
    assert main([*argv, "--model", str(model)]) == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_missing_unet_weights_are_named(good_model, tmp_path):
    model = edited_copy(good_model, tmp_path / "missing",
                        lambda w: {k: v for k, v in w.items() if k != "conv_out.bias"})
    with pytest.raises(PipelineFolderError, match=r"missing \(1\): 'conv_out.bias'"):
        MRRestorationPipeline.from_pretrained(model)


@pytest.mark.parametrize("generator", ["abc", 0, [torch.Generator(), "x"]])
def test_a_generator_that_is_not_one_is_named(good_model, generator):
    pipe = MRRestorationPipeline.from_pretrained(good_model)
    images = [torch.rand(3, 8, 8), torch.rand(3, 8, 8)] if isinstance(generator, list) else (
        torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"`generator` must be a torch\.Generator"):
        pipe(images, num_inference_steps=1, generator=generator)


def test_convert_daclip_refuses_an_encoder_with_a_nan_weight(tmp_path, capsys):
    from test_daclip_pipeline import RUN, write_original_files

    with safe_open(RUN, framework="pt") as f:
        run = {k: json.loads(v) for k, v in f.metadata().items() if not k.startswith("source")}
    daclip, unet = write_original_files(run, tmp_path)
    encoder = torch.load(daclip, weights_only=True)
    name = "visual_control.proj"  # the controller: no copy under two names
    encoder[name][0, 0] = float("nan")
    torch.save(encoder, daclip)
    out = tmp_path / "pipe"
    assert main(["convert-daclip", "--daclip", str(daclip), "--unet", str(unet),
                 "--output", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err, "convert-daclip")
    assert "the image encoder: NaN or infinite values (1)" in line
    assert not out.exists()


def test_conversion_bound_on_T_is_the_schedulers() -> None:
    from diffusers_mrs import convert, scheduling_common

    assert convert.MAX_TRAIN_TIMESTEPS == scheduling_common.MAX_TRAIN_TIMESTEPS
