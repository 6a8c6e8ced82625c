"""``diffusers-mrs demo``: the Gradio app, served on 127.0.0.1 and called through gradio_client.

A tiny random network keeps every call fast; the app under test is the real one
(``build_demo`` with the real handlers), launched by the test on a free local port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed")

from diffusers_mrs import MRRestorationPipeline  # noqa: E402
from diffusers_mrs.cli import main  # noqa: E402
from diffusers_mrs.demo import (  # noqa: E402
    COMPARE_RUNS,
    TILE_CHOICES,
    DemoSession,
    build_demo,
    check_image,
    compare_fn,
    example_images,
    parse_tile,
    pipeline_with_sampler,
    restore_fn,
)
from diffusers_mrs.demo_limits import DemoLimits  # noqa: E402
from diffusers_mrs.uncertainty_map import LEGEND_HEIGHT, MIN_LEGEND_WIDTH  # noqa: E402

from helpers import free_port, tiny_degradation_aware_pipeline, tiny_pipeline  # noqa: E402

H, W = 40, 48
MAX_PIXELS = 4000  # a 64 x 64 upload is above it


def tiny_pipe() -> MRRestorationPipeline:
    return tiny_pipeline()


def value(output: object) -> object:
    """The value of an output: handlers return visibility updates for some components."""
    if isinstance(output, dict) and output.get("__type__") == "update":
        return output.get("value")
    return output


def save_image(path: Path, h: int, w: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, DemoSession]]:
    """The demo on 127.0.0.1 and a gradio_client connected to it."""
    workdir = tmp_path_factory.mktemp("demo")
    session = DemoSession(pipe=tiny_pipe(), workdir=workdir,
                          limits=DemoLimits(max_pixels=MAX_PIXELS))
    demo = build_demo(session)
    port = free_port()
    demo.queue(default_concurrency_limit=1).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        show_error=True,
    )
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        yield client, session
    finally:
        demo.close()


def test_restore_call_returns_the_input_and_a_full_size_result(served, tmp_path):
    client, _ = served
    src = save_image(tmp_path / "in.png", H, W)
    pair, info, std_map, download, _ = client.predict(
        gradio_client.handle_file(str(src)), "MR Sampler", 2, 0, 1, "off", api_name="/restore"
    )
    before, after = (Image.open(p) for p in pair)
    assert before.size == after.size == (W, H)
    assert np.array_equal(np.asarray(before.convert("RGB")), np.asarray(Image.open(src)))
    assert "NFE 2" in info and " s**" in info
    assert value(std_map) is None and std_map["visible"] is False  # one sample: no map
    full = Image.open(value(download))
    assert full.size == (W, H) and full.format == "PNG"
    assert np.array_equal(np.asarray(full), np.asarray(after.convert("RGB")))


@pytest.mark.parametrize(
    "sampler", ["MR Sampler, faithful samples", "Posterior (IR-SDE)", "Euler-Maruyama"]
)
def test_restore_with_the_other_samplers(served, tmp_path, sampler):
    client, _ = served
    src = save_image(tmp_path / "in.png", H, W)
    pair, info, *_ = client.predict(
        gradio_client.handle_file(str(src)), sampler, 3, 1, 1, "off", api_name="/restore"
    )
    assert Image.open(pair[1]).size == (W, H)
    assert sampler in info and "NFE 3" in info


def test_ensemble_call_returns_the_mean_and_the_uncertainty_map(served, tmp_path):
    client, _ = served
    src = save_image(tmp_path / "in.png", H, W)
    pair, info, std_map, download, _ = client.predict(
        gradio_client.handle_file(str(src)), "MR Sampler", 2, 0, 3, "off", api_name="/restore"
    )
    assert Image.open(pair[1]).size == Image.open(value(download)).size == (W, H)
    assert "3 samples" in info
    assert Image.open(value(std_map)).size == (max(W, MIN_LEGEND_WIDTH), H + LEGEND_HEIGHT)


def test_compare_call_returns_both_restorations_with_their_times(served, tmp_path):
    client, _ = served
    src = save_image(tmp_path / "in.png", 16, 24)
    mrs, posterior, info = client.predict(
        gradio_client.handle_file(str(src)), 0, "off", api_name="/compare"
    )
    assert Image.open(mrs).size == Image.open(posterior).size == (24, 16)
    for (sampler, steps) in COMPARE_RUNS:
        assert f"{sampler} @ {steps} steps" in info and f"NFE {steps}" in info
    assert not np.array_equal(np.asarray(Image.open(mrs)), np.asarray(Image.open(posterior)))


def test_too_large_upload_gets_a_clear_message(served, tmp_path):
    client, _ = served
    src = save_image(tmp_path / "big.png", 64, 64)
    with pytest.raises(Exception, match="megapixels"):
        client.predict(
            gradio_client.handle_file(str(src)), "MR Sampler", 2, 0, 1, "off",
            api_name="/restore",
        )


def test_results_stay_in_the_session_folder(served, tmp_path):
    client, session = served
    src = save_image(tmp_path / "in.png", H, W)
    before = set(session.workdir.iterdir())
    client.predict(
        gradio_client.handle_file(str(src)), "MR Sampler", 1, 0, 1, "off", api_name="/restore"
    )
    new = set(session.workdir.iterdir()) - before
    assert len(new) == 1 and next(iter(new)).suffix == ".png"


def test_checks_without_a_server():
    with pytest.raises(gr.Error, match="Upload an image"):
        check_image(None, MAX_PIXELS)
    with pytest.raises(gr.Error, match="megapixels"):
        check_image(Image.new("RGB", (100, 100)), MAX_PIXELS)
    assert parse_tile("off") is None and parse_tile("128") == 128
    with pytest.raises(gr.Error, match="at least 96"):
        parse_tile(64)  # below the CLI's smallest tile: seams
    assert all(parse_tile(choice) in (None, 96, 128, 256, 512) for choice in TILE_CHOICES)
    assert {p.name for p in example_images()} >= {"coffee_clean.png"}


def degradation_dropdown(demo: gr.Blocks) -> gr.Dropdown:
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None)
                == "degradation-type")


def test_faithful_sampler_is_the_models_mr_sampler_at_second_order():
    pipe = tiny_pipeline()
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, solver_order=1,
                                                      max_sigma=0.2)
    faithful = pipeline_with_sampler(pipe, "MR Sampler, faithful samples").scheduler
    own = pipeline_with_sampler(pipe, "MR Sampler").scheduler
    assert (faithful.config.solver_order, own.config.solver_order) == (2, 1)
    assert faithful.config.max_sigma == own.config.max_sigma == 0.2


def test_degradation_aware_model_shows_the_type_and_can_be_forced(tmp_path):
    session = DemoSession(pipe=tiny_degradation_aware_pipeline(), workdir=tmp_path)
    dropdown = degradation_dropdown(build_demo(session))
    assert dropdown.visible and [c[1] for c in dropdown.choices] == [
        "auto", "noise", "lowlight", "clean"]
    dark = Image.fromarray(np.full((16, 16, 3), 12, dtype=np.uint8))
    *_, label = restore_fn(session, dark, "MR Sampler", 1, 0, 1, "off")
    assert label["visible"] and max(label["value"], key=label["value"].get) == "lowlight"
    assert sum(label["value"].values()) == pytest.approx(1.0)
    _, info, *_, forced = restore_fn(session, dark, "MR Sampler", 1, 0, 1, "off", None, "noise")
    assert "degradation: **noise** (forced" in info and "forced" in forced["label"]
    assert forced["value"] == pytest.approx(label["value"])  # the encoder's own estimate
    *_, compare_info = compare_fn(session, dark, 0, "off", None, "noise")
    assert "NFE 100" in compare_info
    *_, compare_info = compare_fn(session, dark, 0, "off", None, "clean")
    assert "(NFE 0)" in compare_info  # a clean image is returned as it is, without sampling


def test_the_smallest_tile_choice_tiles_and_keeps_the_size(tmp_path):
    session = DemoSession(pipe=tiny_pipe(), workdir=tmp_path)
    image = Image.open(save_image(tmp_path / "big.png", 100, 120))  # larger than a 96 tile
    pair, info, *_ = restore_fn(session, image, "MR Sampler", 2, 0, 1, TILE_CHOICES[1])
    assert TILE_CHOICES[1] == "96" and "NFE 2" in info
    assert pair[1].size == (120, 100)


def test_other_models_show_no_degradation_controls(tmp_path):
    session = DemoSession(pipe=tiny_pipe(), workdir=tmp_path)
    assert not degradation_dropdown(build_demo(session)).visible
    dark = Image.fromarray(np.full((16, 16, 3), 12, dtype=np.uint8))
    _, info, *_, label = restore_fn(session, dark, "MR Sampler", 1, 0, 1, "off")
    assert label["visible"] is False and "degradation" not in info
    with pytest.raises(gr.Error, match="not degradation-aware"):
        restore_fn(session, dark, "MR Sampler", 1, 0, 1, "off", None, "noise")


def test_demo_subcommand_parses_and_defaults_to_localhost(monkeypatch):
    seen = {}
    monkeypatch.setattr("diffusers_mrs.demo.run_demo", lambda **kw: seen.update(kw))
    assert main(["demo", "--port", "7999"]) == 0
    workdir = seen.pop("workdir")  # the demo's temporary folder, removed afterwards
    assert workdir.name.startswith("diffusers-mrs-demo-") and not workdir.exists()
    assert seen == {"model": None, "host": "127.0.0.1", "port": 7999, "device": None}


def test_demo_subcommand_without_gradio_says_how_to_install(monkeypatch, capsys):
    import sys

    monkeypatch.delitem(sys.modules, "diffusers_mrs.demo", raising=False)
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` fails
    code = main(["demo"])
    assert code == 2
    assert 'pip install "diffusers-mrs[demo]"' in capsys.readouterr().err
