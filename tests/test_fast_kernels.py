"""The fast kernels of the networks equal the straightforward formulas they replace.

``ChannelLayerNorm`` computes the mean first and then the mean of squared deviations (two
plain reductions over channels) instead of ``torch.var_mean``, which is slow over the
channel dimension of NCHW tensors. These tests compare it with the ``var_mean`` formula, on
its own and inside every network architecture the package ships, to < 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusers_mrs.models import MRNAFNetModel, MRUNet2DModel, convert_irsde_state_dict
from diffusers_mrs.models.nafnet_checkpoint import convert_nafnet_state_dict
from diffusers_mrs.models.unet_mr import ChannelLayerNorm

from helpers import load_checkpoint_fixture

FIXTURE = Path(__file__).parent / "fixtures" / "irsde_unet_nf8_d2.safetensors"
NAFNET_FIXTURE = Path(__file__).parent / "fixtures" / "refusion_nafnet_w8.safetensors"
DEFAULT_UNET = Path(__file__).parents[1] / "diffusers_mrs" / "default_model" / "unet"


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
