"""The networks a training run can build: IR-SDE's U-Net or Refusion's NAFNet.

``--architecture`` picks the class (:data:`ARCHITECTURES`); ``--unet_kwargs`` (JSON) is merged
over that architecture's defaults (:data:`DEFAULT_KWARGS`, small networks that train on a CPU)
and passed to its constructor. ``--nf`` and ``--depth`` belong to the U-Net alone. Every
mistake (an unknown argument, U-Net flags or ``--degradation_aware`` with the NAFNet, which
takes no degradation context) is reported by :func:`check_architecture` before any work.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

#: ``--architecture`` name -> ``(module, class)`` of the network.
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "unet": ("diffusers_mrs.models.unet_mr", "MRUNet2DModel"),
    "nafnet": ("diffusers_mrs.models.nafnet_mr", "MRNAFNetModel"),
}

#: Constructor arguments of each architecture that ``--unet_kwargs`` entries override; with
#: ``nf`` 16 and ``depth`` 3 the U-Net is the shipped default model's network.
DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "unet": {"attention_heads": 1, "attention_head_dim": 16},
    "nafnet": {"width": 16, "enc_blk_nums": [1, 1, 1, 1], "middle_blk_num": 1,
               "dec_blk_nums": [1, 1, 1, 1]},
}

#: Set by the trainer itself (``in_channels``/``out_channels``) or by its own flags.
_RESERVED = {"unet": ("in_channels", "out_channels", "nf", "depth"),
             "nafnet": ("in_channels", "out_channels")}


def network_class(architecture: str) -> type:
    """The network class of ``architecture`` (imported on first use)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, "
                         f"got {architecture!r}")
    module, name = ARCHITECTURES[architecture]
    return getattr(importlib.import_module(module), name)


def network_kwargs(config: Any) -> dict[str, Any]:
    """The constructor arguments of the run's network: ``in_channels``/``out_channels`` 3,
    the U-Net's ``nf``/``depth``, the architecture's defaults updated by ``unet_kwargs``."""
    kwargs: dict[str, Any] = {"in_channels": 3, "out_channels": 3}
    if config.architecture == "unet":
        kwargs.update(nf=config.nf, depth=config.depth)
    kwargs.update(DEFAULT_KWARGS[config.architecture])
    kwargs.update(config.unet_kwargs or {})
    return kwargs


def _field_default(config: Any, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(config) if f.name == name)


def check_architecture(config: Any, model_cls: type | None = None) -> None:
    """Raise ``ValueError`` for options that do not fit the chosen network: an unknown
    architecture, ``--unet_kwargs`` entries its class does not take (or that other flags
    set), non-default ``--nf``/``--depth`` or ``--degradation_aware`` with the NAFNet.
    ``model_cls``, when given, replaces the architecture's class."""
    arch = config.architecture
    cls = model_cls or network_class(arch)
    extra = dict(config.unet_kwargs or {})
    reserved = sorted(set(extra) & set(_RESERVED.get(arch, ())))
    if reserved:
        raise ValueError(f"--unet_kwargs must not set {reserved}: the trainer sets in/out "
                         "channels, and the U-Net's --nf/--depth are flags of their own")
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in extra if k not in params)
    if unknown and not takes_any:
        raise ValueError(f"--unet_kwargs names arguments {unknown} that {cls.__name__} "
                         f"(--architecture {arch}) does not take")
    if arch != "unet":
        changed = [f"--{name} {getattr(config, name)}" for name in ("nf", "depth")
                   if getattr(config, name) != _field_default(config, name)]
        if changed:
            raise ValueError(f"{', '.join(changed)}: --nf and --depth set the U-Net only; the "
                             f"{arch} network's size goes in --unet_kwargs (e.g. width)")
        if config.degradation_aware and "degradation_context" not in inspect.signature(
                cls.forward).parameters:
            raise ValueError(f"--degradation_aware needs a network that takes a degradation "
                             f"context; {cls.__name__} (--architecture {arch}) does not: "
                             "use --architecture unet")


def describe_network(model: Any) -> dict[str, Any]:
    """``{"class": name, "config": {...}}`` of a built network (what a resumed run must
    rebuild), JSON-serialisable."""
    config = {k: list(v) if isinstance(v, tuple) else v
              for k, v in dict(model.config).items() if not k.startswith("_")}
    return {"class": type(model).__name__, "config": config}


def checkpoint_network(run_dir: str | Path, checkpoint: str | Path) -> tuple[Any, dict]:
    """The network of one of a run's checkpoints, with the EMA weights when the run kept
    them (else the trained ones), in eval mode, and the checkpoint's loop counters (``step``,
    ``train_seconds``, ...).

    The network is rebuilt from ``run_dir/network.json``; the counters and the EMA are the
    trainer's ``trainer_state.json`` and ``ema.safetensors`` (:mod:`.checkpoint`; an earlier
    version's pickles are read with ``weights_only=True``).
    """
    import torch
    from safetensors.torch import load_file

    from .checkpoint import read_trainer_state

    record = json.loads((Path(run_dir) / "network.json").read_text())
    names = {name: arch for arch, (_, name) in ARCHITECTURES.items()}
    if record["class"] not in names:
        raise ValueError(f"{run_dir}: unknown network class {record['class']!r}")
    network = network_class(names[record["class"]]).from_config(record["config"])
    param_names = [name for name, _ in network.named_parameters()]
    try:
        counters, ema = read_trainer_state(Path(checkpoint), param_names)
    except ValueError as err:
        raise ValueError(f"{err} (a degradation-aware run?)") from None
    if ema is None:
        network.load_state_dict(load_file(Path(checkpoint) / "model.safetensors"))
    else:
        params = list(network.parameters())
        if len(params) != len(ema["shadow_params"]):
            raise ValueError(f"{checkpoint}: its EMA holds {len(ema['shadow_params'])} tensors,"
                             f" the network {len(params)} (a degradation-aware run?)")
        with torch.no_grad():
            for param, shadow in zip(params, ema["shadow_params"], strict=True):
                param.copy_(shadow)
    return network.eval(), counters
