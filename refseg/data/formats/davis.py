"""DAVIS-style annotations: one indexed (palette) PNG per frame, pixel value = object id.

Layout: `<root>/<sequence>/<frame>.png` (DAVIS: `Annotations/480p/...`; 255 marks void pixels).
Also used by Ref-YouTube-VOS (`Annotations/<video>/<frame>.png`) and by Ref-DAVIS17 predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from refseg.errors import InputError
from refseg.io.atomic import atomic_file

VOID = 255


def read_index_png(path: str | os.PathLike[str]) -> np.ndarray:
    """A PNG as [H, W] uint8 object ids: palette indices, grey values as ids, and a 0/255 or
    colour image as one object (any non-zero pixel is id 1). An unreadable file raises `InputError`."""
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                return np.asarray(image, dtype=np.uint8)
            mode, values = image.mode, np.asarray(image.convert("L"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: not a readable PNG mask ({' '.join(str(err).split())})") from err
    if mode == "L" and not np.isin(values, (0, 255)).all():
        return values
    return (values > 0).astype(np.uint8)


def frame_names(folder: str | os.PathLike[str]) -> list[str]:
    """Sorted frame names (without extension) of the PNGs in a folder."""
    return sorted(p.stem for p in Path(folder).glob("*.png"))


def read_sequence(folder: str | os.PathLike[str], names: list[str] | None = None) -> np.ndarray:
    """[T, H, W] uint8 object ids of a sequence folder (frames `names`, default: all PNGs)."""
    folder = Path(folder)
    names = frame_names(folder) if names is None else names
    if not names:
        raise InputError(f"{folder}: no PNG annotation (not a DAVIS-style <sequence>/<frame>.png folder)")
    return np.stack([read_index_png(folder / f"{n}.png") for n in names])


def write_index_png(path: str | os.PathLike[str], ids: np.ndarray) -> None:
    """[H, W] object ids as an indexed PNG with the DAVIS palette (atomically)."""
    image = Image.fromarray(np.asarray(ids, dtype=np.uint8), mode="P")
    image.putpalette(davis_palette())
    with atomic_file(path) as tmp:
        image.save(tmp, format="PNG")


def davis_palette() -> list[int]:
    """The DAVIS / PASCAL VOC colour map (256 RGB entries, flattened)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette
