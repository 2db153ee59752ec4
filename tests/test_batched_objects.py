"""Objects tracked from memory on a frame are decoded in one batch (`Session(batch_objects=True)`,
the default): the same logits as one object at a time, with several objects, late prompts,
mid-stream corrections, a method's sampled memories, and memories of different layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_sam2, synthetic_video

from refseg.engine import Session
from refseg.methods.sam_i2v import SamI2VConfig, upgrade
from refseg.prompts import Box, Points
from refseg.sam.memory import condition_objects


def stream(make_session, frames: np.ndarray, batch: bool) -> list[dict[int, tuple[torch.Tensor, float]]]:
    session = make_session(batch)
    session.add_prompt(1, Points([[30, 48]]), frame=0)
    session.add_prompt(2, Box(90, 5, 125, 30), frame=0)
    session.add_prompt(3, Points([[60, 70], [10, 10]], [1, 0]), frame=3)  # a late object
    session.add_prompt(4, Points([[100, 60]]), frame=11)  # later still: another memory layout
    session.add_prompt(1, Points([[35, 50]]), frame=20)  # a correction mid-stream
    out = []
    with torch.inference_mode():
        for frame in frames:
            result = session.push(frame)
            out.append({o: (r.logits, r.score) for o, r in result.objects.items()})
    return out


@pytest.mark.parametrize("method", ["sam2", "sam-i2v"])
def test_batched_objects_give_the_one_by_one_logits(method):
    model = random_sam2(3)
    if method == "sam2":
        def make(batch):
            return Session(model, batch_objects=batch)
    else:
        i2v = upgrade(model, SamI2VConfig(tapped_dims=(64, 128, 256), temporal_dim=16), memory_layers=1).eval()

        def make(batch):
            return i2v.session(batch_objects=batch, seed=5)
    frames = synthetic_video(40)
    one, many = stream(make, frames, False), stream(make, frames, True)
    assert [sorted(f) for f in one] == [sorted(f) for f in many] and sorted(one[39]) == [1, 2, 3, 4]
    for a, b in zip(one, many):
        for o in a:
            assert torch.allclose(a[o][0], b[o][0], atol=1e-4, rtol=0), (o, (a[o][0] - b[o][0]).abs().max())
            assert abs(a[o][1] - b[o][1]) <= 1e-4


def test_objects_are_batched_where_layouts_match_and_only_there(monkeypatch):
    model = random_sam2(3)
    sizes = []
    original = condition_objects

    def counting(model, embed, pos, readouts, rope):
        sizes.append(len(readouts))
        return original(model, embed, pos, readouts, rope)

    monkeypatch.setattr("refseg.engine.session.condition_objects", counting)
    stream(lambda batch: Session(model, batch_objects=batch), synthetic_video(30), True)
    # objects 2, 3 and 4 (prompted on frames 0, 3 and 11) batch once their pointers fill; object 1,
    # corrected on frame 20, keeps two prompted memories: another layout
    assert sizes and max(sizes) == 3 and set(sizes) <= {2, 3}
    with pytest.raises(ValueError, match="one layout"):
        original(model, None, None, [], None)
