"""Conversion of original IR-SDE, Refusion and DA-CLIP checkpoints into pipeline folders.

One call turns the files a user downloaded from the original projects into a complete
:class:`~diffusers_mrs.MRRestorationPipeline` folder: the network (and for DA-CLIP the
image encoder and its preprocessing) in safetensors, ``model_index.json``, the scheduler
at the MR Sampler paper's setting (:data:`PAPER_SCHEDULER`, overridable) and a model card
rendered from ``model_cards/converted_checkpoint.md`` that names the original work, its
license, the source files (with SHA-256) and every setting. The command line front end is
``diffusers-mrs convert`` / ``diffusers-mrs convert-daclip`` (:mod:`diffusers_mrs.cli.convert`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "FAMILIES",
    "MAX_TRAIN_TIMESTEPS",
    "PAPER_SCHEDULER",
    "ConversionError",
    "check_daclip_pair",
    "check_scheduler_settings",
    "convert_checkpoint",
    "read_options",
]


class ConversionError(ValueError):
    """The inputs of a conversion are inconsistent (checked before any work)."""


@dataclass(frozen=True)
class Family:
    """An original code base whose checkpoints convert to a pipeline."""

    title: str
    network: str  # class name in diffusers_mrs
    work: str
    url: str
    license: str


FAMILIES: dict[str, Family] = {
    "irsde": Family(
        "IR-SDE",
        "MRUNet2DModel",
        "Image Restoration with Mean-Reverting Stochastic Differential Equations "
        "(Luo et al., ICML 2023), ConditionalUNet",
        "https://github.com/Algolzw/image-restoration-sde",
        "mit",
    ),
    "refusion": Family(
        "Refusion",
        "MRNAFNetModel",
        "Refusion: Enabling Large-Size Realistic Image Restoration with Latent-Space "
        "Diffusion Models (Luo et al., CVPR Workshops 2023), ConditionalNAFNet",
        "https://github.com/Algolzw/image-restoration-sde",
        "mit",
    ),
    "daclip": Family(
        "DA-CLIP",
        "MRUNet2DModel",
        "Controlling Vision-Language Models for Multi-Task Image Restoration (Luo et al., "
        "ICLR 2024): DA-CLIP image encoder and its universal-restoration ConditionalUNet",
        "https://github.com/Algolzw/daclip-uir",
        "mit",
    ),
}

#: The MR Sampler paper's setting for these models (their training SDE: T = 100 cosine
#: steps, max_sigma 50/255, eps 0.005, noise-predicting networks; sampler: SDE, data
#: parameterization, second order).
PAPER_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 100,
    "theta_schedule": "cosine",
    "max_sigma": 50 / 255,
    "eps": 0.005,
    "prediction_type": "epsilon",
    "algorithm_type": "sde",
    "parameterization": "data",
    "solver_order": 2,
}


#: The largest ``num_train_timesteps`` (T) a conversion writes: the schedulers' own bound,
#: :data:`diffusers_mrs.scheduling_common.MAX_TRAIN_TIMESTEPS` (kept here as a number so that
#: importing this module stays light; a test checks that the two agree).
MAX_TRAIN_TIMESTEPS = 1_000_000

# network_G.which_model_G of the original option files, per family
_WHICH_MODEL = {
    "irsde": "ConditionalUNet",
    "refusion": "ConditionalNAFNet",
    "daclip": "ConditionalUNet",
}
# network_G.setting names -> constructor arguments (the NAFNet's names are its own)
_SETTING_NAMES = {
    "in_nc": "in_channels", "out_nc": "out_channels", "img_channel": "in_channels",
    "nf": "nf", "depth": "depth", "ch_mult": "ch_mult", "context_dim": "context_dim",
    "use_degra_context": "use_degra_context", "use_image_context": "use_image_context",
    "width": "width", "enc_blk_nums": "enc_blk_nums", "middle_blk_num": "middle_blk_num",
    "dec_blk_nums": "dec_blk_nums", "scale": "inner_scale",
}  # fmt: skip


def read_options(path: str | os.PathLike[str], family: str) -> tuple[dict, dict]:
    """Scheduler and network settings from an original ``.yml`` option file.

    ``sde`` gives ``num_train_timesteps`` (T), ``theta_schedule``, ``max_sigma`` (in
    1/255 units there when >= 1) and ``eps``; ``network_G.setting`` the network's
    constructor arguments (checked against the weights when loading).

    Raises:
        ConversionError: naming the file and the entry, for YAML that does not parse, a
            section that is not a mapping (``sde: 5``) or a value of the wrong kind
            (``max_sigma: abc``).
    """
    opt = _read_yaml_mapping(path)
    sde, net = _section(opt, "sde", path), _section(opt, "network_G", path)
    which = net.get("which_model_G")
    if which is not None and which != _WHICH_MODEL[family]:
        raise ConversionError(
            f"{path}: network_G.which_model_G is {which!r}, not {_WHICH_MODEL[family]!r} "
            f"(the {FAMILIES[family].title} network)"
        )
    scheduler: dict[str, Any] = {}
    for theirs, ours in (("T", "num_train_timesteps"), ("schedule", "theta_schedule"),
                         ("eps", "eps")):  # fmt: skip
        if theirs in sde:
            scheduler[ours] = sde[theirs]
    if "max_sigma" in sde:
        sigma = sde["max_sigma"]
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise ConversionError(f"{path}: sde.max_sigma must be a number, got {sigma!r}")
        scheduler["max_sigma"] = sigma / 255 if sigma >= 1 else sigma
    setting = _section(net, "setting", path, "network_G.")
    network = {_SETTING_NAMES[k]: v for k, v in setting.items() if k in _SETTING_NAMES}
    if family == "refusion":
        network.pop("out_channels", None)  # the NAFNet returns what it takes in
    try:
        check_scheduler_settings(scheduler)
    except ConversionError as err:
        raise ConversionError(f"{path}: sde: {err}") from None
    return scheduler, network


def _read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The option file as a mapping (an empty file is an empty one)."""
    import yaml  # a dependency of huggingface_hub and diffusers

    try:
        with open(path, encoding="utf-8") as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConversionError(f"{path}: not valid YAML{line}: {problem}") from None
    except UnicodeDecodeError:
        raise ConversionError(f"{path}: not a text (UTF-8) option file") from None
    if opt is None:
        return {}
    if not isinstance(opt, dict):
        raise ConversionError(
            f"{path}: an option file is a mapping (sde:, network_G:), got {type(opt).__name__}"
        )
    return opt


def _section(opt: dict[str, Any], name: str, path: object, prefix: str = "") -> dict[str, Any]:
    """``opt[name]`` as a mapping (missing or empty: ``{}``)."""
    value = opt.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConversionError(
            f"{path}: {prefix}{name} must be a mapping of settings, got {value!r}"
        )
    return value


def check_scheduler_settings(settings: dict[str, Any]) -> None:
    """Bounds on the scheduler settings a conversion takes, checked before the scheduler
    is built (its per-step tables have ``num_train_timesteps`` entries).

    Raises:
        ConversionError: ``num_train_timesteps`` not a whole number in
            ``[1, MAX_TRAIN_TIMESTEPS]``; ``max_sigma`` or ``eps`` not a finite number > 0.
    """
    steps = settings.get("num_train_timesteps")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, int)
        or not 1 <= steps <= MAX_TRAIN_TIMESTEPS
    ):
        raise ConversionError(
            f"T (num_train_timesteps) must be a whole number from 1 to "
            f"{MAX_TRAIN_TIMESTEPS:,}, got {steps!r}"
        )
    for name in ("max_sigma", "eps"):
        value = settings.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0
        ):
            raise ConversionError(f"{name} must be a finite number > 0, got {value!r}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_inputs(family: str, checkpoint: Path, daclip: Path | None, output: Path) -> None:
    """Every problem visible before loading anything, as one clear error."""
    if family not in FAMILIES:
        raise ConversionError(f"unknown family {family!r}; choose from {sorted(FAMILIES)}")
    files = [checkpoint] + ([daclip] if daclip is not None else [])
    for file in files:
        if not file.is_file():
            raise ConversionError(f"{file}: no such checkpoint file")
    if (family == "daclip") != (daclip is not None):
        raise ConversionError(
            "a DA-CLIP conversion needs the encoder file (--daclip daclip_ViT-B-32.pt) and "
            "only DA-CLIP takes one"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConversionError(
            f"{output} exists and is not an empty folder; choose a new output folder "
            "(a conversion never overwrites)"
        )
    parent = output.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConversionError(f"cannot create {output}: {parent} is not a writable folder")


def _load_network(family: str, checkpoint: Path, network_config: dict[str, Any]) -> Any:
    import diffusers_mrs

    network = getattr(diffusers_mrs, FAMILIES[family].network).from_irsde_checkpoint(
        checkpoint, **network_config
    )
    uses_context = bool(getattr(network.config, "use_image_context", False)) or bool(
        getattr(network.config, "use_degra_context", False)
    )
    if uses_context and family != "daclip":
        raise ConversionError(
            f"{checkpoint} is a DA-CLIP network (it takes the encoder's contexts): convert it "
            "with `diffusers-mrs convert-daclip --daclip daclip_ViT-B-32.pt --unet ...`"
        )
    if family == "daclip" and not bool(getattr(network.config, "use_image_context", False)):
        raise ConversionError(
            f"{checkpoint} has no image-context layers: it is not DA-CLIP's universal "
            "restoration network (use --family irsde)"
        )
    return network


def convert_checkpoint(
    family: str,
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    daclip: str | os.PathLike[str] | None = None,
    scheduler_config: dict[str, Any] | None = None,
    network_config: dict[str, Any] | None = None,
    model_name: str | None = None,
) -> Path:
    """Convert original checkpoint files into a pipeline folder.

    Args:
        family: ``"irsde"``, ``"refusion"`` or ``"daclip"`` (:data:`FAMILIES`).
        checkpoint: the network's file (``*_G.pth``, ``universal-ir.pth``).
        output: the folder to create; it must not exist or be empty.
        daclip: DA-CLIP's encoder file (``daclip_ViT-B-32.pt``), for ``"daclip"`` only.
        scheduler_config: changes to :data:`PAPER_SCHEDULER`.
        network_config: constructor arguments of the network (default: inferred from the
            weights; given ones are checked against them).
        model_name: title of the model card (default: the output folder's name).

    Returns:
        The output folder. It is written to a temporary folder beside it and renamed into
        place at the end, so a failed conversion leaves nothing behind.
    """
    from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler

    checkpoint, output = Path(checkpoint), Path(output)
    daclip = Path(daclip) if daclip is not None else None
    _check_inputs(family, checkpoint, daclip, output)
    if daclip is not None:
        check_daclip_pair(daclip, checkpoint)
    scheduler = _build_scheduler(MRSamplerScheduler, scheduler_config or {})
    network = _load_network(family, checkpoint, dict(network_config or {}))
    components: dict[str, Any] = {"unet": network, "scheduler": scheduler}
    if daclip is not None:
        components.update(_daclip_components(daclip, network))
    pipe = MRRestorationPipeline(**components)
    sources = {"network": checkpoint} | ({"image encoder": daclip} if daclip else {})
    return _save_pipeline_folder(pipe, family, sources, output, model_name or output.name)


def check_daclip_pair(daclip: Path, checkpoint: Path) -> None:
    """The encoder's embeddings are as wide as the network's contexts, read off the shapes
    of both files (memory-mapped: no tensor is loaded), before any conversion.

    Raises:
        ConversionError: the two files are not a pair (e.g. a ViT-B-32 encoder, 512-dim,
            with Wild-IR's network, 768).
        IRSDECheckpointError, DACLIPCheckpointError: a file is unreadable or truncated.
    """
    from diffusers_mrs.models.checkpoint_io import read_checkpoint
    from diffusers_mrs.models.daclip_encoder_checkpoint import infer_daclip_encoder_config
    from diffusers_mrs.models.irsde_checkpoint import infer_irsde_config

    width = infer_daclip_encoder_config(read_checkpoint(daclip, mmap=True))["projection_dim"]
    context = infer_irsde_config(read_checkpoint(checkpoint, mmap=True)).get("context_dim")
    if context is not None and context != width:
        raise ConversionError(
            f"{daclip.name} gives {width}-dim embeddings but {checkpoint.name} expects "
            f"context_dim={context}: the encoder and the network are not a pair (DA-CLIP "
            "ViT-B-32 encoders give 512, the ViT-L-14 one of wild-ir 768)"
        )


def _build_scheduler(cls: type, changes: dict[str, Any]) -> Any:
    """:data:`PAPER_SCHEDULER` with ``changes``, bounded and then checked by the scheduler
    itself; any problem is a :class:`ConversionError` naming the setting."""
    settings = {**PAPER_SCHEDULER, **changes}
    check_scheduler_settings(settings)
    try:
        return cls(**settings)
    except (ValueError, TypeError) as err:
        raise ConversionError(f"scheduler settings: {err}") from None


def _daclip_components(daclip: Path, network: Any) -> dict[str, Any]:
    """DA-CLIP's image encoder and feature extractor, checked against the network's context."""
    from diffusers_mrs.models.checkpoint_io import weights_message
    from diffusers_mrs.models.daclip_encoder import DACLIPImageEncoder, daclip_feature_extractor
    from diffusers_mrs.models.weight_checks import non_finite_weights

    encoder = DACLIPImageEncoder.from_daclip_checkpoint(daclip)
    message = weights_message(
        f"{daclip}: the image encoder", NaN_or_infinite_values=non_finite_weights(
            encoder.state_dict()))
    if message is not None:
        raise ConversionError(message)
    if encoder.config.projection_dim != network.config.context_dim:
        raise ConversionError(
            f"the encoder's embeddings have {encoder.config.projection_dim} values but the "
            f"network expects context_dim={network.config.context_dim}"
        )
    return {
        "image_encoder": encoder,
        "feature_extractor": daclip_feature_extractor(encoder.config.image_size),
    }


def _save_pipeline_folder(
    pipe: Any, family: str, sources: dict[str, Path], output: Path, model_name: str
) -> Path:
    """Saves the pipeline and its model card in a temporary folder beside ``output`` and
    renames it into place, so a failed conversion leaves nothing behind."""
    output.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.absolute().parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        card = render_conversion_card(pipe, family, sources, model_name)
        card.save(staging / "README.md")
        if output.exists():
            output.rmdir()  # checked empty above
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def _config_json(module: Any) -> str:
    config = {k: v for k, v in dict(module.config).items() if not k.startswith("_")}
    return json.dumps(config, indent=2, sort_keys=True, default=str)


def render_conversion_card(
    pipe: Any, family: str, sources: dict[str, Path], model_name: str
) -> Any:
    """The model card of a converted folder (``huggingface_hub.ModelCard``)."""
    from huggingface_hub import ModelCard, ModelCardData

    from diffusers_mrs import __version__

    info = FAMILIES[family]
    template = resources.files("diffusers_mrs.model_cards") / "converted_checkpoint.md"
    card_data = ModelCardData(
        library_name="diffusers",
        license=info.license,
        pipeline_tag="image-to-image",
        tags=["diffusers-mrs", "mean-reverting-diffusion", "image-restoration", "mr-sampler"],
    )
    encoder = getattr(pipe, "image_encoder", None)
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        family=info,
        family_key=family,
        sources=[
            {"role": role, "name": path.name, "sha256": _sha256(path)}
            for role, path in sources.items()
        ],
        scheduler_class=type(pipe.scheduler).__name__,
        scheduler_config=_config_json(pipe.scheduler),
        network_class=type(pipe.unet).__name__,
        network_config=_config_json(pipe.unet),
        num_parameters=f"{sum(p.numel() for p in pipe.unet.parameters()):,}",
        encoder_config=_config_json(encoder) if encoder is not None else None,
        diffusers_mrs_version=__version__,
    )
