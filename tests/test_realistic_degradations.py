"""Statistical properties of the realistic low-light and noise degradations."""

from __future__ import annotations

import numpy as np
import pytest

from diffusers_mrs.data import DegradedPatchDataset, degrade
from diffusers_mrs.training.realistic_degradations import (
    LOWLIGHT_RANGES,
    NOISE_RANGES,
    NOMINAL_REALISTIC_PARAMS,
    degrade_realistic,
    sample_realistic_params,
)

#: Variance of rounding to 8 bits when the noise spans many levels (a uniform error of 1 LSB).
QUANTISATION_VAR = 1.0 / (12 * 255.0**2)


def _flat(level: float, size: int = 200) -> np.ndarray:
    return np.full((size, size, 3), level, dtype=np.float64)


def _is_8bit(image: np.ndarray) -> bool:
    return bool(np.allclose(image * 255.0, np.round(image * 255.0), atol=1e-4))


def test_lowlight_noise_variance_follows_the_poisson_gaussian_model() -> None:
    """Var[y | d] = a d + b: fit a line through the variance at several darkened levels."""
    a, read_std = 2e-3, 5.0 / 255.0
    params = {"gain": 0.5, "gamma": 1.0, "color_gain": (1.0, 1.0, 1.0), "shot_noise": a,
              "read_std": read_std}
    levels = np.array([0.1, 0.3, 0.6, 0.9])
    dark = 0.5 * levels
    means, variances = [], []
    for i, x in enumerate(levels):
        out = degrade_realistic(_flat(x), "lowlight", np.random.default_rng(i), params=params)
        means.append(out.mean())
        variances.append(out.var())
    slope, intercept = np.polyfit(dark, variances, 1)
    assert slope == pytest.approx(a, rel=0.03)
    assert intercept == pytest.approx(read_std**2 + QUANTISATION_VAR, rel=0.08)
    # unbiased: E[y | d] = d (std of the mean ~ 1e-4 here)
    np.testing.assert_allclose(means, dark, atol=5e-4)


def test_lowlight_without_noise_is_gain_colour_and_gamma_then_8_bits() -> None:
    x = np.random.default_rng(0).uniform(size=(16, 16, 3))
    gains = (0.9, 1.0, 1.2)
    params = {"gain": 0.3, "gamma": 1.6, "color_gain": gains, "shot_noise": 0.0, "read_std": 0.0}
    out = degrade_realistic(x, "lowlight", 0, params=params)
    for c in range(3):
        expected = np.round(255 * np.clip(0.3 * gains[c] * x[..., c] ** 1.6, 0, 1)) / 255
        np.testing.assert_allclose(out[..., c], expected, atol=1e-6)


def test_gaussian_noise_has_its_std_and_is_8_bit() -> None:
    std = 20.0 / 255.0
    out = degrade_realistic(_flat(0.5), "noise", 3, params={"std": std, "jpeg_quality": 0})
    assert out.std() == pytest.approx(np.sqrt(std**2 + QUANTISATION_VAR), rel=0.01)
    assert out.mean() == pytest.approx(0.5, abs=1e-3)
    assert _is_8bit(out)


def test_jpeg_compresses_the_8_bit_noisy_image() -> None:
    x = np.random.default_rng(1).uniform(size=(32, 32, 3)) * 0.5 + 0.25
    plain = degrade_realistic(x, "noise", 5, params={"std": 0.05, "jpeg_quality": 0})
    jpeg = degrade_realistic(x, "noise", 5, params={"std": 0.05, "jpeg_quality": 90})
    assert _is_8bit(jpeg) and not np.array_equal(jpeg, plain)
    np.testing.assert_array_equal(jpeg, degrade(plain, "jpeg", params={"quality": 90}))


@pytest.mark.parametrize("kind", ["lowlight", "noise"])
def test_outputs_are_8_bit_levels_in_range(kind: str) -> None:
    x = np.random.default_rng(2).uniform(size=(24, 24, 3)).astype(np.float32)
    for seed in range(20):
        out = degrade_realistic(x, kind, seed)
        assert out.dtype == np.float32 and out.shape == x.shape
        assert out.min() >= 0 and out.max() <= 1 and _is_8bit(out)


def test_drawn_parameters_stay_in_their_ranges_and_cover_them() -> None:
    rng = np.random.default_rng(0)
    low = [sample_realistic_params("lowlight", rng) for _ in range(2000)]
    for key in ("gain", "gamma", "shot_noise", "read_std"):
        values = np.array([p[key] for p in low])
        lo, hi = LOWLIGHT_RANGES[key]
        assert values.min() >= lo and values.max() <= hi
        assert values.min() < lo + 0.05 * (hi - lo) and values.max() > hi - 0.05 * (hi - lo)
    gains = np.array([p["color_gain"] for p in low])
    lo, hi = LOWLIGHT_RANGES["color_gain"]
    assert gains.shape == (2000, 3) and gains.min() >= lo and gains.max() <= hi
    # log-uniform: the median of the log is the middle of the log range
    assert np.median(np.log(gains)) == pytest.approx(0.5 * np.log(lo * hi), abs=0.02)
    # each channel is drawn independently
    assert abs(np.corrcoef(np.log(gains).T)[0, 1]) < 0.1

    noisy = [sample_realistic_params("noise", rng) for _ in range(2000)]
    stds = np.array([p["std"] for p in noisy])
    assert stds.min() >= 5 / 255 and stds.max() <= 50 / 255 and stds.max() > 48 / 255
    qualities = np.array([p["jpeg_quality"] for p in noisy])
    with_jpeg = qualities[qualities > 0]
    assert len(with_jpeg) / 2000 == pytest.approx(NOISE_RANGES["jpeg_probability"], abs=0.04)
    assert set(with_jpeg) == set(range(75, 96))


def test_deterministic_for_a_seed_and_nominal_without_randomize() -> None:
    x = np.random.default_rng(4).uniform(size=(16, 16, 3))
    for kind in ("lowlight", "noise"):
        a, b = degrade_realistic(x, kind, 7), degrade_realistic(x, kind, 7)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, degrade_realistic(x, kind, 8))
        nominal = degrade_realistic(x, kind, 9, randomize=False)
        explicit = degrade_realistic(x, kind, 9, params=NOMINAL_REALISTIC_PARAMS[kind])
        np.testing.assert_array_equal(nominal, explicit)


@pytest.mark.parametrize("kind", ["blur", "jpeg", "clean"])
def test_other_kinds_are_the_synthetic_ones(kind: str) -> None:
    x = np.random.default_rng(5).uniform(size=(20, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(degrade_realistic(x, kind, 3), degrade(x, kind, 3))


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="unknown degradation kind 'rain'"):
        degrade_realistic(np.zeros((4, 4, 3)), "rain")
    with pytest.raises(ValueError, match="H x W x 3"):
        degrade_realistic(np.zeros((4, 4)), "noise")
    with pytest.raises(ValueError, match="kind must be one of"):
        sample_realistic_params("blur")


def test_patch_dataset_takes_uint8_images_and_a_degrader() -> None:
    u8 = np.random.default_rng(6).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    kw = {"patch_size": 16, "kinds": ("lowlight", "noise"), "length": 6, "seed": 1}
    as_u8 = DegradedPatchDataset([u8], degrader=degrade_realistic, **kw)
    as_float = DegradedPatchDataset([u8.astype(np.float32) / 255], degrader=degrade_realistic,
                                    **kw)
    for i in range(len(as_u8)):
        lq, gt, kind = as_u8.sample(i)
        lq_f, gt_f, kind_f = as_float.sample(i)
        assert kind == kind_f
        np.testing.assert_array_equal(gt.numpy(), gt_f.numpy())
        np.testing.assert_array_equal(lq.numpy(), lq_f.numpy())
        assert _is_8bit(lq.numpy()) and _is_8bit(gt.numpy())


def test_range_overrides_replace_only_their_entry() -> None:
    """``ranges={"color_gain": (1, 1)}``: low light without a colour cast, the other
    parameters still drawn from their default ranges; an unknown name is refused."""
    for seed in range(20):
        p = sample_realistic_params("lowlight", seed, ranges={"color_gain": (1.0, 1.0)})
        assert p["color_gain"] == pytest.approx((1.0, 1.0, 1.0))
        assert LOWLIGHT_RANGES["gain"][0] <= p["gain"] <= LOWLIGHT_RANGES["gain"][1]
    flat = _flat(0.5, 64)
    no_noise = {"shot_noise": (1e-12, 1e-12), "read_std": (1e-12, 1e-12),
                "color_gain": (1.0, 1.0)}
    out = degrade_realistic(flat, "lowlight", 3, ranges=no_noise)
    assert np.ptp(out.reshape(-1, 3).mean(axis=0)) == 0.0  # equal channels: no cast
    with pytest.raises(ValueError, match="colour_gain"):
        sample_realistic_params("lowlight", 0, ranges={"colour_gain": (1.0, 1.0)})


def test_training_images_pass_the_ranges_to_the_degrader(tmp_path) -> None:
    from diffusers_mrs.training.photo_data import training_images

    with pytest.raises(ValueError, match="photos only"):
        training_images("bundled", {"color_gain": (1.0, 1.0)})
    with pytest.raises(ValueError, match="gamma_range"):
        training_images(f"photos:{tmp_path}", {"gamma_range": (1.0, 1.0)})


def test_training_images_degrade_with_the_replaced_ranges(monkeypatch) -> None:
    """The run's degrader draws from the replaced ranges (here: no cast, no sensor noise),
    and without replacements it is the realistic model itself."""
    from diffusers_mrs.training import photo_data

    monkeypatch.setattr(photo_data, "load_photos", lambda *a, **k: {"p": np.zeros((8, 8, 3))})
    assert photo_data.training_images("photos")[1] is degrade_realistic
    quiet = {"color_gain": (1.0, 1.0), "shot_noise": (1e-12, 1e-12), "read_std": (1e-12, 1e-12)}
    _, degrader = photo_data.training_images("photos", quiet)
    for seed in range(5):
        out = degrader(_flat(0.5, 16), "lowlight", seed)
        assert np.ptp(out) == 0.0  # one level on every channel: no cast, no noise
