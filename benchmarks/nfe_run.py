"""Running the NFE benchmark's plan: data, restorations through the pipeline, metrics.

Every run restores all benchmark images as one batch through ``MRRestorationPipeline``
(``output_type="pt"``), each image from its own seeded noise, and scores them with
:mod:`diffusers_mrs.metrics`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from nfe_plan import (
    ODE_REFERENCE,
    Method,
    Run,
    make_scheduler,
    scheduler_class,
    unique_evaluations,
)

from diffusers_mrs.metrics import mean_per_group, psnr_and_ssim
from diffusers_mrs.restore_settings import seeded_generator

#: (method key, NFE) pairs shown in the image grid, with their column titles.
GRID_COLUMNS: tuple[tuple[str, int, str], ...] = (
    ("posterior-irsde", 100, "posterior@100"),
    ("posterior-irsde", 10, "posterior@10"),
    ("mrs-default", 10, "MRS@10"),
    ("mrs-default", 5, "MRS@5"),
)


@dataclass
class BenchData:
    """The benchmark images: degraded ``lq`` and clean ``gt`` ``N x 3 x H x W`` in [0, 1]."""

    lq: torch.Tensor
    gt: torch.Tensor
    kinds: list[str]
    photos: list[str]

    @property
    def kind_names(self) -> list[str]:
        """The degradation kinds, in first-appearance order."""
        return list(dict.fromkeys(self.kinds))


def load_data(kinds: Sequence[str], crop: int, seed: int, draws: int = 1) -> BenchData:
    """Centre crops of the held-out photos, each degraded by each kind (nominal, seeded).

    ``draws > 1`` repeats the set ``draws`` times; as image ``i`` gets its own noise seed
    (:func:`restore`), every copy is an independent sample of the sampler on the same input,
    so averages (and the paired differences of the targets) are less noisy.
    """
    from diffusers_mrs.data import make_validation_set

    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    lq, gt, labels = make_validation_set(kinds=tuple(kinds), crop=crop, seed=seed)
    kinds_of = [lab.split("/", 1)[0] for lab in labels] * draws
    photos = [lab.split("/", 1)[1] for lab in labels] * draws
    return BenchData(lq=lq.repeat(draws, 1, 1, 1), gt=gt.repeat(draws, 1, 1, 1),
                     kinds=kinds_of, photos=photos)


def load_pipeline(model: str | None, device: str) -> Any:
    """The pipeline folder ``model`` (or the default model shipped in the package)."""
    from diffusers_mrs import MRRestorationPipeline

    pipe = MRRestorationPipeline.from_pretrained(model)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def restore(
    pipe: Any, scheduler: Any, lq: torch.Tensor, nfe: int, seed: int, samples: int = 1
) -> tuple[torch.Tensor, float]:
    """Restores the batch ``lq`` with ``scheduler`` at ``nfe`` steps; returns (images, seconds).

    Image ``i`` gets its own generator seeded ``seed + i`` on the pipeline's device (noise drawn
    where it samples: CUDA timings hold no noise copies; a CUDA run's noise differs from a
    CPU run's), so the initial noise is the same for every method. ``samples = K > 1``: each
    output is the mean of K posterior samples (``num_samples=K``, all drawn from that
    generator).
    """
    pipe.scheduler = scheduler
    device = pipe._execution_device
    generators = [seeded_generator(device, seed + i) for i in range(lq.shape[0])]
    start = time.perf_counter()
    out = pipe(image=lq, num_inference_steps=nfe, generator=generators, output_type="pt",
               num_samples=samples).images
    return out.float().cpu(), time.perf_counter() - start


@torch.no_grad()
def seconds_per_forward(
    unet: torch.nn.Module, lq: torch.Tensor, num_train_timesteps: int = 100, repeats: int = 2
) -> float:
    """Median time of one network evaluation on the whole batch (after one warm-up call)."""
    param = next(unet.parameters())
    x = lq.to(device=param.device, dtype=param.dtype)
    t = torch.full((x.shape[0],), 0.5 * num_train_timesteps, device=x.device)
    times = []
    for i in range(repeats + 1):
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        unet(x, t, mu=x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def describe_device(device: str) -> str:
    """A short description of where the benchmark runs."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()})"


def ode_reference(pipe: Any, data: BenchData, nfe: int, seed: int, samples: int = 1
                  ) -> torch.Tensor:
    """The converged PF-ODE solution: :data:`~nfe_plan.ODE_REFERENCE` at ``nfe`` steps from
    the latents every run starts from (same seeds, :func:`restore`); the pipeline's scheduler
    is left as it was."""
    base_scheduler = pipe.scheduler
    try:
        scheduler = make_scheduler(base_scheduler.config, ODE_REFERENCE)
        images, _ = restore(pipe, scheduler, data.lq, nfe, seed, samples)
    finally:
        pipe.scheduler = base_scheduler
    return images


def ode_distances(images: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Per image: the root-mean-square difference (in [0, 1] units) to ``reference``."""
    diff = (images.double() - reference.double()).flatten(1)
    return diff.square().mean(dim=1).sqrt().tolist()


def metric_record(
    images: torch.Tensor, data: BenchData, reference: torch.Tensor | None = None
) -> dict[str, Any]:
    """PSNR/SSIM of ``images`` vs the clean crops: per kind, average and per image; with a
    ``reference`` (:func:`ode_reference`) also ``ode_distance``, the RMS distance to it."""
    psnrs, ssims = psnr_and_ssim(images, data.gt)
    record = {
        "psnr": mean_per_group(psnrs, data.kinds),
        "ssim": mean_per_group(ssims, data.kinds),
        "per_image": {"psnr": psnrs, "ssim": ssims},
    }
    if reference is not None:
        distances = ode_distances(images, reference)
        record["ode_distance"] = mean_per_group(distances, data.kinds)
        record["per_image"]["ode_distance"] = distances
    return record


@dataclass
class SweepState:
    """What a sweep accumulates: per-run records and the outputs the grid needs."""

    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    grid_images: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)


def run_sweep(
    pipe: Any,
    data: BenchData,
    runs: Sequence[Run],
    seed: int = 0,
    progress: bool = True,
    on_run_done: Any = None,
    samples: int = 1,
    reference: torch.Tensor | None = None,
) -> SweepState:
    """Runs the plan; identical computations run once and are copied (``same_as``).

    Args:
        pipe: the pipeline (its scheduler is swapped per run and restored at the end).
        data: the benchmark images.
        runs: the plan, from :func:`plan_runs`.
        seed: noise seed (image ``i`` uses ``seed + i``).
        samples: K > 1 scores the mean of K samples per image (:func:`restore`).
        progress: show a tqdm bar (in network evaluations, one update per run).
        on_run_done: optional callback ``f(state)`` after every run (incremental saving).
        reference: the converged ODE solution (:func:`ode_reference`); every record then
            holds its ``ode_distance`` to it.
    """
    from tqdm.auto import tqdm

    base_scheduler = pipe.scheduler
    state = SweepState()
    computed: dict[str, tuple[str, dict[str, Any], torch.Tensor]] = {}
    bar = tqdm(total=unique_evaluations(runs), unit="NFE", desc="runs", disable=not progress)
    n = data.lq.shape[0]
    try:
        for cell in runs:
            name = f"{cell.method.key}@{cell.nfe}"
            if cell.key in computed:
                first, record, images = computed[cell.key]
                record = {**record, "same_as": first}
            else:
                bar.set_postfix_str(name)
                scheduler = make_scheduler(base_scheduler.config, cell.method)
                images, seconds = restore(pipe, scheduler, data.lq, cell.nfe, seed, samples)
                record = {**metric_record(images, data, reference),
                          "seconds_per_image": seconds / n}
                computed[cell.key] = (name, record, images)
                bar.update(cell.nfe)
            state.records.setdefault(cell.method.key, {})[cell.nfe] = record
            if any(cell.method.key == k and cell.nfe == v for k, v, _ in GRID_COLUMNS):
                state.grid_images[(cell.method.key, cell.nfe)] = images
            if on_run_done is not None:
                on_run_done(state)
    finally:
        bar.close()
        pipe.scheduler = base_scheduler
    return state


def results_dict(
    state: SweepState,
    methods: Sequence[Method],
    data: BenchData,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Everything as one JSON-able dict: ``meta``, ``input`` and ``methods``."""
    return {
        "meta": meta,
        "input": metric_record(data.lq, data),
        "images": [f"{k}/{p}" for k, p in zip(data.kinds, data.photos, strict=True)],
        "methods": {
            m.key: {
                "label": m.label,
                "scheduler": scheduler_class(m.family).__name__,
                "overrides": dict(m.overrides),
                "runs": {str(nfe): rec for nfe, rec in sorted(state.records[m.key].items(),
                                                              reverse=True)},
            }
            for m in methods
            if m.key in state.records
        },
    }

