"""MRRestorationPipeline: inputs, outputs, seeds, validation, schedulers, saving (tiling:
test_pipeline_tiling.py).

The tiny random network gets a conv_out bias of 0.5 and the scheduler predicts the sample,
so restorations stay inside (0, 1) (no clamping that would hide differences).
"""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_mrs import (
    MREulerMaruyamaScheduler,
    MRPosteriorScheduler,
    MRRestorationPipeline,
    MRSamplerScheduler,
    MRUNet2DModel,
    pipeline_folder,
)
from diffusers_mrs.noise_schedule import MRNoiseSchedule
from diffusers_mrs.pipelines import pipeline_mr_restoration as pipeline_module

from helpers import tiny_pipeline

H, W = 37, 29  # odd sizes on purpose
STEPS = 2


def tiny_unet() -> MRUNet2DModel:
    """:func:`helpers.tiny_pipeline`'s network: tiny, random, its sample predictions around
    0.5 (random conv_out weights, so that the output depends on the input)."""
    return tiny_pipeline().unet.eval()


@pytest.fixture(scope="module")
def unet() -> MRUNet2DModel:
    return tiny_unet()


@pytest.fixture()
def pipe(unet: MRUNet2DModel) -> MRRestorationPipeline:
    pipe = MRRestorationPipeline(unet=unet, scheduler=MRSamplerScheduler(prediction_type="sample"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """A float HWC test image in [0, 1]."""
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class CallCounter:
    """Counts forward calls of a module (to prove validation happens before sampling)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *args: object) -> None:
        self.calls += 1


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_output_types_and_odd_size(pipe: MRRestorationPipeline, output_type: str) -> None:
    images = pipe(
        image(), num_inference_steps=STEPS, generator=gen(), output_type=output_type
    ).images
    if output_type == "pil":
        assert len(images) == 1 and isinstance(images[0], PIL.Image.Image)
        assert images[0].size == (W, H) and images[0].mode == "RGB"
    elif output_type == "np":
        assert isinstance(images, np.ndarray) and images.shape == (1, H, W, 3)
        assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1
    else:
        assert isinstance(images, torch.Tensor) and images.shape == (1, 3, H, W)
        assert images.min() >= 0 and images.max() <= 1


def test_batch_of_same_size(pipe: MRRestorationPipeline) -> None:
    batch = [image(seed=1), image(seed=2), image(seed=3)]
    out = pipe(batch, num_inference_steps=STEPS, generator=gen(), output_type="np").images
    assert out.shape == (3, H, W, 3)
    as_tensor = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)  # BCHW
    out_pt = pipe(as_tensor, num_inference_steps=STEPS, generator=gen(), output_type="pt").images
    assert out_pt.shape == (3, 3, H, W)
    np.testing.assert_allclose(out_pt.permute(0, 2, 3, 1).numpy(), out, atol=1e-6)
    out_pil = pipe(batch, num_inference_steps=STEPS, output_type="pil").images
    assert [im.size for im in out_pil] == [(W, H)] * 3
    out_tuple = pipe(batch[:1], num_inference_steps=STEPS, output_type="pt", return_dict=False)
    assert isinstance(out_tuple, tuple) and out_tuple[0].shape == (1, 3, H, W)


def test_mixed_sizes_keep_order(pipe: MRRestorationPipeline) -> None:
    a, b, c = image(seed=1), image(20, 24, seed=2), image(seed=3)
    out = pipe([a, b, c], num_inference_steps=STEPS, output_type="np").images
    assert isinstance(out, list) and [o.shape for o in out] == [(H, W, 3), (20, 24, 3), (H, W, 3)]
    out_pt = pipe([a, b, c], num_inference_steps=STEPS, output_type="pt").images
    assert [tuple(o.shape) for o in out_pt] == [(3, H, W), (3, 20, 24), (3, H, W)]
    pil = pipe([b, a], num_inference_steps=STEPS).images
    assert [im.size for im in pil] == [(24, 20), (W, H)]


def test_input_kinds_are_converted(pipe: MRRestorationPipeline) -> None:
    rgb = (image() * 255).round().astype(np.uint8)
    pil_rgb = PIL.Image.fromarray(rgb)
    # The same pixels as PIL RGB/RGBA, uint8 and float numpy, uint8 torch CHW and RGBA numpy
    # give the same result (one batch, one generator per image, all with the same seed).
    same = [
        pil_rgb,
        rgb,
        rgb.astype(np.float32) / 255,
        torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
        pil_rgb.convert("RGBA"),
        np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], axis=-1),
    ]
    out = pipe(
        same, num_inference_steps=STEPS, generator=[gen() for _ in same], output_type="np"
    ).images
    assert out.shape == (len(same), H, W, 3)
    for k in range(1, len(same)):
        np.testing.assert_allclose(out[k], out[0], atol=1e-5)
    # Grayscale inputs become RGB (three equal channels go into the network).
    gray = [
        pil_rgb.convert("L"),
        np.asarray(pil_rgb.convert("L")),
        torch.rand(1, H, W),
        torch.rand(H, W),
        np.random.default_rng(0).random((H, W, 1)).astype(np.float32),
        PIL.Image.fromarray((np.arange(H * W).reshape(H, W) * 50).astype(np.uint16)),
    ]
    out = pipe(gray, num_inference_steps=STEPS, output_type="pt").images
    assert out.shape == (len(gray), 3, H, W)


def test_prepare_images_values() -> None:
    u16 = PIL.Image.fromarray(np.full((4, 5), 65535, np.uint16))
    (t,) = pipeline_module.prepare_images(u16)
    assert t.shape == (3, 4, 5) and torch.allclose(t, torch.ones_like(t))
    (t,) = pipeline_module.prepare_images(np.full((4, 5, 3), 255, np.uint8))
    assert torch.allclose(t, torch.ones_like(t))
    assert len(pipeline_module.prepare_images(torch.rand(2, 3, 4, 5))) == 2
    (t,) = pipeline_module.prepare_images(np.ones((4, 5, 3), np.float32), channels=1)
    assert t.shape == (1, 4, 5) and torch.allclose(t, torch.ones_like(t), atol=1e-6)


# ----------------------------------------------------------------------------- reproducibility
def test_generator_reproducibility(pipe: MRRestorationPipeline) -> None:
    x = image()
    first = pipe(x, num_inference_steps=3, generator=gen(7), output_type="pt").images
    again = pipe(x, num_inference_steps=3, generator=gen(7), output_type="pt").images
    other = pipe(x, num_inference_steps=3, generator=gen(8), output_type="pt").images
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_generator_list_is_per_image(pipe: MRRestorationPipeline) -> None:
    a, b = image(seed=1), image(seed=2)
    pair = pipe([a, b], num_inference_steps=3, generator=[gen(1), gen(2)], output_type="pt").images
    single_b = pipe([b], num_inference_steps=3, generator=[gen(2)], output_type="pt").images
    swapped = pipe(
        [b, a], num_inference_steps=3, generator=[gen(2), gen(1)], output_type="pt"
    ).images
    # Image b's result depends only on its own generator, not on its batch or position.
    torch.testing.assert_close(pair[1], single_b[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(pair[1], swapped[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(pair[0], swapped[1], atol=1e-5, rtol=0)
    # Mixed sizes: generators follow their images.
    c = image(20, 24, seed=3)
    mixed = pipe([c, b], num_inference_steps=3, generator=[gen(3), gen(2)], output_type="pt").images
    torch.testing.assert_close(mixed[1], single_b[0], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": []}, "empty list"),
        ({"image": None}, "must be given"),
        ({"image": np.zeros((H, W, 2), np.float32)}, "2 channels"),
        ({"image": torch.zeros(5, H, W)}, "5 channels"),
        ({"image": np.zeros((3, 8, 9), np.float32)}, "HWC"),
        ({"image": np.zeros((2, 3, 4, 5, 6), np.float32)}, "shape"),
        ({"image": np.zeros((H, W, 3), np.int32)}, "dtype"),
        ({"image": "picture.png"}, "cannot read 'picture.png'"),  # paths are read (image_io)
        ({"image": 3}, "unsupported type"),
        ({"image": np.zeros((0, W, 3), np.float32)}, "empty"),
        ({"image": np.full((H, W, 3), np.nan, np.float32)}, "NaN"),
        ({"image": [image(), torch.full((3, H, W), math.inf)]}, r"image\[1\] contains NaN or inf"),
        ({"generator": [gen(1)] * 2}, "2 generators for 1 images"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": -3}, "num_inference_steps"),
        ({"num_inference_steps": 2.5}, "num_inference_steps"),
        ({"num_inference_steps": True}, "num_inference_steps"),
        ({"output_type": "jpg"}, "output_type"),
        ({"tile_size": 16, "tile_overlap": 16}, "smaller than"),
        ({"tile_size": 0}, "positive"),
        ({"tile_size": 16, "tile_batch_size": 0}, "tile_batch_size"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "callback_on_step_end_tensor_inputs"),
    ],
)
def test_bad_inputs_raise_before_sampling(
    pipe: MRRestorationPipeline, kwargs: dict, message: str
) -> None:
    call = {"image": image(), "num_inference_steps": STEPS, **kwargs}
    counter = CallCounter(pipe.unet)
    try:
        with pytest.raises(ValueError, match=message):
            pipe(**call)
    finally:
        counter.handle.remove()
    assert counter.calls == 0


def test_num_inference_steps_above_baseline_grid(pipe: MRRestorationPipeline) -> None:
    pipe.scheduler = MRPosteriorScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(image(), num_inference_steps=101)


# ----------------------------------------------------------------------------- schedulers
@pytest.mark.parametrize("scheduler_cls", [MRPosteriorScheduler, MREulerMaruyamaScheduler])
def test_scheduler_swap(pipe: MRRestorationPipeline, scheduler_cls: type) -> None:
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    assert isinstance(pipe.scheduler, scheduler_cls)
    assert tuple(pipe.config["scheduler"]) == ("diffusers_mrs", scheduler_cls.__name__)
    out = pipe(image(), num_inference_steps=3, generator=gen(), output_type="pt").images
    assert out.shape == (1, 3, H, W) and torch.isfinite(out).all()
    # ... and back to the MR Sampler.
    pipe.scheduler = MRSamplerScheduler.from_config(pipe.scheduler.config)
    assert tuple(pipe.config["scheduler"]) == ("diffusers_mrs", "MRSamplerScheduler")


def documented_baseline(kind: str, unet: MRUNet2DModel, mu: torch.Tensor, steps: int, seed: int,
                        config) -> torch.Tensor:
    """The baselines of docs/math.md#baselines written out (IR-SDE step mode: every visit of
    ``int(linspace(1, T, N))`` moves one grid step t -> t - 1), for a network predicting x_0,
    with alpha, sigma and theta from the scheduler config's noise schedule."""
    sched = MRNoiseSchedule.from_config(
        config.num_train_timesteps, config.theta_schedule, config.trained_thetas,
        config.max_sigma, config.eps,
    )  # fmt: skip
    ms, alpha, sigma = config.max_sigma, sched.alpha, sched.sigma
    visits = np.linspace(1, config.num_train_timesteps, steps).astype(np.int64)[::-1]
    g = gen(seed)
    x = mu + float(sigma(visits[0])) * torch.randn(mu.shape, generator=g)
    for t in visits.tolist():
        x0 = unet(x, torch.full((mu.shape[0],), float(t)), mu=mu).sample
        y, y0, s = x - mu, x0 - mu, t - 1
        if kind == "posterior":
            A, B, C = float(alpha(t) / alpha(s)), float(alpha(t)), float(alpha(s))
            mean = A * (1 - C**2) / (1 - B**2) * y + C * (1 - A**2) / (1 - B**2) * y0
            std = ms * math.sqrt((1 - A**2) * (1 - C**2) / (1 - B**2))
        else:  # Euler-Maruyama on the reverse SDE with the score -eps / sigma_t
            theta, delta = float(sched.thetas[t]), sched.dt * (t - s)
            g2 = 2 * ms**2 * theta
            eps = (y - float(alpha(t)) * y0) / float(sigma(t))
            mean = (1 + theta * delta) * y - g2 * delta / float(sigma(t)) * eps
            std = math.sqrt(g2 * delta)
        x = mu + mean + std * torch.randn(mu.shape, generator=g)
    return x.clamp(0.0, 1.0)


@pytest.mark.parametrize(
    ("scheduler_cls", "kind"),
    [(MRPosteriorScheduler, "posterior"), (MREulerMaruyamaScheduler, "euler_maruyama")],
)
def test_swapped_scheduler_gives_the_documented_baseline(
    pipe: MRRestorationPipeline, unet: MRUNet2DModel, scheduler_cls: type, kind: str
) -> None:
    """``from_config`` swaps keep the schedule: the pipeline then returns exactly what the
    baseline's documented update gives with the same network and generator."""
    config = pipe.scheduler.config
    pipe.scheduler = scheduler_cls.from_config(config)
    x = image(20, 24, seed=7)
    out = pipe(x, num_inference_steps=4, generator=gen(3), output_type="pt").images
    mu = torch.from_numpy(x).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = documented_baseline(kind, unet, mu, 4, 3, config)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert float((out - mu).abs().mean()) > 1e-2  # the sampler moved away from its input


def test_scheduler_without_mu_argument(unet: MRUNet2DModel) -> None:
    """A scheduler whose step takes no ``mu`` is called without it."""

    class NoMu(MRSamplerScheduler):
        def step(self, model_output, timestep, sample, generator=None, return_dict=True):  # type: ignore[override]
            return super().step(
                model_output,
                timestep,
                sample,
                mu=None,
                generator=generator,
                return_dict=return_dict,
            )

    pipe = MRRestorationPipeline(unet=unet, scheduler=NoMu())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(image(), num_inference_steps=2, output_type="pt").images
    assert out.shape == (1, 3, H, W)


def test_callback_on_step_end(pipe: MRRestorationPipeline) -> None:
    seen: list[tuple[int, float, tuple[int, ...]]] = []

    def callback(p, i, t, kwargs):
        seen.append((i, float(t), tuple(kwargs["latents"].shape)))
        assert set(kwargs) == {"latents", "mu"}
        return {"latents": kwargs["mu"]}  # the last step's replacement is the output

    out = pipe(
        image(),
        num_inference_steps=3,
        output_type="pt",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "mu"],
    ).images
    assert [s[0] for s in seen] == [0, 1, 2]
    assert all(s[2] == (1, 3, H, W) for s in seen)
    assert [s[1] for s in seen] == pipe.scheduler.timesteps.tolist()
    expected = torch.from_numpy(image()).permute(2, 0, 1)[None].clamp(0, 1)
    torch.testing.assert_close(out, expected)

    def interrupt(p, i, t, kwargs):
        p._interrupt = True
        return {}

    counter = CallCounter(pipe.unet)
    pipe(image(), num_inference_steps=3, callback_on_step_end=interrupt)
    counter.handle.remove()
    assert counter.calls == 1


def test_dtype_and_offload_conventions(unet: MRUNet2DModel) -> None:
    assert MRRestorationPipeline.model_cpu_offload_seq == "degradation_encoder->image_encoder->unet"
    pipe64 = MRRestorationPipeline(
        unet=tiny_unet().to(torch.float64), scheduler=MRSamplerScheduler(prediction_type="sample")
    )
    pipe64.set_progress_bar_config(disable=True)
    seen = {}

    def callback(p, i, t, kwargs):
        seen["dtype"] = kwargs["latents"].dtype
        return {}

    out = pipe64(image(), num_inference_steps=2, output_type="pt", callback_on_step_end=callback)
    assert seen["dtype"] == torch.float64
    assert out.images.dtype == torch.float32  # outputs are float32 whatever the network dtype


# ----------------------------------------------------------------------------- saving / loading
def test_save_load_round_trip(pipe: MRRestorationPipeline, tmp_path) -> None:
    pipe.scheduler = MRSamplerScheduler.from_config(pipe.scheduler.config, solver_order=3)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "MRRestorationPipeline"
    assert index["unet"] == ["diffusers_mrs", "MRUNet2DModel"]
    assert index["scheduler"] == ["diffusers_mrs", "MRSamplerScheduler"]
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    loaded = MRRestorationPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.unet, MRUNet2DModel)
    assert isinstance(loaded.scheduler, MRSamplerScheduler)
    assert loaded.scheduler.config.solver_order == 3
    a = pipe(image(), num_inference_steps=3, generator=gen(), output_type="pt").images
    b = loaded(image(), num_inference_steps=3, generator=gen(), output_type="pt").images
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_default_model(monkeypatch, pipe: MRRestorationPipeline, tmp_path) -> None:
    missing = tmp_path / "missing"
    monkeypatch.setattr(pipeline_folder, "default_model_path", lambda: missing)
    with pytest.raises(FileNotFoundError, match="default model is not installed"):
        MRRestorationPipeline.from_pretrained()
    pipe.save_pretrained(tmp_path / "default")
    monkeypatch.setattr(pipeline_folder, "default_model_path", lambda: tmp_path / "default")
    loaded = MRRestorationPipeline.from_pretrained()
    assert isinstance(loaded.unet, MRUNet2DModel)


def test_shipped_default_model_if_present() -> None:
    path = pipeline_module.default_model_path()
    assert path.name == "default_model" and path.parent.name == "diffusers_mrs"
    pipe = MRRestorationPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    out = pipe(image(16, 16), num_inference_steps=2, output_type="pt").images
    assert out.shape == (1, 3, 16, 16)


def test_from_pretrained_bad_paths(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="No such pipeline folder"):
        MRRestorationPipeline.from_pretrained(str(tmp_path / "nope" / "deeper"))
    with pytest.raises(FileNotFoundError, match="No such pipeline folder"):
        MRRestorationPipeline.from_pretrained("./not-here")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(ValueError, match="is a file"):
        MRRestorationPipeline.from_pretrained(tmp_path / "file.json")


# ----------------------------------------------------------------------------- layering
def test_pipeline_never_imports_hub() -> None:
    """Hub publishing depends on the pipeline, never the other way round."""
    import subprocess
    import sys

    code = (
        "import sys, diffusers_mrs.pipelines; "
        "print(sorted(m for m in sys.modules if m == 'diffusers_mrs.hub'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    assert out.stdout.strip() == "[]"
