"""The original DA-CLIP files of ``fixtures/original_pairs_tiny.safetensors``, rebuilt.

The fixture stores no weights: per pair, the original state dicts' names and shapes and the
seeds of :func:`seeded_weights.seeded_tensor` (``fixtures/make_original_pairs_fixture.py``).
This module writes the two files a user downloads (``torch.save`` of the state dicts, under
the Hub repo's file names) and lays them out as ``huggingface_hub`` caches them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from seeded_weights import seeded_tensor

RUN = Path(__file__).parent / "fixtures" / "original_pairs_tiny.safetensors"
REPO = "weblzw/daclip-uir-ViT-B-32-irsde"
#: pair -> (encoder file, network file), as in the Hub repo
FILES = {
    "universal-ir": ("daclip_ViT-B-32.pt", "universal-ir.pth"),
    "universal-ir-mix": ("daclip_ViT-B-32_mix.pt", "universal-ir-mix.pth"),
    "wild-ir": ("wild-daclip_ViT-L-14.pt", "wild-ir.pth"),
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def load_run() -> dict:
    """Tensors (``<pair>.<name>``) and metadata (JSON-decoded) of the fixture."""
    with safe_open(RUN, framework="pt") as f:
        run = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
        meta = f.metadata()
    run.update({k: json.loads(v) for k, v in meta.items() if not k.startswith("source")})
    return run


def original_state_dicts(run: dict, pair: str) -> tuple[dict, dict]:
    """The original ``DaCLIP`` and ``ConditionalUNet`` state dicts of ``pair``."""
    meta = run[pair]
    daclip = {k: seeded_tensor(k, s, meta["seed"]) for k, s in meta["daclip_names"].items()}
    # DaCLIP.visual is clip.visual: its state dict lists the same tensors twice
    daclip.update({k[len("clip.") :]: v for k, v in daclip.items() if k.startswith("clip.visual.")})
    network = {
        k: seeded_tensor(k, s, meta["network_seed"]) for k, s in meta["network_names"].items()
    }
    return daclip, network


def write_pair(run: dict, pair: str, folder: Path) -> tuple[Path, Path]:
    """The pair's two files in ``folder`` (Hub names); returns (encoder, network) paths."""
    folder.mkdir(parents=True, exist_ok=True)
    daclip, network = original_state_dicts(run, pair)
    encoder_file, network_file = (folder / name for name in FILES[pair])
    torch.save(daclip, encoder_file)
    torch.save(network, network_file)
    return encoder_file, network_file


def cache_file(cache: Path, repo: str, file: Path) -> Path:
    """Moves ``file`` into a ``huggingface_hub`` cache as ``repo``'s file of that name (the
    blob named by its SHA-256, the snapshot link, ``refs/main``); returns the link."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / COMMIT
    for folder in (root / "blobs", snapshot, root / "refs"):
        folder.mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    file.replace(root / "blobs" / digest)
    link = snapshot / file.name
    link.unlink(missing_ok=True)
    link.symlink_to(Path("..") / ".." / "blobs" / digest)
    return link


def write_hub_cache(run: dict, cache: Path, pairs=tuple(FILES), repo: str = REPO) -> None:
    """The pairs' files in a ``huggingface_hub`` cache, under ``repo``."""
    staging = cache / "staging"
    for pair in pairs:
        for file in write_pair(run, pair, staging):
            cache_file(cache, repo, file)
    staging.rmdir()


def lq_image(run: dict, pair: str) -> torch.Tensor:
    """The pair's degraded image, ``[3, H, W]`` in [0, 1]."""
    return run[f"{pair}.lq_uint8"].permute(2, 0, 1).float() / 255
