"""Convert an official IR-SDE checkpoint into a diffusers-mrs pipeline folder.

IR-SDE (https://github.com/Algolzw/image-restoration-sde) saves its noise-prediction
network as ``<iter>_G.pth``; the SDE it was trained with is described by the ``sde:``
section of its option file. This script rebuilds both as ``MRUNet2DModel`` and
``MRSamplerScheduler``, wraps them in ``MRRestorationPipeline`` and saves the pipeline
(safetensors), ready for ``MRRestorationPipeline.from_pretrained(out_dir)``.

Examples::

    # values given on the command line (IR-SDE deraining defaults)
    python examples/convert_irsde_checkpoint.py pretrained/rain100h_sde.pth out/rain100h \\
        --max-sigma 10 --T 100 --schedule cosine --eps 0.005 --nf 64 --depth 4

    # values read from the IR-SDE option file (command-line values still win)
    python examples/convert_irsde_checkpoint.py latest_G.pth out/derain \\
        --options codes/config/deraining/options/test/ir-sde.yml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

IRSDE_DEFAULTS: dict[str, Any] = {
    "max_sigma": 50.0,
    "T": 100,
    "schedule": "cosine",
    "eps": 0.005,
}


def read_irsde_options(path: str) -> dict[str, Any]:
    """Pick the SDE and network settings out of an IR-SDE ``.yml`` option file."""
    import yaml  # a dependency of huggingface_hub, hence always present with diffusers

    with open(path, encoding="utf-8") as f:
        opt = yaml.safe_load(f) or {}
    values: dict[str, Any] = {}
    sde = opt.get("sde") or {}
    for key in ("max_sigma", "T", "schedule", "eps"):
        if key in sde:
            values[key] = sde[key]
    net = opt.get("network_G") or {}
    which = net.get("which_model_G")
    if which is not None and which != "ConditionalUNet":
        raise SystemExit(
            f"{path}: network_G.which_model_G is {which!r}; only ConditionalUNet is supported."
        )
    setting = net.get("setting") or {}
    for theirs, ours in (("in_nc", "in_channels"), ("out_nc", "out_channels"), ("nf", "nf")):
        if theirs in setting:
            values[ours] = setting[theirs]
    if "depth" in setting:
        values["depth"] = setting["depth"]
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="IR-SDE generator checkpoint (e.g. latest_G.pth)")
    parser.add_argument("out_dir", help="folder to write the pipeline to")
    parser.add_argument("--options", help="IR-SDE option file (.yml) to read the values from")
    parser.add_argument(
        "--max-sigma",
        type=float,
        help="stationary noise level in 1/255 units, as IR-SDE writes it (50 means 50/255; "
        f"default {IRSDE_DEFAULTS['max_sigma']:g})",
    )
    parser.add_argument("--T", type=int, help="number of training steps (default 100)")
    parser.add_argument(
        "--schedule", choices=["cosine", "linear", "constant"], help="theta schedule (cosine)"
    )
    parser.add_argument("--eps", type=float, help="alpha at t = T (default 0.005)")
    parser.add_argument("--nf", type=int, help="network width (default: from the checkpoint)")
    parser.add_argument("--depth", type=int, help="network depth (default: from the checkpoint)")
    parser.add_argument(
        "--prediction-type",
        default="epsilon",
        choices=["epsilon", "sample", "v_prediction"],
        help="what the network predicts (IR-SDE networks predict the noise: epsilon)",
    )
    parser.add_argument(
        "--state-dict-key", help="key holding the state dict in the checkpoint, if nested"
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="dtype of the saved weights",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    import torch

    # Imported here so that --help works fast; MRRestorationPipeline is
    # diffusers_mrs.pipelines.MRRestorationPipeline, re-exported lazily.
    from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler, MRUNet2DModel

    values: dict[str, Any] = dict(IRSDE_DEFAULTS)
    if args.options:
        values.update(read_irsde_options(args.options))
    for key, value in (
        ("max_sigma", args.max_sigma),
        ("T", args.T),
        ("schedule", args.schedule),
        ("eps", args.eps),
        ("nf", args.nf),
        ("depth", args.depth),
    ):
        if value is not None:
            values[key] = value

    net_config = {
        k: values[k] for k in ("in_channels", "out_channels", "nf", "depth") if k in values
    }
    unet = MRUNet2DModel.from_irsde_checkpoint(
        args.checkpoint, state_dict_key=args.state_dict_key, **net_config
    )
    scheduler = MRSamplerScheduler(
        num_train_timesteps=int(values["T"]),
        theta_schedule=str(values["schedule"]),
        max_sigma=float(values["max_sigma"]) / 255.0,
        eps=float(values["eps"]),
        prediction_type=args.prediction_type,
    )
    pipe = MRRestorationPipeline(unet=unet, scheduler=scheduler)
    if args.dtype != "float32":
        pipe.to(dtype=getattr(torch, args.dtype))

    out_dir = Path(args.out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    n_params = sum(p.numel() for p in unet.parameters())
    summary = {
        "unet": {k: v for k, v in unet.config.items() if not k.startswith("_")},
        "parameters": n_params,
        "scheduler": {
            "num_train_timesteps": scheduler.config.num_train_timesteps,
            "theta_schedule": scheduler.config.theta_schedule,
            "max_sigma": scheduler.config.max_sigma,
            "eps": scheduler.config.eps,
            "prediction_type": scheduler.config.prediction_type,
        },
    }
    print(json.dumps(summary, indent=2))
    print(f"saved the pipeline to {out_dir}")
    return out_dir


if __name__ == "__main__":
    main()
