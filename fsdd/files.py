"""Atomic file writes: readers see the old file or the whole new one, never half of it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsdd.errors import EMPTY_PATH, DataError


def resolved(path: str | Path, what: str = "path") -> Path:
    """`path` made absolute with its links followed (Path.resolve), for a path a user gave.

    DataError naming `what` and the path: an empty path (it would silently mean the current
    folder), or a symbolic link loop (Python 3.11 raises RuntimeError for it, later ones OSError)."""
    if not str(path).strip():
        raise DataError(f"{what}: {EMPTY_PATH}")
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:
        raise DataError(f"{what} {path}: cannot be resolved ({e})") from None


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_name)` on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600), and some writers (safetensors) make their own file
        # so: after writing, the result gets the permissions any new file would.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    """`obj` as JSON, written atomically (a record half-written by a killed process would be unreadable)."""
    text = json.dumps(obj, indent=indent)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
