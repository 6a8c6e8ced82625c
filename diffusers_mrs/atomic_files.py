"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

:func:`write_atomic` is the one writer of the command line's outputs (restored images,
uncertainty maps, the outputs manifest). It writes into a temporary file that
``tempfile.mkstemp`` creates in the target's folder, then renames it onto the target with
``os.replace``:

- the temporary file is created exclusively (``O_CREAT | O_EXCL``) under a short random
  name, so a file or symlink planted in advance is never opened or written through, and a
  long target name (up to the file system's 255 bytes) never makes the temporary name too
  long;
- the data is written through the descriptor ``mkstemp`` returned, never re-opened by
  name, then flushed to disk (``fsync``: a full disk fails here, not after the rename);
- ``os.replace`` renames onto the target: a symlink planted at the target path is replaced
  by the new regular file, never followed;
- on any error or interruption (``KeyboardInterrupt`` included) the temporary file is
  removed and the target is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_PREFIX", "TEMP_SUFFIX", "write_atomic"]

#: Temporary files are ``.mrs-<random>.tmp`` in the target's folder (hidden, short).
TEMP_PREFIX, TEMP_SUFFIX = ".mrs-", ".tmp"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(target: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Calls ``write(file)`` on a new temporary file beside ``target``, then renames it onto
    ``target`` (module rules). The file gets the usual permissions (``0o666`` less the
    umask), not ``mkstemp``'s ``0o600``.

    Raises:
        OSError: the file cannot be written or renamed; the message names ``target``.
    """
    target = Path(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as err:
        raise OSError(f"cannot write {target}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), 0o666 & ~_current_umask())
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, target)
    except BaseException as err:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(f"cannot write {target}: {err.strerror or err}") from None
        raise
