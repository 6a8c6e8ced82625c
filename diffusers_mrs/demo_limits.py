"""What one request to the web demo may cost, checked before any sampling.

The demo serves anyone who can reach it, so every request is bounded (defaults in
:class:`DemoLimits`, each a parameter; the tests set small ones):

- the image: at most ``max_pixels`` (width x height);
- the steps and the K posterior samples: at most ``max_steps`` and ``max_samples``, also
  for calls through the HTTP API, which the UI's sliders do not bound;
- the samples held at once: ``pixels x K <= max_sample_pixels`` (the sampler keeps
  several full-size copies of the K-sample state);
- one network call: ``max_network_pixels``. Untiled, a call sees all ``pixels x K``; above
  the limit the network is tiled (:func:`plan_tiles`), with a note in the result. A tiled
  call sees ``max(K, TILE_BATCH_SIZE) x tile^2`` pixels (the pipeline batches
  ``TILE_BATCH_SIZE`` tile crops, counting each sample, and at least one tile position);
- "Compare", which runs several samplers (110 network evaluations in all): images up to
  ``max_compare_pixels``.

This module needs no Gradio; the app turns :class:`DemoLimitError` into ``gr.Error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_SEED",
    "TILE_BATCH_SIZE",
    "DemoLimitError",
    "DemoLimits",
    "check_compare",
    "check_request",
    "plan_tiles",
]

#: Tile crops per network call (the pipeline's default ``tile_batch_size``).
TILE_BATCH_SIZE = 4
#: Largest seed ``torch.Generator.manual_seed`` takes as a non-negative number.
MAX_SEED = 2**63 - 1


class DemoLimitError(ValueError):
    """A request above one of the demo's limits (the message says which, and what to do)."""


@dataclass(frozen=True)
class DemoLimits:
    """The demo's per-request limits (pixels count width x height; x K counts samples)."""

    #: largest image (width x height)
    max_pixels: int = 4_000_000
    #: largest image x K (samples) sampled at once
    max_sample_pixels: int = 8_000_000
    #: largest number of pixels (x K) one network call sees; above it the network is tiled
    max_network_pixels: int = 1_048_576
    #: largest image "Compare" takes (it runs several samplers on it)
    max_compare_pixels: int = 1_000_000
    max_steps: int = 200
    max_samples: int = 16


def _megapixels(n: float) -> str:
    return f"{n / 1e6:.1f} M"


def check_request(
    limits: DemoLimits, width: int, height: int, steps: object, samples: object, seed: object
) -> tuple[int, int, int]:
    """``(steps, samples, seed)`` as ints, or a :class:`DemoLimitError` naming the value
    out of bounds (the image's own size is checked on upload)."""
    checked = []
    for name, value, low, high in (("Steps", steps, 1, limits.max_steps),
                                   ("Posterior samples (K)", samples, 1, limits.max_samples),
                                   ("Seed", seed, 0, MAX_SEED)):  # fmt: skip
        number = float(value) if isinstance(value, (int, float)) else float("nan")
        if not (low <= number <= high and number == int(number)):
            raise DemoLimitError(f"{name} must be a whole number from {low} to {high}, "
                                 f"got {value!r}.")
        checked.append(int(value))
    k = checked[1]
    if width * height * k > limits.max_sample_pixels:
        fitting = max(1, limits.max_sample_pixels // (width * height))
        raise DemoLimitError(
            f"K = {k} samples of a {width} x {height} image are "
            f"{_megapixels(width * height * k)} pixels to sample at once; this demo samples up"
            f" to {_megapixels(limits.max_sample_pixels)} (pixels x K). Lower K to {fitting} or"
            " downscale the image."
        )
    return checked[0], checked[1], checked[2]


def check_compare(limits: DemoLimits, width: int, height: int, runs: int) -> None:
    """"Compare" (``runs`` network evaluations in all) takes images up to
    ``max_compare_pixels``; else a :class:`DemoLimitError`."""
    if width * height > limits.max_compare_pixels:
        raise DemoLimitError(
            f"Compare runs {runs} network evaluations; this demo compares images up to "
            f"{_megapixels(limits.max_compare_pixels)}pixels, and this one is {width} x "
            f"{height} = {_megapixels(width * height)}pixels. Use Restore, or downscale it."
        )


def plan_tiles(
    limits: DemoLimits, width: int, height: int, samples: int, tile: int | None,
    choices: Sequence[int],
) -> tuple[int | None, str | None]:
    """The tile size to run with and a note for the user where it is not the one chosen.

    A network call must see at most ``max_network_pixels``: untiled, ``width x height x
    K``; tiled, ``max(K, TILE_BATCH_SIZE) x tile^2``. Where the chosen setting is above,
    the largest of ``choices`` that fits is used (the smallest choice where none does).
    """

    def per_call(size: int | None) -> int:
        if size is None:
            return width * height * samples
        return max(samples, TILE_BATCH_SIZE) * min(size, height) * min(size, width)

    if per_call(tile) <= limits.max_network_pixels:
        return tile, None
    fitting = [c for c in sorted(choices) if per_call(c) <= limits.max_network_pixels]
    forced = fitting[-1] if fitting else min(choices)
    chosen = "no tiling" if tile is None else f"{tile} px tiles"
    note = (
        f"tiles of {forced} px (forced: {width} x {height} px x K = {samples} with {chosen} "
        f"is above the demo's {_megapixels(limits.max_network_pixels)}pixels per network "
        "call)"
    )
    return forced, note
