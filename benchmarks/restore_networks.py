"""The networks ``bench_restore.py`` times: ours, their scheduler configs, and the original
network class loaded with the same weights (or ours behind the original's call).

The IR-SDE-, Refusion- and DA-CLIP-shaped networks get random weights (every layer,
including the zero-initialised ones, so that each matters); ``default`` is the shipped
model. See ``bench_restore.py`` for what is compared.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from original_code import OriginalCode

from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler, MRUNet2DModel
from diffusers_mrs.convert import PAPER_SCHEDULER
from diffusers_mrs.models import convert_to_irsde_state_dict
from diffusers_mrs.pipelines.degradation import estimate_degradation

IRSDE_SCHEDULER = {  # IR-SDE's denoising/deraining settings; a noise-predicting network
    **PAPER_SCHEDULER,
    "timestep_spacing": "logsnr",
    "lower_order_final": False,  # the original keeps the full order at NFE >= 10
}
# DA-CLIP's universal-ir.pth layout (its width is --daclip-nf): context U-Net, channel
# multipliers [1, 2, 4, 8], cross-attention transformers at the deepest level and the middle
DACLIP_LAYOUT = {"ch_mult": [1, 2, 4, 8], "context_dim": 512,
                 "use_image_context": True, "use_degra_context": True}  # fmt: skip
# the original network's context arguments -> ours
CONTEXT_NAMES = {"text_context": "degradation_context", "image_context": "image_context"}


@dataclass
class Network:
    """A network to benchmark: ours, its scheduler config, and the original's equivalent."""

    name: str
    unet: torch.nn.Module
    scheduler_config: dict[str, Any]
    original: Callable[..., torch.Tensor] | None = None  # original(x, mu, t, **contexts)
    original_kind: str = "none"
    original_module: torch.nn.Module | None = None  # moved to the device with ours
    notes: list[str] = field(default_factory=list)
    #: fixed ``image_context`` / ``degradation_context`` ``[1, D]`` (our names), or None
    contexts: dict[str, torch.Tensor] | None = None
    #: the degradation encoder of a degradation-aware model: our pipeline runs it (once
    #: per image), and so does the original side, for the same context
    degradation_encoder: torch.nn.Module | None = None

    def to(self, device: str | torch.device) -> None:
        """Moves the networks, the encoder and the contexts to ``device``."""
        for module in (self.unet, self.original_module, self.degradation_encoder):
            if module is not None:
                module.to(device)
        if self.contexts is not None:
            self.contexts = {k: v.to(device) for k, v in self.contexts.items()}

    def original_contexts(self, mu: torch.Tensor) -> dict[str, torch.Tensor]:
        """The contexts of the image ``mu`` under the original loops' names
        (``text_context``, ``image_context``): the fixed ones, or the degradation
        encoder's (as our pipeline computes it: detected type, probability-weighted)."""
        if self.degradation_encoder is not None:
            estimate = estimate_degradation(self.degradation_encoder, mu, [None] * len(mu))
            return {"text_context": estimate.context}
        if self.contexts is None:
            return {}
        return {theirs: self.contexts[ours] for theirs, ours in CONTEXT_NAMES.items()}


def _ours_as_original(unet: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """Our network behind the original loops' call ``model(x, mu, t, **contexts)``
    (``text_context`` is our ``degradation_context``)."""

    def call(x: torch.Tensor, mu: torch.Tensor, t: Any, **contexts: Any) -> torch.Tensor:
        ours = {CONTEXT_NAMES[k]: v for k, v in contexts.items() if v is not None}
        time = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(1)
        return unet(x, time, mu, **ours).sample

    return call


def public_config(config: Any) -> dict[str, Any]:
    """A scheduler config without diffusers' private keys (``_use_default_values`` would
    make ``from_config`` ignore values changed later)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def _randomise(unet: MRUNet2DModel, seed: int) -> MRUNet2DModel:
    """Random weights everywhere, including the zero-initialised output layer."""
    torch.manual_seed(seed)
    torch.nn.init.normal_(unet.conv_out.weight, std=0.02)
    return unet.eval()


def original_irsde_unet(code: OriginalCode, config: dict[str, Any]) -> torch.nn.Module:
    """The original ``ConditionalUNet`` for one of our IR-SDE configs.

    The original class fixes 4 attention heads of 32 channels and a full middle
    attention; other settings are built from the original's own ``LinearAttention`` /
    ``Attention`` classes with our head count, put in the same places.
    """
    arch, nf, depth = code.irsde_arch, config["nf"], config["depth"]
    net = code.irsde_unet(config["in_channels"], config["out_channels"], nf, depth=depth)
    heads, dim_head = config["attention_heads"], config["attention_head_dim"]
    for i, (down, up) in enumerate(zip(net.downs, reversed(net.ups), strict=True)):
        down[2].fn.fn = arch.LinearAttention(nf * 2**i, heads, dim_head)
        up[2].fn.fn = arch.LinearAttention(nf * 2 ** (i + 1), heads, dim_head)
    mid = arch.Attention if config["mid_attention"] == "full" else arch.LinearAttention
    net.mid_attn.fn.fn = mid(nf * 2**depth, heads, dim_head)
    return net.eval()


def with_original(net: Network, code: OriginalCode) -> Network:
    """Attach the original network (same weights), or our network behind its call."""
    if code.irsde_unet is None:
        net.original, net.original_kind = _ours_as_original(net.unet), "our network"
        net.notes.append("no IR-SDE checkout given: the original loops run our network")
        return net
    original = original_irsde_unet(code, dict(net.unet.config))
    state = convert_to_irsde_state_dict(net.unet.state_dict())
    original.load_state_dict(state, strict=True)
    net.original = lambda x, mu, t, **_: original(x, mu, t)
    net.original_kind, net.original_module = "original ConditionalUNet", original
    return net


def default_network(code: OriginalCode, path: Path) -> Network:
    """The shipped default model (or the pipeline folder ``path``). A degradation-aware
    model's network takes a degradation context, which neither original class can: IR-SDE's
    ``ConditionalUNet`` has no degradation prompt and DA-CLIP's needs nf >= 32; then the
    original loops run our network, given the encoder's context as ``text_context``."""
    pipe = MRRestorationPipeline.from_pretrained(str(path))
    net = Network("default", pipe.unet.eval(), public_config(pipe.scheduler.config))
    encoder = getattr(pipe, "degradation_encoder", None)
    if encoder is None:
        return with_original(net, code)
    net.degradation_encoder = encoder.eval()
    net.original, net.original_kind = _ours_as_original(net.unet), "our network"
    net.notes.append(
        "degradation-aware: no original class takes its degradation context, so the original "
        "loops run our network; both sides run the degradation encoder once per image"
    )
    return net


def irsde_network(code: OriginalCode, nf: int, depth: int) -> Network:
    unet = _randomise(MRUNet2DModel(nf=nf, depth=depth, mid_attention="full"), seed=1)
    config = public_config(MRSamplerScheduler(**IRSDE_SCHEDULER).config)
    return with_original(Network(f"irsde-nf{nf}", unet, config), code)


def refusion_network(code: OriginalCode, width: int) -> Network:
    """A Refusion-shaped conditional NAFNet (IR-SDE's noise-predicting settings)."""
    from diffusers_mrs import MRNAFNetModel
    from diffusers_mrs.models.nafnet_checkpoint import convert_nafnet_state_dict

    blocks = {"middle_blk_num": 1, "enc_blk_nums": [1, 1, 1, 1], "dec_blk_nums": [1, 1, 1, 1]}
    unet = MRNAFNetModel(width=width, **blocks).eval()
    config = public_config(MRSamplerScheduler(**IRSDE_SCHEDULER).config)
    net = Network(f"refusion-w{width}", unet, config)
    if code.nafnet is None:
        _randomise_all(unet, seed=2)
        net.original, net.original_kind = _ours_as_original(unet), "our network"
        return net
    torch.manual_seed(2)
    original = code.nafnet(img_channel=3, width=width, **blocks).eval()
    _randomise_all(original, seed=2)
    unet.load_state_dict(convert_nafnet_state_dict(original.state_dict()), strict=True)
    net.original = lambda x, mu, t, **_: original(x, mu, t)
    net.original_kind, net.original_module = "original ConditionalNAFNet", original
    return net


def _randomise_all(module: torch.nn.Module, seed: int) -> None:
    """Small random values for zero-initialised parameters, so every layer matters."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if not param.any():
                param.normal_(std=0.02)


def daclip_network(code: OriginalCode, nf: int) -> Network:
    """A DA-CLIP-shaped context U-Net (:data:`DACLIP_LAYOUT` at width ``nf``), random
    weights, with fixed random contexts in place of DA-CLIP's image encoder output: given
    once per image on both sides (the encoder itself is not timed; see bench_daclip.py).
    The original class gives every level ``channels // 32`` heads, so ``nf`` is a multiple
    of 32."""
    if nf <= 0 or nf % 32:
        raise SystemExit(f"--daclip-nf must be a positive multiple of 32, got {nf}")
    torch.manual_seed(3)
    unet = MRUNet2DModel(nf=nf, **DACLIP_LAYOUT).eval()
    _randomise_all(unet, seed=3)
    gen = torch.Generator().manual_seed(4)
    dim = DACLIP_LAYOUT["context_dim"]
    contexts = {name: torch.randn(1, dim, generator=gen) for name in CONTEXT_NAMES.values()}
    config = public_config(MRSamplerScheduler(**IRSDE_SCHEDULER).config)
    net = Network(f"daclip-nf{nf}", unet, config, contexts=contexts)
    if code.daclip_unet is None:
        net.original, net.original_kind = _ours_as_original(unet), "our network"
        net.notes.append("no DA-CLIP checkout given: the original loops run our network")
        return net
    layout = {k: v for k, v in DACLIP_LAYOUT.items() if k != "ch_mult"}
    original = code.daclip_unet(3, 3, nf, ch_mult=list(DACLIP_LAYOUT["ch_mult"]), **layout)
    state = convert_to_irsde_state_dict(unet.state_dict())
    original.eval().load_state_dict(state, strict=True)
    net.original = original  # original(x, mu, t, text_context=..., image_context=...)
    net.original_kind, net.original_module = "original DA-CLIP ConditionalUNet", original
    return net


def missing_network(name: str, what: str) -> Network | None:
    print(f"[skip] {name}: {what}")
    return None


def build_networks(names: list[str], code: OriginalCode, args: argparse.Namespace) -> list[Network]:
    import diffusers_mrs

    nets: list[Network | None] = []
    for name in names:
        if name == "default":
            nets.append(default_network(code, args.default_model))
        elif name == "irsde":
            nets.append(irsde_network(code, args.irsde_nf, depth=4))
        elif name == "refusion":
            if getattr(diffusers_mrs, "MRNAFNetModel", None) is None:
                nets.append(missing_network(name, "MRNAFNetModel is not in this version"))
            else:
                nets.append(refusion_network(code, width=16))
        elif name == "daclip":
            nets.append(daclip_network(code, args.daclip_nf))
        else:
            raise SystemExit(f"unknown network {name!r}")
    return [n for n in nets if n is not None]


def network_device(net: Network) -> torch.device:
    """The device of the network's parameters (where the restorations run)."""
    return next(net.unet.parameters()).device
