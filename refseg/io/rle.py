"""COCO run-length encoding of masks (the encoding of MeViS, RefCOCO and SA-V annotations)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask

Rle = dict  # {"size": [H, W], "counts": str}


def encode_rle(mask: np.ndarray) -> Rle:
    """[H, W] bool -> COCO compressed RLE with `counts` as a str (JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Rle) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> [H, W] bool."""
    if isinstance(rle.get("counts"), list):
        rle = coco_mask.frPyObjects(rle, *rle["size"])
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return coco_mask.decode(rle).astype(bool)


def decode_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons (lists of x, y, x, y, ...) -> [H, W] bool, rasterised as pycocotools does."""
    rles = coco_mask.frPyObjects(polygons, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)
