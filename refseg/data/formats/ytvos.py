"""Ref-YouTube-VOS layout (also Ref-DAVIS17 after ReferFormer's conversion).

`JPEGImages/<video>/<frame>.jpg`, `Annotations/<video>/<frame>.png` (palette PNG, pixel = object
id) and `meta_expressions.json`: {"videos": {video: {"frames": [...], "expressions": {exp_id:
{"exp": text, "obj_id": "k"}}}}}. An expression there refers to one object; refseg writes the
ids of a multi-target expression as a list and of a no-target expression as [] (a documented
extension its reader accepts), plus "phenomena", and audio to `Audio/<video>.wav`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from refseg.data.formats.common import (
    frame_loader,
    read_id_pngs,
    read_wav,
    write_frames,
    write_id_pngs,
    write_json,
    write_wav,
)
from refseg.data.sample import Expression, VideoSample


def expressions_to_json(expressions: list[Expression]) -> dict:
    """{exp_id: {"exp", "obj_id", "phenomena"}}: one target as a string, others as a list."""
    return {e.exp_id: {"exp": e.text,
                       "obj_id": str(e.target_ids[0]) if len(e.target_ids) == 1 else [str(o) for o in e.target_ids],
                       "phenomena": list(e.phenomena)} for e in expressions}


def expressions_from_json(entries: dict) -> list[Expression]:
    """The inverse of `expressions_to_json` (also reads the official files, which have no phenomena)."""
    out = []
    for exp_id, exp in entries.items():
        ids = exp.get("obj_id", [])
        ids = [ids] if isinstance(ids, str) else ids
        out.append(Expression(exp_id, exp["exp"], tuple(int(o) for o in ids), tuple(exp.get("phenomena", ()))))
    return out


def write_ytvos(samples: Iterable[VideoSample], root: Path, frame_ext: str = ".jpg",
                expressions_file: Path | None = None) -> None:
    videos = {}
    for sample in samples:
        write_frames(root / "JPEGImages" / sample.video_id, sample.frame_names, list(sample.frames()), frame_ext)
        write_id_pngs(root / "Annotations" / sample.video_id, sample.frame_names, sample.masks)
        videos[sample.video_id] = {
            "frames": sample.frame_names,
            "expressions": expressions_to_json(sample.expressions),
            "objects": sorted(sample.masks)}
        if sample.audio is not None:
            write_wav(root / "Audio" / f"{sample.video_id}.wav", sample.audio, sample.sample_rate)
    write_json(expressions_file or root / "meta_expressions.json", {"videos": videos})


def read_ytvos(root: Path, expressions_file: Path | None = None) -> Iterator[VideoSample]:
    meta = json.loads((expressions_file or root / "meta_expressions.json").read_text())["videos"]
    for video, info in meta.items():
        names = info["frames"]
        expressions = expressions_from_json(info["expressions"])
        annotations = root / "Annotations" / video
        masks = read_id_pngs(annotations, names, info.get("objects")) if annotations.is_dir() else {}
        wav = root / "Audio" / f"{video}.wav"
        audio, rate = read_wav(wav) if wav.is_file() else (None, None)
        yield VideoSample(video, names, frame_loader(root / "JPEGImages" / video, names), masks, expressions, audio,
                          rate)
