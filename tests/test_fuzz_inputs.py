"""Random inputs: the reader, the pipeline and the schedulers either give a finite result of
the right shape or raise a documented exception (``ValueError``, incl. ``ImageInputError``,
or ``TypeError``) from this package's own code: never a crash deep in numpy/torch/PIL, never
NaN."""

from __future__ import annotations

import math
import traceback
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusers_mrs import (
    MREulerMaruyamaScheduler,
    MRPosteriorScheduler,
    MRRestorationPipeline,
    MRSamplerScheduler,
)
from diffusers_mrs import image_io as io

from helpers import tiny_pipeline

FAST = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
DOCUMENTED = (ValueError, TypeError)
OUR_CODE = ("/diffusers_mrs/", "/pipelines/")


def raised_by_us(err: BaseException) -> bool:
    """Whether the innermost frame that raised ``err`` belongs to this package."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in OUR_CODE)


def expect_clear_error_or(check, run) -> None:
    try:
        result = run()
    except DOCUMENTED as err:
        assert raised_by_us(err), f"{type(err).__name__} from outside: {err!r}"
        assert str(err), "an exception without a message"
        return
    check(result)


# ----------------------------------------------------------------------------- the reader
MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
         "LAB", "HSV", "I;16", "I;16B", "I", "F"]  # fmt: skip


@FAST
@given(
    mode=st.sampled_from(MODES),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    data=st.binary(min_size=0, max_size=9 * 9 * 4),
)
def test_reader_on_random_pil_images(mode: str, h: int, w: int, data: bytes) -> None:
    size = len(PIL.Image.new(mode, (w, h)).tobytes())
    img = PIL.Image.frombytes(mode, (w, h), (data * (size // max(len(data), 1) + 1))[:size]
                              if data else bytes(size))

    def check(decoded: io.DecodedImage) -> None:
        px = decoded.pixels
        assert px.dtype == np.float32 and px.shape[:2] == (h, w) and px.shape[2] in (1, 3)
        assert np.isfinite(px).all()
        assert px.min() >= io.FLOAT_RANGE[0] and px.max() <= io.FLOAT_RANGE[1]
        assert decoded.alpha is None or decoded.alpha.shape == (h, w)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", io.ImageFormatWarning)
        expect_clear_error_or(check, lambda: io.decode_pil(img))


@settings(max_examples=10, deadline=None, derandomize=True)
@given(mode=st.sampled_from(["L", "LA", "RGB", "RGBA", "I;16", "P"]), seed=st.integers(0, 99))
def test_written_file_reads_back_in_its_format(mode: str, seed: int, tmp_path_factory) -> None:
    folder: Path = tmp_path_factory.mktemp("rw")
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = PIL.Image.fromarray(rng.integers(0, 65536, (5, 7)).astype(np.uint16))
    else:
        img = PIL.Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).convert(mode)
    img.save(folder / "in.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", io.ImageFormatWarning)
        first = io.read_image(folder / "in.png")
    io.write_image(folder / "out.png", first.rgb(), first)
    again = io.read_image(folder / "out.png")
    assert again.bit_depth == first.bit_depth and again.grayscale == first.grayscale
    np.testing.assert_allclose(again.pixels, first.pixels, atol=0.5 / 255 + 1e-6)
    if first.alpha is not None:
        np.testing.assert_array_equal(again.alpha, first.alpha)


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def tiny_pipe() -> MRRestorationPipeline:
    return tiny_pipeline(nf=4, depth=1, head_dim=4, biased_output=False)


DTYPES = ["uint8", "uint16", "int32", "bool", "float16", "float32", "float64"]
RANGES = {"unit": 1.0, "byte": 255.0, "huge": 3e38, "tiny": 1e-30, "negative": -2.0}


def random_array(shape: tuple[int, ...], dtype: str, scale: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.random(shape) * RANGES[scale]
    if dtype in ("uint8", "uint16", "int32"):
        info = np.iinfo(dtype)
        return np.clip(values * info.max, info.min, info.max).astype(dtype)
    if dtype == "bool":
        return values > 0.5 * RANGES[scale]
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def expected_hw(arr: np.ndarray, as_tensor: bool) -> list[tuple[int, int]]:
    if arr.ndim == 2:
        return [arr.shape]
    hw = arr.shape[-2:] if as_tensor else arr.shape[-3:-1]
    return [tuple(hw)] * (arr.shape[0] if arr.ndim == 4 else 1)


@st.composite
def image_shapes(draw, as_tensor: bool) -> tuple[int, ...]:
    """Mostly valid layouts (HW, HWC/CHW, BHWC/BCHW), sometimes odd channels, 0 or 5 dims."""
    side = st.one_of(st.integers(1, 9), st.just(0))
    h, w = draw(side), draw(side)
    c = draw(st.sampled_from([1, 3, 3, 4, 2, 5]))
    b = draw(st.integers(1, 2))
    hwc = (c, h, w) if as_tensor else (h, w, c)
    return draw(st.sampled_from([(h, w), hwc, (b, *hwc), (b, b, *hwc), (h,)]))


@FAST
@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    scale=st.sampled_from(sorted(RANGES)),
    as_tensor=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pipeline_on_random_arrays(
    tiny_pipe: MRRestorationPipeline,
    data: st.DataObject,
    dtype: str,
    scale: str,
    as_tensor: bool,
    seed: int,
) -> None:
    arr = random_array(data.draw(image_shapes(as_tensor)), dtype, scale, seed)
    image = torch.from_numpy(arr) if as_tensor else arr

    def check(images: np.ndarray) -> None:
        if arr.dtype.kind == "f" and arr.size:  # the float rule: [-0.5, 1.5] or refused
            assert io.FLOAT_RANGE[0] <= arr.min() and arr.max() <= io.FLOAT_RANGE[1]
        assert arr.dtype != np.int32, "int32 images have no agreed scale"
        want = expected_hw(arr, as_tensor)
        assert images.shape == (len(want), *want[0], 3)
        assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1

    run = lambda: tiny_pipe(  # noqa: E731
        image, num_inference_steps=1, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", io.ImageFormatWarning)
        expect_clear_error_or(check, run)


# ----------------------------------------------------------------------------- schedulers
ODD_FLOATS = st.one_of(
    st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e-300, 1e300]),
    st.floats(1e-3, 10.0),
)
COMMON = {
    "num_train_timesteps": st.one_of(st.integers(-2, 300), st.just(10.5), st.just(True)),
    "max_sigma": ODD_FLOATS,
    "eps": ODD_FLOATS,
    "prediction_type": st.sampled_from(["epsilon", "sample", "v_prediction", "x0"]),
    "theta_schedule": st.sampled_from(["cosine", "linear", "constant", "exp"]),
}
SAMPLER_ONLY = {
    "algorithm_type": st.sampled_from(["sde", "ode", "sde-dpmsolver++"]),
    "parameterization": st.sampled_from(["data", "noise"]),
    "solver_order": st.integers(0, 4),
    "timestep_spacing": st.sampled_from(["linspace", "leading", "trailing", "karras",
                                         "karras_time", "logsnr", "uniform"]),
    "rho": ODD_FLOATS,
    "lambda_min": ODD_FLOATS,
    "final_sigmas_type": st.sampled_from(["sigma_min", "zero", "none"]),
    "thresholding": st.booleans(),
}


@st.composite
def scheduler_configs(draw):
    cls = draw(st.sampled_from([MRSamplerScheduler, MRPosteriorScheduler,
                                MREulerMaruyamaScheduler]))
    names = dict(COMMON, **(SAMPLER_ONLY if cls is MRSamplerScheduler else {}))
    chosen = draw(st.lists(st.sampled_from(sorted(names)), unique=True, max_size=4))
    return cls, {k: draw(names[k]) for k in chosen}


@FAST
@given(config=scheduler_configs(), steps=st.integers(1, 12), seed=st.integers(0, 99))
def test_schedulers_on_random_configs(config, steps: int, seed: int) -> None:
    cls, kwargs = config

    def run() -> torch.Tensor:
        scheduler = cls(**kwargs)
        scheduler.set_timesteps(steps)
        gen = torch.Generator().manual_seed(seed)
        mu = torch.rand(1, 3, 4, 4, generator=gen)
        x = mu + scheduler.init_noise_sigma * torch.randn(1, 3, 4, 4, generator=gen)
        for t in scheduler.timesteps:
            out = 0.1 * torch.randn(1, 3, 4, 4, generator=gen)
            x = scheduler.step(out, t, x, mu=mu, generator=gen).prev_sample
        return x

    def check(x: torch.Tensor) -> None:
        assert x.shape == (1, 3, 4, 4) and bool(torch.isfinite(x).all()), (cls.__name__, kwargs)

    expect_clear_error_or(check, run)

