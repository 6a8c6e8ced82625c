"""Shared test helpers: tiny random pipelines, accelerate-state cleanup, fixture files."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import torch
from accelerate import PartialState
from safetensors import safe_open
from safetensors.torch import load_file

from diffusers_mrs import (
    MRDegradationEncoder,
    MRRestorationPipeline,
    MRSamplerScheduler,
    MRUNet2DModel,
)

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_pipeline(
    nf: int = 8, depth: int = 2, head_dim: int = 8, biased_output: bool = True
) -> MRRestorationPipeline:
    """A seeded tiny random pipeline (sample prediction, progress bar off).

    ``biased_output`` sets small output weights and a 0.5 bias, so the network's output is a
    plausible mid-grey image rather than arbitrary values.
    """
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=nf, depth=depth, attention_heads=1, attention_head_dim=head_dim)
    if biased_output:
        with torch.no_grad():
            unet.conv_out.weight.normal_(0.0, 0.05)
            unet.conv_out.bias.fill_(0.5)
    pipe = MRRestorationPipeline(unet=unet, scheduler=MRSamplerScheduler(prediction_type="sample"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


#: The types of :func:`tiny_degradation_aware_pipeline` (its encoder's logit order).
TINY_TYPES = ("noise", "lowlight", "clean")


def rule_based_encoder(context_dim: int = 8) -> MRDegradationEncoder:
    """A tiny :class:`MRDegradationEncoder` whose head is set by hand to a known rule on the
    image's own statistics (``m`` its mean, ``s`` its standard deviation, both averaged over
    the channels): logits ``(4 g(10 s), 10 - 4 g(10 m), 6)`` for (noise, lowlight, clean),
    ``g`` = GELU. So a noisy mid-grey image (s ~ 0.3) is "noise", a dark image (m ~ 0.05)
    "lowlight" and a smooth mid-grey one "clean", each with probability > 0.9; the type
    embeddings stay random."""
    torch.manual_seed(1)
    encoder = MRDegradationEncoder(degradations=list(TINY_TYPES), context_dim=context_dim, width=4)
    first, second = encoder.head[0], encoder.head[2]
    with torch.no_grad():
        for layer in (first, second):
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0, 0:3] = 10.0 / 3  # 10 m   (pooled[:, 0:3]: channel means)
        first.weight[1, 3:6] = 10.0 / 3  # 10 s   (pooled[:, 3:6]: channel stds)
        second.weight[0, 1] = 4.0  # noise
        second.weight[1, 0], second.bias[1] = -4.0, 10.0  # lowlight
        second.bias[2] = 6.0  # clean
    return encoder


def tiny_degradation_aware_pipeline(context_dim: int = 8) -> MRRestorationPipeline:
    """A seeded tiny degradation-aware pipeline: a U-Net with a degradation context (random
    prompt, so the context changes its output) and :func:`rule_based_encoder`."""
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=8, depth=2, attention_heads=1, attention_head_dim=8,
                         use_degra_context=True, context_dim=context_dim)
    with torch.no_grad():
        unet.conv_out.weight.normal_(0.0, 0.05)
        unet.conv_out.bias.fill_(0.5)
    pipe = MRRestorationPipeline(
        unet=unet, scheduler=MRSamplerScheduler(prediction_type="sample"),
        degradation_encoder=rule_based_encoder(context_dim),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(path: Path, biased_output: bool = True) -> Path:
    """Saves ``tiny_pipeline(biased_output=...)`` to ``path`` (a pipeline folder)."""
    tiny_pipeline(biased_output=biased_output).save_pretrained(path)
    return path


def save_random_image(path: Path, h: int = 8, w: int = 8, seed: int = 0) -> Path:
    """A seeded random 8-bit RGB image file at ``path`` (its folder created)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@contextlib.contextmanager
def onednn_disabled() -> Iterator[None]:
    """Tiny convolutions: oneDNN's per-shape kernel set-up costs far more than the maths."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def fresh_accelerate_state() -> Iterator[None]:
    """Fixture body: the CLI creates accelerate's PartialState singleton; drop it if ours."""
    was_initialized = bool(PartialState._shared_state)
    yield
    if not was_initialized:
        PartialState._reset_state()


def load_checkpoint_fixture(path: Path, prefix: str) -> tuple[dict, dict, dict]:
    """A generated fixture file split into (original state dict, other tensors, metadata).

    Tensors named ``<prefix>...`` are the original network's (prefix removed, as float32);
    the rest are the recorded inputs and outputs.
    """
    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    original = {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
    data = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
    return original, data, {**meta, "config": json.loads(meta["config"])}


def save_pth(obj: object, path: Path) -> Path:
    """``torch.save(obj, path)``, returning ``path``."""
    torch.save(obj, path)
    return path


class CreatesMarker:
    """Unpickling this object would create the file ``marker`` (a pickle exploit stand-in)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@contextlib.contextmanager
def benchmark_module(script: Path, siblings: Sequence[str] = ()) -> Iterator[ModuleType]:
    """A benchmark script imported as a module, with its folder on ``sys.path`` as when it
    runs; afterwards the folder, the script and its ``siblings`` modules are forgotten."""
    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[script.stem] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(script.parent))
        for name in (script.stem, *siblings):
            sys.modules.pop(name, None)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Waits until ``url`` answers; fails with the server's ``log`` if it exits first or
    does not answer within ``timeout_s`` (then it is killed)."""
    import pytest

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"the server did not answer on {url} within {timeout_s} s:\n{log.read_text()}")
