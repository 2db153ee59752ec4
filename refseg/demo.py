"""`refseg demo`: the embedded models on a generated SynthRef scene, offline.

A SynthRef `test` scene (never trained on) is rendered with its ground truth. A text model (the
embedded SAMWISE by default) segments each of the scene's referring expressions while the
frames stream in; with a SAM 2 model instead, every object is tracked from one click on the
first frame. Per-object PNG masks, COCO RLE and an overlay video are written, and J&F of every
object against the scene's ground truth is reported, with latency and the size of the memory
banks.

`moving_shapes` is a smaller two-object scene that tests and `bench/stream.py` stream through
SAM 2.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from refseg.data import synth
from refseg.data.clicks import next_click
from refseg.data.sample import VideoSample, in_memory
from refseg.engine import Session
from refseg.engine.session import FrameResult
from refseg.eval.metrics import boundary_f_frames, jaccard_frames
from refseg.io.outputs import OutputWriter
from refseg.methods.evf_sam import EvfSam
from refseg.methods.samwise import Samwise
from refseg.prompts import Points
from refseg.sam import Sam2

log = logging.getLogger(__name__)

DISK, SQUARE = 1, 2
DEMO_SPLIT, DEMO_SEED, DEMO_SCENE = "test", 0, 2  # look-alike motion: three diamonds told apart by how they move


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


@dataclass
class DemoReport:
    """What `refseg demo` prints: per object (id order) its prompt and J&F on the scene, and the
    run's figures."""

    video_id: str
    ids: list[int]
    prompts: list[str]
    jf: list[float]
    frames: int
    ms_per_frame: float
    bank_kib: float  # memory banks of all objects after the last frame

    @property
    def mean_jf(self) -> float:
        return float(np.mean(self.jf))


def demo_scene(num_frames: int | None = None, scene_index: int = DEMO_SCENE) -> VideoSample:
    """The demo's SynthRef scene, cut to its first `num_frames` frames."""
    sample = synth.generate(synth.make_scene(DEMO_SPLIT, DEMO_SEED, scene_index))
    keep = len(sample) if num_frames is None else min(num_frames, len(sample))
    frames = sample.load_frames()[:keep]
    return VideoSample(sample.video_id, sample.frame_names[:keep], in_memory(frames),
                       {o: m[:keep] for o, m in sample.masks.items()}, sample.expressions)


def run_text_demo(out: Path, model: Samwise | EvfSam, sample: VideoSample) -> DemoReport:
    """Segment every referring expression of `sample` with a text model (one object each)."""
    stream = model.stream([e.text for e in sample.expressions])
    labels = {i: e.text for i, e in enumerate(sample.expressions, start=1)}
    truth = {i: sample.target_mask(e) for i, e in enumerate(sample.expressions, start=1)}
    return _run(out, sample, labels, truth, stream.push, stream.flush, lambda: stream.memory_nbytes)


def run_click_demo(out: Path, sam: Sam2, sample: VideoSample) -> DemoReport:
    """Track every object visible on the first frame of `sample` from one click on it (at the
    centre of its mask, as simulated clicks are placed)."""
    session = Session(sam)
    ids = [o for o, m in sorted(sample.masks.items()) if m[0].any()]
    labels = {}
    for obj_id in ids:
        x, y, _ = next_click(sample.masks[obj_id][0], np.zeros_like(sample.masks[obj_id][0]))
        session.add_prompt(obj_id, Points([[x, y]]))
        labels[obj_id] = f"one click at ({x:.0f}, {y:.0f}) on frame 0"
    truth = {o: sample.masks[o] for o in ids}
    return _run(out, sample, labels, truth, lambda f: [session.push(f)], lambda: [], lambda: session.bank.nbytes)


def _run(out: Path, sample: VideoSample, labels: dict[int, str], truth: dict[int, np.ndarray],
         push: Callable[[np.ndarray], list[FrameResult]], flush: Callable[[], list[FrameResult]],
         memory_nbytes: Callable[[], int]) -> DemoReport:
    """Stream the frames, write the outputs, score each object of `truth` (id -> [T, H, W])."""
    frames = sample.load_frames()
    predicted: dict[int, list[np.ndarray]] = {}
    pending: list[np.ndarray] = []  # frames whose clip is not complete yet
    began = time.perf_counter()
    with OutputWriter(out, fps=synth.FPS, labels=labels) as writer, torch.inference_mode():
        for t, frame in enumerate(tqdm(frames, desc="demo", unit="frame")):
            pending.append(frame)
            for result in push(frame) + (flush() if t == len(frames) - 1 else []):
                writer.write(pending.pop(0), result)
                for obj_id, mask in result.masks().items():
                    predicted.setdefault(obj_id, []).append(mask)
    elapsed = time.perf_counter() - began
    jf = []
    for obj_id, gt in truth.items():
        guess = np.stack(predicted[obj_id])
        jf.append(float((jaccard_frames(gt, guess).mean() + boundary_f_frames(gt, guess).mean()) / 2))
    bank = memory_nbytes()
    return DemoReport(sample.video_id, list(truth), list(labels.values()), jf, len(frames),
                      1000 * elapsed / len(frames), bank / 1024)
