"""The shipped weights: the small SynthRef SAM 2 (`load_sam2("synth")`) segments and tracks
SynthRef objects it was not trained on."""

from __future__ import annotations

import numpy as np
import torch

from refseg.data import synth
from refseg.engine import Session
from refseg.prompts import Points
from refseg.sam.checkpoint import load_sam2


def test_shipped_sam2_tracks_a_clicked_object_on_held_out_scenes():
    model = load_sam2("synth")
    assert next(model.parameters()).dtype == torch.float32  # stored float16, loaded as float32
    ious = []
    for sample in synth.split_samples("test", 0, 1):
        frames = sample.load_frames()[:12]
        for obj_id, masks in sorted(sample.masks.items())[:3]:
            masks = masks[:12]
            if not masks[0].any():
                continue
            ys, xs = np.nonzero(masks[0])
            inside = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)  # the pixel nearest the centre
            session = Session(model)
            session.add_prompt(1, Points([[float(xs[inside]), float(ys[inside])]]))
            with torch.inference_mode():
                for frame, truth in zip(frames, masks):
                    guess = session.push(frame).objects[1].mask
                    union = (guess | truth).sum()
                    ious.append(1.0 if union == 0 else (guess & truth).sum() / union)
    assert len(ious) >= 24 and float(np.mean(ious)) > 0.75, f"mean IoU {np.mean(ious):.3f}"  # 0.93 when shipped
