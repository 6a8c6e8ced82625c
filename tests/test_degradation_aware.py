"""Degradation-aware pipelines: ``degradation=`` (detected or forced), the reported type and
probabilities, ``supported_degradations``, saving/loading, and the CLI's ``--degradation``.

The encoder is :func:`helpers.rule_based_encoder`: its head is set by hand to a rule on the
image's mean ``m`` and standard deviation ``s``, so the expected probabilities are computed
here from the pixels alone (:func:`expected_probabilities`), not by the encoder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_mrs import (
    MRDegradationEncoder,
    MREulerMaruyamaScheduler,
    MRPosteriorScheduler,
    MRRestorationPipeline,
    MRSamplerScheduler,
)
from diffusers_mrs.cli import main
from diffusers_mrs.cli import restore as cli

from helpers import (
    TINY_TYPES,
    fresh_accelerate_state,
    save_tiny_pipeline,
    tiny_degradation_aware_pipeline,
    tiny_pipeline,
)

TYPES = list(TINY_TYPES)


def noisy(h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 0.3 * torch.randn(3, h, w, generator=g)).clamp(0, 1)


def dark(h: int = 16, w: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.05 + 0.01 * torch.rand(3, h, w, generator=g)


def smooth(h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.linspace(0.4, 0.6, w).expand(3, h, w).clone()


def expected_probabilities(image: torch.Tensor) -> torch.Tensor:
    """The rule of :func:`helpers.rule_based_encoder`, from the pixels: softmax of
    ``(4 g(10 s), 10 - 4 g(10 m), 6)``, ``m``/``s`` the channel-averaged mean and std."""
    flat = image.double().flatten(1)
    m, s = flat.mean(1).mean(), flat.std(1).mean()
    gelu = torch.nn.functional.gelu
    logits = torch.stack([4 * gelu(10 * s), 10 - 4 * gelu(10 * m), torch.tensor(6.0).double()])
    return torch.softmax(logits, 0)


class ContextSpy:
    """Records the ``degradation_context`` (and batch size) of every network call."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[tuple[int, torch.Tensor]] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append((args[0].shape[0], kwargs["degradation_context"].detach().clone()))

    def close(self) -> None:
        self.handle.remove()


def embeddings(pipe: MRRestorationPipeline) -> torch.Tensor:
    return pipe.degradation_encoder.type_embeddings.detach()


# ----------------------------------------------------------------------------- the pipeline
def test_supported_degradations_are_the_encoder_types_without_clean():
    assert tiny_degradation_aware_pipeline().supported_degradations == ["noise", "lowlight"]
    assert tiny_pipeline().supported_degradations is None


def test_forced_type_hands_the_network_exactly_its_type_embedding():
    pipe = tiny_degradation_aware_pipeline()
    spy = ContextSpy(pipe.unet)
    image = noisy()
    out = pipe(image, num_inference_steps=3, degradation="lowlight",
               generator=torch.Generator().manual_seed(0))
    spy.close()
    assert len(spy.calls) == 3
    for batch, context in spy.calls:
        assert batch == 1 and torch.equal(context[0], embeddings(pipe)[TYPES.index("lowlight")])
    # reported: the forced type, with the encoder's own (low) probability of it
    expected = expected_probabilities(image)
    assert out.degradation == ["lowlight"]
    assert out.degradation_probability[0] == pytest.approx(float(expected[1]), abs=1e-5)
    assert out.degradation_probability[0] < 0.1  # the encoder sees noise
    assert out.degradation_probabilities[0] == pytest.approx(
        dict(zip(TYPES, expected.tolist(), strict=True)), abs=1e-5)


def test_auto_context_is_the_probability_weighted_mix_of_type_embeddings():
    pipe = tiny_degradation_aware_pipeline()
    spy = ContextSpy(pipe.unet)
    images = [noisy(), dark(), smooth()]
    out = pipe(images, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    spy.close()
    assert out.degradation == ["noise", "lowlight", "clean"]
    probs = torch.tensor([[d[t] for t in TYPES] for d in out.degradation_probabilities])
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-6)
    expected = torch.stack([expected_probabilities(img) for img in images]).float()
    assert torch.allclose(probs, expected, atol=1e-5)
    assert out.degradation_probability == pytest.approx(expected.max(1).values.tolist(),
                                                        abs=1e-5)
    mix = probs @ embeddings(pipe)
    assert len(spy.calls) == 2
    for batch, context in spy.calls:
        assert batch == 3 and torch.allclose(context, mix, atol=1e-6)


def test_mixed_size_batch_reports_in_input_order_detected_and_forced():
    pipe = tiny_degradation_aware_pipeline()
    images = [noisy(16, 16), dark(24, 16), smooth(16, 16), dark(16, 16, seed=3)]
    auto = pipe(images, num_inference_steps=1, output_type="np")
    assert auto.degradation == ["noise", "lowlight", "clean", "lowlight"]
    assert [a.shape for a in auto.images] == [(16, 16, 3), (24, 16, 3), (16, 16, 3), (16, 16, 3)]
    for img, p in zip(images, auto.degradation_probability, strict=True):
        assert p == pytest.approx(float(expected_probabilities(img).max()), abs=1e-5)

    forced = ["clean", None, "noise", "auto"]
    spy = ContextSpy(pipe.unet)
    out = pipe(images, num_inference_steps=1, output_type="np", degradation=forced)
    spy.close()
    assert out.degradation == ["clean", "lowlight", "noise", "lowlight"]
    assert out.degradation_probability[0] == pytest.approx(
        float(expected_probabilities(images[0])[2]), abs=1e-5)
    assert len(out.degradation_probabilities) == len(auto.degradation_probabilities)
    for got, want in zip(out.degradation_probabilities, auto.degradation_probabilities,
                         strict=True):
        assert got == pytest.approx(want)
    # size groups in order of first appearance: images (0, 2, 3), then image 1
    emb = embeddings(pipe)
    first, second = spy.calls[0][1], spy.calls[1][1]
    assert torch.equal(first[0], emb[2]) and torch.equal(first[1], emb[0])
    mix = lambda img: expected_probabilities(img).float() @ emb  # noqa: E731
    assert torch.allclose(first[2], mix(images[3]), atol=1e-5)
    assert torch.allclose(second[0], mix(images[1]), atol=1e-5)


def test_ensembles_and_tiles_give_every_row_the_context_of_its_image():
    pipe = tiny_degradation_aware_pipeline()
    spy = ContextSpy(pipe.unet)
    images = [noisy(32, 32), dark(32, 32)]
    k = 2
    out = pipe(images, num_inference_steps=2, num_samples=k, tile_size=16, tile_overlap=4,
               tile_batch_size=3, degradation=["lowlight", "noise"], output_type="pt")
    spy.close()
    assert out.degradation == ["lowlight", "noise"]
    assert out.uncertainty.shape == out.images.shape == (2, 3, 32, 32)
    emb = embeddings(pipe)
    per_image = [emb[1], emb[0]]
    assert len(spy.calls) > 2  # several tile batches per step
    for batch, context in spy.calls:
        assert batch % (len(images) * k) == 0
        for row in range(batch):  # tiles position-major, samples i*K + k within a tile
            image = (row % (len(images) * k)) // k
            assert torch.equal(context[row], per_image[image])


@pytest.mark.parametrize(
    ("scheduler_cls", "output_type"),
    [(MRSamplerScheduler, "pil"), (MRPosteriorScheduler, "np"), (MREulerMaruyamaScheduler, "pt")],
)
def test_every_scheduler_and_output_type(scheduler_cls, output_type):
    pipe = tiny_degradation_aware_pipeline()
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    spy = ContextSpy(pipe.unet)
    out = pipe([noisy(), dark()], num_inference_steps=2, output_type=output_type,
               degradation="noise", generator=torch.Generator().manual_seed(0))
    spy.close()
    assert out.degradation == ["noise", "noise"]
    assert len(out.images) == 2
    assert all(torch.equal(c, embeddings(pipe)[[0, 0]]) for _, c in spy.calls)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_pipeline_gets_the_type_embedding_in_its_dtype(dtype):
    pipe = tiny_degradation_aware_pipeline()
    pipe.to(dtype=dtype)
    spy = ContextSpy(pipe.unet)
    out = pipe([noisy(), dark()], num_inference_steps=1, output_type="pt",
               degradation=["lowlight", None])
    spy.close()
    assert out.degradation == ["lowlight", "lowlight"] and torch.isfinite(out.images).all()
    (_, context), = spy.calls
    assert context.dtype == dtype and torch.equal(context[0], embeddings(pipe)[1])


def test_forcing_a_type_changes_the_restoration():
    pipe = tiny_degradation_aware_pipeline()
    runs = {
        d: pipe(noisy(), num_inference_steps=2, degradation=d, output_type="pt",
                generator=torch.Generator().manual_seed(0)).images
        for d in ("noise", "lowlight")
    }
    assert not torch.equal(runs["noise"], runs["lowlight"])  # the context reaches the output


def test_save_and_load_keep_the_degradation_encoder(tmp_path: Path):
    pipe = tiny_degradation_aware_pipeline()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["degradation_encoder"] == ["diffusers_mrs", "MRDegradationEncoder"]
    loaded = MRRestorationPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.degradation_encoder, MRDegradationEncoder)
    assert loaded.supported_degradations == ["noise", "lowlight"]
    for key, value in pipe.degradation_encoder.state_dict().items():
        assert torch.equal(loaded.degradation_encoder.state_dict()[key], value)
    args = {"num_inference_steps": 2, "output_type": "pt"}
    a = pipe(dark(), generator=torch.Generator().manual_seed(0), **args)
    b = loaded(dark(), generator=torch.Generator().manual_seed(0), **args)
    assert (a.images - b.images).abs().max() < 1e-5, (a.images - b.images).abs().max()
    assert a.degradation == b.degradation == ["lowlight"]
    assert a.degradation_probabilities == b.degradation_probabilities


def test_bad_degradation_arguments_fail_before_any_network_work():
    pipe = tiny_degradation_aware_pipeline()
    calls = []
    hooks = [m.register_forward_pre_hook(lambda *a: calls.append(1))
             for m in (pipe.unet, pipe.degradation_encoder)]
    with pytest.raises(ValueError, match=r"unknown degradation 'blur'.*'noise', 'lowlight'"):
        pipe(noisy(), degradation="blur")
    with pytest.raises(ValueError, match="unknown degradation 'jpeg'"):
        pipe([noisy(), dark()], degradation=["noise", "jpeg"])
    with pytest.raises(ValueError, match="got 1 degradation types for 2 image"):
        pipe([noisy(), dark()], degradation=["noise"])
    with pytest.raises(ValueError, match="must be None, 'auto'"):
        pipe(noisy(), degradation=3)
    with pytest.raises(ValueError, match="at least 8 x 8"):
        pipe(noisy(7, 16))
    for hook in hooks:
        hook.remove()
    assert calls == []


def test_a_pipeline_without_encoder_refuses_a_type_and_reports_none():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="not degradation-aware"):
        pipe(noisy(), degradation="noise")
    out = pipe(noisy(), num_inference_steps=1, degradation="auto")
    assert out.degradation is None and out.degradation_probability is None
    assert out.degradation_probabilities is None
    assert len(pipe(noisy(), num_inference_steps=1, return_dict=False)) == 1


def test_a_pipeline_takes_one_kind_of_encoder():
    pipe = tiny_degradation_aware_pipeline()
    with pytest.raises(ValueError, match="not both"):
        MRRestorationPipeline(pipe.unet, pipe.scheduler, image_encoder=torch.nn.Identity(),
                              feature_extractor=object(),
                              degradation_encoder=pipe.degradation_encoder)


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield from fresh_accelerate_state()


@pytest.fixture(scope="module")
def aware_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("aware")
    tiny_degradation_aware_pipeline().save_pretrained(path)
    return path


def save_png(path: Path, image: torch.Tensor) -> Path:
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    save_png(folder / "a_noise.png", noisy())
    save_png(folder / "b_dark.png", dark())
    return folder


def test_cli_prints_the_detected_degradation(aware_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["restore", str(inputs), "-o", str(out), "--model", str(aware_dir),
                 "--steps", "1", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert re.fullmatch(r".*a_noise\.png: noise \(p=0\.9\d\)", lines[0]), lines
    assert re.fullmatch(r".*b_dark\.png: lowlight \(p=0\.\d\d\)", lines[1]), lines
    assert "restored 2 image(s)" in captured.err
    assert "(degradation: 1 lowlight, 1 noise)" in captured.err
    assert sorted(p.name for p in out.glob("*.png")) == ["a_noise.png", "b_dark.png"]


def test_cli_says_no_supported_degradation_rather_than_clean(aware_dir, tmp_path, capsys):
    """An image in which the model finds none of its types is not called "clean": the line
    names the types it looked for, and the image is written unchanged."""
    source = save_png(tmp_path / "c_smooth.png", smooth(24, 24))
    code = main(["restore", str(source), "-o", str(tmp_path / "out"), "--model",
                 str(aware_dir), "--steps", "1", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    supported = ", ".join(t for t in TYPES if t != "clean")
    assert captured.out.strip().endswith(
        f"c_smooth.png: no supported degradation found ({supported}) (p="
        f"{float(expected_probabilities(smooth(24, 24))[TYPES.index('clean')]):.2f}),"
        " written unchanged"), captured.out
    assert "(degradation: 1 none found)" in captured.err


def test_degradation_label_is_shared_by_the_cli_and_the_demo():
    from diffusers_mrs.demo import Restoration, degradation_text
    from diffusers_mrs.restore_settings import degradation_label

    types = ["noise", "lowlight", "clean"]
    assert degradation_label("clean", False, types) == (
        "no supported degradation found (noise, lowlight)")
    assert degradation_label("clean", True, types) == "clean"  # the user's own choice
    assert degradation_label("noise", False, types) == "noise"
    run = Restoration(image=None, uncertainty=None, seconds=1.0, nfe=10,
                      degradation={"noise": 0.1, "lowlight": 0.1, "clean": 0.8},
                      degradation_name="clean")
    assert degradation_text(run, forced=False) == (
        " - degradation: **no supported degradation found (noise, lowlight)** (p = 0.80)")


def test_cli_forces_a_degradation(aware_dir, inputs, tmp_path, capsys):
    code = main(["restore", str(inputs / "a_noise.png"), "-o", str(tmp_path / "out"),
                 "--model", str(aware_dir), "--steps", "1", "--degradation", "clean", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert re.fullmatch(r".*a_noise\.png: clean \(forced, p=0\.0\d\), written unchanged\n",
                        captured.out)
    assert "(forced degradation: 1 clean)" in captured.err
    written = np.asarray(Image.open(tmp_path / "out" / "a_noise.png"))
    assert np.array_equal(written, np.asarray(Image.open(inputs / "a_noise.png")))
    code = main(["restore", str(inputs / "a_noise.png"), "-o", str(tmp_path / "sampled"),
                 "--model", str(aware_dir), "--steps", "1", "--degradation", "clean",
                 "--sample-clean", "-q"])
    assert code == 0 and "written unchanged" not in capsys.readouterr().out
    sampled = np.asarray(Image.open(tmp_path / "sampled" / "a_noise.png"))
    assert not np.array_equal(sampled, written)


def one_error_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and captured.out == "", captured
    return err[0]


def test_cli_rejects_a_bad_degradation_before_loading(aware_dir, inputs, tmp_path, capsys,
                                                      monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(cli, "load_pipeline", no_load)
    out = tmp_path / "out"
    line = one_error_line(["restore", str(inputs), "-o", str(out), "--model", str(aware_dir),
                           "--degradation", "blur"], capsys)
    assert "--degradation blur" in line and "noise, lowlight, clean" in line
    plain = save_tiny_pipeline(tmp_path / "plain")
    line = one_error_line(["restore", str(inputs), "-o", str(out), "--model", str(plain),
                           "--degradation", "noise"], capsys)
    assert "not degradation-aware" in line
    assert not out.exists()


def test_cli_checks_a_repo_model_right_after_loading(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_pipeline", lambda *args, **kwargs: tiny_pipeline())
    out = tmp_path / "out"
    line = one_error_line(["restore", str(inputs), "-o", str(out), "--model", "owner/model",
                           "--degradation", "noise"], capsys)
    assert "not degradation-aware" in line
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []


def test_clean_images_are_returned_unchanged_unless_keep_clean_is_off() -> None:
    pipe = tiny_degradation_aware_pipeline()
    calls = []
    pipe.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    images = torch.rand(3, 3, 16, 16) * 0.2 + 0.4
    out = pipe(image=images, num_inference_steps=3, degradation="clean", num_samples=2,
               output_type="pt")
    assert torch.equal(out.images, images) and calls == [] and pipe.num_timesteps == 0
    assert torch.equal(out.uncertainty, torch.zeros_like(images))
    # mixed batch: the clean image is its input, the other one is sampled
    out = pipe(image=images[:2], num_inference_steps=3, degradation=["noise", "clean"],
               output_type="pt")
    assert torch.equal(out.images[1], images[1]) and not torch.equal(out.images[0], images[0])
    assert calls == [2, 2, 2]
    sampled = pipe(image=images[:1], num_inference_steps=3, degradation="clean",
                   keep_clean=False, output_type="pt").images
    assert not torch.equal(sampled, images[:1]) and len(calls) == 6


def test_detect_degradation_takes_what_the_pipeline_takes(tmp_path: Path) -> None:
    """A path, a PIL image, a numpy array and a tensor of the same 8-bit pixels give the same
    estimate, and it is the encoder's rule on those pixels (it used to take only tensors)."""
    pipe = tiny_degradation_aware_pipeline()
    pixels = (noisy(16, 24).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    as_tensor = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    kinds = {"path": str(tmp_path / "photo.png"), "pathlib": tmp_path / "photo.png",
             "pil": Image.fromarray(pixels), "numpy": pixels, "torch": as_tensor}
    estimates = {kind: pipe.detect_degradation(image) for kind, image in kinds.items()}
    expected = expected_probabilities(as_tensor).float()
    for kind, estimate in estimates.items():
        assert estimate.names == ["noise"], kind
        torch.testing.assert_close(estimate.probabilities[0], expected, atol=1e-5, rtol=0)
        assert torch.equal(estimate.probabilities, estimates["torch"].probabilities), kind
        assert torch.equal(estimate.context, estimates["torch"].context), kind
    forced = pipe.detect_degradation(str(tmp_path / "photo.png"), degradation="lowlight")
    assert forced.names == ["lowlight"]
    assert torch.equal(forced.context[0], embeddings(pipe)[TYPES.index("lowlight")])


def test_detect_degradation_of_mixed_sizes_keeps_the_input_order() -> None:
    pipe = tiny_degradation_aware_pipeline()
    images = [noisy(16, 16), dark(24, 16), smooth(16, 16)]
    together = pipe.detect_degradation(images, degradation=[None, None, "noise"])
    assert together.names == ["noise", "lowlight", "noise"]
    for k, img in enumerate(images):
        alone = pipe.detect_degradation(img, degradation=[None, None, "noise"][k])
        assert torch.equal(together.probabilities[k], alone.probabilities[0])
        assert torch.equal(together.context[k], alone.context[0])
    expected = torch.stack([expected_probabilities(img) for img in images]).float()
    torch.testing.assert_close(together.probabilities, expected, atol=1e-5, rtol=0)


def test_detect_degradation_checks_its_input_like_the_pipeline() -> None:
    pipe = tiny_degradation_aware_pipeline()
    with pytest.raises(ValueError, match="at least 8 x 8"):
        pipe.detect_degradation(noisy(7, 16))
    with pytest.raises(ValueError, match="unknown degradation 'blur'"):
        pipe.detect_degradation(noisy(), degradation="blur")
    with pytest.raises(ValueError, match="divide by 255"):
        pipe.detect_degradation(np.full((16, 16, 3), 200.0, np.float32))
    assert tiny_pipeline().detect_degradation(noisy()) is None
