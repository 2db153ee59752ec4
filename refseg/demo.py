"""`refseg demo`: an offline run of the whole streaming pipeline on a generated scene.

The scene is two shapes moving over a textured background, with their ground-truth masks.
The disk is prompted with its mask on frame 0, the square with one click; the engine streams the
clip, writes per-object PNG masks and an overlay video, and reports latency, memory-bank size
and the J (IoU) of each object against the ground truth.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from refseg.engine import Session
from refseg.io.outputs import OutputWriter
from refseg.prompts import Mask, Points
from refseg.sam import Sam2, tiny_test_config

log = logging.getLogger(__name__)

DISK, SQUARE = 1, 2


@dataclass
class Scene:
    """frames [T, H, W, 3] uint8 and ground truth {object id: [T, H, W] bool}."""

    frames: np.ndarray
    masks: dict[int, np.ndarray]


def moving_shapes(num_frames: int = 48, height: int = 96, width: int = 128, seed: int = 0) -> Scene:
    """A red disk moving right on a sine path and a blue square moving left, on noise texture."""
    rng = np.random.default_rng(seed)
    background = rng.integers(60, 120, size=(height, width, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.repeat(background[None], num_frames, axis=0)
    disk = np.zeros((num_frames, height, width), dtype=bool)
    square = np.zeros_like(disk)
    radius, half = max(3, height // 8), max(3, height // 10)
    for t in range(num_frames):
        cx = radius + 8 + (t * 2) % max(1, width - 2 * radius - 16)
        cy = height / 2 + (height / 6) * np.sin(t / 6)
        disk[t] = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        sx, sy = width - half - 10 - (t % max(1, width // 2)), half + 10
        square[t] = (abs(xx - sx) < half) & (abs(yy - sy) < half)
        frames[t][disk[t]] = (230, 60, 40)
        frames[t][square[t]] = (20, 30, 200)
    return Scene(frames=frames, masks={DISK: disk, SQUARE: square})


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def run_demo(out: Path, num_frames: int = 48, seed: int = 0) -> dict[str, float]:
    """Run the demo, write its outputs under `out`, and return the figures it prints."""
    torch.manual_seed(seed)
    model = Sam2(tiny_test_config(image_size=128)).eval()
    scene = moving_shapes(num_frames, seed=seed)
    session = Session(model)
    session.add_prompt(DISK, Mask(scene.masks[DISK][0]))
    square_centre = np.argwhere(scene.masks[SQUARE][0]).mean(axis=0)
    session.add_prompt(SQUARE, Points([[square_centre[1], square_centre[0]]]))
    latencies, ious = [], {DISK: [], SQUARE: []}
    bank_sizes = []
    with OutputWriter(out, fps=12) as writer:
        for t, frame in enumerate(scene.frames):
            start = time.perf_counter()
            result = session.push(frame)
            latencies.append(time.perf_counter() - start)
            bank_sizes.append(session.bank.nbytes)
            writer.write(frame, result)
            for obj_id in ious:
                ious[obj_id].append(iou(result.objects[obj_id].mask, scene.masks[obj_id][t]))
    figures = {
        "frames": float(num_frames),
        "ms_per_frame": 1000 * float(np.median(latencies)),
        "bank_kib_frame_10": bank_sizes[min(10, num_frames - 1)] / 1024,
        "bank_kib_last_frame": bank_sizes[-1] / 1024,
        "J_disk": float(np.mean(ious[DISK])),
        "J_square": float(np.mean(ious[SQUARE])),
    }
    return figures
