"""RefCOCO / gRefCOCO layout for referring image segmentation.

`images/<file>.jpg`, COCO `instances.json` (images, annotations with RLE `segmentation`,
categories), `grefs(unc).json` (gRefCOCO: `ann_id` a list, `[-1]` and `no_target` for no target)
and `refs(unc).p` (RefCOCO: a pickled list of refs with one `ann_id`, written for single-target
refs). Every sentence is one sample: its id is the expression id.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from refseg.data.formats.common import frame_loader, write_frames, write_json
from refseg.data.sample import Expression, VideoSample
from refseg.io.rle import decode_rle, encode_rle


def write_refcoco(samples: Iterable[VideoSample], root: Path, split: str = "val", frame_ext: str = ".jpg",
                  categories: dict[int, dict[int, str]] | None = None) -> None:
    """Write image samples (T = 1). `categories` optionally names each sample's objects
    ({image index: {object id: category}}); default category "object"."""
    images, annotations, grefs, refs = [], [], [], []
    names: dict[str, int] = {}
    sent_id = 0
    for index, sample in enumerate(samples):
        if len(sample) != 1:
            raise ValueError(f"{sample.video_id}: RefCOCO holds images, got {len(sample)} frames")
        frame = sample.load_frame(0)
        write_frames(root / "images", [sample.video_id], [frame], frame_ext)
        images.append({"id": index, "file_name": f"{sample.video_id}{frame_ext}", "height": frame.shape[0],
                       "width": frame.shape[1]})
        ann_of = {}
        for obj_id, mask in sorted(sample.masks.items()):
            name = (categories or {}).get(index, {}).get(obj_id, "object")
            names.setdefault(name, len(names) + 1)
            ys, xs = np.nonzero(mask[0])
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)] \
                if len(xs) else [0.0, 0.0, 0.0, 0.0]
            ann_of[obj_id] = len(annotations)
            annotations.append({"id": len(annotations), "image_id": index, "segmentation": encode_rle(mask[0]),
                                "area": int(mask[0].sum()), "bbox": bbox, "iscrowd": 0,
                                "category_id": names[name], "obj_id": obj_id})
        for exp in sample.expressions:
            ann_ids = [ann_of[o] for o in exp.target_ids]
            sentence = {"sent_id": sent_id, "sent": exp.text, "raw": exp.text, "tokens": exp.text.split()}
            ref = {"ref_id": len(grefs), "image_id": index, "split": split, "sentences": [sentence],
                   "file_name": f"{sample.video_id}{frame_ext}", "phenomena": list(exp.phenomena)}
            grefs.append({**ref, "ann_id": ann_ids or [-1], "no_target": not ann_ids})
            if len(ann_ids) == 1:
                refs.append({**ref, "ann_id": ann_ids[0]})
            sent_id += 1
    write_json(root / "instances.json", {"images": images, "annotations": annotations,
                                         "categories": [{"id": i, "name": n} for n, i in names.items()]})
    write_json(root / "grefs(unc).json", grefs)
    with (root / "refs(unc).p").open("wb") as fh:
        pickle.dump(refs, fh)


def read_refcoco(root: Path, split: str | None = None) -> Iterator[VideoSample]:
    """One sample per image that has refs (of `split`, if given)."""
    grefs = root / "grefs(unc).json"
    if grefs.is_file():
        refs = json.loads(grefs.read_text())
    else:
        with next(root.glob("refs(*).p")).open("rb") as fh:
            refs = pickle.load(fh)
    instances = json.loads((root / "instances.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in instances["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image in instances["images"]:
        image_refs = [r for r in refs if r["image_id"] == image["id"] and (split is None or r["split"] == split)]
        if not image_refs:
            continue
        anns = by_image.get(image["id"], [])
        obj_of = {a["id"]: a.get("obj_id", a["id"]) for a in anns}
        masks = {obj_of[a["id"]]: decode_rle(a["segmentation"])[None] for a in anns}
        expressions = []
        for ref in image_refs:
            ann_ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
            targets = tuple(obj_of[a] for a in ann_ids if a != -1)
            for sentence in ref["sentences"]:
                expressions.append(Expression(str(sentence["sent_id"]), sentence["sent"], targets,
                                              tuple(ref.get("phenomena", ()))))
        stem = Path(image["file_name"]).stem
        yield VideoSample(stem, [stem], frame_loader(root / "images", [stem]), masks, expressions)
