"""The one sample type every dataset reader produces.

A `VideoSample` is a video (or a single image, T = 1) with per-object masks, the referring
expressions about it, and optionally its audio. Frames are loaded on demand so that iterating
over a large dataset holds one video at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Expression:
    """A referring expression: `target_ids` are the object ids it refers to (empty: no target).

    `phenomena` names what the expression exercises (SynthRef records them; real datasets
    leave it empty).
    """

    exp_id: str
    text: str
    target_ids: tuple[int, ...]
    phenomena: tuple[str, ...] = ()


@dataclass
class VideoSample:
    """One video of a dataset.

    video_id:    the dataset's name for it.
    frame_names: file stems of its frames, in order.
    load_frame:  frame index -> [H, W, 3] uint8 RGB.
    masks:       object id -> [T, H, W] bool (all-False on frames where it is not visible).
    expressions: the referring expressions about this video.
    audio:       mono waveform [N] float32 in [-1, 1], or None; `sample_rate` in Hz.
    attributes:  object id -> attribute -> value, what each object looks like where the source
                 knows it (SynthRef: colour, shape, size, texture); real datasets leave it empty.
    """

    video_id: str
    frame_names: list[str]
    load_frame: Callable[[int], np.ndarray]
    masks: dict[int, np.ndarray]
    expressions: list[Expression] = field(default_factory=list)
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    attributes: dict[int, dict[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_names)

    def frames(self) -> Iterator[np.ndarray]:
        """The frames in order."""
        for t in range(len(self)):
            yield self.load_frame(t)

    def load_frames(self) -> np.ndarray:
        """All frames, [T, H, W, 3] uint8."""
        return np.stack(list(self.frames()))

    def target_mask(self, expression: Expression) -> np.ndarray:
        """[T, H, W] union of the masks of the expression's targets."""
        shape = next(iter(self.masks.values())).shape if self.masks else (len(self), 0, 0)
        out = np.zeros(shape, dtype=bool)
        for obj_id in expression.target_ids:
            out |= self.masks[obj_id]
        return out


def in_memory(frames: np.ndarray) -> Callable[[int], np.ndarray]:
    """A `load_frame` over frames already in memory."""
    return lambda t: frames[t]
