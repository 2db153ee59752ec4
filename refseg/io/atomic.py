"""Writes that are all or nothing: a file or folder is written under a temporary sibling name
and renamed onto its final name only when the whole write succeeded, so a reader (or a killed
run) never sees half of it; a failed write leaves no temporary behind."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write the file to; it replaces `path` when the block ends
    without an error (parent folders are created)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staging(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; it replaces `path` (and whatever was there) when
    the block ends without an error. Files in it get the permissions the user's umask gives a
    new file (safetensors' `save_file` alone writes 0600, unreadable to others on a shared
    machine); the folder's own mode, made under the same umask, says which."""
    final = Path(path)
    tmp = _staging(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        mode = tmp.stat().st_mode & 0o666
        for file in tmp.rglob("*"):
            if file.is_file():
                file.chmod(mode)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
