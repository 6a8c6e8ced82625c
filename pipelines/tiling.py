"""Tiled evaluation of a restoration network with smooth blending.

A diffusion sampler must not be run tile by tile: every tile would draw its own noise and
follow its own trajectory, and the tiles would disagree where they meet. What can be tiled
is the network. :func:`tiled_model_output` evaluates ``fn(x_tile, mu_tile)`` on overlapping
tiles of the full-size state ``x`` and condition ``mu`` and blends the per-tile outputs
into one full-size model output with a raised-cosine (Hann) window normalised by the sum
of the weights. The pipeline then takes one scheduler step on the whole image, so the
noise and the solver history stay global and only the network sees tiles.

Per image, everything fixed is computed once (:func:`plan_tiles`): the padded ``mu``, the
tile grid, the ``mu`` tiles, the blend windows and the reciprocal of their sum; every step
then only crops the state, runs the network and blends (:meth:`TilePlan.apply`).

Memory: besides the full-size state, the blend needs one full-size accumulator of the
output and one single-channel weight map, and the plan keeps the ``mu`` tiles (about
``mu`` times the overlap's coverage); the network only ever sees ``tile_batch_size`` tiles
at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffusers_mrs.models.padding import pad_to_multiple

__all__ = [
    "TileBatch",
    "TilePlan",
    "blend_window",
    "normalize_tile_args",
    "plan_tiles",
    "tile_starts",
    "tiled_model_output",
]


def normalize_tile_args(
    tile_size: int | tuple[int, int], tile_overlap: int | tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Validates ``tile_size`` / ``tile_overlap`` and returns them as ``(h, w)`` pairs.

    ``tile_overlap=None`` means a quarter of the tile size.

    Raises:
        ValueError: for non-positive tile sizes, negative overlaps, or an overlap that is
            not smaller than the tile size.
    """

    def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
        if isinstance(value, bool):
            raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.")
        if isinstance(value, int):
            return value, value
        try:
            h, w = value
        except (TypeError, ValueError):
            raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
            raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.")
        return h, w

    size = pair(tile_size, "tile_size")
    if min(size) < 1:
        raise ValueError(f"`tile_size` must be positive, got {tile_size!r}.")
    overlap = (
        (size[0] // 4, size[1] // 4) if tile_overlap is None else pair(tile_overlap, "tile_overlap")
    )
    if min(overlap) < 0:
        raise ValueError(f"`tile_overlap` must be >= 0, got {tile_overlap!r}.")
    if overlap[0] >= size[0] or overlap[1] >= size[1]:
        raise ValueError(
            f"`tile_overlap` ({tile_overlap!r}) must be smaller than `tile_size` ({tile_size!r})."
        )
    return size, overlap


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``.

    Tiles advance by ``tile - overlap`` rounded down to a multiple of ``align`` (at least
    ``align``); the last tile is aligned to the end of the axis (so it may overlap its
    neighbour by more than ``overlap``). If ``length <= tile`` there is one tile starting at
    0 (and the caller shrinks it to ``length``). With ``length`` and ``tile`` multiples of
    ``align``, every start is a multiple of ``align``.
    """
    if length <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    n = math.ceil((length - tile) / stride) + 1
    starts = [min(i * stride, length - tile) for i in range(n)]
    return sorted(set(starts))


def _ramp_1d(
    size: int, overlap: int, taper_start: bool, taper_end: bool, device: torch.device
) -> torch.Tensor:
    """1-D weights: raised-cosine ramps of width ``overlap`` on the tapered sides, 1 elsewhere."""
    w = torch.ones(size, dtype=torch.float32, device=device)
    o = min(overlap, size)
    if o == 0:
        return w
    # sin^2 ramp sampled at pixel centres: strictly positive, symmetric, and two ramps that
    # face each other over the same `o` pixels add up to exactly 1.
    ramp = torch.sin(
        0.5 * math.pi * (torch.arange(o, dtype=torch.float32, device=device) + 0.5) / o
    )
    ramp = ramp**2
    if taper_start:
        w[:o] = w[:o] * ramp
    if taper_end:
        w[size - o :] = w[size - o :] * ramp.flip(0)
    return w


def blend_window(
    tile_hw: tuple[int, int],
    overlap_hw: tuple[int, int],
    borders: tuple[bool, bool, bool, bool],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The 2-D blend weight of one tile, shape ``[1, 1, h, w]`` (float32).

    ``borders`` = (top, bottom, left, right): whether that side of the tile lies on the
    image border. Sides on the border are not tapered (no neighbour to blend with).
    """
    top, bottom, left, right = borders
    wy = _ramp_1d(tile_hw[0], overlap_hw[0], not top, not bottom, torch.device(device))
    wx = _ramp_1d(tile_hw[1], overlap_hw[1], not left, not right, torch.device(device))
    return (wy[:, None] * wx[None, :])[None, None]


def _tile_grid(
    image_hw: tuple[int, int],
    tile_size: tuple[int, int],
    tile_overlap: tuple[int, int],
    pad_multiple: int,
) -> tuple[tuple[int, int], tuple[int, int], list[tuple[int, int]]]:
    """Tile size, overlap and the ``(y, x)`` start of every tile over an image of ``image_hw``.

    Tile sizes are rounded up to ``pad_multiple`` and shrunk to the image; starts lie on the
    network's downsampling grid, so every tile sees the same pixel phases as the whole image.
    """
    H, W = image_hw
    m = pad_multiple
    th, tw = min(-(-tile_size[0] // m) * m, H), min(-(-tile_size[1] // m) * m, W)
    oh = min(tile_overlap[0], th - 1) if th > 1 else 0
    ow = min(tile_overlap[1], tw - 1) if tw > 1 else 0
    ys, xs = tile_starts(H, th, oh, m), tile_starts(W, tw, ow, m)
    return (th, tw), (oh, ow), [(y, x0) for y in ys for x0 in xs]


@dataclass(frozen=True)
class TileBatch:
    """One network call of a :class:`TilePlan`: its tile starts and everything about them
    that is fixed per image (the ``mu`` crops and the blend windows)."""

    #: ``(y, x)`` start of every tile in the call, the padding repeats included
    starts: tuple[tuple[int, int], ...]
    #: how many of ``starts`` are real tiles (the rest pad the call to the full batch)
    real: int
    #: the ``mu`` crops, ``[len(starts) * B, C, h, w]`` (tile-major)
    mu_tiles: torch.Tensor
    #: the blend windows of the real tiles, ``[real, 1, 1, h, w]`` (float32)
    windows: torch.Tensor


class TilePlan:
    """Everything of a tiled network evaluation that is fixed for one image: the padded
    ``mu``, the tile grid, the calls (``tile_batch_size`` tiles each), their ``mu`` crops,
    the blend windows and their sum. Built once per image by
    :func:`plan_tiles`; :meth:`apply` then only crops the state at every step.

    The blend is ``out = (sum_k w_k * fn(x_k, mu_k)) / (sum_k w_k)`` over the tiles ``k``
    (``w_k`` the raised-cosine window, zero outside tile ``k``).
    """

    def __init__(
        self,
        mu: torch.Tensor,
        tile_size: tuple[int, int],
        tile_overlap: tuple[int, int],
        tile_batch_size: int,
        pad_multiple: int,
        pad_mode: str,
        pad_last_batch: bool,
    ) -> None:
        self.image_hw = tuple(mu.shape[-2:])
        self.pad_multiple, self.pad_mode = pad_multiple, pad_mode
        mu = self._pad(mu)
        self.batch, _, height, width = mu.shape
        (th, tw), overlap, positions = _tile_grid((height, width), tile_size, tile_overlap,
                                                  pad_multiple)
        self.tile_hw = (th, tw)
        per_call = min(max(1, tile_batch_size // max(self.batch, 1)), len(positions))
        windows = {}
        weight_sum = torch.zeros((1, 1, height, width), dtype=torch.float32, device=mu.device)
        self.batches: list[TileBatch] = []
        for first in range(0, len(positions), per_call):
            real = list(positions[first : first + per_call])
            starts = real + [real[-1]] * (per_call - len(real) if pad_last_batch else 0)
            tile_windows = []
            for y, x0 in real:
                borders = (y == 0, y + th >= height, x0 == 0, x0 + tw >= width)
                if borders not in windows:
                    windows[borders] = blend_window((th, tw), overlap, borders, mu.device)
                tile_windows.append(windows[borders])
                weight_sum[:, :, y : y + th, x0 : x0 + tw] += windows[borders]
            self.batches.append(TileBatch(
                tuple(starts), len(real), self._crop(mu, starts), torch.stack(tile_windows)))
        self.weight_sum = weight_sum

    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        if self.pad_multiple > 1:
            return pad_to_multiple(image, self.pad_multiple, self.pad_mode)
        return image

    def _crop(self, image: torch.Tensor, starts: Sequence[tuple[int, int]]) -> torch.Tensor:
        """The tiles of ``image`` at ``starts``, tile-major: ``[len(starts) * B, C, h, w]``."""
        th, tw = self.tile_hw
        return torch.cat([image[:, :, y : y + th, x0 : x0 + tw] for y, x0 in starts], dim=0)

    @property
    def calls_per_step(self) -> int:
        """Network calls per evaluation (every one ``len(starts) * B`` tiles)."""
        return len(self.batches)

    def apply(
        self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """``fn`` on the tiles of the state ``x`` (``[B, C, H, W]``, the size of the
        planned ``mu``) and the planned ``mu`` tiles, blended: ``[B, C_out, H, W]`` in the
        dtype of ``x`` (accumulated in float32)."""
        if tuple(x.shape[-2:]) != self.image_hw or x.shape[0] != self.batch:
            raise ValueError(
                f"the tile plan is for {self.batch} images of {self.image_hw}, got a state of "
                f"shape {tuple(x.shape)}."
            )
        height0, width0 = self.image_hw
        x_padded = self._pad(x)
        th, tw = self.tile_hw
        out: torch.Tensor | None = None
        for call in self.batches:
            pred = fn(self._crop(x_padded, call.starts), call.mu_tiles)
            if out is None:
                out = pred.new_zeros((self.batch, pred.shape[1], *x_padded.shape[-2:]),
                                     dtype=torch.float32)
            for k, (y, x0) in enumerate(call.starts[: call.real]):
                tile = pred[k * self.batch : (k + 1) * self.batch].float()
                out[:, :, y : y + th, x0 : x0 + tw] += call.windows[k] * tile
            del pred
        assert out is not None
        return out.div_(self.weight_sum)[..., :height0, :width0].to(x.dtype)


def plan_tiles(
    mu: torch.Tensor,
    tile_size: tuple[int, int],
    tile_overlap: tuple[int, int],
    tile_batch_size: int = 4,
    pad_multiple: int = 1,
    pad_mode: str = "reflect",
    pad_last_batch: bool = False,
) -> TilePlan:
    """The :class:`TilePlan` of the condition ``mu`` (``[B, C, H, W]``): built once per
    image, applied at every step.

    Args:
        mu: condition (the degraded image).
        tile_size: ``(h, w)`` of a tile (shrunk to the image where the image is smaller).
        tile_overlap: ``(h, w)`` overlap between neighbouring tiles, also the width of the
            blending ramps.
        tile_batch_size: how many tile crops (counting every image of the batch) go
            through ``fn`` at once; at least one tile position is always processed.
        pad_multiple, pad_mode: how the network pads its input (its ``pad_multiple`` and
            ``pad_mode``: ``"reflect"`` or ``"constant"`` zeros). The full image is padded
            so first and tile sizes are rounded up to the multiple, so border tiles see
            the untiled network's context and no tile is padded again.
        pad_last_batch: repeat the last call's final tile until it holds as many tiles as
            the others (their outputs are dropped), so every network call has one shape:
            one compiled graph, also under ``mode="reduce-overhead"`` (CUDA graphs).
    """
    return TilePlan(mu, tile_size, tile_overlap, tile_batch_size, pad_multiple, pad_mode,
                    pad_last_batch)


def tiled_model_output(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    mu: torch.Tensor,
    tile_size: tuple[int, int],
    tile_overlap: tuple[int, int],
    tile_batch_size: int = 4,
    pad_multiple: int = 1,
    pad_mode: str = "reflect",
) -> torch.Tensor:
    """Evaluates ``fn`` on overlapping tiles of ``x`` and ``mu`` and blends the results: a
    one-off :func:`plan_tiles` (same arguments) applied to ``x``; ``fn`` maps
    ``(x_tiles, mu_tiles)`` of shape ``[n, C, h, w]`` to ``[n, C_out, h, w]``. A sampler
    plans once per image and applies the plan at every step instead.

    Returns:
        The blended output, ``[B, C_out, H, W]``, in the dtype of ``x`` (accumulated in float32).
    """
    if x.shape != mu.shape:
        raise ValueError(f"x {tuple(x.shape)} and mu {tuple(mu.shape)} must have one shape.")
    plan = plan_tiles(mu, tile_size, tile_overlap, tile_batch_size, pad_multiple, pad_mode)
    return plan.apply(fn, x)
