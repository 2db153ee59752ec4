"""Writing a segmentation run to a folder: per-object PNG masks and an overlay video.

Layout of `OUT/`:
    masks/<object id>/<frame index, 5 digits>.png   8-bit, 255 = object
    masks.json                                      the same masks as COCO RLE:
        {"objects": {id: label}, "frames": [{"index": i, "masks": {id: {"size": [H, W], "counts": str}}}]}
    overlay.mp4                                     the input with each object's mask blended in

Everything is written into a hidden staging folder inside `OUT/` and moved into place only when
the run finishes; a run that fails leaves `OUT/` as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from refseg.engine.session import FrameResult
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
        self._created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self.stage = self.out / f".partial-{os.getpid()}"
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir()
        self.video = VideoWriter(self.stage / "overlay.mp4", fps=fps)
        self.frames_written = 0

    def write(self, frame: np.ndarray, result: FrameResult) -> None:
        """Add one frame and its result."""
        masks = result.masks()
        for obj_id, mask in masks.items():
            write_mask_png(self.stage / "masks" / str(obj_id) / f"{result.index:05d}.png", mask)
        self.rle_frames.append({"index": result.index, "masks": {str(o): encode_rle(m) for o, m in masks.items()}})
        self.video.write(overlay(frame, masks))
        self.frames_written += 1

    def commit(self) -> None:
        """Move the finished outputs into `out`, replacing earlier ones."""
        self.video.close()
        objects = sorted({int(o) for f in self.rle_frames for o in f["masks"]} | set(self.labels))
        document = {"objects": {str(o): self.labels.get(o, f"object {o}") for o in objects}, "frames": self.rle_frames}
        (self.stage / "masks.json").write_text(json.dumps(document))
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
        if self._created and not any(self.out.iterdir()):
            self.out.rmdir()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
