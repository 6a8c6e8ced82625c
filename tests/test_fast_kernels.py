"""The fast kernels of the networks equal the straightforward formulas they replace.

``ChannelLayerNorm`` computes the mean first and then the mean of squared deviations (two
plain reductions over channels) instead of ``torch.var_mean``, which is slow over the
channel dimension of NCHW tensors. These tests compare it with the ``var_mean`` formula, on
its own and inside every network architecture the package ships, to < 1e-5.

``MRLinearAttention`` runs CPU inference through the chunked kernel of
``diffusers_mrs.models.linear_attention`` (keys reduced chunk by chunk with a running
maximum, queries mapped through the folded output projection). The chunk size is made
small here so that these small images span many chunks; the reference is the whole-image
formula.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusers_mrs.models import (
    MRNAFNetModel,
    MRUNet2DModel,
    convert_irsde_state_dict,
    linear_attention,
    unet_attention,
)
from diffusers_mrs.models.layers import ChannelLayerNorm
from diffusers_mrs.models.nafnet_checkpoint import convert_nafnet_state_dict
from diffusers_mrs.models.unet_attention import MRLinearAttention

from helpers import load_checkpoint_fixture

FIXTURE = Path(__file__).parent / "fixtures" / "irsde_unet_nf8_d2.safetensors"
NAFNET_FIXTURE = Path(__file__).parent / "fixtures" / "refusion_nafnet_w8.safetensors"
DEFAULT_UNET = Path(__file__).parents[1] / "diffusers_mrs" / "default_model" / "unet"


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 16-64 pixels, so the small test images span several of them."""
    monkeypatch.setattr(linear_attention, "MIN_CHUNK_PIXELS", 16)
    monkeypatch.setattr(linear_attention, "CHUNK_ELEMENTS", 64)


def var_mean_layer_norm(self: ChannelLayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The previous formula: biased ``torch.var_mean`` over channels (the reference)."""
    xf = x if x.dtype == torch.float64 else x.float()
    var, mean = torch.var_mean(xf, dim=1, unbiased=False, keepdim=True)
    return ((xf - mean) * torch.rsqrt(var + self.eps) * self.weight.to(xf.dtype)).to(x.dtype)


def _compare_with_reference(model: torch.nn.Module, *inputs, monkeypatch) -> float:
    """Max |fast - reference| of a network's output on the same inputs."""
    with torch.no_grad():
        fast = model(*inputs)[0]
        with monkeypatch.context() as m:
            m.setattr(ChannelLayerNorm, "forward", var_mean_layer_norm)
            m.setattr(unet_attention, "use_chunked_kernel", lambda x, chunk: False)
            reference = model(*inputs)[0]
    assert fast.shape == reference.shape
    return (fast - reference).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_channel_layer_norm_equals_var_mean_formula(dtype, offset):
    torch.manual_seed(0)
    norm = ChannelLayerNorm(24)
    with torch.no_grad():
        norm.weight.normal_()
    x = (torch.randn(2, 24, 9, 7) * 3 + offset).to(dtype)
    fast = norm(x)
    reference = var_mean_layer_norm(norm.to(dtype), x)
    assert fast.dtype == x.dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fast, reference, atol=tol, rtol=0)


def test_channel_layer_norm_half_precision_normalises_in_float32():
    torch.manual_seed(0)
    norm = ChannelLayerNorm(16)
    x = torch.randn(1, 16, 8, 8) * 4 + 2
    fast = norm(x.bfloat16())
    reference = var_mean_layer_norm(norm, x.bfloat16())
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), reference.float(), atol=0, rtol=0.01)


def test_channel_layer_norm_gradients_equal():
    torch.manual_seed(0)
    norm = ChannelLayerNorm(8)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    grads = []
    for forward in (norm.forward, lambda t: var_mean_layer_norm(norm, t)):
        x.grad = None
        forward(x).pow(2).sum().backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_default_model_output_unchanged(monkeypatch):
    model = MRUNet2DModel.from_pretrained(DEFAULT_UNET).eval()
    torch.manual_seed(0)
    mu = torch.rand(1, 3, 40, 48)
    x = mu + 0.1 * torch.randn_like(mu)
    for t in (3.0, 60.0):
        assert _compare_with_reference(model, x, t, mu, monkeypatch=monkeypatch) < 1e-5


def _fixture_weights(path: Path, prefix: str) -> tuple[dict, dict]:
    """(config, original state dict) stored in a fixture made from the original code."""
    state, _, meta = load_checkpoint_fixture(path, prefix)
    return meta["config"], state


def test_irsde_fixture_output_unchanged(monkeypatch):
    config, state = _fixture_weights(FIXTURE, "irsde.")
    model = MRUNet2DModel(**config).eval()
    model.load_state_dict(convert_irsde_state_dict(state), strict=True)
    torch.manual_seed(1)
    mu = torch.rand(2, config.get("in_channels", 3), 24, 20)
    x = mu + 0.2 * torch.randn_like(mu)
    assert _compare_with_reference(model, x, 17, mu, monkeypatch=monkeypatch) < 1e-5


@pytest.mark.parametrize("mid_attention", ["linear", "full"])
def test_random_unet_output_unchanged(monkeypatch, mid_attention):
    torch.manual_seed(2)
    model = MRUNet2DModel(nf=8, depth=3, attention_head_dim=8, mid_attention=mid_attention)
    for module in model.modules():  # random gains, not only the initial ones
        if isinstance(module, ChannelLayerNorm):
            torch.nn.init.normal_(module.weight, mean=1.0, std=0.5)
    torch.nn.init.normal_(model.conv_out.weight, std=0.05)
    model.eval()
    mu = torch.rand(1, 3, 32, 32)
    x = mu + 0.3 * torch.randn_like(mu)
    assert _compare_with_reference(model, x, 50, mu, monkeypatch=monkeypatch) < 1e-5


def test_refusion_nafnet_fixture_output_unchanged(monkeypatch):
    config, state = _fixture_weights(NAFNET_FIXTURE, "refusion.")
    model = MRNAFNetModel(**config).eval()
    model.load_state_dict(convert_nafnet_state_dict(state), strict=True)
    torch.manual_seed(3)
    mu = torch.rand(1, config.get("in_channels", 3), 20, 28)
    x = mu + 0.2 * torch.randn_like(mu)
    assert _compare_with_reference(model, x, 42, mu, monkeypatch=monkeypatch) < 1e-5


def test_daclip_context_unet_output_unchanged(monkeypatch):
    torch.manual_seed(4)
    model = MRUNet2DModel(
        nf=32,
        ch_mult=[1, 2],
        context_dim=16,
        use_image_context=True,
        use_degra_context=True,
        attention_head_dim=8,
    )
    for module in model.modules():
        if isinstance(module, ChannelLayerNorm):
            torch.nn.init.normal_(module.weight, mean=1.0, std=0.5)
    torch.nn.init.normal_(model.conv_out.weight, std=0.05)
    model.eval()
    mu = torch.rand(1, 3, 16, 16)
    x = mu + 0.3 * torch.randn_like(mu)
    contexts = torch.randn(1, 16), torch.randn(1, 16)
    assert _compare_with_reference(model, x, 30, mu, *contexts, monkeypatch=monkeypatch) < 1e-5


def _attention_layer(channels: int, heads: int, dim_head: int, seed: int) -> MRLinearAttention:
    torch.manual_seed(seed)
    layer = MRLinearAttention(channels, heads, dim_head)
    for param in layer.parameters():  # random gains and bias, not only the initial ones
        torch.nn.init.normal_(param, mean=0.0, std=0.5)
    return layer.eval()


def _whole_image(layer: MRLinearAttention, x: torch.Tensor) -> torch.Tensor:
    return layer.out_norm(layer.to_out(layer._attend(layer.norm(x)))) + x


@pytest.mark.parametrize(
    ("channels", "heads", "dim_head", "batch", "size"),
    [(8, 4, 32, 1, (17, 23)), (16, 1, 16, 2, (32, 32)), (32, 2, 8, 3, (9, 40))],
)
def test_chunked_linear_attention_equals_whole_image_formula(
    channels, heads, dim_head, batch, size
):
    layer = _attention_layer(channels, heads, dim_head, seed=channels)
    x = torch.randn(batch, channels, *size)
    chunk = linear_attention.pixel_chunk(batch, heads * dim_head)
    assert size[0] * size[1] > 3 * chunk  # several chunks, the last one partial
    with torch.no_grad():
        assert unet_attention.use_chunked_kernel(x, chunk)
        fast, reference = layer(x), _whole_image(layer, x)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)


def test_chunked_linear_attention_is_exact_for_large_keys():
    """Keys of magnitude ~1e3 overflow exp() without the running maximum."""
    layer = _attention_layer(8, 2, 8, seed=5).double()
    with torch.no_grad():
        layer.to_qkv.weight[16:32] *= 400.0  # the keys
        x = torch.randn(1, 8, 20, 20, dtype=torch.float64)
        fast, reference = layer(x), _whole_image(layer, x)
    assert fast.isfinite().all()
    torch.testing.assert_close(fast, reference, atol=1e-10, rtol=0)


def test_chunked_kernel_only_for_cpu_float_inference():
    x = torch.randn(1, 4, 16, 16)
    assert not unet_attention.use_chunked_kernel(x, 16)  # autograd enabled: training
    with torch.no_grad():
        assert unet_attention.use_chunked_kernel(x, 16)
        assert not unet_attention.use_chunked_kernel(x, 256)  # one chunk: the whole-image formula
        assert not unet_attention.use_chunked_kernel(x.bfloat16(), 16)


def test_linear_attention_gradients_flow_through_whole_image_formula():
    layer = _attention_layer(8, 2, 8, seed=6)
    x = torch.randn(1, 8, 16, 16, requires_grad=True)
    layer(x).square().sum().backward()
    assert x.grad is not None and x.grad.isfinite().all()
