"""Mask outputs: per-object PNG files and colour overlays."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels of `mask` [H, W] within `width` pixels of its border (4-neighbourhood erosion)."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[[0, -1]] = False
        shrunk[:, [0, -1]] = False
        inner = shrunk
    return mask & ~inner


def overlay(frame: np.ndarray, masks: dict[int, np.ndarray], alpha: float = 0.5,
            labels: dict[int, str] | None = None, contour: int = 0) -> np.ndarray:
    """Each object's mask blended in its colour over an RGB frame [H, W, 3] uint8 (`alpha` of the
    colour); with `contour` > 0 its border drawn in full colour that many pixels wide, and with
    `labels` its id and label written in a dark box at the top of the object."""
    out = frame.astype(np.float32)
    for obj_id, mask in masks.items():
        out[mask] = (1 - alpha) * out[mask] + alpha * object_colour(obj_id)
    for obj_id, mask in masks.items():
        if contour:
            out[outline(mask, contour)] = object_colour(obj_id)
    image = out.round().clip(0, 255).astype(np.uint8)
    if labels is None:
        return image
    return _labelled(image, masks, labels)


def _labelled(image: np.ndarray, masks: dict[int, np.ndarray], labels: dict[int, str]) -> np.ndarray:
    """Write "<id> <label>" at the top of each visible object, white on black, in the object's
    colour band; the font scales with the frame (12 px at 480 lines)."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(max(10, round(image.shape[0] / 40)))
    for obj_id, mask in masks.items():
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        text = f"{obj_id} {labels.get(obj_id, '')}".strip()
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 4, bottom - top + 4
        x = int(np.clip(xs.mean() - w / 2, 0, max(image.shape[1] - w, 0)))
        y = int(np.clip(ys.min() - h - 2, 0, max(image.shape[0] - h, 0)))
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=(0, 0, 0), outline=tuple(int(c) for c in object_colour(obj_id)))
        draw.text((x + 2 - left, y + 2 - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas).copy()
