"""What the benchmark scripts share: one PSNR, the package's, and one way to write a result.

The scripts import their siblings by module name (``from _common import image_psnr``,
``from example_images import ...``): a script started as ``python benchmarks/NAME.py`` has
its own folder first on ``sys.path``, and the tests import a script with that folder on
``sys.path`` too (``tests/helpers.py``, ``benchmark_module``), so no script edits the path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusers_mrs.atomic_files import write_atomic
from diffusers_mrs.metrics import psnr

__all__ = ["image_psnr", "write_result"]


def image_psnr(restored: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> float:
    """PSNR in dB, ``10 log10(1 / MSE)`` (``inf`` for an exact copy), of one restoration
    against a reference, by :func:`diffusers_mrs.metrics.psnr`.

    Takes what the pipeline returns for one image: a ``C x H x W`` or ``1 x C x H x W``
    tensor (``output_type="pt"``) or an ``H x W x C`` array (``output_type="np"``), values
    in [0, 1].
    """
    pair = [_as_batch(restored), _as_batch(reference)]
    if pair[0].shape[0] != 1:
        raise ValueError(f"one image expected, got a batch of {pair[0].shape[0]}")
    return psnr(*pair)[0]


def _as_batch(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``1 x C x H x W`` of one image given as a tensor (``[1 x] C x H x W``) or an
    ``H x W x C`` array."""
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return image if image.ndim == 4 else image[None]


def write_result(out: Path, stem: str, result: dict[str, Any], markdown: str) -> None:
    """Writes ``out/<stem>.json`` (``result``) and ``out/<stem>.md`` (``markdown``), each
    atomically (a failed write leaves the earlier file whole), and prints the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((f"{stem}.json", json.dumps(result, indent=2) + "\n"),
                       (f"{stem}.md", markdown)):
        write_atomic(out / name, lambda f, text=text: f.write(text.encode()))
    print(markdown)
