"""DA-CLIP's degradation names and their text embeddings, from a checkpoint's text tower.

DA-CLIP's README names an image's degradation with its CLIP text tower:
``p = softmax(100 * d @ T^T)``, where ``d`` is the image's degradation embedding and the
rows of ``T`` are the text embeddings of the 10 names of :data:`DEGRADATION_NAMES`, both
normalised to unit length (DA-CLIP README, "DA-CLIP Usage").

The text embeddings depend only on the checkpoint, so they are computed once, at
conversion (:func:`degradation_text_embeddings`), and stored with the image encoder
(:class:`~diffusers_mrs.DACLIPImageEncoder`'s ``degradation_text_embeds``): nothing of the
text tower, and no tokenizer, is needed at run time. The names' token ids
(:data:`DEGRADATION_TOKEN_IDS`) are CLIP's byte-pair encoding of each name (start and end
of text included, as open_clip's ``tokenize`` writes them before padding with zeros to 77);
they were computed once with the public BPE vocabulary and are checked against the
original tokenizer's output in the tests.

The text tower of an open_clip ``CLIP`` state dict (``clip.token_embedding``,
``clip.positional_embedding``, ``clip.transformer.resblocks.*``, ``clip.ln_final``,
``clip.text_projection``) maps onto ``transformers``' ``CLIPTextModelWithProjection``
with the block names of :mod:`~diffusers_mrs.models.daclip_encoder_checkpoint`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .daclip_encoder_checkpoint import DACLIPCheckpointError, convert_vit_blocks

__all__ = [
    "DEGRADATION_LOGIT_SCALE",
    "DEGRADATION_NAMES",
    "DEGRADATION_TOKEN_IDS",
    "convert_text_state_dict",
    "degradation_text_embeddings",
    "degradation_token_batch",
    "infer_text_config",
]

#: DA-CLIP's ten degradation names, in the README's order.
DEGRADATION_NAMES = (
    "motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy",
    "raindrop", "rainy", "shadowed", "snowy", "uncompleted",
)  # fmt: skip
#: The factor applied to the cosine similarities before the softmax (the README's 100).
DEGRADATION_LOGIT_SCALE = 100.0
#: CLIP token ids of each name: start of text (49406), the name's BPE tokens, end of text
#: (49407); open_clip pads them with zeros to its context length.
DEGRADATION_TOKEN_IDS: dict[str, tuple[int, ...]] = {
    "motion-blurry": (49406, 7860, 268, 21977, 49407),
    "hazy": (49406, 32655, 49407),
    "jpeg-compressed": (49406, 73, 11207, 268, 42359, 49407),
    "low-light": (49406, 1042, 268, 1395, 49407),
    "noisy": (49406, 33495, 49407),
    "raindrop": (49406, 3128, 3387, 49407),
    "rainy": (49406, 10222, 49407),
    "shadowed": (49406, 15243, 538, 49407),
    "snowy": (49406, 14191, 49407),
    "uncompleted": (49406, 569, 5976, 49407),
}
START_OF_TEXT, END_OF_TEXT = 49406, 49407
TEXT_PREFIX = "clip."
_TEXT_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}


def _text_tower(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's entries (``clip.`` removed), or an error naming what is missing."""
    tower = {
        k[len(TEXT_PREFIX) :]: v
        for k, v in state_dict.items()
        if k.startswith(TEXT_PREFIX) and not k.startswith(TEXT_PREFIX + "visual.")
    }
    needed = [*_TEXT_TOP, "text_projection", "transformer.resblocks.0.mlp.c_fc.weight"]
    missing = [TEXT_PREFIX + k for k in needed if k not in tower]
    if missing:
        raise DACLIPCheckpointError(
            f"the DA-CLIP checkpoint has no complete text tower (missing {missing[:4]}); its "
            "degradation names need it"
        )
    return tower


def infer_text_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """``transformers.CLIPTextConfig`` arguments read off the text tower's shapes
    (``width // 64`` heads, as open_clip's configurations; the exact GELU)."""
    tower = _text_tower(state_dict)
    vocab, width = (int(n) for n in tower["token_embedding.weight"].shape)
    block = re.compile(r"^transformer\.resblocks\.(\d+)\.")
    layers = {int(m.group(1)) for k in tower if (m := block.match(k))}
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": int(tower["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": max(layers) + 1,
        "num_attention_heads": max(1, width // 64),
        "max_position_embeddings": int(tower["positional_embedding"].shape[0]),
        "projection_dim": int(tower["text_projection"].shape[1]),
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": START_OF_TEXT,
        "eos_token_id": END_OF_TEXT,
        "pad_token_id": 0,
    }


def convert_text_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower renamed to ``CLIPTextModelWithProjection``'s parameter names."""
    tower = _text_tower(state_dict)
    converted = {ours: tower[theirs] for theirs, ours in _TEXT_TOP.items()}
    converted["text_projection.weight"] = tower["text_projection"].t()
    blocks = {k: v for k, v in tower.items() if k.startswith("transformer.resblocks.")}
    renamed, unknown = convert_vit_blocks(blocks, "text_model.", "transformer.")
    if unknown:
        raise DACLIPCheckpointError(f"text-tower entries of no known layer: {unknown[:6]}")
    converted.update(renamed)
    return converted


def degradation_token_batch(context_length: int) -> torch.Tensor:
    """The names' token ids, zero-padded to ``context_length`` as open_clip's ``tokenize``."""
    batch = torch.zeros(len(DEGRADATION_NAMES), context_length, dtype=torch.long)
    for row, name in enumerate(DEGRADATION_NAMES):
        ids = DEGRADATION_TOKEN_IDS[name]
        if len(ids) > context_length:
            raise DACLIPCheckpointError(
                f"the text tower's context length {context_length} is shorter than {name!r}"
            )
        batch[row, : len(ids)] = torch.tensor(ids)
    return batch


@torch.no_grad()
def degradation_text_embeddings(state_dict: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[10, projection_dim]``: the unit-length text embeddings of :data:`DEGRADATION_NAMES`
    from a DA-CLIP checkpoint's text tower (float32; the tower is built, used and dropped).

    ``e_k = normalize(ln_final(h_k[eot]) @ text_projection)``, ``h_k`` the causal text
    transformer's states of name ``k``'s tokens.
    """
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(**infer_text_config(state_dict))
    if config.vocab_size <= END_OF_TEXT:
        raise DACLIPCheckpointError(
            f"the text tower's vocabulary has {config.vocab_size} entries, not CLIP's 49408"
        )
    converted = {k: v.float() for k, v in convert_text_state_dict(state_dict).items()}
    with torch.device("meta"):
        expected = CLIPTextModelWithProjection(config).state_dict()
    bad = sorted(set(expected) ^ set(converted)) + [
        k for k in expected if k in converted and converted[k].shape != expected[k].shape
    ]
    if bad:
        raise DACLIPCheckpointError(f"the text tower does not fit CLIP's text model: {bad[:6]}")
    model = CLIPTextModelWithProjection(config).eval()
    model.load_state_dict(converted, strict=True)
    tokens = degradation_token_batch(config.max_position_embeddings)
    embeds = model(input_ids=tokens).text_embeds
    return F.normalize(embeds.float(), dim=-1)
