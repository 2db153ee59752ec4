"""DAVIS 2017 layout, with Ref-DAVIS17 expressions.

`JPEGImages/480p/<seq>/<frame>.jpg`, `Annotations/480p/<seq>/<frame>.png` (semi-supervised
ids), `Annotations_unsupervised/480p/...` (the ids Ref-DAVIS17 is scored on), and
`ImageSets/2017/<split>.txt`; expressions as ReferFormer converts them:
`meta_expressions/<split>/meta_expressions.json` in the Ref-YouTube-VOS format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from refseg.data.formats.common import frame_loader, read_id_pngs, write_frames, write_id_pngs, write_json
from refseg.data.formats.ytvos import expressions_from_json, expressions_to_json
from refseg.data.sample import VideoSample


def write_refdavis(samples: Iterable[VideoSample], root: Path, split: str = "val", frame_ext: str = ".jpg") -> None:
    names, videos = [], {}
    for sample in samples:
        names.append(sample.video_id)
        write_frames(root / "JPEGImages" / "480p" / sample.video_id, sample.frame_names, list(sample.frames()),
                     frame_ext)
        for folder in ("Annotations", "Annotations_unsupervised"):
            write_id_pngs(root / folder / "480p" / sample.video_id, sample.frame_names, sample.masks)
        videos[sample.video_id] = {
            "frames": sample.frame_names, "objects": sorted(sample.masks),
            "expressions": expressions_to_json(sample.expressions)}
    listing = root / "ImageSets" / "2017" / f"{split}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{n}\n" for n in names))
    write_json(root / "meta_expressions" / split / "meta_expressions.json", {"videos": videos})


def read_refdavis(root: Path, split: str = "val") -> Iterator[VideoSample]:
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())["videos"] if meta_path.is_file() else {}
    for seq in (root / "ImageSets" / "2017" / f"{split}.txt").read_text().split():
        info = meta.get(seq, {})
        names = info.get("frames") or sorted(p.stem for p in (root / "Annotations" / "480p" / seq).glob("*.png"))
        masks = read_id_pngs(root / "Annotations" / "480p" / seq, names, info.get("objects"))
        expressions = expressions_from_json(info.get("expressions", {}))
        yield VideoSample(seq, names, frame_loader(root / "JPEGImages" / "480p" / seq, names), masks, expressions)
