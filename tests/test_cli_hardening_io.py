"""Issue 27, the command line and image-file rows: atomic writes a planted symlink cannot
redirect (2), a pixel limit from the header and automatic tiling (4), a full disk and a
folder in the manifest's place (9), long input names (10), stale uncertainty maps (11),
bounds on the arguments (12), FIFO inputs and Ctrl-C (13).

Each test names its row; every one of them failed on the code before the issue.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

from diffusers_mrs import MRRestorationPipeline
from diffusers_mrs import image_io as io
from diffusers_mrs.atomic_files import write_atomic
from diffusers_mrs.cli import EXIT_INTERRUPTED, main
from diffusers_mrs.cli import limits as cli_limits
from diffusers_mrs.cli import restore as cli
from diffusers_mrs.cli.limits import MAX_SAMPLES, MAX_SEED, MAX_STEPS
from diffusers_mrs.cli.planning import MANIFEST_NAME, read_manifest

from helpers import save_random_image as image

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


@pytest.fixture
def model_dir(unbiased_model_dir: Path) -> Path:
    return unbiased_model_dir


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts model loads (none may happen before the checks pass)."""
    calls = {"load": 0}

    def fake(*args, **kwargs):
        calls["load"] += 1
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_pipeline", fake)
    return calls


def all_files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], status: int) -> str:
    """Runs the CLI, expects ``status`` and exactly one line on stderr; returns it."""
    capsys.readouterr()
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def png_declaring(width: int, height: int) -> bytes:
    """A tiny 8-bit RGB PNG whose header declares ``width x height`` (its data is short)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(4096))) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- row 2
def test_planted_symlinks_never_redirect_a_write(
    model_dir: Path, tmp_path: Path
) -> None:
    """Symlinks planted at the temporary names of earlier versions (``.NAME.<pid>.tmp``,
    predictable from the process id) used to be followed: the victim was overwritten and
    the output became a symlink to it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    src = image(tmp_path / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    for name in (f".x.png.{os.getpid()}.tmp", f".{MANIFEST_NAME}.{os.getpid()}.tmp"):
        (out / name).symlink_to(victim)
    args = ["restore", str(src), "-o", str(out), "--model", str(model_dir), "--steps", "1", "-q"]
    assert main(args) == 0
    assert victim.read_text() == "precious"
    for written in (out / "x.png", out / MANIFEST_NAME):
        assert written.is_file() and not written.is_symlink()
    assert Image.open(out / "x.png").size == (8, 8)


def test_write_atomic_replaces_a_symlink_at_the_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.bin"
    target.symlink_to(victim)
    write_atomic(target, lambda file: file.write(b"new"))
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_bytes() == b"new"
    assert all_files(tmp_path) == ["out.bin", "victim.txt"]  # no temporary file left
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0o600


# ----------------------------------------------------------------------------- row 4
def test_header_declaring_12000_x_12000_refused_before_decoding(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(12000, 12000))
    assert bomb.stat().st_size < 600

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(PIL.Image.Image, "load", no_decoding)
    with pytest.raises(io.ImageInputError, match=r"12000 x 12000 = 144,000,000 pixels"):
        io.read_image(bomb)
    # Above Pillow's own decompression-bomb error (2 x MAX_IMAGE_PIXELS): the same error.
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_declaring(30000, 30000))
    with pytest.raises(io.ImageInputError, match="above the limit of 50,000,000 pixels"):
        io.read_image(huge)
    monkeypatch.undo()

    out = tmp_path / "out"
    args = ["restore", str(bomb), "-o", str(out), "--model", str(model_dir), "--steps", "1", "-q"]
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "12000 x 12000" in err and "--max-pixels" in err and "Traceback" not in err
    assert not (out / "bomb.png").exists()


def test_max_pixels_flag(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    src = image(tmp_path / "a.png", h=10, w=12)
    base = ["restore", str(src), "--model", str(model_dir), "--steps", "1", "-q"]
    assert main([*base, "-o", str(tmp_path / "o1"), "--max-pixels", "119"]) == 1
    assert "12 x 10 = 120 pixels, above the limit of 119" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "o2"), "--max-pixels", "120"]) == 0


def test_large_images_tiled_automatically_and_said(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = image(tmp_path / "big.png", h=100, w=120)
    monkeypatch.setattr(cli_limits, "AUTO_TILE_PIXELS", 100 * 120 - 1)
    monkeypatch.setattr(cli_limits, "AUTO_TILE_SIZE", 96)
    out = tmp_path / "out"
    args = ["restore", str(src), "-o", str(out), "--model", str(model_dir), "--steps", "2",
            "--seed", "0", "-q"]
    capsys.readouterr()
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "big.png: 120 x 100 px is above 11,999 pixels: the network runs on 96 px tiles" in said
    pipe = MRRestorationPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(Image.open(src), num_inference_steps=2, tile_size=96,
                    generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(np.asarray(Image.open(out / "big.png")), np.asarray(expected))
    # --tile chooses itself; nothing is said.
    assert main([*args, "--overwrite", "--tile", "120"]) == 0
    assert "tiles" not in capsys.readouterr().out
    assert cli_limits.automatic_tile(100, 120, 1, None) == 96
    assert cli_limits.automatic_tile(49, 120, 2, None) is None  # 11760 pixels x samples
    assert cli_limits.automatic_tile(50, 120, 3, None) == 96


# ----------------------------------------------------------------------------- row 9
def test_full_disk_refused_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    no_loading: dict[str, int], model_dir: Path,
) -> None:
    src = image(tmp_path / "x.png")
    out = tmp_path / "out"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    line = one_error_line(capsys, ["restore", str(src), "-o", str(out), "--model",
                                   str(model_dir), "-q"], 2)
    assert "no space left" in line and "No space left on device" in line
    assert no_loading == {"load": 0}
    assert all_files(out) == []  # no probe, no .tmp


def test_manifest_path_a_folder_refused_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_loading: dict[str, int],
    model_dir: Path,
) -> None:
    src = image(tmp_path / "x.png")
    out = tmp_path / "out"
    (out / MANIFEST_NAME).mkdir(parents=True)
    line = one_error_line(capsys, ["restore", str(src), "-o", str(out), "--model",
                                   str(model_dir), "-q"], 2)
    assert MANIFEST_NAME in line and "not a file" in line
    assert no_loading == {"load": 0}
    assert all_files(out) == [MANIFEST_NAME]


def test_manifest_write_failing_after_loading_is_one_line(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk may fill between the checks and the first write: one line, exit 1, no
    image restored, no temporary file."""
    src = image(tmp_path / "x.png")
    out = tmp_path / "out"
    real_fsync = os.fsync
    calls = {"n": 0}

    def full_after_probe(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > 1:  # the probe passes, the manifest does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_after_probe)
    line = one_error_line(capsys, ["restore", str(src), "-o", str(out), "--model",
                                   str(model_dir), "--steps", "1", "-q"], 1)
    assert f"cannot write {out / MANIFEST_NAME}: No space left on device" in line
    assert all_files(out) == []


# ----------------------------------------------------------------------------- row 10
def test_input_name_of_250_characters(model_dir: Path, tmp_path: Path) -> None:
    name = "n" * 246 + ".png"
    src = image(tmp_path / "in" / name)
    out = tmp_path / "out"
    args = ["restore", str(src), "-o", str(out), "--model", str(model_dir), "--steps", "1",
            "--samples", "2", "--seed", "0", "-q"]
    assert main(args) == 0
    assert sorted(all_files(out)) == sorted([MANIFEST_NAME, name, "n" * 246 + ".std.png"])


# ----------------------------------------------------------------------------- row 11
def test_overwrite_without_samples_removes_the_stale_std_map(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = image(tmp_path / "a.png", h=12, w=12)
    out = tmp_path / "out"
    common = ["restore", str(src), "-o", str(out), "--model", str(model_dir), "--steps", "1",
              "--seed", "0", "-q"]
    assert main([*common, "--samples", "2"]) == 0
    assert (out / "a.std.png").is_file() and "a.std.png" in read_manifest(out)
    (out / "a.png").unlink()  # even without NAME.png, the map is this input's old output
    line = one_error_line(capsys, common, 2)
    assert "already exist" in line and "a.std.png" in line
    assert main([*common, "--overwrite"]) == 0
    assert all_files(out) == [MANIFEST_NAME, "a.png"]
    assert set(read_manifest(out)) == {"a.png"}
    assert main([*common, "--overwrite", "--samples", "2"]) == 0
    assert (out / "a.std.png").is_file()


def test_another_inputs_std_named_file_is_kept(model_dir: Path, tmp_path: Path) -> None:
    """An input named ``a.std.png`` writes ``a.std.png``: not ``a.png``'s stale map."""
    folder = tmp_path / "in"
    image(folder / "a.png")
    image(folder / "a.std.png", seed=1)
    out = tmp_path / "out"
    common = ["restore", str(folder), "-o", str(out), "--model", str(model_dir), "--steps",
              "1", "--seed", "0", "-q"]
    assert main(common) == 0
    kept = (out / "a.std.png").read_bytes()
    assert main([*common, "--overwrite"]) == 0
    assert (out / "a.std.png").read_bytes() == kept
    manifest = json.loads((out / MANIFEST_NAME).read_text())["outputs"]
    assert manifest["a.std.png"] == str((folder / "a.std.png").resolve())


# ----------------------------------------------------------------------------- row 12
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--steps", str(MAX_STEPS + 1), f"must be <= {MAX_STEPS}"),
        ("--steps", "1000000", f"must be <= {MAX_STEPS}"),
        ("--samples", str(MAX_SAMPLES + 1), f"must be <= {MAX_SAMPLES}"),
        ("--seed", str(10**23), f"must be <= {MAX_SEED}"),
        ("--seed", "-1", "must be >= 0"),
    ],
)
def test_upper_bounds_checked_at_parse_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["restore", str(tmp_path), "-o", str(tmp_path / "o"), flag, value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_largest_seed_is_accepted(model_dir: Path, tmp_path: Path) -> None:
    src = image(tmp_path / "x.png")
    assert main(["restore", str(src), "-o", str(tmp_path / "out"), "--model", str(model_dir),
                 "--steps", "1", "--seed", str(MAX_SEED), "-q"]) == 0


# ----------------------------------------------------------------------------- row 13
def test_fifo_input_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_loading: dict[str, int]
) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    line = one_error_line(capsys, ["restore", str(fifo), "-o", str(tmp_path / "out")], 2)
    assert "not a regular file" in line and "FIFO" in line and "not found" not in line
    with pytest.raises(io.ImageInputError, match="is a FIFO, not a regular file"):
        io.read_image(fifo)  # refused by its type, never opened (which would block)
    assert no_loading == {"load": 0}


def test_ctrl_c_is_one_line_exit_130_and_no_partial_file(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = image(tmp_path / "x.png")
    out = tmp_path / "out"

    def interrupted_while_writing(file, *args, **kwargs) -> None:
        with open(file, "wb") if isinstance(file, (str, os.PathLike)) else file as opened:
            opened.write(b"\x89PNG half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "write_image", interrupted_while_writing)
    capsys.readouterr()
    try:
        status = main(["restore", str(src), "-o", str(out), "--model", str(model_dir),
                       "--steps", "1", "-q"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left main() as a KeyboardInterrupt (a traceback)")
    assert status == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip().splitlines() == ["diffusers-mrs restore: interrupted"]
    assert all_files(out) == [MANIFEST_NAME]  # no x.png, no temporary file
