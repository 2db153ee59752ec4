"""Prompt value types: what a user gives to say which object to segment.

All coordinates are pixels of the frame the prompt is given on, x to the right, y down.
Construction validates the values and raises `ValueError` with one line saying what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Points:
    """Clicks on one object: `xy` [N, 2] pixel coordinates, `labels` [N] (1 positive, 0 negative).

    Labels default to all positive.
    """

    xy: np.ndarray
    labels: np.ndarray

    def __init__(self, xy: object, labels: object | None = None) -> None:
        arr = np.asarray(xy, dtype=np.float64).reshape(-1, 2) if np.size(xy) else np.zeros((0, 2))
        if arr.shape[0] == 0:
            raise ValueError("Points: at least one click is needed")
        if not np.isfinite(arr).all():
            raise ValueError(f"Points: coordinates must be finite numbers, got {arr.tolist()}")
        lab = np.ones(arr.shape[0], dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).ravel()
        if lab.shape[0] != arr.shape[0]:
            raise ValueError(f"Points: {arr.shape[0]} clicks but {lab.shape[0]} labels")
        if not np.isin(lab, (0, 1)).all():
            raise ValueError(f"Points: labels must be 1 (positive) or 0 (negative), got {lab.tolist()}")
        object.__setattr__(self, "xy", arr)
        object.__setattr__(self, "labels", lab)

    def check_inside(self, height: int, width: int) -> None:
        """Raise if a click lies outside a `height` x `width` frame."""
        x, y = self.xy[:, 0], self.xy[:, 1]
        if (x < 0).any() or (y < 0).any() or (x > width).any() or (y > height).any():
            raise ValueError(f"Points: click {self.xy.tolist()} outside the {width}x{height} frame")


@dataclass(frozen=True)
class Box:
    """A box around one object, corners (x0, y0) top-left and (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(np.isfinite(v) for v in values):
            raise ValueError(f"Box: coordinates must be finite numbers, got {values}")
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"Box: needs x0 < x1 and y0 < y1, got {values}")

    def check_inside(self, height: int, width: int) -> None:
        """Raise if the box is not inside a `height` x `width` frame."""
        if self.x0 < 0 or self.y0 < 0 or self.x1 > width or self.y1 > height:
            raise ValueError(f"Box: {(self.x0, self.y0, self.x1, self.y1)} outside the {width}x{height} frame")


@dataclass(frozen=True, eq=False)
class Mask:
    """A binary mask of one object, [H, W], at the resolution of the frame it is given on."""

    mask: np.ndarray

    def __init__(self, mask: object) -> None:
        arr = np.asarray(mask)
        if arr.ndim != 2 or 0 in arr.shape:
            raise ValueError(f"Mask: expected a 2-D H x W array, got shape {arr.shape}")
        object.__setattr__(self, "mask", arr.astype(bool))

    def check_inside(self, height: int, width: int) -> None:
        """Raise if the mask is not the size of a `height` x `width` frame."""
        if self.mask.shape != (height, width):
            raise ValueError(f"Mask: shape {self.mask.shape} does not match the {height}x{width} frame")


Prompt = Points | Box | Mask


@dataclass(frozen=True, eq=False)
class Audio:
    """What the user hears with the video: a mono waveform `samples` [N] float32 in [-1, 1] at
    `rate` Hz, starting with the first frame (a [N, channels] array is averaged to mono).
    `refseg.io.audio.read_audio` reads one from a video's sound track or an audio file."""

    samples: np.ndarray
    rate: int

    def __init__(self, samples: object, rate: int) -> None:
        arr = np.asarray(samples, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr.mean(axis=1)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"Audio: expected a non-empty 1-D waveform (or [N, channels]), got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("Audio: the waveform holds NaN or infinite samples")
        if int(rate) <= 0:
            raise ValueError(f"Audio: the sample rate must be a positive number of Hz, got {rate}")
        object.__setattr__(self, "samples", np.clip(arr, -1.0, 1.0))
        object.__setattr__(self, "rate", int(rate))

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate
