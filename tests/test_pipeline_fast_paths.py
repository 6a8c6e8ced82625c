"""The pipeline's opt-in fast paths (network dtype, torch.compile) and its plain-module
support: faithful to the float32 pipeline, compiled once, no false warnings."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler, MRUNet2DModel
from diffusers_mrs.metrics import psnr


class PlainNetwork(torch.nn.Module):
    """Any module with the ``unet(sample, timestep, mu)`` call signature (no diffusers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, sample, timestep, mu):
        return (self.conv(torch.cat([sample - mu, mu], dim=1)) * 0.1,)


def tiny_pipeline(dtype: torch.dtype = torch.float32) -> MRRestorationPipeline:
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=8, depth=2, attention_head_dim=8).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)
    scheduler = MRSamplerScheduler(prediction_type="sample", max_sigma=10 / 255)
    pipe = MRRestorationPipeline(unet=unet.to(dtype), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def restore(pipe: MRRestorationPipeline, image: torch.Tensor, **kwargs) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return pipe(
        image=image, num_inference_steps=4, generator=generator, output_type="pt", **kwargs
    ).images


def test_plain_module_network_runs():
    pipe = MRRestorationPipeline(unet=PlainNetwork(), scheduler=MRSamplerScheduler())
    pipe.set_progress_bar_config(disable=True)
    out = restore(pipe, torch.rand(3, 12, 10))
    assert out.shape == (1, 3, 12, 10)
    assert pipe._execution_device == torch.device("cpu")


def test_half_precision_network_keeps_a_float32_sampler():
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1))
    reference = restore(tiny_pipeline(), image)
    pipe = tiny_pipeline(torch.bfloat16)
    seen = []

    def record(pipe, i, t, tensors):
        seen.append(tensors["latents"].dtype)
        return tensors

    out = restore(pipe, image, callback_on_step_end=record)
    assert set(seen) == {torch.float32}
    assert out.dtype == torch.float32
    assert min(psnr(out, reference)) >= 40.0


def _diffusers_model_warnings() -> tuple[logging.Handler, list[str]]:
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect()
    logging.getLogger("diffusers.models.modeling_utils").addHandler(handler)
    return handler, messages


def test_dtype_options_do_not_warn():
    handler, messages = _diffusers_model_warnings()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe = MRRestorationPipeline.from_pretrained(torch_dtype=torch.bfloat16)
            pipe.to(torch.float16)
    finally:
        logging.getLogger("diffusers.models.modeling_utils").removeHandler(handler)
    assert pipe.unet.dtype == torch.float16
    assert not [m for m in messages if "kept in float32" in m]
    assert not [w for w in caught if "torch_dtype" in str(w.message)]


def test_keep_in_fp32_warning_kept_when_modules_are_listed():
    handler, messages = _diffusers_model_warnings()
    unet = MRUNet2DModel(nf=4, depth=1, attention_head_dim=4)
    unet._keep_in_fp32_modules = ["conv_out"]
    try:
        unet.to(torch.bfloat16)
    finally:
        logging.getLogger("diffusers.models.modeling_utils").removeHandler(handler)
    assert [m for m in messages if "kept in float32: ['conv_out']" in m]


def test_compile_once_for_every_step_and_image():
    compilations = []

    def counting_backend(graph_module, example_inputs):
        compilations.append(len(example_inputs))
        return graph_module.forward

    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    reference = restore(tiny_pipeline(), image)
    pipe = tiny_pipeline()
    torch._dynamo.reset()
    pipe.enable_compile(backend=counting_backend)
    pipe.enable_compile(backend=counting_backend)  # a second call changes nothing
    first = restore(pipe, image)
    restore(pipe, image.flip(-1))
    assert len(compilations) == 1  # 2 images x 4 steps, one graph
    torch.testing.assert_close(first, reference, atol=1e-5, rtol=0)
    # A new shape compiles once more, with dynamic shapes that serve later sizes too.
    generators = [torch.Generator().manual_seed(0) for _ in range(2)]
    second = pipe(
        image=[image, image.flip(-1)], num_inference_steps=4, generator=generators, output_type="pt"
    ).images
    restore(pipe, [image] * 3)
    assert len(compilations) == 2
    torch.testing.assert_close(second[:1], reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("return_dict", [True, False])
def test_step_result_does_not_depend_on_return_dict(return_dict):
    sched = MRSamplerScheduler(prediction_type="sample")
    sched.set_timesteps(3)
    x, mu = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    outs = []
    for rd in (return_dict, not return_dict):
        sched.set_timesteps(3)
        generator = torch.Generator().manual_seed(0)
        out = sched.step(mu, sched.timesteps[0], x, mu=mu, generator=generator, return_dict=rd)
        outs.append(out.prev_sample if rd else out[0])
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


def test_cli_accepts_dtype_and_compile():
    from diffusers_mrs.cli import build_parser

    args = build_parser().parse_args(
        ["restore", "in.png", "--output", "out", "--dtype", "bfloat16", "--compile"]
    )
    assert args.dtype == "bfloat16" and args.compile
    assert not build_parser().parse_args(["restore", "in.png", "--output", "out"]).compile
    padded = ["restore", "in.png", "-o", "o", "--compile-pad-multiple"]
    assert build_parser().parse_args([*padded, "64"]).compile_pad_multiple == 64
    with pytest.raises(SystemExit):
        build_parser().parse_args([*padded, "0"])


def test_cli_compile_pad_multiple_compiles_once_for_two_sizes(tmp_path, monkeypatch):
    """``--compile-pad-multiple`` (implies ``--compile``) reaches ``enable_compile``: two
    images of different sizes in one bucket run one graph (a counting backend stands in
    for inductor) and are written at their own sizes."""
    from PIL import Image

    from diffusers_mrs.cli import main

    from helpers import fresh_accelerate_state, save_tiny_pipeline

    compilations: list = []
    enable = MRRestorationPipeline.enable_compile

    def counting(self, pad_to_multiple=None, **kwargs):
        enable(self, pad_to_multiple=pad_to_multiple, backend=_counting_backend(compilations))

    monkeypatch.setattr(MRRestorationPipeline, "enable_compile", counting)
    model = save_tiny_pipeline(tmp_path / "model")
    sizes = {"a.png": (13, 14), "b.png": (16, 9)}
    for name, (h, w) in sizes.items():
        Image.new("RGB", (w, h), (90, 120, 200)).save(tmp_path / name)
    args = ["restore", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o",
            str(tmp_path / "out"), "--model", str(model), "--steps", "2", "-q",
            "--compile-pad-multiple", "16"]  # fmt: skip
    torch._dynamo.reset()
    for _ in fresh_accelerate_state():
        assert main(args) == 0
    assert len(compilations) == 1
    for name, (h, w) in sizes.items():
        assert Image.open(tmp_path / "out" / name).size == (w, h)


def _counting_backend(compilations: list) -> object:
    def backend(graph_module, example_inputs):
        compilations.append(tuple(t.shape for t in example_inputs if hasattr(t, "shape")))
        return graph_module.forward

    return backend


def test_compile_pad_to_network_multiple_is_one_graph_and_exact():
    """Padded to the network's own multiple (4 for depth 2), images of two sizes in one
    bucket (13x14, 15x16 -> 16x16) run one compiled graph, and the result is the eager
    unpadded pipeline's: the network reflect-pads to that multiple itself and crops back,
    and reflection commutes with its input ``x - mu``."""
    images = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in
              ((13, 14), (15, 16))]  # fmt: skip
    references = [restore(tiny_pipeline(), image) for image in images]
    padded: list = []  # unpadded, each size compiles (test_compile_once_for_every_step...)
    torch._dynamo.reset()
    pipe = tiny_pipeline()
    pipe.enable_compile(pad_to_multiple=4, backend=_counting_backend(padded))
    assert pipe.compile_pad_multiple == 4
    outs = [restore(pipe, image) for image in images]
    assert len(padded) == 1
    for out, reference, image in zip(outs, references, images, strict=True):
        assert out.shape[-2:] == image.shape[-2:]
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_compile_pad_multiple_rounds_to_the_network_and_crops():
    """``pad_to_multiple=6`` on a network that pads to 4 pads to 12: 9x10 and 12x7 share a
    graph; an image already 12x12 is not padded, so it equals the eager pipeline."""
    pipe = tiny_pipeline()
    compilations: list = []
    torch._dynamo.reset()
    pipe.enable_compile(pad_to_multiple=6, backend=_counting_backend(compilations))
    assert pipe.compile_pad_multiple == 12
    square = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(restore(pipe, square), restore(tiny_pipeline(), square),
                               atol=1e-5, rtol=0)  # fmt: skip
    for h, w in ((9, 10), (12, 7)):
        out = restore(pipe, torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)))
        assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()
    assert len(compilations) == 1
    assert pipe._padded_mu is None  # the padded mu is not kept after the call


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-8, ValueError), (2.5, TypeError),
                                        (True, TypeError)])  # fmt: skip
def test_compile_pad_multiple_is_checked_before_compiling(bad, error):
    pipe = tiny_pipeline()
    with pytest.raises(error, match="pad_to_multiple"):
        pipe.enable_compile(pad_to_multiple=bad)
    assert getattr(pipe.unet, "_compiled_call_impl", None) is None
    assert pipe.compile_pad_multiple == 1
