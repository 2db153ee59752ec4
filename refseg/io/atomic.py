"""Writes that are all or nothing: a file or folder is written under a temporary sibling name
(`.<name>.partial-<pid>`) and renamed onto its final name only when the whole write succeeded,
so a reader (or a killed run) never sees half of it; a failed or interrupted write (an exception,
SIGINT, SIGTERM) leaves no temporary behind. A run killed outright (SIGKILL, power loss) cannot
clean up: the next write to the same path removes the temporaries of processes that are gone."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def staging(path: Path) -> Path:
    """This process's temporary sibling of `path`."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(path: Path) -> None:
    """Remove the temporaries that processes now gone left beside `path` (and, from earlier
    versions, inside it as `.partial-<pid>`)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.partial-(\d+)$")
    places = [(path.parent, pattern)]
    if path.is_dir():
        places.append((path, re.compile(r"^\.partial-(\d+)$")))
    for folder, names in places:
        if not folder.is_dir():
            continue
        for item in folder.iterdir():
            match = names.match(item.name)
            if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
                continue
            log.info("removing %s, left by a run that was killed", item)
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write the file to; it replaces `path` when the block ends
    without an error (parent folders are created)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging(final)
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
    remove_stale(final)
    tmp = staging(final)
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
