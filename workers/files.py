"""Writing files so that a reader (or a crash) never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically make `path` hold `data`; False (and no write) if it already does.

    The temporary file's name is fixed, so one left by a crash is overwritten by the retry, or
    removed when no write is needed any more (it must not end up in a GitOps commit)."""
    tmp = path.with_name(f".{path.name}.tenantry-tmp")
    try:
        if path.read_bytes() == data:
            tmp.unlink(missing_ok=True)
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
