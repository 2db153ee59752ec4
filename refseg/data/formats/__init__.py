"""Readers and writers of the benchmarks' official on-disk layouts.

Each format has `write_<format>(samples, root, ...)` and `read_<format>(root, ...)`; the
readers all produce `refseg.data.sample.VideoSample`, so code that trains or evaluates on
SynthRef runs unchanged on the real datasets. `reader(name)` gives the reader guarded: a
dataset whose files are missing, truncated or malformed raises `InputError` naming the dataset
and what was wrong, whatever the parser underneath raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from refseg.data.sample import VideoSample
from refseg.errors import reading

FORMATS = ("mevis", "ytvos", "refdavis", "sav", "refcoco", "refavs")


def writer(name: str) -> Callable[..., None]:
    """`write_<name>` of a format in `FORMATS`."""
    return _module(name).__dict__[f"write_{name}"]


def reader(name: str) -> Callable[..., Iterator[VideoSample]]:
    """`read_<name>` of a format in `FORMATS`, its failures on damaged files as `InputError`."""
    read = _module(name).__dict__[f"read_{name}"]

    def guarded(root: Path, *args: object, **options: object) -> Iterator[VideoSample]:
        with reading(f"{root}: not a readable {name} dataset"):
            yield from read(Path(root), *args, **options)

    return guarded


def _module(name: str):
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; expected one of {FORMATS}")
    import importlib

    return importlib.import_module(f"refseg.data.formats.{name}")


def write(name: str, samples: Iterable[VideoSample], root: Path, **options: object) -> None:
    writer(name)(samples, root, **options)
