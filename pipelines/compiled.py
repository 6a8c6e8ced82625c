"""Opt-in ``torch.compile`` of the pipeline's network, and the padding that lets one
compiled graph serve many image sizes.

:meth:`CompileMixin.enable_compile` compiles the network in place. With
``pad_to_multiple=M`` the network's inputs (state and ``mu``) are padded at the bottom and
right up to a multiple of ``M`` the way the network pads itself, and its output is cropped
back, so every image size that rounds up to the same multiple runs the same graph. ``mu``
is the same at every step of one image, so its padded copy is kept between steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers.utils.torch_utils import unwrap_module

from diffusers_mrs.models.padding import pad_to_multiple

from .network import NetworkMixin

__all__ = ["CompileMixin"]


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place version counter; ``None`` for inference-mode tensors, which
    have none."""
    try:
        return tensor._version
    except RuntimeError:
        return None


class CompileMixin(NetworkMixin):
    """``enable_compile`` and the padding of the network's inputs it asks for."""

    def enable_compile(self, pad_to_multiple: int | None = None, **compile_kwargs: Any) -> None:
        """Compiles the network in place with ``torch.compile`` (opt-in).

        The compiled graph is built on the first call and then reused for every step and
        every image of that size; a second image size triggers one more compilation with
        dynamic shapes, which then serves all sizes. Tiled restoration feeds one tile
        shape, and with a compiled network the last tile batch of each step is padded to
        the full batch (by repeating a tile whose output is dropped), so every call has one
        shape: one graph, also under ``mode="reduce-overhead"`` (CUDA graphs). Compiling
        takes tens of seconds to minutes on a CPU, so it pays off for many images or steps;
        docs/guide/pipeline.md gives measured costs. Calling it again does not compile
        again (a ``pad_to_multiple`` given again replaces the earlier).
        ``compile_kwargs`` go to ``torch.compile`` (``mode``, ``dynamic``...).

        Args:
            pad_to_multiple: pad the network's inputs (state and ``mu``) at the bottom and
                right up to a multiple of this many pixels, the way the network pads
                (``pad_mode``: reflection, zeros for Refusion), and crop its output back:
                every image size that rounds up to the same multiple runs the same
                compiled graph. Rounded up to a multiple of the network's own
                ``pad_multiple``; equal to that, the result is unchanged (the network pads
                the same way itself). Larger, the network sees more of the reflected
                border, so the output changes near the bottom and right edges, and
                everywhere a little through the networks' global attention
                (docs/guide/pipeline.md, "Network dtype and torch.compile"). ``mu`` is padded
                once per image, the state once per step.
        """
        if pad_to_multiple is not None:
            if isinstance(pad_to_multiple, bool) or not isinstance(pad_to_multiple, int):
                raise TypeError(f"pad_to_multiple must be an int, got {pad_to_multiple!r}.")
            if pad_to_multiple < 1:
                raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}.")
            self._compile_pad_multiple = math.lcm(pad_to_multiple, self._unet_pad_multiple())
        if not self.is_compiled:
            unwrap_module(self.unet).compile(**compile_kwargs)

    @property
    def is_compiled(self) -> bool:
        """Whether the network was compiled (:meth:`enable_compile`, or ``unet.compile()``)."""
        return getattr(unwrap_module(self.unet), "_compiled_call_impl", None) is not None

    @property
    def compile_pad_multiple(self) -> int:
        """The multiple the network's inputs are padded to (:meth:`enable_compile`); 1: none."""
        return getattr(self, "_compile_pad_multiple", 1)

    def _pad_for_network(self, x: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x`` and ``mu`` padded up to :attr:`compile_pad_multiple`; the padded ``mu`` is
        kept while the same ``mu``, unchanged by its version counter, comes back (every step
        of one image; an inference-mode ``mu`` has no counter and is padded every step)."""
        multiple, mode = self.compile_pad_multiple, self._unet_pad_mode()
        cached, version = getattr(self, "_padded_mu", None), _version(mu)
        if cached is None or cached[0] is not mu or version is None or cached[1] != version:
            cached = (mu, version, pad_to_multiple(mu, multiple, mode))
            self._padded_mu = cached
        return pad_to_multiple(x, multiple, mode), cached[2]

    def _forget_padded_mu(self) -> None:
        """Drops the padded ``mu`` kept for the image just sampled."""
        self._padded_mu = None
