"""The real-photograph measures (benchmarks/real_photo_metrics.py), the fetch of the real
photographs (diffusers_mrs.training.real_photo_sources) with a fake package folder, and
benchmarks/real_photos.py on a stand-in pipeline; nothing is downloaded or restored."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from helpers import benchmark_module

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SIBLINGS = ("real_photos", "real_photo_metrics")


@pytest.fixture(scope="module")
def metrics():
    with benchmark_module(BENCH / "real_photo_metrics.py", SIBLINGS) as module:
        yield module


@pytest.fixture(scope="module")
def bench():
    with benchmark_module(BENCH / "real_photos.py", SIBLINGS) as module:
        yield module


def rotate_hue(image: np.ndarray, degrees: float) -> np.ndarray:
    """``image`` with its (Cb, Cr) chroma vectors turned by ``degrees``, luma kept."""
    from skimage.color import rgb2ycbcr, ycbcr2rgb

    ycc = rgb2ycbcr(image)
    c = ycc[..., 1:] - 128.0
    t = np.radians(degrees)
    turned = np.stack([c[..., 0] * np.cos(t) - c[..., 1] * np.sin(t),
                       c[..., 0] * np.sin(t) + c[..., 1] * np.cos(t)], axis=-1)
    return ycbcr2rgb(np.concatenate([ycc[..., :1], turned + 128.0], axis=-1))


@pytest.fixture(scope="module")
def colours() -> np.ndarray:
    """Mid-grey plus small random chroma: every rotation stays inside the RGB cube."""
    rng = np.random.default_rng(0)
    return 0.5 + rng.uniform(-0.15, 0.15, size=(24, 32, 3))


@pytest.mark.parametrize("degrees", [2.0, 10.0, 45.0, 120.0])
def test_hue_angle_of_a_pure_hue_rotation_is_the_rotation(metrics, colours, degrees):
    turned = rotate_hue(colours, degrees)
    assert turned.min() > 0 and turned.max() < 1
    angles = metrics.hue_angles(turned, colours)
    assert angles.shape == (24 * 32,)
    np.testing.assert_allclose(angles, degrees, atol=1e-6)
    stats = metrics.hue_angle_stats(turned, colours)
    assert stats["hue_median"] == pytest.approx(degrees)
    assert stats["hue_p90"] == pytest.approx(degrees)


def test_brightening_alone_keeps_every_hue(metrics, colours):
    """A gain on all three channels scales Cb and Cr: angle 0 wherever chroma exists."""
    dark = 0.25 * colours
    np.testing.assert_allclose(metrics.hue_angles(np.clip(3.5 * dark, 0, 1), dark), 0.0,
                               atol=1e-6)
    assert metrics.mean_luma(3 * dark) == pytest.approx(3 * metrics.mean_luma(dark))


def test_hue_angle_counts_only_pixels_with_signal(metrics, colours):
    image = colours.copy()
    image[:12] *= 0.05  # max channel below 0.06: left out
    turned = rotate_hue(image, 30.0)
    assert metrics.hue_angles(turned, image).size == 12 * 32
    assert metrics.hue_angle_stats(turned, image)["signal_share"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no pixel"):
        metrics.hue_angle_stats(image * 0.01, image * 0.01)
    with pytest.raises(ValueError, match="H x W x 3"):
        metrics.hue_angles(image[..., :2], image[..., :2])


def test_residual_noise_is_estimate_sigma_in_1_255_units(metrics):
    from skimage.restoration import estimate_sigma

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:128, 0:128] / 128.0
    smooth = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 + 0.2 * x * y], axis=-1)
    noisy = smooth + rng.normal(0, 10 / 255, smooth.shape)
    assert metrics.residual_noise(noisy) == pytest.approx(10.0, rel=0.1)
    assert metrics.residual_noise(noisy) == pytest.approx(
        255 * estimate_sigma(noisy, channel_axis=-1, average_sigmas=True))
    assert metrics.residual_noise(smooth) < 0.5


def test_low_pass_psnr_ignores_fine_noise_and_sees_offsets(metrics):
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:96, 0:96] / 96.0
    image = np.stack([x, y, 0.5 * np.ones_like(x)], axis=-1) * 0.8 + 0.1
    assert metrics.low_pass_psnr(image, image) == float("inf")
    noisy = image + rng.normal(0, 10 / 255, image.shape)
    assert metrics.low_pass_psnr(noisy, image) > 40.0  # fine noise averages out
    assert metrics.low_pass_psnr(image + 0.01, image) == pytest.approx(40.0, abs=1e-6)


def test_low_pass_hue_sees_a_rotation_and_averages_sensor_noise_away(metrics, colours):
    """A hue rotation is linear in RGB, so it survives the blur; noise on a flat colour
    turns per-pixel hues at random, and the blur averages that away."""
    turned = rotate_hue(colours, 20.0)
    stats = metrics.low_pass_hue_angle_stats(turned, colours)
    assert stats["hue_median_low_pass"] == pytest.approx(20.0, abs=1e-6)
    assert stats["hue_p90_low_pass"] == pytest.approx(20.0, abs=1e-6)
    flat = np.full((64, 64, 3), [0.12, 0.10, 0.08])
    noisy = flat + np.random.default_rng(4).normal(0, 4 / 255, flat.shape)
    per_pixel = metrics.hue_angle_stats(flat, noisy)["hue_median"]
    low_pass = metrics.low_pass_hue_angle_stats(flat, noisy)["hue_median_low_pass"]
    assert per_pixel > 15.0 and low_pass < 3.0


# ---- fetching ----------------------------------------------------------------------------


def fake_provider(files: dict[str, bytes]):
    """A provider that 'unpacks' a package into a folder holding ``files``."""
    def provide(package: str, work_dir: Path) -> tuple[Path, str]:
        root = work_dir / package
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return root, "1.0-test"
    return provide


def png_bytes(value: int, tmp_path: Path) -> bytes:
    path = tmp_path / f"im{value}.png"
    Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(path)
    return path.read_bytes()


def test_fetch_writes_a_verified_manifest_and_refuses_changed_files(tmp_path):
    from diffusers_mrs.training.photo_sources import sha256_of
    from diffusers_mrs.training.real_photo_sources import (
        REAL_PHOTOS,
        fetch_real_photos,
        real_photo_files,
    )

    entries = [e for e in REAL_PHOTOS if e.source == "deb"][:2]
    files = {e.path: png_bytes(40 + i, tmp_path) for i, e in enumerate(entries)}
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match=r"fetch_real_photos\.py"):
        real_photo_files(cache)
    manifest = fetch_real_photos(cache, entries=entries, progress=False,
                                 providers={"deb": fake_provider(files)})
    on_disk = json.loads((cache / "manifest.json").read_text())
    assert on_disk == manifest
    found = real_photo_files(cache)
    assert list(found) == [e.name for e in entries]
    for entry, record in zip(entries, manifest["photos"], strict=True):
        assert record["package"] == "opencv-doc" and record["package_version"] == "1.0-test"
        assert record["license"] == entry.license and record["split"] == "val"
        assert (record["width"], record["height"]) == (30, 20)
        assert record["sha256"] == sha256_of(found[entry.name]["path"])
    changed = dict(files, **{entries[0].path: png_bytes(99, tmp_path)})
    found[entries[0].name]["path"].unlink()  # missing: fetched again, and found changed
    with pytest.raises(ValueError, match="changed upstream"):
        fetch_real_photos(cache, entries=entries, progress=False,
                          providers={"deb": fake_provider(changed)})
    fetch_real_photos(cache, entries=entries, progress=False, refresh=True,
                      providers={"deb": fake_provider(changed)})


def test_fetch_refuses_an_unknown_kind(tmp_path):
    from diffusers_mrs.training.photo_sources import PhotoEntry
    from diffusers_mrs.training.real_photo_sources import fetch_real_photos

    entry = PhotoEntry("rainy/x", "deb", "p", "x.png", "MIT", "me")
    with pytest.raises(ValueError, match="rainy"):
        fetch_real_photos(tmp_path, entries=[entry], progress=False)


# ---- the benchmark on a stand-in pipeline -----------------------------------------------------


class CleanPipeline:
    """Detects every image as clean (returned as is); a forced type brightens it 1.5x."""

    def __init__(self) -> None:
        self.degradation_encoder = SimpleNamespace(
            config=SimpleNamespace(degradations=["noise", "lowlight", "clean"]))

    def __call__(self, image: np.ndarray, degradation: str | None = None, **kwargs):
        out = image if degradation is None else np.clip(1.5 * image, 0, 1)
        return SimpleNamespace(images=[out], degradation=[degradation or "clean"],
                               degradation_probability=[0.9 if degradation is None else 0.1])


def test_a_photo_detected_otherwise_is_also_restored_with_its_kind_forced(bench, colours):
    dark = (0.3 * colours).astype(np.float32)
    rows, _ = bench.measure_photo(CleanPipeline(), "lowlight/x", dark, steps=2)
    assert [r["mode"] for r in rows] == ["auto", "forced"]
    auto, forced = rows
    assert auto["type"] == "clean" and auto["hue_median"] == 0.0
    assert auto["printed"] == ("lowlight/x: no supported degradation found (noise, lowlight)"
                               " (p=0.90), written unchanged")
    assert forced["type"] == "lowlight" and forced["hue_p90"] < 1e-4
    assert forced["hue_p90_low_pass"] < 1e-4
    assert forced["luma_after"] == pytest.approx(1.5 * forced["luma_before"], rel=1e-5)
    assert bench.verdicts(forced) == {"hue median <= 3 deg": True, "hue p90 <= 8 deg": True}
    only_auto, _ = bench.measure_photo(CleanPipeline(), "lowlight/x", dark, steps=2,
                                       forced_too=False)
    assert [r["mode"] for r in only_auto] == ["auto"]
    noisy_rows, _ = bench.measure_photo(CleanPipeline(), "noisy/y", colours.astype(np.float32),
                                        steps=2)
    assert noisy_rows[0]["low_pass_psnr"] == float("inf")
    assert noisy_rows[0]["noise_after"] == noisy_rows[0]["noise_before"]


def test_larger_photos_are_cropped_to_their_centre(bench, tmp_path):
    path = tmp_path / "big.png"
    pixels = np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    small = bench.load_photo(path, 30_000)
    h, w = small.shape[:2]
    assert small.shape[2] == 3 and h * w <= 30_000
    assert w / h == pytest.approx(4 / 3, rel=0.02)
    top, left = (300 - h) // 2, (400 - w) // 2
    np.testing.assert_array_equal(np.round(255 * small).astype(np.uint8),
                                  pixels[top : top + h, left : left + w])
    assert bench.load_photo(path, 10**6).shape == (300, 400, 3)
