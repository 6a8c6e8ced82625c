"""``diffusers-mrs demo``: a Gradio web app to try a restoration model on your own image.

Upload an image (or pick a bundled example), choose the sampler, steps, seed, number of
posterior samples and tile size, and see the restoration against the input on a
before/after slider, with the seconds it took and the number of network evaluations (NFE).
With more than one sample the result is the ensemble mean and the per-pixel standard
deviation is shown as a colour map (docs/math.md#ensembles). "Compare" restores the same
input with the MR Sampler at 10 steps and with IR-SDE posterior sampling at 100 steps and
shows both with their times. Where the model is degradation-aware (a
``degradation_encoder``), the degradation of the upload is shown with the encoder's
probabilities, and a drop-down forces a type instead of detecting it ("auto"); for other
models neither appears.

Safety: the app listens on 127.0.0.1 unless told otherwise, never opens a public share
link, refuses uploads above :data:`MAX_FILE_SIZE` bytes, and bounds what one request may
cost (:class:`~diffusers_mrs.demo_limits.DemoLimits`: image size, steps, samples, pixels x
K, pixels per network call, above which the network is tiled with a note in the result,
and the size "Compare" takes), each with a clear message. Every file it or Gradio writes
(uploads, results) stays in one temporary folder (:mod:`diffusers_mrs.demo_workdir`),
whose old files expire while it runs and which is removed when the app stops, on Ctrl-C
as on SIGTERM.

The app is built from small functions that run without a browser: :func:`restore_fn`,
:func:`compare_fn` (the event handlers, given a :class:`DemoSession`) and
:func:`build_demo` (the ``gr.Blocks``). Needs the ``demo`` extra: ``pip install
"diffusers-mrs[demo]"``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import torch

import diffusers_mrs
from diffusers_mrs.demo_limits import (
    TILE_BATCH_SIZE,
    DemoLimitError,
    DemoLimits,
    check_compare,
    check_request,
    plan_tiles,
)
from diffusers_mrs.demo_workdir import demo_workdir, expire_files
from diffusers_mrs.image_io import ImageInputError, decode_pil
from diffusers_mrs.original_checkpoints import load_model_argument
from diffusers_mrs.restore_settings import (
    AUTO_DEGRADATION,
    MIN_TILE_SIZE,
    degradation_label,
    degradation_types,
    forced_degradation,
    scheduler_from_config,
    seeded_generator,
)
from diffusers_mrs.uncertainty_map import uncertainty_map

__all__ = ["DemoSession", "build_demo", "compare_fn", "restore_fn", "run_demo"]

#: Sampler names shown in the app -> (sampler name of the command line's ``--scheduler``,
#: :data:`~diffusers_mrs.restore_settings.SCHEDULERS`, and config overrides).
#: The faithful MR Sampler draws true posterior samples at 10 steps (its ensembles' spread
#: matches their error, docs/math.md#ensembles); the model's own gives a sharper single sample.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "MR Sampler": ("mrs", {}),
    "MR Sampler, faithful samples": ("mrs", {"solver_order": 2}),
    "MR UniPC (ODE)": ("unipc", {}),
    "Posterior (IR-SDE)": ("posterior", {}),
    "Euler-Maruyama": ("euler", {}),
}
#: The "compare" action: (sampler, steps) pairs run on the same input and seed.
COMPARE_RUNS = (("MR Sampler", 10), ("Posterior (IR-SDE)", 100))
TILE_CHOICES = ("off", str(MIN_TILE_SIZE), "128", "256", "512")
MAX_FILE_SIZE = 25 * 1024 * 1024  # bytes per upload, enforced by Gradio before decoding
#: Seconds after which the demo's result files and Gradio's uploads are removed.
FILE_MAX_AGE_S = 3600


@dataclass
class DemoSession:
    """What the event handlers share: the loaded pipeline, the temp folder, the limits of
    one request and the age at which files expire."""

    pipe: Any
    workdir: Path
    limits: DemoLimits = field(default_factory=DemoLimits)
    examples: list[Path] = field(default_factory=list)
    file_max_age_s: int = FILE_MAX_AGE_S

    @property
    def gradio_delete_cache(self) -> tuple[int, int]:
        """Gradio's ``delete_cache`` (how often, what age): its uploads and served files
        expire as the demo's results do."""
        return max(1, self.file_max_age_s // 4), self.file_max_age_s


@dataclass
class Restoration:
    """One restoration run: the result, its uncertainty (K > 1), time, NFE, and for a
    degradation-aware model the type used and the encoder's probabilities of all types."""

    image: PIL.Image.Image
    uncertainty: PIL.Image.Image | None
    seconds: float
    nfe: int
    degradation: dict[str, float] | None
    degradation_name: str | None = None


# ----------------------------------------------------------------------------- helpers
def degradation_choices(pipe: Any) -> list[str] | None:
    """The drop-down of a degradation-aware pipeline: ``"auto"`` (detect) and every type of
    its ``degradation_encoder``; ``None`` for other pipelines."""
    types = degradation_types(pipe)
    return None if types is None else [AUTO_DEGRADATION, *types]


def pipeline_with_sampler(pipe: Any, sampler: str) -> Any:
    """The same pipeline (shared modules) with the scheduler named by ``sampler``.

    A fresh scheduler built ``from_config`` of the model's own with the sampler's overrides
    (so the model's tuned settings carry over, and concurrent calls share no scheduler state).
    """
    if sampler not in SAMPLERS:
        raise gr.Error(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    name, overrides = SAMPLERS[sampler]
    scheduler = scheduler_from_config(pipe.scheduler.config, name, **overrides)
    new = type(pipe)(**{**pipe.components, "scheduler": scheduler})
    new.set_progress_bar_config(disable=True)
    return new


def check_image(image: PIL.Image.Image | None, max_pixels: int) -> PIL.Image.Image:
    """The uploaded image, or a ``gr.Error`` naming the problem (none, or too large)."""
    if image is None:
        raise gr.Error("Upload an image first (or pick one of the examples).")
    w, h = image.size
    if w * h > max_pixels:
        raise gr.Error(
            f"The image is {w} x {h} = {w * h / 1e6:.1f} megapixels; this demo restores up to"
            f" {max_pixels / 1e6:.1f} megapixels. Crop or downscale it first."
        )
    return image


def budget(
    session: DemoSession, image: PIL.Image.Image, steps: Any, samples: Any, seed: Any,
    tile: int | None,
) -> tuple[int, int, int, int | None, str | None]:
    """A request within the session's limits (:mod:`diffusers_mrs.demo_limits`): steps,
    samples and seed as ints, the tile size to use and a note where tiling was forced; or
    a ``gr.Error`` naming the limit."""
    try:
        steps, samples, seed = check_request(
            session.limits, image.width, image.height, steps, samples, seed)
    except DemoLimitError as err:
        raise gr.Error(str(err)) from None
    choices = [int(c) for c in TILE_CHOICES if c != "off"]
    tile, note = plan_tiles(session.limits, image.width, image.height, samples, tile, choices)
    return steps, samples, seed, tile, note


def decode_upload(image: PIL.Image.Image) -> tuple[np.ndarray, PIL.Image.Image]:
    """The upload read like the pipeline and CLI read files (``image_io.decode_pil``: EXIF
    orientation, 16-bit scaling, mode rules): (float pixels ``H x W x C`` in [0, 1] for the
    pipeline, an 8-bit RGB copy for the before/after slider), or a ``gr.Error``."""
    try:
        decoded = decode_pil(image, "the uploaded image")
    except ImageInputError as err:
        raise gr.Error(str(err)) from None
    preview = np.clip(np.round(decoded.rgb() * 255.0), 0, 255).astype(np.uint8)
    return decoded.pixels, PIL.Image.fromarray(preview, mode="RGB")


def parse_tile(tile: str | int | None) -> int | None:
    """``"off"``/``None``/0 -> no tiling, else the tile size as int."""
    if tile in (None, "", "off", 0, "0"):
        return None
    size = int(tile)
    if size < MIN_TILE_SIZE:
        raise gr.Error(
            f"Tile size must be at least {MIN_TILE_SIZE} pixels (smaller tiles leave seams),"
            f" got {size}."
        )
    return size


def read_degradation(output: Any) -> dict[str, float] | None:
    """The detected degradation of the first image as ``{type: probability}``, if reported."""
    probs = getattr(output, "degradation_probabilities", None)
    if probs is not None:
        first = probs[0] if isinstance(probs, (list, tuple)) else probs
        if isinstance(first, dict):
            return {str(k): float(v) for k, v in first.items()}
    names = getattr(output, "degradation", None)
    if names is None:
        return None
    name = names[0] if isinstance(names, (list, tuple)) else names
    prob = getattr(output, "degradation_probability", None)
    p = prob[0] if isinstance(prob, (list, tuple)) else prob
    return {str(name): float(p) if p is not None else 1.0}


def progress_callback(
    report: Callable[[tuple[int, int], str], Any], total: int, desc: str
) -> Callable[..., dict[str, Any]]:
    """A ``callback_on_step_end`` that reports ``(step, total)`` after every sampler step."""

    def callback(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        report((i + 1, total), desc)
        return {}

    return callback


def restore(
    session: DemoSession,
    image: PIL.Image.Image | np.ndarray,
    sampler: str,
    steps: int,
    seed: int,
    samples: int = 1,
    tile: int | None = None,
    report: Callable[[tuple[int, int], str], Any] | None = None,
    degradation: str | None = AUTO_DEGRADATION,
) -> Restoration:
    """Runs the pipeline once (K = ``samples`` in one batch) and times it; ``degradation``
    forces a type of a degradation-aware model (``"auto"``/``None``: detect it)."""
    pipe = pipeline_with_sampler(session.pipe, sampler)
    callback = None
    if report is not None:
        callback = progress_callback(report, int(steps), f"{sampler}, {int(steps)} steps")
    start = time.perf_counter()
    try:
        output = pipe(
            image,
            num_inference_steps=int(steps),
            generator=seeded_generator(pipe._execution_device, int(seed)),
            num_samples=int(samples),
            tile_size=tile,
            tile_batch_size=TILE_BATCH_SIZE,
            callback_on_step_end=callback,
            degradation=forced_degradation(degradation),
        )
    except ValueError as err:  # the pipeline's own input checks: show them as they are
        raise gr.Error(str(err)) from None
    seconds = time.perf_counter() - start
    std = output.uncertainty[0] if output.uncertainty is not None else None
    return Restoration(
        image=output.images[0],
        uncertainty=uncertainty_map(std) if std is not None else None,
        seconds=seconds,
        nfe=pipe.num_timesteps,
        degradation=read_degradation(output),
        degradation_name=output.degradation[0] if output.degradation is not None else None,
    )


def save_result(session: DemoSession, image: PIL.Image.Image) -> str:
    """Writes the full-resolution result as PNG into the session's temp folder (removing
    results older than ``session.file_max_age_s`` first)."""
    expire_files(session.workdir, "restored-*.png", session.file_max_age_s)
    path = session.workdir / f"restored-{uuid.uuid4().hex[:12]}.png"
    image.save(path, format="PNG")
    return str(path)


# ----------------------------------------------------------------------------- handlers
def restore_fn(
    session: DemoSession,
    image: PIL.Image.Image | None,
    sampler: str,
    steps: int,
    seed: int,
    samples: int,
    tile: str | int | None,
    progress: Any = None,
    degradation: str | None = AUTO_DEGRADATION,
) -> tuple[Any, str, Any, Any, Any]:
    """The "Restore" button: returns (slider pair, info, uncertainty, download, degradation).

    ``degradation`` is the drop-down of a degradation-aware model (``"auto"``: detect)."""
    pixels, image = decode_upload(check_image(image, session.limits.max_pixels))
    steps, k, seed, tile_size, note = budget(session, image, steps, samples, seed,
                                             parse_tile(tile))
    report = None if progress is None else (lambda frac, desc: progress(frac, desc=desc))
    run = restore(session, pixels, sampler, steps, seed, k, tile_size, report, degradation)
    forced = forced_degradation(degradation) is not None
    info = (
        f"**{sampler}**, {steps} steps: **{run.seconds:.2f} s**, NFE {run.nfe}"
        + (f" (one batch of {k} samples; their mean is shown)" if k > 1 else "")
        + f" - {image.width} x {image.height} px"
        + (f" - {note}" if note else "")
        + degradation_text(run, forced)
    )
    has_map = run.uncertainty is not None
    label = "Degradation (forced; the encoder's estimate)" if forced else "Detected degradation"
    return (
        (image, run.image),
        info,
        gr.update(value=run.uncertainty, visible=has_map),
        gr.update(value=save_result(session, run.image), visible=True),
        gr.update(value=run.degradation, visible=run.degradation is not None, label=label),
    )


def degradation_text(run: Restoration, forced: bool) -> str:
    """`` - degradation: **noise** (p = 0.99)`` for the info line (empty for other models)."""
    if run.degradation_name is None or run.degradation is None:
        return ""
    p = run.degradation.get(run.degradation_name, float("nan"))
    how = "forced; encoder's p" if forced else "p"
    label = degradation_label(run.degradation_name, forced, list(run.degradation))
    return f" - degradation: **{label}** ({how} = {p:.2f})"


def compare_fn(
    session: DemoSession,
    image: PIL.Image.Image | None,
    seed: int,
    tile: str | int | None,
    progress: Any = None,
    degradation: str | None = AUTO_DEGRADATION,
) -> tuple[PIL.Image.Image, PIL.Image.Image, str]:
    """The "Compare" button: MR Sampler @10 and posterior @100 on the same input and seed
    (and the same ``degradation`` choice)."""
    pixels, upload = decode_upload(check_image(image, session.limits.max_pixels))
    try:
        check_compare(session.limits, upload.width, upload.height,
                      sum(steps for _, steps in COMPARE_RUNS))
    except DemoLimitError as err:
        raise gr.Error(str(err)) from None
    _, _, seed, tile_size, note = budget(session, upload, 1, 1, seed, parse_tile(tile))
    report = None if progress is None else (lambda frac, desc: progress(frac, desc=desc))
    runs = [
        restore(session, pixels, sampler, steps, seed, 1, tile_size, report, degradation)
        for sampler, steps in COMPARE_RUNS
    ]
    (s1, n1), (s2, n2) = COMPARE_RUNS
    ratio = runs[1].seconds / max(runs[0].seconds, 1e-9)
    info = (
        f"**{s1} @ {n1} steps: {runs[0].seconds:.2f} s** (NFE {runs[0].nfe}) vs"
        f" **{s2} @ {n2} steps: {runs[1].seconds:.2f} s** (NFE {runs[1].nfe}):"
        f" the MR Sampler took {1 / ratio:.2f}x the time ({ratio:.1f}x faster)."
        + (f" Both with {note}." if note else "")
    )
    return runs[0].image, runs[1].image, info


# ----------------------------------------------------------------------------- the app
def _controls(degradations: list[str] | None, limits: DemoLimits) -> dict[str, Any]:
    """The sampler settings column (the degradation drop-down only shows for a
    degradation-aware model, ``degradations`` its choices), bounded by ``limits``."""
    return {
        "sampler": gr.Radio(list(SAMPLERS), value="MR Sampler", label="Sampler"),
        "steps": gr.Slider(1, limits.max_steps, value=10, step=1, label="Steps (NFE)"),
        "seed": gr.Number(value=0, precision=0, label="Seed", minimum=0),
        "samples": gr.Slider(1, limits.max_samples, value=1, step=1,
                             label="Posterior samples (K)", elem_id="samples"),
        "tile": gr.Dropdown(list(TILE_CHOICES), value="off", label="Tile size (large images)"),
        "degradation": gr.Dropdown(
            degradations or [AUTO_DEGRADATION], value=AUTO_DEGRADATION,
            label="Degradation type (auto: detect it)", visible=degradations is not None,
            elem_id="degradation-type",
        ),
    }


def build_demo(session: DemoSession) -> gr.Blocks:
    """The Gradio app for ``session`` (not launched)."""
    model_name = describe_model(session.pipe)
    with gr.Blocks(title="diffusers-mrs demo", analytics_enabled=False,
                   delete_cache=session.gradio_delete_cache) as demo:
        gr.Markdown(
            "# MR Sampler restoration demo\n"
            f"Model: {model_name}. Upload a degraded image, restore it in a few steps,"
            " and compare with 100-step posterior sampling."
        )
        with gr.Row():
            with gr.Column(scale=1):
                inp = gr.Image(type="pil", image_mode=None, label="Degraded image",
                               elem_id="input-image")
                if session.examples:
                    gr.Examples([[str(p)] for p in session.examples], inputs=[inp])
                c = _controls(degradation_choices(session.pipe), session.limits)
                restore_btn = gr.Button("Restore", variant="primary", elem_id="restore")
                compare_btn = gr.Button("Compare: MR Sampler @ 10 vs posterior @ 100",
                                        elem_id="compare")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Input | restored", type="pil", format="png",
                                        elem_id="result-slider")
                info = gr.Markdown(elem_id="result-info")
                degradation = gr.Label(label="Detected degradation", visible=False,
                                       elem_id="degradation")
                std_map = gr.Image(label="Uncertainty (posterior std)", type="pil",
                                   format="png", visible=False, elem_id="uncertainty")
                download = gr.DownloadButton("Download result (PNG, full resolution)",
                                             visible=False, elem_id="download")
                with gr.Row():
                    mrs_img = gr.Image(label="MR Sampler @ 10", type="pil", format="png")
                    post_img = gr.Image(label="Posterior @ 100", type="pil", format="png")
                compare_info = gr.Markdown(elem_id="compare-info")

        def on_restore(image, sampler, steps, seed, samples, tile, degradation=AUTO_DEGRADATION,
                       progress=gr.Progress()):  # noqa: B008 - Gradio API
            return restore_fn(session, image, sampler, steps, seed, samples, tile, progress,
                              degradation)

        def on_compare(image, seed, tile, degradation=AUTO_DEGRADATION,
                       progress=gr.Progress()):  # noqa: B008 - Gradio API
            return compare_fn(session, image, seed, tile, progress, degradation)

        restore_btn.click(
            on_restore,
            [inp, c["sampler"], c["steps"], c["seed"], c["samples"], c["tile"],
             c["degradation"]],
            [slider, info, std_map, download, degradation],
            api_name="restore",
            concurrency_id="pipeline",
        )
        compare_btn.click(
            on_compare,
            [inp, c["seed"], c["tile"], c["degradation"]],
            [mrs_img, post_img, compare_info],
            api_name="compare",
            concurrency_id="pipeline",
        )
    return demo


def describe_model(pipe: Any) -> str:
    """How the app names the loaded model: the shipped default, or its folder / repo id."""
    from diffusers_mrs.pipelines import default_model_path

    name = str(getattr(pipe, "name_or_path", "") or "")
    if not name or Path(name).resolve() == default_model_path():
        return "the shipped default model"
    return f"`{name}`"


def example_images() -> list[Path]:
    """The bundled sample images (``examples/images`` of a checkout), if present."""
    folder = Path(diffusers_mrs.__file__).resolve().parent.parent / "examples" / "images"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def load_session(
    model: str | None, device: str | None, workdir: Path, limits: DemoLimits | None = None
) -> DemoSession:
    """Loads the pipeline on ``device`` (default: CUDA if available, else CPU)."""
    pipe = load_model_argument(model)
    pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe.set_progress_bar_config(disable=True)
    return DemoSession(pipe=pipe, workdir=workdir, limits=limits or DemoLimits(),
                       examples=example_images())


def run_demo(
    model: str | None = None, host: str = "127.0.0.1", port: int | None = None,
    device: str | None = None, workdir: Path | None = None, limits: DemoLimits | None = None,
) -> None:
    """Loads the model and serves the app until interrupted (Ctrl-C or SIGTERM; blocking).

    ``workdir``: the temporary folder from :func:`diffusers_mrs.demo_workdir.demo_workdir`
    (the command line creates it before importing Gradio); without it one is made here,
    after Gradio was imported, so a few of Gradio's own files may land in the system's
    temporary folder. ``limits``: what one request may cost (default :class:`DemoLimits`).
    """
    if workdir is None:
        with demo_workdir() as new_workdir:
            return run_demo(model, host, port, device, new_workdir, limits)
    session = load_session(model, device, workdir, limits)
    demo = build_demo(session)
    try:
        demo.queue(default_concurrency_limit=1).launch(
            server_name=host,
            server_port=port,
            share=False,
            max_file_size=MAX_FILE_SIZE,
            show_error=True,
            ssr_mode=False,
        )
    except KeyboardInterrupt:  # Ctrl-C/SIGTERM before Gradio's own loop catches it
        demo.close()
    print(f"diffusers-mrs demo: stopped; removing {workdir}", flush=True)
