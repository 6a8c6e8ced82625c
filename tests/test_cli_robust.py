"""Issue 11: the CLI never loses a result, fails before the work, and shows progress per step.

One test (or group) per numbered point of the issue; the checkpoint points (2, and the
nesting / zero-byte parts of 7) are tested with the checkpoint loader.
"""

from __future__ import annotations

import copy
import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_mrs import (
    MRPosteriorScheduler,
    MRRestorationPipeline,
    MRSamplerScheduler,
)
from diffusers_mrs.cli import checks as cli_checks
from diffusers_mrs.cli import main
from diffusers_mrs.cli import restore as cli
from diffusers_mrs.image_io import ImageInputError
from diffusers_mrs.restore_settings import MIN_TILE_SIZE

from helpers import fresh_accelerate_state, save_tiny_pipeline, tiny_pipeline
from helpers import save_random_image as image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("model"), biased_output=False)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield from fresh_accelerate_state()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts model loads and Hub calls (none may happen before the checks pass)."""
    calls = {"load": 0, "hub": 0}

    def count(key: str):
        def fake(*args, **kwargs):
            calls[key] += 1
            raise AssertionError(f"{key} called")

        return fake

    import huggingface_hub

    monkeypatch.setattr(cli, "load_pipeline", count("load"))
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, count("hub"))
    return calls


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Runs the CLI, expects exit status 2 and exactly one line on stderr; returns it."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------------------- point 1
def test_multi_dot_names_give_distinct_files(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["frame.0001.png", "frame.0002.png", "photo 2024.06.01.jpg"]
    for k, name in enumerate(names):
        image(tmp_path / "in" / name, seed=k)
    out = tmp_path / "out"
    common = ["--model", str(model_dir), "--steps", "1", "--seed", "0", "-q"]
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), *common]) == 0
    visible = sorted(n for n in os.listdir(out) if not n.startswith("."))
    assert visible == ["frame.0001.png", "frame.0002.png", "photo 2024.06.01.png"]


def test_overwrite_never_replaces_another_inputs_output(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = image(tmp_path / "a" / "x.png", seed=1)
    second = image(tmp_path / "b" / "x.png", seed=2)
    out = tmp_path / "out"
    common = ["--model", str(model_dir), "--steps", "1", "--seed", "0", "-q", "-o", str(out)]
    assert main(["restore", str(first), *common]) == 0
    kept = (out / "x.png").read_bytes()
    line = usage_error(capsys, ["restore", str(second), "--overwrite", *common])
    assert "result of" in line and str(first.resolve()) in line
    assert (out / "x.png").read_bytes() == kept
    # The same input's own output is replaced.
    assert main(["restore", str(first), "--overwrite", *common]) == 0


# ----------------------------------------------------------------------------- point 3
def test_output_dir_problems_exit_2_before_any_network_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_network: dict[str, int],
) -> None:
    src = image(tmp_path / "img.png")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    hub = ["--model", "someone/some-model", "-q"]
    assert "is a file" in usage_error(capsys, ["restore", str(src), "-o", str(a_file), *hub])
    under_file = str(a_file / "sub")
    assert "cannot create" in usage_error(capsys, ["restore", str(src), "-o", under_file, *hub])

    def refuse(code: int):
        def fake(*args, **kwargs):
            raise OSError(code, os.strerror(code))

        return fake

    for code, what in ((errno.EROFS, "Read-only"), (errno.EACCES, "Permission denied")):
        monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse(code))
        line = usage_error(capsys, ["restore", str(src), "-o", str(tmp_path / "out"), *hub])
        assert "not writable" in line and what in line and ".tmp" not in line
    assert no_network == {"load": 0, "hub": 0}


def test_steps_device_tile_checked_before_loading(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_network: dict[str, int],
) -> None:
    src = image(tmp_path / "img.png")
    base = ["restore", str(src), "-o", str(tmp_path / "out"), "--model", str(model_dir), "-q"]
    line = usage_error(capsys, [*base, "--steps", "1000", "--scheduler", "posterior"])
    assert "--steps 1000" in line and "MRPosteriorScheduler" in line
    line = usage_error(capsys, [*base, "--solver-order", "2", "--scheduler", "posterior"])
    assert "--solver-order" in line and "MRPosteriorScheduler" in line
    assert "not a torch device" in usage_error(capsys, [*base, "--device", "foo"])
    if not torch.cuda.is_available():
        assert "no cuda device" in usage_error(capsys, [*base, "--device", "cuda:3"])
    line = usage_error(capsys, [*base, "--tile", "8"])
    assert f"smallest useful tile, {MIN_TILE_SIZE}" in line and "45 dB" in line
    assert no_network == {"load": 0, "hub": 0}


# ----------------------------------------------------------------------------- point 4
def test_per_step_bar_nested_in_per_image_bar(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for k in range(2):
        image(tmp_path / "in" / f"{k}.png", seed=k)
    args = ["restore", str(tmp_path / "in"), "--model", str(model_dir), "--steps", "3"]
    assert main([*args, "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "images:" in err and "2/2" in err  # the per-image bar
    assert "steps:" in err and "0/3" in err  # the per-step bar inside it (one per image)
    assert err.count("steps:   0%") == 2
    assert main([*args, "-o", str(tmp_path / "out2"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "images:" not in err and "steps:" not in err


# ----------------------------------------------------------------------------- point 6
def test_formats_kept_and_multi_frame_refused(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """16-bit stays 16-bit, gray stays gray, alpha is carried through; animations refused."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 65536, (8, 8)).astype(np.uint16)).save(folder / "g16.png")
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(folder / "rgba.png")
    frames = [Image.fromarray(np.full((8, 8, 3), 80 * i, np.uint8)) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    args = ["restore", str(folder), "-o", str(out), "--model", str(model_dir), "--steps", "1"]
    assert main([*args, "-q"]) == 1  # the animation failed, the others were written
    assert "anim.gif has 3 frames" in capsys.readouterr().err
    with Image.open(out / "g16.png") as g16, Image.open(out / "rgba.png") as out_rgba:
        assert g16.mode == "I;16" and out_rgba.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(out_rgba)[..., 3], rgba[..., 3])
    assert not (out / "anim.png").exists()


# ----------------------------------------------------------------------------- point 7
def test_small_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_network: dict[str, int]
) -> None:
    src = image(tmp_path / "img.png")
    base = ["restore", str(src), "-o", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        main([*base, "--steps", "2.5"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "expected a whole number >= 1, got '2.5'" in err
    assert "_positive_int" not in err
    line = usage_error(capsys, [*base, "--model", "my_model"])
    assert "no such folder" in line and "owner/name" in line
    assert no_network == {"load": 0, "hub": 0}


def test_scheduler_config_and_step_messages() -> None:
    with pytest.raises(ValueError, match="num_train_timesteps must be a whole number"):
        MRSamplerScheduler(num_train_timesteps=10.5)
    with pytest.raises(ValueError, match="lambda_min must be a number or \\+-inf, got NaN"):
        MRSamplerScheduler(lambda_min=float("nan"))
    with pytest.raises(ValueError, match="max_sigma must be finite"):
        MRPosteriorScheduler(max_sigma=float("inf"))
    for scheduler in (MRSamplerScheduler(), MRPosteriorScheduler()):
        scheduler.set_timesteps(2)
        x = torch.zeros(1, 3, 4, 4)
        with pytest.raises(TypeError, match=r"mu must be a torch\.Tensor, got numpy\.ndarray"):
            scheduler.step(x, scheduler.timesteps[0], x, mu=np.zeros((1, 3, 4, 4)))


def test_check_functions_directly(tmp_path: Path) -> None:
    cli_checks.check_device("cpu")
    cli_checks.check_tile_size(MIN_TILE_SIZE)
    cli_checks.check_model_location("owner/name")
    with pytest.raises(cli_checks.UsageError, match="not a pipeline folder"):
        cli_checks.check_model_location(str(tmp_path))
    cli_checks.prepare_output_dir(tmp_path / "new" / "deeper")
    assert (tmp_path / "new" / "deeper").is_dir()


# ----------------------------------------------------------------------------- point 5
@pytest.fixture(scope="module")
def tiny_pipe() -> MRRestorationPipeline:
    return tiny_pipeline(nf=4, depth=1, head_dim=4, biased_output=False)


def test_float_inputs_out_of_range_refused(tiny_pipe: MRRestorationPipeline) -> None:
    """Floats in 0..255 used to come out almost white, 3e38 as NaN: now refused."""
    with pytest.raises(ImageInputError, match="divide by 255"):
        tiny_pipe(np.full((8, 8, 3), 200.0, np.float32), num_inference_steps=1)
    with pytest.raises(ImageInputError, match="3e\\+38"):
        tiny_pipe(torch.full((3, 8, 8), 3e38), num_inference_steps=1)


def test_finite_check_runs_after_the_cast(tiny_pipe: MRRestorationPipeline) -> None:
    """An fp16 pipeline used to check the float32 input and then sample from inf -> NaN."""
    half = MRRestorationPipeline(unet=copy.deepcopy(tiny_pipe.unet).half(),
                                 scheduler=tiny_pipe.scheduler)
    with pytest.raises(ImageInputError, match="float16"):
        half.check_images_in_dtype([torch.full((3, 8, 8), 7e4)])
    with pytest.raises(ImageInputError):
        half(torch.full((3, 8, 8), 7e4), num_inference_steps=1)
    tiny_pipe.check_images_in_dtype([torch.full((3, 8, 8), 7e4)])  # finite in float32


# ----------------------------------------------------------------------------- point 7
def test_callback_returning_a_list(tiny_pipe: MRRestorationPipeline) -> None:
    with pytest.raises(TypeError, match=r"must return a dict .* got list"):
        tiny_pipe(np.zeros((8, 8, 3), np.uint8), num_inference_steps=1,
                  callback_on_step_end=lambda pipe, i, t, kwargs: [kwargs["latents"]])
    with pytest.raises(ValueError, match="expected a tensor of shape"):
        tiny_pipe(np.zeros((8, 8, 3), np.uint8), num_inference_steps=1,
                  callback_on_step_end=lambda pipe, i, t, kwargs: {"latents": 0})
