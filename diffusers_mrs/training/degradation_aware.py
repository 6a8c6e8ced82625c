"""Degradation-aware training: a restoration network and a degradation encoder, trained together.

The network is told the degradation type of each training pair through the encoder's learned
type vector (``degradation_context``, added to its time embedding), and the encoder learns to
name the type from the degraded image alone (cross-entropy). Each type's denoising loss is
scaled by a weight that depends on the type only, so every type's minimiser stays its
posterior mean (docs/math.md#degradation-context).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.degradation_encoder import MRDegradationEncoder
from .objective import denoising_loss


class DegradationAwareModel(nn.Module):
    """The two trained parts in one module (one optimiser, one EMA): ``unet`` (built with
    ``use_degra_context``) and ``encoder`` (:class:`MRDegradationEncoder`).

    Its :meth:`forward` computes the training loss, so that a trainer calls the module
    accelerate prepared (the DDP wrapper averages the gradients of both parts over the
    processes; mixed precision applies its autocast), never ``unet``/``encoder`` directly.
    """

    def __init__(self, unet: nn.Module, encoder: MRDegradationEncoder) -> None:
        super().__init__()
        self.unet, self.encoder = unet, encoder

    def forward(
        self,
        lq: torch.Tensor,
        gt: torch.Tensor,
        labels: torch.Tensor,
        scheduler: Any,
        weights: torch.Tensor,
        classifier_weight: float,
        **loss_options: Any,
    ) -> dict[str, torch.Tensor]:
        """The loss terms of one batch, all tensors on ``lq``'s device (nothing is read back):

        ``loss = sum_i w[type_i] l_i / B + classifier_weight * CE(encoder(lq), type)``
        (docs/math.md#degradation-context), where ``l_i`` is the denoising loss
        (:func:`~.objective.denoising_loss`, ``loss_options``) with the network given the
        true type's context and ``w = weights`` (``[num_types]``, on the device); also its
        parts ``denoise`` and ``ce`` and the encoder's ``accuracy`` (detached).
        """
        context = self.encoder.context_for(labels)
        denoise = denoising_loss(self.unet, scheduler, lq, gt, sample_weights=weights[labels],
                                 degradation_context=context, **loss_options)
        logits = self.encoder(lq).logits
        ce = nn.functional.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": denoise + classifier_weight * ce, "denoise": denoise.detach(),
                "ce": ce.detach(), "accuracy": accuracy}


def with_degradation_context(unet: nn.Module, context_dim: int) -> nn.Module:
    """A copy of ``unet`` that takes a degradation context of ``context_dim`` entries, with
    every shared weight copied and the new prompt's output layer zeroed: until it learns,
    the copy computes exactly what ``unet`` does."""
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    config.update(use_degra_context=True, context_dim=context_dim)
    new = type(unet).from_config(config)
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("degradation_embedding.") for k in missing):
        raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    nn.init.zeros_(new.degradation_embedding.linear_out.weight)
    nn.init.zeros_(new.degradation_embedding.linear_out.bias)
    return new


def make_model(
    unet: nn.Module,
    degradations: Sequence[str],
    context_dim: int,
    width: int,
    encoder: MRDegradationEncoder | None = None,
) -> DegradationAwareModel:
    """Pair ``unet`` (given a degradation context if it has none) with ``encoder``, or with a
    new encoder when none is given."""
    if not unet.config.get("use_degra_context", False):
        unet = with_degradation_context(unet, context_dim)
    context_dim = int(unet.config.context_dim)
    if encoder is None:
        encoder = MRDegradationEncoder(degradations=list(degradations), context_dim=context_dim,
                                       width=width)
    return DegradationAwareModel(unet, encoder)


def load_pretrained_encoder(path: str, degradations: Sequence[str]) -> MRDegradationEncoder | None:
    """The ``degradation_encoder/`` of the pipeline folder ``path`` (None if it has none).

    Fine-tuning a degradation-aware pipeline must keep its encoder: the network learned its
    type vectors, and a new encoder would give it other contexts. A ``ValueError`` when the
    saved encoder names other types than ``degradations`` (in order).
    """
    folder = Path(path) / "degradation_encoder"
    if not folder.is_dir():
        return None
    encoder = MRDegradationEncoder.from_pretrained(str(folder))
    if encoder.degradations != list(degradations):
        raise ValueError(f"init_weights {path} has a degradation encoder for "
                         f"{encoder.degradations}, but this run trains {list(degradations)}:"
                         " pass the same --kinds in the same order")
    return encoder


def type_weights(degradations: Sequence[str], weights: Mapping[str, float]) -> torch.Tensor:
    """``[num_types]`` loss weights, 1 for every type ``weights`` does not name."""
    unknown = sorted(set(weights) - set(degradations))
    if unknown:
        raise ValueError(f"loss weights name types {unknown} that are not trained "
                         f"(the types: {list(degradations)})")
    return torch.tensor([float(weights.get(d, 1.0)) for d in degradations])


def load_pretrained_unet(model_cls: type, path: str) -> nn.Module:
    """The network of a pipeline folder (its ``unet/``) or of a model folder; a
    ``ValueError`` when its ``config.json`` names another class than ``model_cls``."""
    import json

    root = Path(path)
    folder = root / "unet" if (root / "unet").is_dir() else root
    config = folder / "config.json"
    saved = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
    if saved is not None and saved != model_cls.__name__:
        raise ValueError(f"init_weights {path} holds a {saved}, not a {model_cls.__name__}:"
                         " pass the --architecture it was trained with")
    return model_cls.from_pretrained(str(folder))
