"""MeViS layout: `JPEGImages/<video>/<frame>.jpg`, `meta_expressions.json`, `mask_dict.json`.

meta_expressions.json: {"videos": {video: {"frames": [stem, ...], "expressions": {exp_id:
{"exp": text, "obj_id": [ids], "anno_id": [ids]}}}}}; mask_dict.json: {anno_id: [COCO RLE or
null per frame]}. Ground truth of an expression = union of its annotations.

refseg adds, and reads when present, keys the official files do not have: per video "objects"
{obj_id: anno_id} (so that objects no expression refers to survive a round trip) and per
expression "phenomena"; audio goes to `Audio/<video>.wav`. Official readers ignore them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from refseg.data.formats.common import frame_loader, read_wav, write_frames, write_json, write_wav
from refseg.data.sample import Expression, VideoSample
from refseg.io.rle import decode_rle, encode_rle


def write_mevis(samples: Iterable[VideoSample], root: Path, frame_ext: str = ".jpg") -> None:
    videos, mask_dict = {}, {}
    next_anno = 0
    for sample in samples:
        write_frames(root / "JPEGImages" / sample.video_id, sample.frame_names, list(sample.frames()), frame_ext)
        objects = {}
        for obj_id, mask in sorted(sample.masks.items()):
            objects[str(obj_id)] = next_anno
            mask_dict[str(next_anno)] = [encode_rle(m) if m.any() else None for m in mask]
            next_anno += 1
        expressions = {e.exp_id: {"exp": e.text, "obj_id": list(e.target_ids),
                                  "anno_id": [objects[str(o)] for o in e.target_ids],
                                  "phenomena": list(e.phenomena)} for e in sample.expressions}
        videos[sample.video_id] = {"frames": sample.frame_names, "expressions": expressions, "objects": objects}
        if sample.audio is not None:
            write_wav(root / "Audio" / f"{sample.video_id}.wav", sample.audio, sample.sample_rate)
    write_json(root / "mask_dict.json", mask_dict)
    write_json(root / "meta_expressions.json", {"videos": videos})


def read_mevis(root: Path) -> Iterator[VideoSample]:
    meta = json.loads((root / "meta_expressions.json").read_text())["videos"]
    masks_path = root / "mask_dict.json"
    mask_dict = json.loads(masks_path.read_text()) if masks_path.is_file() else {}
    for video, info in meta.items():
        names = info["frames"]
        load = frame_loader(root / "JPEGImages" / video, names)
        objects = {int(o): int(a) for o, a in info.get("objects", {}).items()}
        expressions = []
        for exp_id, exp in info["expressions"].items():
            obj_ids = [int(o) for o in exp.get("obj_id", [])]
            objects.update({o: int(a) for o, a in zip(obj_ids, exp.get("anno_id", []))})
            expressions.append(Expression(exp_id, exp["exp"], tuple(obj_ids), tuple(exp.get("phenomena", ()))))
        shape = load(0).shape[:2]
        masks = {}
        for obj_id, anno in sorted(objects.items()):
            rles = mask_dict.get(str(anno))
            if rles is None:
                continue
            masks[obj_id] = np.stack([decode_rle(r) if r is not None else np.zeros(shape, bool) for r in rles])
        audio, rate = read_wav(root / "Audio" / f"{video}.wav") if (root / "Audio" / f"{video}.wav").is_file() \
            else (None, None)
        yield VideoSample(video, names, load, masks, expressions, audio, rate)
