"""Posterior ensembles: K samples per image in one batch, their mean and spread.

A converged sampler draws ``x^(1..K)`` independently from the posterior ``p(x_0 | mu)``.
Their per-pixel mean estimates the posterior mean (the MMSE restoration) with a standard
error of ``std / sqrt(K)``, and their per-pixel sample standard deviation estimates the
posterior standard deviation: where the restoration is uncertain (docs/math.md#ensembles):

    mean = (1/K) sum_k x^(k)
    std  = sqrt( (1/(K-1)) sum_k (x^(k) - mean)^2 )        (Bessel-corrected, K >= 2)

Layout: the K samples of image ``i`` are rows ``i*K ... i*K+K-1`` of the batch
(``repeat_interleave``), so with one generator per image every sample of image ``i`` draws
from that image's generator and the ensemble does not depend on the other images.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_num_samples", "ensemble_statistics", "repeat_for_samples"]


def check_num_samples(num_samples: Any) -> int:
    """Returns ``num_samples`` as an int, or raises ``ValueError`` if it is not a positive int."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")
    return num_samples


def repeat_for_samples(
    batch: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None,
    num_samples: int,
) -> tuple[torch.Tensor, torch.Generator | list[torch.Generator] | None]:
    """Repeats every image ``num_samples`` times along the batch (``i*K + k`` layout).

    A list of per-image generators becomes a list of ``len(batch) * K`` entries in which the
    generator of image ``i`` is repeated K times: ``randn_tensor`` then draws the K samples
    of image ``i`` one after another from that generator. A single generator (or ``None``)
    is passed on unchanged.
    """
    if num_samples == 1:
        return batch, generator
    repeated = batch.repeat_interleave(num_samples, dim=0)
    if isinstance(generator, list):
        generator = [g for g in generator for _ in range(num_samples)]
    return repeated, generator


def ensemble_statistics(
    samples: torch.Tensor, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pixel mean and Bessel-corrected standard deviation of each image's K samples.

    Args:
        samples: ``[B * K, C, H, W]`` in the ``repeat_for_samples`` layout.
        num_samples: K.

    Returns:
        ``(mean, std)``, each ``[B, C, H, W]`` in float32; ``std`` is ``None`` for K = 1
        (one sample has no spread).
    """
    if samples.shape[0] % num_samples != 0:
        raise ValueError(
            f"{samples.shape[0]} samples cannot be split into groups of {num_samples}."
        )
    if num_samples == 1:
        return samples.float(), None
    grouped = samples.float().unflatten(0, (-1, num_samples))
    std, mean = torch.std_mean(grouped, dim=1, correction=1)
    return mean, std
