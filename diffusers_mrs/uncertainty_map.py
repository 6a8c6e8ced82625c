"""The uncertainty map of a posterior ensemble as a picture: a colour map with its scale.

The pipeline's ``uncertainty`` is a per-pixel, per-channel standard deviation of the K
samples (intensity units, images in [0, 1]). For display the channels are pooled into one
value per pixel, ``s = sqrt(mean_c std_c^2)`` (the RMS over channels), coloured with a
perceptually uniform matplotlib colour map from 0 to the image's largest ``s``, and a
colour bar with that scale is drawn under the map (docs/math.md#ensembles).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image

__all__ = ["pooled_std", "uncertainty_map"]

LEGEND_HEIGHT = 56  # pixels of the colour-bar strip under the map
MIN_LEGEND_WIDTH = 320  # narrow maps get a wider canvas so the scale stays readable


def pooled_std(std: Any) -> np.ndarray:
    """``sqrt(mean_c std_c^2)`` of an ``HWC``/``HW`` array, a ``CHW`` tensor or a PIL image.

    A PIL image is read as 8-bit intensities (``value / 255``), as the pipeline writes them.
    """
    if isinstance(std, PIL.Image.Image):
        arr = np.asarray(std, dtype=np.float64) / 255.0
    elif hasattr(std, "detach"):  # torch tensor, CHW
        arr = std.detach().cpu().double().numpy()
        arr = arr.transpose(1, 2, 0) if arr.ndim == 3 else arr
    else:
        arr = np.asarray(std, dtype=np.float64)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise ValueError(f"expected an HW or HWC std map, got shape {arr.shape}")
    return np.sqrt(np.mean(np.square(arr), axis=-1))


def _colour_bar(width: int, vmax: float, cmap: str) -> np.ndarray:
    """A ``[LEGEND_HEIGHT, width, 3]`` uint8 strip: a horizontal colour bar from 0 to vmax."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width / dpi, LEGEND_HEIGHT / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.04, 0.62, 0.92, 0.3))
    bar = fig.colorbar(
        ScalarMappable(Normalize(0.0, vmax), cmap), cax=ax, orientation="horizontal"
    )
    bar.ax.tick_params(labelsize=7, length=2, pad=1)
    bar.set_label("posterior std (intensity in [0, 1])", fontsize=7, labelpad=1)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def uncertainty_map(std: Any, cmap: str = "magma") -> PIL.Image.Image:
    """The colour-mapped uncertainty map with a colour bar (its scale) underneath.

    Args:
        std: the pipeline's ``uncertainty`` for one image (numpy ``HWC``, tensor ``CHW``
            or PIL), intensity units.
        cmap: a matplotlib colour map name.

    Returns:
        An RGB image: the map at the input's full resolution on top (0 is the colour map's
        low end, the image's largest pooled std its high end), the colour bar below; maps
        narrower than ``MIN_LEGEND_WIDTH`` are centred on a wider white canvas.
    """
    from matplotlib import colormaps

    s = pooled_std(std)
    vmax = float(s.max()) if s.size and float(s.max()) > 0 else 1e-3
    rgb = (colormaps[cmap](np.clip(s / vmax, 0.0, 1.0))[..., :3] * 255.0 + 0.5).astype(np.uint8)
    h, w = s.shape
    width = max(w, MIN_LEGEND_WIDTH)
    canvas = np.full((h + LEGEND_HEIGHT, width, 3), 255, dtype=np.uint8)
    left = (width - w) // 2
    canvas[:h, left : left + w] = rgb
    canvas[h:] = _colour_bar(width, vmax, cmap)
    return PIL.Image.fromarray(canvas)
