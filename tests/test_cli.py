"""The ``diffusers-mrs restore`` command: planning, restoring, errors, and a 2-process run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusers_mrs import pipeline_folder
from diffusers_mrs.cli import UsageError, collect_inputs, main, plan_jobs, write_manifest
from diffusers_mrs.pipelines import pipeline_mr_restoration as pipeline_module

from helpers import fresh_accelerate_state, save_tiny_pipeline


def listing(folder: Path) -> list[str]:
    """The visible files of a folder (the outputs manifest is hidden)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def save_image(path: Path, h: int, w: int, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random pipeline saved to disk."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("model"))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield from fresh_accelerate_state()


# ----------------------------------------------------------------------------- planning
def test_collect_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.JPG", ".hidden.png", "sub/c.png"):
        (folder / name).write_bytes(b"x")
    (folder / "notes.txt").write_text("not an image")
    odd = tmp_path / "photo.raw"
    odd.write_bytes(b"x")

    flat = collect_inputs([folder, odd])
    assert [(p.name, str(rel)) for p, rel in flat] == [
        ("a.JPG", "a.JPG"),
        ("b.png", "b.png"),
        ("photo.raw", "photo.raw"),
    ]
    deep = collect_inputs([folder], recursive=True)
    assert [str(rel) for _, rel in deep] == ["a.JPG", "b.png", "sub/c.png"]
    with pytest.raises(UsageError, match="input not found"):
        collect_inputs([tmp_path / "missing.png"])


def test_plan_jobs(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    for path in (one / "x.png", two / "x.jpg", one / "y.png"):
        path.write_bytes(b"x")
    out = tmp_path / "out"

    with pytest.raises(UsageError, match="no input images"):
        plan_jobs([], out)
    with pytest.raises(UsageError, match="same output file"):
        plan_jobs(collect_inputs([one, two]), out)
    with pytest.raises(UsageError, match="overwrite input files"):
        plan_jobs(collect_inputs([one]), one)

    jobs, skipped = plan_jobs(collect_inputs([one]), out)
    assert [j.target for j in jobs] == [out / "x.png", out / "y.png"] and skipped == []
    out.mkdir()
    (out / "x.png").write_bytes(b"old")
    # A file the manifest does not attribute to x.png is never replaced, not even with
    # --overwrite; once recorded as x.png's own output, the usual rules apply.
    with pytest.raises(UsageError, match="belongs to another input"):
        plan_jobs(collect_inputs([one]), out, overwrite=True)
    write_manifest(out, jobs)
    with pytest.raises(UsageError, match="already exist"):
        plan_jobs(collect_inputs([one]), out)
    jobs, skipped = plan_jobs(collect_inputs([one]), out, skip_existing=True)
    assert [j.target.name for j in jobs] == ["y.png"]
    assert [j.target.name for j in skipped] == ["x.png"]
    jobs, _ = plan_jobs(collect_inputs([one]), out, overwrite=True)
    assert len(jobs) == 2


def test_argument_errors(tmp_path: Path) -> None:
    base = ["restore", str(tmp_path), "--output", str(tmp_path / "out")]
    for extra in (
        ["--tile-overlap", "4"],
        ["--steps", "0"],
        ["--tile", "8", "--tile-overlap", "8"],
    ):
        with pytest.raises(SystemExit) as info:
            main(base + extra)
        assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["restore", str(tmp_path), "--output", "o", "--overwrite", "--skip-existing"])
    assert main(["restore", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2


# ----------------------------------------------------------------------------- restoring
def test_restore_files_and_folders(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    save_image(folder / "rgb.png", 21, 17)
    save_image(folder / "gray.jpg", 12, 16, mode="L", seed=1)
    save_image(folder / "alpha.png", 9, 14, mode="RGBA", seed=2)
    (folder / "broken.png").write_bytes(b"this is not a png")
    single = save_image(tmp_path / "single.bmp", 10, 11, seed=3)
    out = tmp_path / "out"
    common = ["--model", str(model_dir), "--steps", "2", "--seed", "0", "--quiet"]

    code = main(["restore", str(folder), str(single), "--output", str(out), *common])
    err = capsys.readouterr().err
    assert code == 1  # broken.png failed, the others were restored
    assert "broken.png" in err and "cannot restore" in err
    assert listing(out) == ["alpha.png", "gray.png", "rgb.png", "single.png"]
    sizes = {name: Image.open(out / name).size for name in listing(out)}
    assert sizes == {
        "alpha.png": (14, 9),
        "gray.png": (16, 12),
        "rgb.png": (17, 21),
        "single.png": (11, 10),
    }
    # Grayscale in, grayscale out; alpha carried through.
    modes = {name: Image.open(out / name).mode for name in sizes}
    assert modes == {"alpha.png": "RGBA", "gray.png": "L", "rgb.png": "RGB", "single.png": "RGB"}
    first = (out / "rgb.png").read_bytes()

    # Existing outputs are not replaced silently.
    assert main(["restore", str(folder), "--output", str(out), *common]) == 2
    assert "already exist" in capsys.readouterr().err
    # --skip-existing retries only the missing one (still broken).
    assert main(["restore", str(folder), "--output", str(out), "--skip-existing", *common]) == 1
    # --overwrite with the same seed gives the same image; other samplers and tiling work.
    (folder / "broken.png").unlink()
    assert main(["restore", str(folder), "--output", str(out), "--overwrite", *common]) == 0
    assert (out / "rgb.png").read_bytes() == first
    for extra in (["--scheduler", "posterior"], ["--scheduler", "euler"], ["--tile", "96"]):
        args = ["restore", str(folder / "rgb.png"), "--output", str(out), "--overwrite"]
        assert main([*args, *common, *extra]) == 0
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_unloadable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_image(tmp_path / "img.png", 8, 8)
    args = ["restore", str(src), "--output", str(tmp_path / "out"), "-q"]
    assert main([*args, "--model", str(tmp_path / "no" / "such" / "model")]) == 2
    assert "no such folder" in capsys.readouterr().err
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    assert main([*args, "--model", str(broken)]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert os.listdir(tmp_path / "out") == []  # checked writable, nothing written


def test_default_model_when_model_omitted(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "default_model_path", lambda: model_dir)
    monkeypatch.setattr(pipeline_folder, "default_model_path", lambda: model_dir)
    src = save_image(tmp_path / "img.png", 8, 8)
    code = main(["restore", str(src), "--output", str(tmp_path / "out"), "--steps", "1", "-q"])
    assert code == 0 and (tmp_path / "out" / "img.png").is_file()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_accelerate_two_processes(model_dir: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = [f"img{i}" for i in range(5)]
    for i, name in enumerate(names):
        save_image(inputs / f"{name}.png", 10 + i, 12, seed=i)
    out = tmp_path / "out"
    env = dict(
        os.environ, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES=""
    )
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        # On a machine without GPUs `--multi_gpu` starts 2 processes through torchrun and
        # the CLI sets accelerate up for CPU (gloo); `--cpu` alone would start only one.
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "diffusers_mrs.cli",
        "restore", str(inputs), "--output", str(out),
        "--model", str(model_dir), "--steps", "2", "--seed", "0", "--quiet", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    # Every input restored exactly once, nothing else written.
    assert listing(out) == sorted(f"{n}.png" for n in names)
    # Both processes worked: contiguous chunks of 3 and 2.
    assert "[process 0] restored 3 image(s)" in proc.stderr
    assert "[process 1] restored 2 image(s)" in proc.stderr
    for i, name in enumerate(names):
        assert Image.open(out / f"{name}.png").size == (12, 10 + i)
