"""Fit the degradation classifier of a degradation-aware pipeline anew, network untouched.

The network of a degradation-aware model only ever sees the encoder's type vectors
(``type_embeddings``, docs/math.md#degradation-context); the convolutions and the head that
name the type can be trained on their own without changing what the network was trained
with. This stage starts them afresh and trains them by cross-entropy on crops of many sizes
(the encoder pools over the whole image, and restorations run on whole photos, not 64 px
patches) with jittered degradations, and writes a new pipeline folder.

    python -m diffusers_mrs.training.classifier runs/aware/pipeline runs/aware/pipeline-cls \\
        --steps 3000

The features and head do not depend on the type vectors, so they may be fitted while the
network still trains and joined with its final type vectors afterwards (``--features-from
FITTED/degradation_encoder --steps 0``).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import degrade
from ..models.degradation_encoder import MRDegradationEncoder
from .photo_data import training_images


def classifier_batch(
    photos: Sequence[np.ndarray], types: Sequence[str], batch: int, size: int,
    rng: np.random.Generator, degrader: Callable[..., np.ndarray] = degrade,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random ``size`` px crops of ``photos`` (float in [0, 1] or uint8), each of a
    random type degraded by ``degrader`` (jittered parameters), and their type indices."""
    images, labels = [], []
    for _ in range(batch):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        side = min(size, h, w)
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        label = int(rng.integers(len(types)))
        crop = photo[top : top + side, left : left + side]
        if crop.dtype == np.uint8:
            crop = crop.astype(np.float32) / 255.0
        crop = degrader(crop, types[label], rng)
        images.append(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
        labels.append(label)
    return torch.stack(images).float(), torch.tensor(labels)


def fit_classifier(
    encoder: MRDegradationEncoder, steps: int, batch: int = 32,
    sizes: Sequence[int] = (48, 64, 96, 128), lr: float = 2e-3, seed: int = 0,
    train_data: str = "bundled",
) -> list[float]:
    """Train ``encoder``'s features and head (not ``type_embeddings``) by cross-entropy on
    the training photos of ``train_data`` (``bundled`` or ``photos[:DIR]``, as the
    trainer's); returns the per-step accuracy."""
    photos, degrader = training_images(train_data)
    params = [p for n, p in encoder.named_parameters() if n != "type_embeddings"]
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    rng, accuracy = np.random.default_rng(seed), []
    encoder.train()
    for _ in tqdm(range(steps), desc="classifier"):
        images, labels = classifier_batch(photos, encoder.degradations, batch,
                                          int(rng.choice(sizes)), rng, degrader)
        logits = encoder(images).logits
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        accuracy.append((logits.argmax(1) == labels).float().mean().item())
    encoder.eval()
    return accuracy


def fresh_classifier(folder: Path, features_from: Path | None = None) -> MRDegradationEncoder:
    """An encoder with ``folder``'s config and type vectors, and the features and head of the
    encoder in ``features_from`` (one with the same types, e.g. fitted earlier) or newly
    initialised ones (so an encoder saved by an older layout of the classifier is refitted)."""
    from safetensors.torch import load_file

    encoder = MRDegradationEncoder.from_config(MRDegradationEncoder.load_config(folder))
    if features_from is not None:
        donor = MRDegradationEncoder.from_pretrained(features_from)
        if donor.degradations != encoder.degradations:
            raise SystemExit(f"{features_from} names {donor.degradations}, the pipeline's encoder"
                             f" {encoder.degradations}")
        encoder.load_state_dict(donor.state_dict(), strict=False)
    saved = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    with torch.no_grad():
        encoder.type_embeddings.copy_(saved["type_embeddings"])
    return encoder


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pipeline", type=Path, help="a degradation-aware pipeline folder")
    p.add_argument("output", type=Path, help="the new pipeline folder (must not exist)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_data", default="bundled",
                   help='"bundled" or "photos[:DIR]" (the run\'s --train_data)')
    p.add_argument("--features-from", type=Path, default=None,
                   help="start from this encoder folder's features and head (same types)")
    args = p.parse_args(argv)
    if args.output.exists():
        raise SystemExit(f"{args.output} exists; choose a new folder (nothing is overwritten)")
    encoder = fresh_classifier(args.pipeline / "degradation_encoder", args.features_from)
    before = encoder.type_embeddings.detach().clone()
    accuracy = fit_classifier(encoder, args.steps, args.batch, lr=args.lr, seed=args.seed,
                              train_data=args.train_data)
    encoder.eval()
    assert torch.equal(encoder.type_embeddings, before)  # the network's contexts are unchanged
    shutil.copytree(args.pipeline, args.output)
    encoder.save_pretrained(args.output / "degradation_encoder", safe_serialization=True)
    if accuracy:
        tail = accuracy[-min(200, len(accuracy)):]
        print(f"training accuracy over the last {len(tail)} steps: {np.mean(tail):.3f}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
