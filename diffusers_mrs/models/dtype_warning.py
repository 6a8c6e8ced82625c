"""Silence diffusers' false "should be kept in float32: []" warning on dtype casts.

diffusers 0.42's ``ModelMixin.to`` warns "There are modules in <Model> that should be kept in
float32: [] ..." on every cast to another dtype: it tests ``(self._keep_in_fp32_modules or
[]) is not None``, which is always true. None of this package's networks has a module
that must stay in float32 (their layer norms compute in float32 themselves), so the
message with an empty list is wrong advice; a logging filter drops exactly that message
and keeps it whenever a model does list modules to keep in float32.
"""

from __future__ import annotations

import logging

_MESSAGE = "that should be kept in float32: []."


class EmptyKeepInFP32Filter(logging.Filter):
    """Drops diffusers' "should be kept in float32: []" record (an empty list only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _MESSAGE not in record.getMessage()


def install() -> None:
    """Attach the filter to diffusers' model logger (once)."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, EmptyKeepInFP32Filter) for f in logger.filters):
        logger.addFilter(EmptyKeepInFP32Filter())
