"""Writing a segmentation run to a folder: per-object PNG masks and an overlay video.

Layout of `OUT/`:
    masks/<object id>/<frame index, 5 digits>.png   8-bit, 255 = object
    masks.json                                      the same masks as COCO RLE:
        {"objects": {id: label}, "frames": [{"index": i, "masks": {id: {"size": [H, W], "counts": str}}}],
         "input": {"frames_decoded": n, ...}}   what the reader said of the input (`FrameStream.report`)
    overlay.mp4                                     the input with each object blended in its colour,
                                                    outlined, and labelled with its id and prompt text

Everything is written into a hidden staging folder beside `OUT/` (`.OUT.partial-<pid>`; inside
`OUT/` when its parent cannot be written) and moved into place only when the run finishes: a run
that fails, is interrupted or is killed leaves `OUT/` as it was (a killed run's staging folder is
removed by the next run into the same `OUT/`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from refseg.engine.session import FrameResult
from refseg.io.atomic import remove_stale, staging
from refseg.io.masks import overlay, write_mask_png
from refseg.io.rle import encode_rle
from refseg.io.video import VideoWriter


class OutputWriter:
    """Collects per-frame results into `out` (see the module docstring)."""

    def __init__(self, out: str | os.PathLike[str], fps: float = 24.0, labels: dict[int, str] | None = None) -> None:
        """labels: a name for each object id (the text prompt), recorded in masks.json."""
        self.out = Path(out)
        self.labels = dict(labels or {})
        self.rle_frames: list[dict] = []
        self.input: dict = {}
        remove_stale(self.out)
        parent = self.out.parent
        parent.mkdir(parents=True, exist_ok=True)
        beside = os.access(parent, os.W_OK | os.X_OK) and (
            not self.out.exists() or os.stat(parent).st_dev == os.stat(self.out).st_dev)  # a rename works
        self.stage = staging(self.out) if beside else self.out / f".partial-{os.getpid()}"
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir()
        self.video = VideoWriter(self.stage / "overlay.mp4", fps=fps)
        self.frames_written = 0

    def write(self, frame: np.ndarray, result: FrameResult) -> None:
        """Add one frame and its result."""
        self.write_masks(frame, result.index, result.masks())

    def write_masks(self, frame: np.ndarray, index: int, masks: dict[int, np.ndarray]) -> None:
        """Add frame `index` [H, W, 3] uint8 and its masks (object id -> [H, W] bool)."""
        for obj_id, mask in masks.items():
            write_mask_png(self.stage / "masks" / str(obj_id) / f"{index:05d}.png", mask)
        self.rle_frames.append({"index": index, "masks": {str(o): encode_rle(m) for o, m in masks.items()}})
        self.video.write(overlay(frame, masks, alpha=0.45, labels=self.labels or {o: "" for o in masks}, contour=2))
        self.frames_written += 1

    def commit(self) -> None:
        """Move the finished outputs into `out`, replacing earlier ones."""
        self.video.close()
        objects = sorted({int(o) for f in self.rle_frames for o in f["masks"]} | set(self.labels))
        document = {"objects": {str(o): self.labels.get(o, f"object {o}") for o in objects}, "frames": self.rle_frames,
                    "input": {"frames_decoded": self.frames_written, **self.input}}
        (self.stage / "masks.json").write_text(json.dumps(document))
        self.out.mkdir(exist_ok=True)
        for item in sorted(self.stage.iterdir()):
            target = self.out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        self.stage.rmdir()

    def abort(self) -> None:
        """Drop everything this writer staged."""
        self.video.abort()
        shutil.rmtree(self.stage, ignore_errors=True)

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
