"""Seconds per restored image: this package's pipeline against the original sampling loops.

For each network (random weights unless it is the shipped default model) and each method,
the same 256 px degraded image is restored end to end: with ``MRRestorationPipeline``
(MR Sampler at each NFE of ``--nfe``, IR-SDE posterior sampling at ``--posterior-nfe``),
optionally in bfloat16/float16 and/or compiled, and, when ``--original-repo`` points to
checkouts of github.com/grrrute/mr-sampler, github.com/Algolzw/image-restoration-sde
and/or github.com/Algolzw/daclip-uir, with the original ``MRSampler.sampling`` and
``IRSDE.reverse_posterior`` loops on the original network class loaded with the same
weights (or on our network, where the original code has no such class). The original code
is imported from that path at run time; without it those rows are skipped with a message.

The DA-CLIP-shaped network (``--daclip-nf``) gets two fixed random context vectors in
place of DA-CLIP's image encoder output, given once per image: to our pipeline through
``encode_image``, to the original loops as ``text_context`` / ``image_context``, the way
DA-CLIP's test script passes them. The encoder itself is not timed (bench_daclip.py).

Repeats are interleaved (every method once per round); the table shows the median seconds
per image, the median of the per-round ratio to the original loop at the same NFE, the peak
memory of one restoration (CPU: peak resident set size above the level before the call,
Linux only; CUDA: peak allocated), and the largest difference between our output and the
original's for the same seed (float32; both draw their noise from one seeded CPU generator
in the same order: a seeded generator on the device, so CUDA timings hold no copies of
CPU-drawn noise). Float32 runs with TensorFloat-32 off unless ``--tf32`` is given (the
float32 rows are references). Compile time is reported separately (first call minus a
normal call). On CUDA the host-device synchronisations of a whole restoration are counted
with ``torch.cuda.set_sync_debug_mode``.

    python benchmarks/bench_restore.py --original-repo /path/to/mr-sampler \
        --original-repo /path/to/image-restoration-sde --original-repo /path/to/daclip-uir

Outputs: ``benchmarks/results/restore.json``, ``restore.md`` and ``restore_vs_nfe.png``.
The original code needs ``einops`` (its network modules import it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: the original loops
import torch
from _common import image_psnr
from original_code import OriginalCode, load_original_code

from diffusers_mrs import (
    MRPosteriorScheduler,
    MRRestorationPipeline,
    MRSamplerScheduler,
    MRUNet2DModel,
)
from diffusers_mrs.convert import PAPER_SCHEDULER
from diffusers_mrs.host_sync import HostSyncRecorder
from diffusers_mrs.models import convert_to_irsde_state_dict
from diffusers_mrs.pipelines.degradation import Contexts as _Contexts
from diffusers_mrs.pipelines.degradation import estimate_degradation
from diffusers_mrs.restore_settings import seeded_generator, set_tf32, tf32_enabled

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "diffusers_mrs" / "default_model"
IRSDE_SCHEDULER = {  # IR-SDE's denoising/deraining settings; a noise-predicting network
    **PAPER_SCHEDULER,
    "timestep_spacing": "logsnr",
    "lower_order_final": False,  # the original keeps the full order at NFE >= 10
}
FIT_TARGET = {"epsilon": "noise", "sample": "data", "v_prediction": "velocity"}
TIME_SCHEDULE = {
    "logsnr": "linear-lambda",
    "linspace": "linspace",
    "karras": "karras-n",
    "karras_time": "karras-t",
    "leading": "leading",
    "trailing": "trailing",
}
Runner = Callable[[torch.Tensor, int], torch.Tensor]
# DA-CLIP's universal-ir.pth layout (its width is --daclip-nf): context U-Net, channel
# multipliers [1, 2, 4, 8], cross-attention transformers at the deepest level and the middle
DACLIP_LAYOUT = {"ch_mult": [1, 2, 4, 8], "context_dim": 512,
                 "use_image_context": True, "use_degra_context": True}  # fmt: skip
# the original network's context arguments -> ours
CONTEXT_NAMES = {"text_context": "degradation_context", "image_context": "image_context"}


# ------------------------------------------------------------------------------ networks
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


# ------------------------------------------------------------------------------ runners
def ours_runner(net: Network, method: str, nfe: int, variant: str) -> Runner:
    """Our pipeline, end to end from a tensor image to the restored tensor."""
    config = net.scheduler_config
    scheduler = (MRSamplerScheduler if method == "mrs" else MRPosteriorScheduler).from_config(
        config
    )
    pipe = make_pipeline(net.unet, scheduler, variant, net.contexts, net.degradation_encoder)
    # a degradation-aware pipeline returns an image it finds clean unchanged: sample anyway
    extra = {"keep_clean": False} if net.degradation_encoder is not None else {}

    def run(mu: torch.Tensor, seed: int) -> torch.Tensor:
        generator = seeded_generator(mu.device, seed)  # the noise is drawn on mu's device
        out = pipe(
            image=mu, num_inference_steps=nfe, generator=generator, output_type="pt", **extra
        )
        return out.images

    return run


class FixedContextPipeline(MRRestorationPipeline):
    """The pipeline with fixed network contexts (``fixed_contexts``, ``[1, D]`` each) in
    place of DA-CLIP's image encoder: ``encode_image`` hands them over once per image, and
    the pipeline passes them to every network call as it passes the encoder's."""

    fixed_contexts: dict[str, torch.Tensor]

    def encode_image(self, mu: torch.Tensor) -> _Contexts:
        image, degradation = (
            self.fixed_contexts[name].to(mu.device, self._unet_dtype()).expand(mu.shape[0], -1)
            for name in ("image_context", "degradation_context")
        )
        return _Contexts(image, degradation)


def make_pipeline(
    unet: torch.nn.Module,
    scheduler: Any,
    variant: str,
    contexts: dict[str, torch.Tensor] | None = None,
    degradation_encoder: torch.nn.Module | None = None,
) -> MRRestorationPipeline:
    """A pipeline for a variant: ``fp32``, ``bf16`` or ``fp16`` network weights (the sampler
    stays float32), ``+compile`` for :meth:`MRRestorationPipeline.enable_compile`; with
    ``contexts``, a :class:`FixedContextPipeline`; with a degradation encoder (float32)."""
    import copy

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    name, _, extra = variant.partition("+")
    if name != "fp32" or extra:  # a copy: the other variants keep the float32 network
        unet = copy.deepcopy(unet).to(dtype[name])
    pipe_class = MRRestorationPipeline if contexts is None else FixedContextPipeline
    pipe = pipe_class(unet=unet, scheduler=scheduler, degradation_encoder=degradation_encoder)
    if contexts is not None:
        pipe.fixed_contexts = contexts
    pipe.set_progress_bar_config(disable=True)
    if extra == "compile":
        pipe.enable_compile()
    return pipe


def _device(net: Network) -> torch.device:
    return next(net.unet.parameters()).device


def original_mrs_runner(code: OriginalCode, net: Network, nfe: int) -> Runner:
    """The original ``MRSampler.sampling`` with the settings of our scheduler config."""
    from types import SimpleNamespace

    cfg = net.scheduler_config
    sde = SimpleNamespace(
        device=_device(net),
        T=cfg["num_train_timesteps"],
        max_sigma=cfg["max_sigma"],
        model=net.original,
    )
    opt = {
        "sde": {
            "max_sigma": cfg["max_sigma"],
            "T": cfg["num_train_timesteps"],
            "schedule": cfg["theta_schedule"],
            "eps": cfg["eps"],
        }
    }
    sampler = code.mr_sampler(
        sde,
        opt,
        nfe,
        solver_type=cfg["algorithm_type"],
        parameterization=cfg["parameterization"],
        order=cfg["solver_order"],
        fit_target=FIT_TARGET[cfg["prediction_type"]],
        lambda_min=cfg["lambda_min"],
        time_schedule=TIME_SCHEDULE[cfg["timestep_spacing"]],
        thresholding=cfg["thresholding"],
    )

    @torch.no_grad()
    def run(mu: torch.Tensor, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return sampler.sampling(mu, **net.original_contexts(mu))[0]

    return run


def original_sde_class(code: OriginalCode, net: Network) -> Any:
    """The original ``IRSDE`` class for a network: DA-CLIP's own for a context network
    (where a DA-CLIP or MR Sampler checkout was given), else IR-SDE's."""
    if net.contexts is not None and code.daclip_sde is not None:
        return code.daclip_sde
    return code.irsde_sde


def original_posterior_runner(code: OriginalCode, net: Network, nfe: int) -> Runner:
    """The original ``IRSDE.reverse_posterior`` (it visits every grid time: nfe = T)."""
    cfg = net.scheduler_config
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the schedule's name
        sde = original_sde_class(code, net)(
            max_sigma=cfg["max_sigma"],
            T=cfg["num_train_timesteps"],
            schedule=cfg["theta_schedule"],
            eps=cfg["eps"],
            device=_device(net),
        )
    sde.set_model(net.original)

    @torch.no_grad()  # as the original's test() runs it: no autograd graph over the loop
    def run(mu: torch.Tensor, seed: int) -> torch.Tensor:
        sde.set_mu(mu)
        torch.manual_seed(seed)
        noisy = sde.noise_state(mu)
        return sde.reverse_posterior(noisy, **net.original_contexts(mu)).clamp(0.0, 1.0)

    return run


# ------------------------------------------------------------------------------ measuring
def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block: CUDA peak allocated, or on Linux the peak RSS above the RSS
    before the block (the kernel's high-water mark, reset through ``clear_refs``)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.mib = device, float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
                self.before = _proc_status_kib("VmRSS")
            except OSError:
                self.before = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.before) / 2**20
        elif self.before is not None:
            peak = _proc_status_kib("VmHWM")
            self.mib = (peak - self.before) / 1024 if peak is not None else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(run: Runner, mu: torch.Tensor, seed: int) -> tuple[float, float, torch.Tensor]:
    """(seconds, peak MiB, output) of one restoration."""
    with PeakMemory(mu.device) as mem:
        _sync(mu.device)
        start = time.perf_counter()
        out = run(mu, seed)
        _sync(mu.device)
        seconds = time.perf_counter() - start
    return seconds, mem.mib, out.detach().float().cpu()


def count_syncs(run: Runner, mu: torch.Tensor, seed: int) -> int | None:
    """Host-device synchronisations in one restoration (CUDA only, else None)."""
    if mu.device.type != "cuda":
        return None
    with HostSyncRecorder(cuda=True, read_backs=False) as rec:
        run(mu, seed)
        torch.cuda.synchronize(mu.device)
    return sum(call.startswith("cuda:") for call in rec.calls)


def measure_group(
    runners: dict[tuple, Runner], mu: torch.Tensor, seed: int, repeats: int, desc: str = ""
) -> dict[tuple, dict[str, Any]]:
    """Interleaved repeats: every runner once per round, in the same order each round."""
    stats: dict[tuple, dict[str, Any]] = {
        key: {"seconds": [], "peak_mib": float("nan")} for key in runners
    }
    for key, run in runners.items():
        if "compile" in key[2]:  # first call compiles: timed on its own
            stats[key]["first_call_s"] = time_once(run, mu, seed)[0]
    from tqdm.auto import tqdm  # shown although TQDM_DISABLE silences the original loops

    bar = tqdm(total=repeats * len(runners), unit="run", desc=desc, disable=False)
    for _ in range(repeats):
        for key, run in runners.items():
            bar.set_postfix_str("/".join(map(str, key)))
            seconds, peak, out = time_once(run, mu, seed)
            stats[key]["seconds"].append(seconds)
            stats[key]["peak_mib"] = peak if peak == peak else stats[key]["peak_mib"]
            stats[key].setdefault("output", out)
            bar.update()
    bar.close()
    for key, run in runners.items():
        if key[2] != "original":
            stats[key]["syncs"] = count_syncs(run, mu, seed)
    return stats


# ------------------------------------------------------------------------------ the run
def runners_for(
    net: Network, code: OriginalCode, method: str, nfes: list[int], variants: list[str]
) -> dict[tuple, Runner]:
    """(method, nfe, variant) -> runner; variant "original" is the original loop."""
    runners: dict[tuple, Runner] = {}
    for nfe in nfes:
        for variant in variants:
            runners[(method, nfe, variant)] = ours_runner(net, method, nfe, variant)
        if method == "mrs" and code.mr_sampler is not None:
            runners[(method, nfe, "original")] = original_mrs_runner(code, net, nfe)
        if method == "posterior" and original_sde_class(code, net) is not None:
            runners[(method, nfe, "original")] = original_posterior_runner(code, net, nfe)
    return runners


def summarise(net: Network, stats: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for (method, nfe, variant), s in stats.items():
        original = stats.get((method, nfe, "original"))
        reference = stats.get((method, nfe, "fp32"))
        row = {
            "network": net.name,
            "method": method,
            "nfe": nfe,
            "variant": variant,
            "median_s": statistics.median(s["seconds"]),
            "seconds": s["seconds"],
            "peak_mib": s["peak_mib"],
            "syncs": s.get("syncs"),
            "compile_s": s["first_call_s"] - statistics.median(s["seconds"])
            if "first_call_s" in s
            else None,
        }
        if original is not None and variant != "original":
            pairs = zip(s["seconds"], original["seconds"], strict=True)
            row["ratio_vs_original"] = statistics.median(a / b for a, b in pairs)
            # Same noise from one seeded generator of the device (the original seeds the
            # device's default one); the original's posterior loop reads the output as noise.
            same_noise = _device(net).type in ("cpu", "cuda")
            same_target = method == "mrs" or net.scheduler_config["prediction_type"] == "epsilon"
            if variant == "fp32" and same_target and same_noise:
                row["max_abs_diff_vs_original"] = (
                    (s["output"] - original["output"]).abs().max().item()
                )
        if reference is not None and variant not in ("fp32", "original"):
            row["ratio_vs_fp32"] = statistics.median(
                a / b for a, b in zip(s["seconds"], reference["seconds"], strict=True)
            )
            row["psnr_vs_fp32_db"] = image_psnr(s["output"], reference["output"])
        rows.append(row)
    return rows


def run_network(
    net: Network, code: OriginalCode, args: argparse.Namespace, mu: torch.Tensor
) -> list[dict[str, Any]]:
    variants = ["fp32"] + (args.variants if net.name in args.variant_networks else [])
    rows: list[dict[str, Any]] = []
    mrs = runners_for(net, code, "mrs", args.nfe, ["fp32"])
    if variants[1:]:
        mrs.update(runners_for(net, code, "mrs", [args.variant_nfe], variants))
    rows += summarise(net, measure_group(mrs, mu, args.seed, args.repeats, net.name))
    if args.posterior_nfe and net.name.split("-")[0] in args.posterior_networks:
        post = runners_for(net, code, "posterior", [args.posterior_nfe], ["fp32"])
        rows += summarise(
            net, measure_group(post, mu, args.seed, args.posterior_repeats, net.name)
        )
    for row in rows:
        print(format_row(row), flush=True)
    return rows


def format_row(row: dict[str, Any]) -> str:
    def f(key: str, fmt: str) -> str:
        value = row.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    return (
        f"| {row['network']} | {row['method']}@{row['nfe']} | {row['variant']} | "
        f"{f('median_s', '.2f')} | {f('ratio_vs_original', '.2f')} | "
        f"{f('ratio_vs_fp32', '.2f')} | {f('peak_mib', '.0f')} | "
        f"{f('max_abs_diff_vs_original', '.1e')} | {f('psnr_vs_fp32_db', '.1f')} | "
        f"{f('compile_s', '.1f')} | {f('syncs', 'd')} |"
    )


HEADER = (
    "| network | method@NFE | variant | s/image (median) | x original | x fp32 | "
    "peak MiB | max abs diff vs original | PSNR vs fp32 dB | compile s | syncs |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def _points(rows: list[dict[str, Any]], net: str, variant: str, method: str) -> list[tuple]:
    return sorted(
        (r["nfe"], r["median_s"])
        for r in rows
        if r["network"] == net and r["variant"] == variant and r["method"] == method
    )


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Seconds per image against NFE (fp32): one colour per network, this pipeline solid
    with circles, the original loop dashed with squares; posterior sampling as big marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for i, net in enumerate(sorted({r["network"] for r in rows})):
        for variant, line, mark in (("fp32", "-", "o"), ("original", "--", "s")):
            who = "this pipeline" if variant == "fp32" else "original loop"
            mrs = _points(rows, net, variant, "mrs")
            post = _points(rows, net, variant, "posterior")
            if mrs:
                xs, ys = zip(*mrs, strict=True)
                ax.plot(xs, ys, line + mark, color=f"C{i}", label=f"{net}: MRS, {who}")
            if post:
                xs, ys = zip(*post, strict=True)
                ax.plot(xs, ys, mark, color=f"C{i}", markersize=9,
                        label=f"{net}: posterior, {who}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations)")
    ax.set_ylabel("seconds per image")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the points
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--original-repo",
        action="append",
        default=[],
        help="checkout of mr-sampler or image-restoration-sde (repeatable)",
    )
    p.add_argument("--networks", nargs="+", default=["default", "irsde", "refusion", "daclip"])
    p.add_argument(
        "--default-model", type=Path, default=DEFAULT_MODEL, help="pipeline folder of 'default'"
    )
    p.add_argument("--irsde-nf", type=int, default=8, help="width of the IR-SDE-shaped net")
    p.add_argument(
        "--daclip-nf", type=int, default=32, help="width of the DA-CLIP-shaped net (x32)"
    )
    p.add_argument("--size", type=int, default=256)
    p.add_argument(
        "--spacing",
        default="linspace",
        help="timestep_spacing of every MRS run ('model': the network's own config); "
        "the default integer grid is where the original's table interpolation is exact",
    )
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--posterior-nfe", type=int, default=100, help="0 skips posterior sampling")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--posterior-repeats", type=int, default=1)
    p.add_argument(
        "--variants",
        nargs="*",
        default=None,
        help="extra variants of our pipeline: bf16, fp16, fp32+compile, ... (default: bf16"
        " and bf16+compile where bfloat16 is native: CUDA, or a CPU with AVX-512 BF16/AMX;"
        " none elsewhere, where it is emulated and takes hours)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSON",
        help="run nothing: one report (json, md, plot) from earlier results; a network's"
        " rows come from the last file that has it, and each file's command is kept",
    )
    p.add_argument("--variant-networks", nargs="*", default=["default"])
    p.add_argument("--variant-nfe", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--tf32", action="store_true",
                   help="let float32 use TensorFloat-32 on CUDA (default: IEEE float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="restore", help="stem of the output files")
    p.add_argument(
        "--posterior-networks", nargs="*", default=["default"], help="networks timed at posterior"
    )
    return p.parse_args(argv)


def environment(args: argparse.Namespace, code: OriginalCode) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "command": "python benchmarks/bench_restore.py " + " ".join(sys.argv[1:]),
        "device": str(args.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tf32": tf32_enabled(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "platform": platform.platform(),
        "original_code": code.sources,
        "original_code_problems": code.problems,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def default_variants(device: str) -> list[str]:
    """bf16 and bf16+compile where bfloat16 is native; none (with a message) elsewhere."""
    if torch.device(device).type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return ["bf16", "bf16+compile"]
    print("[skip] bf16 variants: this CPU has no native bfloat16 (it would be emulated);"
          " pass --variants bf16 bf16+compile to time them anyway")
    return []


def merge_results(paths: list[Path], out: Path, name: str) -> None:
    """``--merge``: the rows of several result files as one report, each network's rows
    from the last file holding it; the md lists every file's command and environment."""
    runs = [json.loads(path.read_text()) for path in paths]
    source: dict[str, int] = {}
    for i, run in enumerate(runs):
        source.update({row["network"]: i for row in run["rows"]})
    rows = [r for i, run in enumerate(runs) for r in run["rows"] if source[r["network"]] == i]
    notes = {k: v for i, run in enumerate(runs) for k, v in run["networks"].items()
             if source.get(k) == i}
    envs = [run["environment"] for run in runs]
    out.mkdir(parents=True, exist_ok=True)
    payload = {"environments": envs, "networks": notes, "rows": rows}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = ["Merged from these runs (a network's rows come from the last run that has it):", ""]
    for i, env in enumerate(envs):
        nets = sorted(k for k, v in source.items() if v == i)
        lines.append(f"- run {i + 1} ({', '.join(nets) or 'no rows used'}): `{env['command']}`;"
                     f" {env['device']}, {env['threads']} threads, load average at start/end"
                     f" {env['load_average_at_start']} / {env.get('load_average_at_end')}")
    lines += ["", HEADER, *map(format_row, rows), ""]
    lines += [f"- {n}: original loops on {v['original']}. " + " ".join(v["notes"])
              for n, v in notes.items()]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    last = envs[-1]
    size = re.search(r"--size (\d+)", last["command"])
    px = f"{size.group(1)} px, " if size else ""
    title = f"{px}{last['device']}, {last['threads']} thread(s)"
    plot(rows, out / f"{name}_vs_nfe.png", title)
    print(f"wrote {out / name}.json, .md and _vs_nfe.png from {len(paths)} runs")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        merge_results(args.merge, args.out, args.name)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    set_tf32(args.tf32)  # explicit: the float32 rows are references
    code = load_original_code(args.original_repo)
    if not args.original_repo:
        print("[skip] original loops: no --original-repo given")
    for problem in code.problems:
        print(f"[warn] {problem}")
    if args.variants is None:
        args.variants = default_variants(args.device)
    env = environment(args, code)
    mu = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(123))
    mu = mu.to(args.device)
    print(json.dumps(env))
    print(HEADER)
    rows: list[dict[str, Any]] = []
    nets = build_networks(args.networks, code, args)
    for i, net in enumerate(nets):
        net.to(args.device)
        if args.spacing != "model":
            net.scheduler_config["timestep_spacing"] = args.spacing
        rows += run_network(net, code, args, mu)
        env["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        write_results(args, env, nets[: i + 1], rows)  # after every network: nothing is lost


def write_results(
    args: argparse.Namespace, env: dict[str, Any], nets: list[Network], rows: list[dict[str, Any]]
) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    notes = {n.name: {"original": n.original_kind, "notes": n.notes} for n in nets}
    payload = {"environment": env, "networks": notes, "rows": rows}
    (args.out / f"{args.name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    lines = [
        f"Command: `{env['command']}`",
        "",
        f"Device {env['device']}, {env['threads']} torch threads, torch {env['torch']}, "
        f"load average at start/end {env['load_average_at_start']} / "
        f"{env['load_average_at_end']}.",
        "",
        HEADER,
        *map(format_row, rows),
        "",
    ]
    lines += [
        f"- {name}: original loops on {n['original']}. " + " ".join(n["notes"])
        for name, n in notes.items()
    ]
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    title = f"{args.size} px, {env['device']}, {env['threads']} thread(s)"
    if any(r["method"] == "mrs" for r in rows):
        plot(rows, args.out / f"{args.name}_vs_nfe.png", title)
    print(f"wrote {args.out / args.name}.json, .md and _vs_nfe.png")


if __name__ == "__main__":
    main()
