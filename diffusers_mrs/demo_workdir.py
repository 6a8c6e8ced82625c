"""The web demo's temporary folder and its lifetime, without importing Gradio.

Everything the demo and Gradio write (uploads, results, Gradio's cache) goes to one
temporary folder, which :func:`demo_workdir` creates, points ``GRADIO_TEMP_DIR`` at (so
this must run *before* ``gradio`` is imported: some of its modules read the variable at
import) and removes when the demo stops, on Ctrl-C as on ``SIGTERM`` (``kill``, a service
manager, a container stop): SIGTERM is turned into the same ``KeyboardInterrupt``, which
Gradio's server loop answers by closing the server. While it runs, :func:`expire_files`
removes the demo's own result files older than a given age (Gradio's files expire through
``gr.Blocks(delete_cache=...)``).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

__all__ = ["GRADIO_SUBFOLDER", "demo_workdir", "expire_files", "sigterm_as_interrupt"]

#: Gradio's part of the demo's temporary folder (``GRADIO_TEMP_DIR``).
GRADIO_SUBFOLDER = "gradio"


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` in the main thread, as Ctrl-C
    does (once: a second SIGTERM during the clean-up is ignored). Outside the main thread
    (where no handler can be set) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def demo_workdir(prefix: str = "diffusers-mrs-demo-") -> Iterator[Path]:
    """A new temporary folder for the demo, with ``GRADIO_TEMP_DIR`` set to its
    :data:`GRADIO_SUBFOLDER` and SIGTERM handled like Ctrl-C (:func:`sigterm_as_interrupt`)
    inside the block; afterwards the folder is removed and the variable restored."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(
        prefix=prefix, ignore_cleanup_errors=True
    ) as tmp:
        workdir = Path(tmp)
        os.environ["GRADIO_TEMP_DIR"] = str(workdir / GRADIO_SUBFOLDER)
        try:
            yield workdir
        finally:
            if previous is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = previous


def expire_files(folder: Path, pattern: str, max_age_s: float) -> list[Path]:
    """Removes the files of ``folder`` matching ``pattern`` last modified more than
    ``max_age_s`` seconds ago; returns them."""
    cutoff = time.time() - max_age_s
    removed = []
    for path in folder.glob(pattern):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # removed meanwhile (another request)
            continue
    return removed
