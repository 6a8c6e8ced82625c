"""DA-CLIP's degradation-aware image encoder, built from ``transformers``' CLIP modules.

DA-CLIP (Luo et al., 2024, "Controlling Vision-Language Models for Multi-Task Image
Restoration") conditions its restoration U-Net on two vectors computed from the degraded
image: a content embedding and a degradation embedding. Both come from a CLIP ViT
(ViT-B/32: 12 layers of width 768, patches of 32 pixels, 224 x 224 input, 512-dim output)
that is run twice, as two towers of identical layout:

* the *controller* tower runs on the image; after each of its ``L`` layers ``l`` a linear
  map with bias (``controller_outputs[l]``, zero at initialisation in the original)
  turns its hidden state into a control signal ``c_l``; its own pooled, projected output
  is the degradation embedding;
* the *main* tower (the frozen CLIP image encoder) runs on the same image and adds, after
  its layer ``i``, the control signal of the controller's layer ``L - 1 - i`` (the controls
  are consumed last-in, first-out); its pooled, projected output is the content
  embedding.

Pooling is the class token, the final layer norm, then the projection (no bias); neither
embedding is normalised. The activation is the exact GELU (``transformers``' CLIP
configuration defaults to the quick approximation, which DA-CLIP does not use).

Checkpoints of the original code (open_clip's ``DaCLIP`` state dict,
``daclip_ViT-B-32.pt``) load with :meth:`DACLIPImageEncoder.from_daclip_checkpoint`;
the name mapping lives in :mod:`diffusers_mrs.models.daclip_encoder_checkpoint`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn
from transformers import CLIPImageProcessorPil, CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoder, CLIPVisionEmbeddings

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "DACLIPEncoderOutput",
    "DACLIPImageEncoder",
    "daclip_feature_extractor",
]

# CLIP's normalisation constants (open_clip's OPENAI_DATASET_MEAN / _STD).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class DACLIPEncoderOutput(BaseOutput):
    """Output of :class:`DACLIPImageEncoder`.

    Args:
        image_embeds: content embedding of the main tower, ``[batch, projection_dim]``.
        degradation_embeds: degradation embedding of the controller tower,
            ``[batch, projection_dim]``. Neither is normalised.
        degradation_probabilities: ``[batch, len(degradation_names)]``, the probability of
            each of the encoder's degradation names (float32), for an encoder that stores
            the names' text embeddings; ``None`` otherwise.
    """

    image_embeds: torch.Tensor
    degradation_embeds: torch.Tensor
    degradation_probabilities: torch.Tensor | None = None


class CLIPVisionTower(nn.Module):
    """The layers of a CLIP ViT (``transformers``' names), run layer by layer by the caller.

    ``embeddings`` (patch convolution without bias, class token, learned positions),
    ``pre_layrnorm``, ``encoder.layers`` (pre-norm attention + MLP blocks) and
    ``post_layernorm`` (applied to the pooled class token).
    """

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, 1 + patches, hidden]`` entering the first layer."""
        return self.pre_layrnorm(self.embeddings(pixel_values))

    def pool(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The normalised class token ``[B, hidden]``."""
        return self.post_layernorm(hidden_states[:, 0, :])


class DACLIPImageEncoder(ModelMixin, ConfigMixin):
    r"""DA-CLIP's image encoder: content and degradation embeddings of an image.

    ``encoder(pixel_values)`` takes CLIP-preprocessed images
    ``[B, num_channels, image_size, image_size]`` (see :func:`daclip_feature_extractor`)
    and returns :class:`DACLIPEncoderOutput` (or, with ``return_dict=False``, the tuple
    ``(image_embeds, degradation_embeds)``), equal to the original's
    ``DaCLIP.encode_image(pixel_values, control=True)``.

    Args:
        image_size: input height and width (224 for ViT-B/32).
        patch_size: side of the square patches (32).
        num_channels: input channels (3).
        hidden_size: transformer width (768).
        num_hidden_layers: layers per tower (12).
        num_attention_heads: attention heads (open_clip uses ``hidden_size // 64``).
        intermediate_size: MLP width (``4 * hidden_size``).
        projection_dim: size of both embeddings (512).
        layer_norm_eps: epsilon of every layer norm (1e-5).
        hidden_act: MLP activation; ``"gelu"`` (exact) for DA-CLIP.
        degradation_names: names whose unit-length text embeddings (from the checkpoint's
            text tower, :mod:`~diffusers_mrs.models.daclip_text`) are stored in the buffer
            ``degradation_text_embeds``; the outputs then carry
            ``degradation_probabilities``. ``None``: no names.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 32,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        projection_dim: int = 512,
        layer_norm_eps: float = 1e-5,
        hidden_act: str = "gelu",
        degradation_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not a multiple of patch_size={patch_size}"
            )
        vision_config = CLIPVisionConfig(
            image_size=image_size,
            patch_size=patch_size,
            num_channels=num_channels,
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size,
            projection_dim=projection_dim,
            layer_norm_eps=layer_norm_eps,
            hidden_act=hidden_act,
            attn_implementation="sdpa",
        )
        self.vision_model = CLIPVisionTower(vision_config)
        self.visual_projection = nn.Linear(hidden_size, projection_dim, bias=False)
        self.controller_model = CLIPVisionTower(vision_config)
        self.controller_projection = nn.Linear(hidden_size, projection_dim, bias=False)
        self.controller_outputs = nn.ModuleList(
            [nn.Linear(hidden_size, hidden_size) for _ in range(num_hidden_layers)]
        )
        for layer in self.controller_outputs:  # zero at initialisation, as in DA-CLIP
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.degradation_text_embeds: torch.Tensor | None
        if degradation_names:
            embeds = torch.zeros(len(degradation_names), projection_dim)
            self.register_buffer("degradation_text_embeds", embeds)
        else:
            self.degradation_text_embeds = None

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        c, size = self.config.num_channels, self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (c, size, size):
            raise ValueError(
                f"pixel_values must have shape [batch, {c}, {size}, {size}] (CLIP-preprocessed "
                f"images, see daclip_feature_extractor()), got {tuple(pixel_values.shape)}"
            )

    def forward(
        self, pixel_values: torch.Tensor, return_dict: bool = True
    ) -> DACLIPEncoderOutput | tuple[torch.Tensor, torch.Tensor]:
        """Content and degradation embeddings of ``pixel_values``.

        With ``h_0 = embed(x)`` in both towers, controller layers ``g_l`` and main layers
        ``f_i``: ``c_l = W_l g_l(...) + b_l`` and
        ``h_{i+1} = f_i(h_i) + c_{L-1-i}``; the embeddings are
        ``proj(ln_post(h_L[cls]))`` of each tower.
        """
        self._check_pixel_values(pixel_values)
        pixel_values = pixel_values.to(self.visual_projection.weight.dtype)
        hidden = self.controller_model.embed(pixel_values)
        controls = []
        for layer, output in zip(
            self.controller_model.encoder.layers, self.controller_outputs, strict=True
        ):
            hidden = layer(hidden, None)
            controls.append(output(hidden))
        degradation_embeds = self.controller_projection(self.controller_model.pool(hidden))

        hidden = self.vision_model.embed(pixel_values)
        for layer in self.vision_model.encoder.layers:
            hidden = layer(hidden, None) + controls.pop()
        image_embeds = self.visual_projection(self.vision_model.pool(hidden))
        if not return_dict:
            return image_embeds, degradation_embeds
        return DACLIPEncoderOutput(
            image_embeds=image_embeds,
            degradation_embeds=degradation_embeds,
            degradation_probabilities=self.degradation_probabilities(degradation_embeds),
        )

    def degradation_probabilities(self, degradation_embeds: torch.Tensor) -> torch.Tensor | None:
        """``softmax(100 * normalize(d) @ T^T)`` over ``config.degradation_names`` (float32),
        ``T`` the stored unit-length text embeddings, as DA-CLIP's README names a
        degradation (its "DA-CLIP Usage"); ``None`` without names."""
        if self.degradation_text_embeds is None:
            return None
        from .daclip_text import DEGRADATION_LOGIT_SCALE

        degradation = torch.nn.functional.normalize(degradation_embeds.float(), dim=-1)
        logits = DEGRADATION_LOGIT_SCALE * degradation @ self.degradation_text_embeds.float().T
        return logits.softmax(dim=-1)

    @classmethod
    def from_daclip_checkpoint(
        cls,
        path: str | os.PathLike[str],
        degradation_names: bool | None = None,
        **config: Any,
    ) -> DACLIPImageEncoder:
        """Load a DA-CLIP checkpoint (open_clip ``DaCLIP`` state dict: ``daclip_ViT-B-32.pt``,
        ``daclip_ViT-B-32_mix.pt``, ``wild-daclip_ViT-L-14.pt``).

        The file is read with ``torch.load(..., weights_only=True)`` (no pickled code
        runs). The architecture is inferred from the shapes (``num_attention_heads =
        hidden_size // 64`` as in open_clip unless given) and every key and shape is
        checked before the model is allocated. The text tower only serves the degradation
        names: their text embeddings are computed once here and stored in the encoder
        (:mod:`~diffusers_mrs.models.daclip_text`); the tower itself is not kept.

        Args:
            path: checkpoint file; a plain state dict, or one nested under
                ``"state_dict"``, with or without a ``module.`` prefix.
            degradation_names: store DA-CLIP's degradation names: ``None`` (default) where
                the checkpoint has a text tower with CLIP's vocabulary, ``True`` always
                (an error without one), ``False`` never.
            **config: constructor arguments overriding the inferred ones.

        Returns:
            The encoder in float32, eval mode.

        Raises:
            DACLIPCheckpointError: the file is not a DA-CLIP checkpoint or does not fit.
        """
        from .daclip_encoder_checkpoint import (
            check_daclip_state_dict,
            convert_daclip_state_dict,
            infer_daclip_encoder_config,
            read_checkpoint,
        )

        original = read_checkpoint(path)
        full_config = {**infer_daclip_encoder_config(original), **config}
        converted = convert_daclip_state_dict(original)
        with torch.device("meta"):  # shapes only, nothing allocated
            expected = {k: v.shape for k, v in cls(**full_config).state_dict().items()}
        check_daclip_state_dict(converted, expected, full_config)
        text_embeds = _degradation_text_embeds(original, degradation_names)
        if text_embeds is not None:
            from .daclip_text import DEGRADATION_NAMES

            full_config["degradation_names"] = list(DEGRADATION_NAMES)
            converted["degradation_text_embeds"] = text_embeds
        model = cls(**full_config)
        model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
        return model.eval()


def _degradation_text_embeds(
    state_dict: dict[str, torch.Tensor], wanted: bool | None
) -> torch.Tensor | None:
    """The names' text embeddings, or ``None`` where not ``wanted`` (``None``: where the
    checkpoint has a text tower with CLIP's vocabulary)."""
    from .daclip_text import END_OF_TEXT, TEXT_PREFIX, degradation_text_embeddings

    if wanted is None:
        tokens = state_dict.get(TEXT_PREFIX + "token_embedding.weight")
        wanted = tokens is not None and tokens.shape[0] > END_OF_TEXT
    return degradation_text_embeddings(state_dict) if wanted else None


def daclip_feature_extractor(image_size: int = 224) -> CLIPImageProcessorPil:
    """``transformers`` image processor reproducing DA-CLIP's preprocessing.

    DA-CLIP (open_clip, evaluation transform) resizes the short side to ``image_size``
    with bicubic interpolation (PIL, on the 8-bit image), centre-crops ``image_size`` x
    ``image_size``, scales to [0, 1] and normalises with CLIP's mean and standard
    deviation. The PIL backend of ``transformers``' CLIP processor does exactly this
    (torchvision's resize of a PIL image is PIL's resize), except where the crop window
    cannot be centred: torchvision rounds the offset ``(size - crop) / 2`` half to even,
    ``transformers`` floors it, so when the resized side exceeds the crop by 3 (mod 4)
    pixels the window sits one pixel earlier along that side. Otherwise the pixel values
    are identical (docs/guide/models.md, "How the networks are checked").
    """
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=3,  # PIL.Image.BICUBIC
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
        do_convert_rgb=True,
    )
