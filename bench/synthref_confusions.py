"""Which object a text model's masks follow, frame by frame, on a SynthRef split in the MeViS layout.

For each single-target expression of the chosen phenomenon, every frame's predicted mask is
assigned to the scene object it overlaps best (IoU > 0.3; else "?" , or "." when empty), and
the distractor it lands on is described against the target from the scene's own attributes
(`make_scene` regenerates them from the video id): same colour (so the shape word was not
read), same shape (the colour word was not read), or neither. Prints one strip per expression
(`T` target, a digit for another object id, `?` no object, `.` empty) and a summary:

  wrong from the start  the first frame the target is visible lands on a distractor: grounding
  switched later        starts on the target, later follows a distractor: tracking

    refseg predict --data data/synthref/valid_u --format mevis --model default --out runs/pred_valid_u
    python bench/synthref_confusions.py --gt data/synthref/valid_u --pred runs/pred_valid_u
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from refseg.data.formats.davis import read_index_png
from refseg.data.formats.mevis import read_mevis
from refseg.data.synth import SceneObject, make_scene
from refseg.eval.metrics import jaccard

MIN_IOU = 0.3


def follow(pred: np.ndarray, masks: dict[int, np.ndarray]) -> int | None:
    """Object id whose mask the prediction [H, W] overlaps best with IoU > MIN_IOU, 0 for an
    empty prediction, None when it overlaps no object enough."""
    if not pred.any():
        return 0
    ious = {obj_id: jaccard(mask, pred) for obj_id, mask in masks.items()}
    best = max(ious, key=ious.get, default=None)
    return best if best is not None and ious[best] > MIN_IOU else None


def relation(target: SceneObject, other: SceneObject) -> str:
    same_colour, same_shape = other.colour == target.colour, other.shape == target.shape
    if same_colour != same_shape:
        return "same colour, other shape" if same_colour else "same shape, other colour"
    return "same colour and shape" if same_colour else "other colour and shape"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", type=Path, required=True, help="SynthRef split in the MeViS layout")
    parser.add_argument("--pred", type=Path, required=True, help="predictions in the MeViS layout")
    parser.add_argument("--phenomenon", default="appearance")
    args = parser.parse_args()

    starts, later = Counter(), Counter()
    scored = 0
    for sample in read_mevis(args.gt):
        split, seed, index = sample.video_id.rsplit("_", 2)
        objects = {o.obj_id: o for o in make_scene(split, int(seed), int(index)).objects}
        for expression in sample.expressions:
            if args.phenomenon not in expression.phenomena or len(expression.target_ids) != 1:
                continue
            target = expression.target_ids[0]
            strip, first, switched = [], None, None
            for t, name in enumerate(sample.frame_names):
                png = args.pred / sample.video_id / expression.exp_id / f"{name}.png"
                pred = read_index_png(png) > 0
                frame_masks = {o: m[t] for o, m in sample.masks.items() if m[t].any()}
                obj = follow(pred, frame_masks)
                strip.append({0: ".", None: "?", target: "T"}.get(obj, str(obj)))
                if target in frame_masks and first is None:
                    first = obj
                elif first == target and obj not in (0, None, target) and switched is None:
                    switched = obj
            scored += 1
            if first == 0:
                starts["empty mask"] += 1
            elif first is None:
                starts["no object matched"] += 1
            elif first != target:
                starts[relation(objects[target], objects[first])] += 1
            if switched is not None:
                later[relation(objects[target], objects[switched])] += 1
            print(f"{sample.video_id} {expression.exp_id:>2} {expression.text:<34} {''.join(strip)}")

    print(f"\n{scored} single-target '{args.phenomenon}' expressions")
    print(f"wrong from the start: {sum(starts.values())}  " + ", ".join(f"{k}: {v}" for k, v in starts.most_common()))
    print(f"switched later:       {sum(later.values())}  " + ", ".join(f"{k}: {v}" for k, v in later.most_common()))


if __name__ == "__main__":
    main()
