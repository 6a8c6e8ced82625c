"""The web demo's bounds and lifetime (issue 27, rows 5 and 6): what one request may cost
(pixels x K, forced tiling with a note, steps/samples/seed, "Compare"), and its temporary
folder: ``GRADIO_TEMP_DIR`` inside it before Gradio is imported, old files expired while it
runs, and the folder removed on SIGTERM as on Ctrl-C. Small limits are set through
parameters, so tiny images exercise every bound."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")

from diffusers_mrs.demo import DemoSession, build_demo, compare_fn, restore_fn  # noqa: E402
from diffusers_mrs.demo_limits import DemoLimits, plan_tiles  # noqa: E402
from diffusers_mrs.demo_workdir import expire_files  # noqa: E402

from helpers import (  # noqa: E402
    free_port,
    save_tiny_pipeline,
    tiny_pipeline,
    wait_until_serving,
)

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


def noisy(h: int, w: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def session_with(tmp_path: Path, **limits: int) -> DemoSession:
    return DemoSession(pipe=tiny_pipeline(), workdir=tmp_path, limits=DemoLimits(**limits))


# ------------------------------------------------------------------ row 5: bounded requests
def test_pixels_times_samples_above_the_limit_is_refused_with_what_to_do(tmp_path):
    session = session_with(tmp_path, max_sample_pixels=40 * 40 * 3)
    with pytest.raises(gr.Error, match=r"K = 4 samples of a 40 x 40 image.*Lower K to 3"):
        restore_fn(session, noisy(40, 40), "MR Sampler", 1, 0, 4, "off")
    _, info, std_map, *_ = restore_fn(session, noisy(40, 40), "MR Sampler", 1, 0, 3, "off")
    assert "3 samples" in info and std_map["visible"]


def test_tiling_is_forced_above_the_network_limit_and_said(tmp_path, monkeypatch):
    """Untiled, 200 x 240 x K=2 is above 70,000 pixels per call; tiles of 128 px (4 crops
    of 128^2 per call) are the largest that fit. The pipeline really gets them, and the
    result keeps the size."""
    session = session_with(tmp_path, max_network_pixels=70_000)
    seen = []
    original = type(session.pipe).__call__
    monkeypatch.setattr(type(session.pipe), "__call__",
                        lambda self, *a, **kw: seen.append(kw["tile_size"]) or original(
                            self, *a, **kw))
    pair, info, *_ = restore_fn(session, noisy(200, 240), "MR Sampler", 1, 0, 2, "off")
    assert seen == [128] and pair[1].size == (240, 200)
    assert "tiles of 128 px (forced: 240 x 200 px x K = 2 with no tiling" in info
    seen.clear()
    _, info, *_ = restore_fn(session, noisy(40, 40), "MR Sampler", 1, 0, 2, "off")
    assert seen == [None] and "forced" not in info  # small enough: untiled as asked


def test_tile_plan_counts_the_samples_in_every_network_call():
    limits = DemoLimits(max_network_pixels=1_048_576)
    choices = [96, 128, 256, 512]
    assert plan_tiles(limits, 2000, 2000, 16, None, choices)[0] == 256  # 16 x 256^2 = 1 M
    assert plan_tiles(limits, 2000, 2000, 1, None, choices)[0] == 512  # 4 crops x 512^2
    assert plan_tiles(limits, 2000, 2000, 16, 512, choices)[0] == 256  # too big a tile
    assert plan_tiles(limits, 500, 500, 4, None, choices) == (None, None)  # 1 M: untiled
    assert plan_tiles(DemoLimits(max_network_pixels=10), 200, 200, 1, None, choices)[0] == 96


@pytest.mark.parametrize("steps, samples, seed, expected", [
    (1000000, 1, 0, "Steps must be a whole number from 1 to 200"),
    (0, 1, 0, "Steps must be"),
    (2, 1000000, 0, r"Posterior samples \(K\) must be a whole number from 1 to 16"),
    (2, 1.5, 0, r"Posterior samples \(K\) must be"),
    (2, 1, 10**23, "Seed must be a whole number from 0"),
    (2, 1, -1, "Seed must be"),
])  # fmt: skip
def test_steps_samples_and_seed_are_bounded_also_through_the_api(
    tmp_path, steps, samples, seed, expected
):
    with pytest.raises(gr.Error, match=expected):
        restore_fn(session_with(tmp_path), noisy(16, 16), "MR Sampler", steps, seed, samples,
                   "off")


def test_compare_is_budgeted(tmp_path):
    session = session_with(tmp_path, max_compare_pixels=30 * 30)
    with pytest.raises(gr.Error, match=r"Compare runs 110 network evaluations.*Use Restore"):
        compare_fn(session, noisy(40, 40), 0, "off")
    *_, info = compare_fn(session, noisy(24, 24), 0, "off")
    assert "NFE 100" in info


# ------------------------------------------------------------------ row 6: the temp folder
def test_old_results_expire_while_the_demo_runs(tmp_path):
    session = DemoSession(pipe=tiny_pipeline(), workdir=tmp_path, file_max_age_s=600)
    old, recent = tmp_path / "restored-old.png", tmp_path / "restored-recent.png"
    for path in (old, recent):
        path.write_bytes(b"png")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    restore_fn(session, noisy(16, 16), "MR Sampler", 1, 0, 1, "off")
    assert not old.exists() and recent.exists()
    assert len(list(tmp_path.glob("restored-*.png"))) == 2  # the recent one and the new one
    assert expire_files(tmp_path, "restored-*.png", 10**6) == []
    assert build_demo(session).delete_cache == (150, 600)  # Gradio's uploads expire too


SPY = """
import json, os, sys
seen = {}


class GradioImportSpy:
    def find_spec(self, name, path=None, target=None):
        if name == "gradio" and "gradio" not in seen:
            seen["gradio"] = os.environ.get("GRADIO_TEMP_DIR")
        return None


sys.meta_path.insert(0, GradioImportSpy())
from diffusers_mrs.cli import main

code = main(sys.argv[1:])
print("SPY " + json.dumps({**seen, "code": code}), flush=True)
"""


def test_sigterm_removes_the_temp_folder_and_gradio_writes_inside_it(tmp_path):
    """The demo on loopback in a subprocess whose system temp folder is ``tmp/sys``:
    Gradio is imported with GRADIO_TEMP_DIR already inside the demo's folder, and SIGTERM
    stops the server and removes that folder: nothing of the demo's or Gradio's is left in
    the system temp folder."""
    systemp = tmp_path / "sys"
    systemp.mkdir()
    model = save_tiny_pipeline(tmp_path / "model")
    script = tmp_path / "spy.py"
    script.write_text(SPY)
    port, log = free_port(), tmp_path / "demo.log"
    env = {**os.environ, "TMPDIR": str(systemp), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
               filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    env.pop("GRADIO_TEMP_DIR", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), "demo", "--model", str(model), "--port", str(port),
             "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            wait_until_serving(f"http://127.0.0.1:{port}/", proc, START_TIMEOUT_S, log)
            (folder,) = systemp.glob("diffusers-mrs-demo-*")  # the demo's, while it runs
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text()
    spy = json.loads(next(line for line in output.splitlines() if line.startswith("SPY "))[4:])
    assert spy["gradio"] == str(folder / "gradio") and spy["code"] == 0, output
    assert not folder.exists(), output
    ours = [p.name for p in systemp.iterdir() if p.name.startswith(("diffusers-mrs", "gradio"))]
    assert ours == [], output  # (torch may keep its own cache folder there)
    assert proc.returncode == 0 and "Traceback" not in output, output
