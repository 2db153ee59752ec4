"""SA-V layout for promptable video segmentation: `JPEGImages_24fps/<video>/<frame>.jpg` and
one binary PNG per object and frame, `Annotations_6fps/<video>/<object:03d>/<frame>.png`
(refseg writes every frame: SynthRef has no separate annotation rate)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from refseg.data.formats.common import frame_loader, frame_stems, write_frames
from refseg.data.sample import VideoSample
from refseg.io.masks import read_mask_png, write_mask_png


def write_sav(samples: Iterable[VideoSample], root: Path, frame_ext: str = ".jpg") -> None:
    for sample in samples:
        write_frames(root / "JPEGImages_24fps" / sample.video_id, sample.frame_names, list(sample.frames()), frame_ext)
        for obj_id, mask in sample.masks.items():
            for name, m in zip(sample.frame_names, mask):
                write_mask_png(root / "Annotations_6fps" / sample.video_id / f"{obj_id:03d}" / f"{name}.png", m)


def read_sav(root: Path) -> Iterator[VideoSample]:
    for video in sorted(p for p in (root / "Annotations_6fps").iterdir() if p.is_dir()):
        frames_dir = root / "JPEGImages_24fps" / video.name
        names = frame_stems(frames_dir)
        masks = {}
        for obj in sorted(p for p in video.iterdir() if p.is_dir()):
            masks[int(obj.name)] = np.stack([read_mask_png(obj / f"{n}.png") for n in names])
        yield VideoSample(video.name, names, frame_loader(frames_dir, names), masks)
