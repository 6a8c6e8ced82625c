"""Validation during training: restore held-out crops with the pipeline, score them.

The restorations go through ``MRRestorationPipeline``'s own sampling loop, and the scores
through :mod:`diffusers_mrs.metrics`, so validation numbers and the NFE benchmark's are the
same measurement. The network runs as the saved pipeline runs it: in float32, without the
autocast that accelerate's mixed precision puts on a prepared module's ``forward``
(:func:`without_autocast`); the noise is drawn on the network's device (a generator there,
seeded per image: the same numbers on every run on one kind of device, other numbers on a
CUDA device than on the CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..metrics import mean_per_group, psnr
from ..restore_settings import seeded_generator

#: Scheduler settings whose single step from t = T returns the network's x0 estimate there
#: (its posterior-mean restoration, docs/math.md#exponential-integrator).
ONE_STEP_X0 = {"algorithm_type": "ode", "parameterization": "data", "solver_order": 1,
               "final_sigmas_type": "zero"}


@contextlib.contextmanager
def without_autocast(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` with the mixed-precision ``forward`` that ``accelerator.prepare`` installed
    (autocast, outputs to float32) replaced by its own for the duration, so it computes as
    the saved pipeline does; a model without one is returned as is.

    (``accelerator.unwrap_model(..., keep_fp32_wrapper=False)`` would remove the wrapper for
    good, and training would lose its autocast.)
    """
    wrapped, original = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield model
        return
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


def _restore(pipe: Any, lq: torch.Tensor, steps: int, seed: int, batch_size: int) -> torch.Tensor:
    """``pipe(image=lq)`` in batches; image ``i`` draws its noise from seed ``seed + i``, on
    the pipeline's device (a CUDA run's noise differs from a CPU run's)."""
    outs = []
    for start in range(0, lq.shape[0], batch_size):
        mu = lq[start : start + batch_size]
        generators = [seeded_generator(pipe._execution_device, seed + start + i)
                      for i in range(len(mu))]  # noise drawn where the pipeline samples
        outs.append(pipe(image=mu, num_inference_steps=steps, generator=generators,
                         output_type="pt").images.float().cpu())
    return torch.cat(outs)


@torch.no_grad()
def evaluate(
    unet: torch.nn.Module,
    scheduler: Any,
    lq: torch.Tensor,
    gt: torch.Tensor,
    labels: Sequence[str],
    num_inference_steps: int = 10,
    seed: int = 0,
    batch_size: int = 16,
    degradation_encoder: torch.nn.Module | None = None,
) -> dict[str, float]:
    """PSNR of the degraded input, of the pipeline's restoration at ``num_inference_steps``
    and of the one-step x0 estimate from ``t = T``, overall and per degradation kind
    (``labels`` are ``"kind/photo"``); a degradation-aware model passes its
    ``degradation_encoder``."""
    from ..pipelines import MRRestorationPipeline
    from ..scheduling_mr_sampler import MRSamplerScheduler

    was_training = unet.training
    unet.eval()
    pipe = MRRestorationPipeline(unet=unet, scheduler=type(scheduler).from_config(scheduler.config),
                                 degradation_encoder=degradation_encoder)
    pipe.set_progress_bar_config(disable=True)
    out = _restore(pipe, lq, num_inference_steps, seed, batch_size)
    pipe.scheduler = MRSamplerScheduler.from_config(scheduler.config, **ONE_STEP_X0)
    x0 = _restore(pipe, lq, 1, seed, batch_size)
    if was_training:
        unet.train()
    kinds = [label.split("/", 1)[0] for label in labels]
    p_in, p_out = mean_per_group(psnr(lq, gt), kinds), mean_per_group(psnr(out, gt), kinds)
    p_x0 = mean_per_group(psnr(x0, gt), kinds)
    metrics = {"psnr_in": p_in["average"], "psnr_out": p_out["average"],
               "psnr_x0_T": p_x0["average"]}
    for kind in dict.fromkeys(kinds):
        metrics[f"{kind}/psnr_in"] = p_in[kind]
        metrics[f"{kind}/psnr_out"] = p_out[kind]
        metrics[f"{kind}/psnr_x0_T"] = p_x0[kind]
    return metrics
