"""COCO run-length encoding of masks (the encoding of MeViS, RefCOCO and SA-V annotations)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask

from refseg.errors import InputError

Rle = dict  # {"size": [H, W], "counts": str}


def encode_rle(mask: np.ndarray) -> Rle:
    """[H, W] bool -> COCO compressed RLE with `counts` as a str (JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Rle) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> [H, W] bool.

    The RLE is checked first (a [H, W] size of non-negative ints; non-negative counts that add
    up to H x W): pycocotools' C decoder writes past its buffer on counts that do not."""
    size = rle.get("size") if isinstance(rle, dict) else None
    if not (isinstance(size, list) and len(size) == 2 and all(type(s) is int and s >= 0 for s in size)):
        raise InputError(f"RLE: expected a size [H, W] of non-negative ints, got {size!r}")
    counts = rle["counts"] if "counts" in rle else None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        runs = _compressed_counts(counts)
    elif isinstance(counts, list) and all(type(c) is int for c in counts):
        runs = counts
    else:
        raise InputError(f"RLE: counts must be a COCO string or a list of ints, got {type(counts).__name__}")
    if any(c < 0 for c in runs) or sum(runs) != size[0] * size[1]:
        raise InputError(f"RLE: counts add up to {sum(runs)} pixels (or are negative), the size {size} holds "
                         f"{size[0] * size[1]}")
    if isinstance(counts, list):
        return coco_mask.decode(coco_mask.frPyObjects(rle, *size)).astype(bool)
    return coco_mask.decode({"size": size, "counts": counts.encode("ascii")}).astype(bool)


def _compressed_counts(text: str) -> list[int]:
    """The run lengths of COCO's compressed counts string (LEB128-like, 5 bits a character,
    runs after the second stored as differences to the run two before)."""
    runs: list[int] = []
    p = 0
    while p < len(text):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(text):
                raise InputError("RLE: counts string ends inside a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise InputError(f"RLE: counts string holds {text[p]!r}, outside COCO's alphabet")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def decode_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons (lists of x, y, x, y, ...) -> [H, W] bool, rasterised as pycocotools does."""
    rles = coco_mask.frPyObjects(polygons, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)
