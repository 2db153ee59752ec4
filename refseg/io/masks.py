"""Mask outputs: per-object PNG files and colour overlays."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from refseg.errors import InputError
from refseg.io.atomic import atomic_file

# Distinct colours for object ids 1, 2, ... (id 0 is never drawn).
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)], dtype=np.uint8)


def object_colour(obj_id: int) -> np.ndarray:
    """The overlay colour of an object id, [3] uint8."""
    return PALETTE[(int(obj_id) - 1) % len(PALETTE)]


def write_png_atomic(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a uint8 image (H x W or H x W x 3) as PNG via a temporary file and a rename."""
    with atomic_file(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray) -> None:
    """A binary [H, W] mask as an 8-bit PNG (0 background, 255 object)."""
    write_png_atomic(path, np.where(mask, 255, 0).astype(np.uint8))


def read_mask_png(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask PNG back as [H, W] bool (any non-zero pixel is the object); a file that is not a
    readable image raises `InputError` naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: not a readable mask image ({' '.join(str(err).split())})") from err


def overlay(frame: np.ndarray, masks: dict[int, np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """Blend each object's mask in its colour over an RGB frame [H, W, 3] uint8."""
    out = frame.astype(np.float32)
    for obj_id, mask in masks.items():
        out[mask] = (1 - alpha) * out[mask] + alpha * object_colour(obj_id)
    return out.round().clip(0, 255).astype(np.uint8)
