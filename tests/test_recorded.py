"""benchmarks/recorded.py (``--record``: a printed table into results/recorded.json) and the
functions that turn each printing script's measurements into its recorded table. No model
runs here: the tables are built from made-up measurements (bench_step times its tiny
scheduler steps for real)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from helpers import benchmark_module

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RECORDED_JSON = BENCHMARKS / "results" / "recorded.json"
SIBLINGS = ("recorded", "_common", "nfe_report", "nfe_plan", "example_images")


def script(name: str):
    """A fixture: ``benchmarks/<name>.py`` imported as a module (as when it runs)."""

    @pytest.fixture(scope="module")
    def module():
        with benchmark_module(BENCHMARKS / f"{name}.py", SIBLINGS) as loaded:
            yield loaded

    return module


recorded = script("recorded")
seam = script("seam_cost")
pad = script("compile_pad_cost")
ensemble = script("ensemble_gain")
daclip = script("bench_daclip")
step = script("bench_step")


def current(name: str) -> dict:
    """Entry ``name`` of the committed recorded.json."""
    return json.loads(RECORDED_JSON.read_text(encoding="utf-8"))[name]


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the committed recorded.json to write into."""
    return Path(shutil.copy(RECORDED_JSON, tmp_path / "recorded.json"))


# ---- the helper ----------------------------------------------------------------------------


def test_the_file_is_in_the_layout_the_helper_writes(recorded):
    text = RECORDED_JSON.read_text(encoding="utf-8")
    assert recorded.format_recorded(json.loads(text)) == text


def test_an_entry_is_replaced_in_place_and_nothing_else_changes(recorded, copy):
    before = json.loads(copy.read_text(encoding="utf-8"))
    recorded.record_table("tile_size", ["tile", "overlap", "x (dB)"], [[8, 2, 18.1], [16, 4, 35.9]],
                          "python benchmarks/seam_cost.py x.png --record", "a setting", copy)
    after = json.loads(copy.read_text(encoding="utf-8"))
    assert list(after) == list(before)  # keys in their order, "about" first
    assert after["tile_size"] == {"command": "python benchmarks/seam_cost.py x.png --record",
                                  "setting": "a setting", "columns": ["tile", "overlap", "x (dB)"],
                                  "rows": [[8, 2, 18.1], [16, 4, 35.9]]}
    assert {k: v for k, v in after.items() if k != "tile_size"} == {
        k: v for k, v in before.items() if k != "tile_size"}
    assert not [p.name for p in copy.parent.iterdir() if p != copy]  # no temporary file left


def test_a_new_entry_goes_last_and_a_missing_file_is_created(recorded, copy, tmp_path):
    recorded.record_table("new_one", ["a"], [["x"]], "python benchmarks/x.py", "s", copy)
    assert list(json.loads(copy.read_text(encoding="utf-8")))[-1] == "new_one"
    fresh = tmp_path / "fresh.json"
    recorded.record_table("only", ["a", "b"], [[1, 2.5]], "python benchmarks/x.py", "s", fresh)
    assert json.loads(fresh.read_text(encoding="utf-8")) == {
        "only": {"command": "python benchmarks/x.py", "setting": "s", "columns": ["a", "b"],
                 "rows": [[1, 2.5]]}}


@pytest.mark.parametrize(("name", "columns", "rows", "command", "message"), [
    ("t", ["a", "b"], [[1, 2], [3]], "c", "row 1 has 1 cells for 2 columns"),
    ("t", ["a"], [[math.inf]], "c", "row 0 has inf"),
    ("t", ["a"], [[math.nan]], "c", "finite float"),
    ("t", ["a"], [[None]], "c", "row 0 has None"),
    ("t", ["a"], [[True]], "c", "row 0 has True"),
    ("t", [], [[]], "c", "columns must be non-empty"),
    ("t", ["a"], [], "c", "no rows"),
    ("t", ["a"], [[1]], " ", "the command must be"),
    ("", ["a"], [[1]], "c", "the entry name must be"),
    ("about", ["a"], [[1]], "c", "'about' is the file's description"),
])  # fmt: skip
def test_bad_tables_are_refused_and_nothing_is_written(recorded, copy, name, columns, rows,
                                                       command, message):
    before = copy.read_bytes()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        recorded.record_table(name, columns, rows, command, "setting", copy)
    assert copy.read_bytes() == before


def test_the_command_is_the_shell_quoted_command_line(recorded):
    command = recorded.script_command("/any/where/benchmarks/seam_cost.py",
                                      ["my photo.png", "--record"])
    assert command == "python benchmarks/seam_cost.py 'my photo.png' --record"


def test_rounded_keeps_an_infinite_psnr_as_text(recorded):
    assert recorded.rounded(33.5678, 1) == 33.6
    assert recorded.rounded(math.inf, 1) == "inf"


# ---- each script's table -------------------------------------------------------------------


def test_seam_table_has_a_row_per_tile_and_a_column_per_image(seam):
    columns, rows = seam.seam_table({"chelsea_noise": {8: 18.14, 16: 35.86},
                                     "flower_lowlight": {8: 18.2, 16: math.inf}})
    assert columns == current("tile_size")["columns"]
    assert rows == [[8, 2, 18.1, 18.2], [16, 4, 35.9, "inf"]]
    with pytest.raises(ValueError, match="same tile sizes"):
        seam.seam_table({"a": {8: 1.0}, "b": {16: 1.0}})
    assert seam.seam_setting(None, 192, 10) == current("tile_size")["setting"]


def test_pad_row_measures_the_whole_image_and_without_the_last_rows(pad):
    unpadded = torch.zeros(1, 3, 40, 44)
    padded = unpadded.clone()
    padded[..., -2:, :] = 0.1  # the padding changed only the last two rows and columns
    padded[..., :, -2:] = 0.1
    changed = 40 * 44 - 38 * 42
    whole = 10 * math.log10(1 / (0.01 * changed / (40 * 44)))
    assert pad.pad_row(padded, unpadded, 64) == ["40x44", 64, round(whole, 1), "inf", "inf",
                                                 "inf", "inf"]
    assert current("compile_pad")["columns"] == pad.COLUMNS
    with pytest.raises(ValueError, match="same size"):
        pad.pad_row(padded[..., :-1], unpadded, 64)


@pytest.mark.parametrize(("sizes", "message"), [
    (["40x44", "10x90"], "10x90 is too small"), (["40by44", "50x50"], "'40by44' is not HxW")])
def test_compile_pad_refuses_bad_sizes_before_loading_a_model(pad, capsys, sizes, message):
    with pytest.raises(SystemExit):
        pad.main(["--sizes", *sizes, "--multiple", "64", "128"])
    assert message in capsys.readouterr().err


def test_ensemble_rows_read_like_the_printed_table(ensemble):
    result = {"input": 20.281, "single_mean": 27.094, "single_min": 27.071,
              "single_max": 27.118, "ensemble": 28.401, "rms_error": 0.03801,
              "rms_std": 0.02419, "seconds": 3.0}
    assert ensemble.ensemble_row("chelsea_noise", "default (order 1)", result) == [
        "chelsea_noise", "default (order 1)", "20.28", "27.09 (27.07-27.12)", "28.40", "+1.31",
        "0.0380", "0.0242"]
    assert ensemble.ensemble_columns(8) == current("ensemble_bundled")["columns"]
    assert math.isnan(ensemble.gain({**result, "single_mean": math.inf}))
    assert ensemble.sampler_label(None, 1) == "default (order 1)"
    assert ensemble.sampler_label(1, 1) == "default (order 1)"
    assert ensemble.sampler_label(2, 1) == "faithful (order 2)"
    assert ensemble.sampler_label(3, 1) == "order 3"


@pytest.mark.parametrize(("argv", "message"), [
    (["--images", "nope.png"], "no clean reference known for nope.png"),
    (["--solver-order", "2", "2"], "each order once")])
def test_ensemble_gain_refuses_bad_options_before_loading_a_model(ensemble, capsys, argv,
                                                                   message):
    with pytest.raises(SystemExit):
        ensemble.main(argv)
    assert message in capsys.readouterr().err


def test_daclip_table_has_a_column_per_size(daclip):
    medians = {64: {"MRS @10": 2.91, "posterior @100": 24.04},
               256: {"MRS @10": 29.1, "posterior @100": 311.77}}
    columns, rows = daclip.daclip_table(medians)
    assert columns == current("daclip_speed")["columns"]
    assert rows == current("daclip_speed")["rows"]
    assert daclip.daclip_setting(49_000_000, 2, 1) == current("daclip_speed")["setting"]
    with pytest.raises(SystemExit):
        daclip.main(["--sizes", "64", "64"])


def test_bench_step_records_its_table(step, copy, monkeypatch):
    """bench_step needs no model: a tiny run, recorded into a copy of the file."""
    monkeypatch.setitem(step.record_table.__globals__, "RECORDED", copy)
    threads = torch.get_num_threads()
    argv = ["--device", "cpu", "--size", "8", "--nfe", "2", "--repeats", "1", "--threads", "1",
            "--record"]
    try:
        step.main(argv)
    finally:
        torch.set_num_threads(threads)
    entry = json.loads(copy.read_text(encoding="utf-8"))["step_cost"]
    assert entry["command"] == "python benchmarks/bench_step.py " + " ".join(argv)
    assert entry["setting"] == "CPU, 1 thread, a (1, 3, 8, 8) float32 tensor, 2 steps, median of 1"
    assert entry["columns"] == current("step_cost")["columns"]
    assert [row[0] for row in entry["rows"]] == [row[0] for row in current("step_cost")["rows"]]
    assert all(value > 0 for row in entry["rows"] for value in row[1:])
