"""Which frames a GLUS call sees: global context frames, the local query window, and the memory
frames SAM 2 reads (paper Sec. 4.1-4.2; the official inference and memory-bank code).

Indices are positions in the pass: a forward pass runs over frames 0..N-1, a backward pass from a
key frame over the reversed frames (Sec. 4.4), and the caller maps them back to frame numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def context_frames(num_frames: int, count: int = 4, rng: np.random.Generator | None = None) -> list[int]:
    """`count` context frames spread over a video of `num_frames` (Sec. 4.1).

    The video is cut at b = floor(linspace(0, N, count + 1)). At inference (no `rng`) segment j
    gives frame min(b_j + ceil(N / count) // 2, b_{j+1} - 1), its middle as the official code
    computes it; in training (`rng`) one frame drawn uniformly from [b_j, b_{j+1}). A video shorter
    than `count` has empty segments; the official index then is -1, the last frame, kept here.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames: at least 1, got {num_frames}")
    if count == 0:  # a model without global context (the single-frame stage, the local-only baseline)
        return []
    bounds = np.linspace(0, num_frames, count + 1).astype(int)
    offset = math.ceil(num_frames / count) // 2
    frames = []
    for j in range(count):
        start, end = int(bounds[j]), int(bounds[j + 1])
        if rng is not None and end > start:
            frame = int(rng.integers(start, end))
        else:
            frame = min(start + offset, end - 1)
        frames.append(frame % num_frames)
    return frames


def training_context(count: int) -> Callable[[int, np.random.Generator], list[int]]:
    """The training draw of `count` context frames, as a `ClipSampler` takes it (`context=`)."""
    def draw(num_frames: int, rng: np.random.Generator) -> list[int]:
        return context_frames(num_frames, count, rng)

    return draw


def query_window(step: int, size: int = 4) -> list[int]:
    """The query frames of the call at pass position `step`: the last `size` positions up to
    `step`, oldest first (the current frame last)."""
    return list(range(max(0, step - size + 1), step + 1))


def memory_frames(index: int, num_maskmem: int = 7, stride: int = 3) -> list[int]:
    """The earlier pass positions whose memories condition position `index` (Sec. 4.2, SAM 2's rule
    with stride r), oldest first as they are concatenated: the previous frame (t_rel = 1) and, for
    t_rel = 2 .. num_maskmem, ((index - 2) // r) * r - (t_rel - 2) * r; negative positions are
    skipped. r = 3 at inference, 1 in training. E.g. index 19, r 3: [0, 3, 6, 9, 12, 15, 18]."""
    if stride < 1:
        raise ValueError(f"stride: at least 1, got {stride}")
    frames = []
    for t_rel in range(num_maskmem, 0, -1):
        frame = index - 1 if t_rel == 1 else ((index - 2) // stride) * stride - (t_rel - 2) * stride
        if frame >= 0:
            frames.append(frame)
    return frames
