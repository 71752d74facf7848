"""One atomic file writer: results, partial results, checkpoints and benchmarks all use it.

A reader, or a run killed at any moment, sees the old file or the new one, never a part: the
data goes to a temporary file in the same folder, is fsynced, and is renamed over the target
(``os.replace``), and the rename itself is made durable by an fsync of the folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["write_atomic"]


def write_atomic(
    path: str | os.PathLike[str],
    data: str | bytes | Callable[[IO[Any]], object],
    *,
    overwrite: bool = True,
) -> Path:
    """Write ``data`` to ``path`` atomically; creates the parent folder, returns the path.

    Args:
        path: The target file.
        data: Text (written as UTF-8), bytes, or a function that writes to a binary file
            object (e.g. ``lambda f: torch.save(payload, f)``).
        overwrite: If False, an existing ``path`` is never replaced, even one that appears
            while the data is written (a hard link fails where a rename would not).

    Raises:
        FileExistsError: If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    exists = FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if path.exists() and not overwrite:
        raise exists
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # os.open with 0o666 honours the umask (mkstemp would make the file private, 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise exists from None
            except OSError:  # no hard links on this file system: check, then replace
                if path.exists():
                    raise exists from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:  # make the rename itself durable (POSIX; not possible everywhere, e.g. Windows)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path
