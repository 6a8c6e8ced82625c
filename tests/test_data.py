"""Tests of diffusers_mrs.data: degradations, bundled photos, datasets."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_mrs.data import (
    BUNDLED_PHOTO_NAMES,
    DEGRADATION_KINDS,
    TRAIN_PHOTO_NAMES,
    VAL_PHOTO_NAMES,
    DegradedPatchDataset,
    PairedFolderDataset,
    bundled_photos,
    degrade,
    gaussian_blur,
    load_bundled_photo,
    sample_degradation_params,
)


def _smooth_image(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [0.5 + 0.3 * np.sin(xx / 7.0), 0.5 + 0.3 * np.cos(yy / 5.0), 0.2 + 0.6 * xx / w], axis=2
    )
    return img.astype(np.float32)


def test_noise_nominal_std_and_clipping() -> None:
    gray = np.full((128, 128, 3), 0.5, dtype=np.float32)
    out = degrade(gray, "noise", np.random.default_rng(0), randomize=False)
    assert out.dtype == np.float32 and out.shape == gray.shape
    resid = out - gray  # at 0.5 with std 0.098 clipping is (almost) never active
    assert abs(resid.std() - 25 / 255) < 0.03 * 25 / 255
    assert abs(resid.mean()) < 2e-3
    white = degrade(np.ones((32, 32, 3), np.float32), "noise", 0, randomize=False)
    assert white.max() <= 1.0 and white.min() >= 0.0


def test_randomized_parameters_in_range() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        assert 15 / 255 <= sample_degradation_params("noise", rng)["std"] <= 35 / 255
        assert 1.2 <= sample_degradation_params("blur", rng)["std"] <= 2.8
        assert 10 <= sample_degradation_params("jpeg", rng)["quality"] <= 25
        ll = sample_degradation_params("lowlight", rng)
        assert 0.2 <= ll["gain"] <= 0.4 and 1.2 <= ll["gamma"] <= 1.8
    assert sample_degradation_params("blur", rng, randomize=False) == {"std": 2.0}
    with pytest.raises(ValueError):
        sample_degradation_params("rain", rng)


def test_blur_matches_reference_gaussian_filter() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    img = np.random.default_rng(0).random((40, 52, 3)).astype(np.float32)
    out = degrade(img, "blur", 0, randomize=False)
    ref = ndimage.gaussian_filter(img.astype(np.float64), (2.0, 2.0, 0), mode="reflect")
    np.testing.assert_allclose(out, ref, atol=1e-6)
    tiny = np.random.default_rng(1).random((5, 4, 3))  # kernel wider than the image
    ref_tiny = ndimage.gaussian_filter(tiny, (2.5, 2.5, 0), mode="reflect")
    np.testing.assert_allclose(gaussian_blur(tiny, 2.5), ref_tiny, atol=1e-12)


def test_lowlight_formula() -> None:
    img = _smooth_image()
    out = degrade(img, "lowlight", np.random.default_rng(3), randomize=False)
    noise = np.random.default_rng(3).normal(0.0, 3 / 255, size=img.shape)
    ref = np.clip(0.3 * img.astype(np.float64) ** 1.5 + noise, 0, 1)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_jpeg_is_lossy_but_close_and_matches_pil() -> None:
    img = _smooth_image()
    out = degrade(img, "jpeg", 0, randomize=False)
    assert not np.allclose(out, img, atol=1 / 255)
    mse = float(np.mean((out - img) ** 2))
    assert -10 * np.log10(mse) > 25.0
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=15)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")) / 255.0
    np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("kind", DEGRADATION_KINDS)
def test_determinism_and_torch_layout(kind: str) -> None:
    img = _smooth_image()
    a = degrade(img, kind, np.random.default_rng(7))
    b = degrade(img, kind, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    c = degrade(img, kind, np.random.default_rng(8))
    assert not np.array_equal(a, c)  # other noise or other jittered parameters
    t = torch.from_numpy(img).permute(2, 0, 1)
    tt = degrade(t, kind, np.random.default_rng(7))
    assert isinstance(tt, torch.Tensor) and tt.shape == t.shape and tt.dtype == t.dtype
    np.testing.assert_allclose(tt.permute(1, 2, 0).numpy(), a, atol=1e-6)
    batch = degrade(torch.stack([t, t]), kind, 0)
    assert batch.shape == (2, *t.shape)


def test_split_is_disjoint_and_photos_load() -> None:
    assert set(TRAIN_PHOTO_NAMES).isdisjoint(VAL_PHOTO_NAMES)
    assert set(TRAIN_PHOTO_NAMES) | set(VAL_PHOTO_NAMES) == set(BUNDLED_PHOTO_NAMES)
    assert len(VAL_PHOTO_NAMES) == 3 and len(BUNDLED_PHOTO_NAMES) == 11
    val = bundled_photos("val")
    assert list(val) == list(VAL_PHOTO_NAMES)
    for img in val.values():
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
        assert img.min() >= 0.0 and img.max() <= 1.0 and img.shape[0] >= 256
    assert load_bundled_photo("motorcycle_right").shape[2] == 3
    with pytest.raises(ValueError):
        bundled_photos("test")


def test_degraded_patch_dataset() -> None:
    imgs = [_smooth_image(40, 50), _smooth_image(20, 20)]  # the second needs padding
    ds = DegradedPatchDataset(imgs, patch_size=24, length=10, seed=5)
    assert len(ds) == 10
    lq, gt = ds[3]
    assert lq.shape == gt.shape == (3, 24, 24) and lq.dtype == torch.float32
    lq2, gt2 = ds[3]
    assert torch.equal(lq, lq2) and torch.equal(gt, gt2)
    kinds = {ds.sample(i)[2] for i in range(10)}
    assert kinds <= set(DEGRADATION_KINDS) and len(kinds) > 1
    ds.set_epoch(1)
    assert not torch.equal(ds[3][1], gt)
    fixed = DegradedPatchDataset(imgs, patch_size=16, kinds="noise", length=4)
    assert {fixed.sample(i)[2] for i in range(4)} == {"noise"}
    with pytest.raises(ValueError):
        DegradedPatchDataset(imgs, kinds=("snow",))
    # listing a kind twice draws it twice as often (a stated prior over degradations)
    weighted = DegradedPatchDataset(imgs, patch_size=8, kinds=("noise", "jpeg", "jpeg"), length=600)
    share = sum(weighted.sample(i)[2] == "jpeg" for i in range(600)) / 600
    assert share == pytest.approx(2 / 3, abs=0.06)


def _write_png(path: Path, h: int, w: int, seed: int) -> None:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def test_paired_folder_dataset(tmp_path: Path) -> None:
    for sub in ("LQ", "GT"):
        (tmp_path / sub).mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        _write_png(tmp_path / "LQ" / name, 20, 24, i)
        _write_png(tmp_path / "GT" / name, 20, 24, 10 + i)
    ds = PairedFolderDataset(tmp_path)
    assert len(ds) == 3 and ds.names == ["a.png", "b.png", "c.png"]
    lq, gt = ds[1]
    assert lq.shape == gt.shape == (3, 20, 24) and lq.dtype == torch.float32
    ref = np.asarray(Image.open(tmp_path / "GT" / "b.png"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(gt.permute(1, 2, 0).numpy(), ref)
    crops = PairedFolderDataset(tmp_path, patch_size=8, augment=True)
    lq_c, gt_c = crops[0]
    assert lq_c.shape == gt_c.shape == (3, 8, 8)


def test_paired_folder_mismatch_errors(tmp_path: Path) -> None:
    for sub in ("LQ", "GT"):
        (tmp_path / sub).mkdir()
    _write_png(tmp_path / "LQ" / "a.png", 8, 8, 0)
    _write_png(tmp_path / "GT" / "a.png", 8, 8, 1)
    _write_png(tmp_path / "LQ" / "only_lq.png", 8, 8, 2)
    with pytest.raises(ValueError, match=r"only_lq\.png"):
        PairedFolderDataset(tmp_path)
    (tmp_path / "LQ" / "only_lq.png").unlink()
    _write_png(tmp_path / "LQ" / "b.png", 8, 8, 3)
    _write_png(tmp_path / "GT" / "b.png", 9, 8, 4)
    ds = PairedFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="size mismatch"):
        ds[1]
    with pytest.raises(FileNotFoundError):
        PairedFolderDataset(tmp_path / "nowhere")
