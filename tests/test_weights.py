"""The shipped weights: the small SynthRef SAM 2 (`load_sam2("synth")`) segments and tracks
SynthRef objects it was not trained on; the embedded default SAMWISE (`refseg.load("default")`)
finds the object an expression names in held-out scenes."""

from __future__ import annotations

import numpy as np
import torch

import refseg
from refseg.data import synth
from refseg.engine import Session
from refseg.eval.metrics import jaccard_frames
from refseg.methods.samwise import Samwise
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


def test_shipped_samwise_finds_the_named_object_on_held_out_scenes():
    model = refseg.load("default")
    assert isinstance(model, Samwise) and next(model.parameters()).dtype == torch.float32
    named, other = [], []
    for sample in synth.split_samples("test", 0, 8):
        chosen = [e for e in sample.expressions if e.phenomena == ("appearance",)]
        if not chosen:
            continue
        frames = sample.load_frames()[:8]
        with torch.inference_mode(), model.stream([e.text for e in chosen]) as stream:
            results = [r for frame in frames for r in stream.push(frame)] + stream.flush()
        for obj_id, expression in enumerate(chosen, start=1):
            guess = np.stack([r.objects[obj_id].mask for r in results])
            named.append(jaccard_frames(sample.target_mask(expression)[:8], guess).mean())
            for rival in set(sample.masks) - set(expression.target_ids):  # J against each other object
                other.append(jaccard_frames(sample.masks[rival][:8], guess).mean())
    assert len(named) >= 8
    # 0.81 on the named object and 0.05 on the others (11 expressions, 28 rivals) when shipped
    assert float(np.mean(named)) > 0.7 and float(np.mean(other)) < 0.1, (np.mean(named), np.mean(other))
