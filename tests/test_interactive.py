"""Promptable video segmentation protocols, with a scripted session and with the real engine."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import random_sam2

from refseg.engine import Session
from refseg.data.clicks import mask_box, next_click
from refseg.eval.interactive import evaluate_pvs, offline_curve, online_score, vos_score
from refseg.eval.metrics import boundary_f_frames, jaccard_frames
from refseg.prompts import Box, Mask, Points

S, T, SIDE = 40, 6, 9


def square(cy, cx, side=SIDE, size=S):
    m = np.zeros((size, size), dtype=bool)
    h = side // 2
    m[max(cy - h, 0) : cy + h + 1, max(cx - h, 0) : cx + h + 1] = True
    return m


def moving_square():
    return np.stack([square(20, 8 + 4 * t) for t in range(T)])


class ScriptedSession:
    """Clicked frames predict a 9 x 9 square per positive click (minus negative ones), boxes and
    masks predict themselves; every other frame repeats the last prediction."""

    def __init__(self):
        self.prompt = None
        self.last = None

    def add_prompt(self, obj_id, prompt, frame=None):
        self.prompt = prompt

    def fork(self):
        return copy.deepcopy(self)

    def push(self, frame):
        if isinstance(self.prompt, Points):
            mask = np.zeros((S, S), dtype=bool)
            for (x, y), label in zip(self.prompt.xy, self.prompt.labels):
                if label == 1:
                    mask |= square(int(y), int(x))
            for (x, y), label in zip(self.prompt.xy, self.prompt.labels):
                if label == 0:
                    mask &= ~square(int(y), int(x), side=3)
            self.last = mask
        elif isinstance(self.prompt, Box):
            mask = np.zeros((S, S), dtype=bool)
            mask[int(self.prompt.y0) : int(self.prompt.y1) + 1, int(self.prompt.x0) : int(self.prompt.x1) + 1] = True
            self.last = mask
        elif isinstance(self.prompt, Mask):
            self.last = self.prompt.mask.copy()
        self.prompt = None
        return SimpleNamespace(objects={} if self.last is None else {1: SimpleNamespace(mask=self.last.copy())})


def jf(gt, pred):
    return float((jaccard_frames(gt, pred).mean() + boundary_f_frames(gt, pred).mean()) / 2)


def test_clicks_go_to_the_centre_of_the_largest_error():
    gt = square(20, 20)
    assert next_click(gt, np.zeros_like(gt)) == (20.0, 20.0, 1)
    pred = gt | square(5, 30, side=5)
    assert next_click(gt, pred) == (30.0, 5.0, 0)  # a false positive blob: negative click at its centre
    assert mask_box(gt) == Box(16, 16, 24.001, 24.001)


def test_offline_clicks_the_worst_frame_each_pass():
    gt = moving_square()
    curve = offline_curve(ScriptedSession, list(np.zeros((T, S, S, 3), np.uint8)), gt, max_frames=T + 1)
    static = np.stack([gt[0]] * T)
    assert curve[0] == pytest.approx(jf(gt, static))
    # frames 3, 4, 5 no longer overlap the square of frame 0 (IoU 0): pass 2 clicks the first of
    # them, and streaming forward from there predicts the square of frame 3 on frames 3 .. 5
    second = static.copy()
    second[3:] = gt[3]
    assert curve[1] == pytest.approx(jf(gt, second))
    assert all(b >= a for a, b in zip(curve, curve[1:]))
    assert curve[T - 1] == pytest.approx(1.0) and curve[T] == curve[T - 1]


def test_online_pauses_below_075_iou():
    gt = moving_square()
    video = list(np.zeros((T, S, S, 3), np.uint8))
    assert online_score(ScriptedSession, video, gt, 1) == pytest.approx(jf(gt, np.stack([gt[0]] * T)))
    # the square moves 4 px per frame: IoU with the previous frame is 45/117 < 0.75, so every
    # frame is interacted with when allowed
    assert online_score(ScriptedSession, video, gt, T) == pytest.approx(1.0)


def test_semi_supervised_modes():
    gt = moving_square()
    video = list(np.zeros((T, S, S, 3), np.uint8))
    static = jf(gt, np.stack([gt[0]] * T))
    for mode in ("1click", "3click", "box", "mask"):
        assert vos_score(ScriptedSession, video, gt, mode) == pytest.approx(static), mode
    with pytest.raises(ValueError, match="unknown"):
        vos_score(ScriptedSession, video, gt, "scribble")


def test_pvs_end_to_end_with_the_engine(tmp_path):
    from refseg.data.formats.davis import write_index_png
    from refseg.demo import moving_shapes
    from PIL import Image

    scene = moving_shapes(5)
    for t in range(5):
        folder = tmp_path / "JPEGImages" / "480p" / "shapes"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.frames[t]).save(folder / f"{t:05d}.jpg", quality=95)
        write_index_png(tmp_path / "Annotations" / "480p" / "shapes" / f"{t:05d}.png",
                        scene.masks[1][t] * 1 + scene.masks[2][t] * 2)
    model = random_sam2(0)
    result = evaluate_pvs(tmp_path, lambda: Session(model), mode="online", split=None, max_frames=2)
    assert [r["sequence"] for r in result.rows] == ["shapes_1", "shapes_2"]
    assert result.curve["N_frame"] == [1.0, 2.0]
    assert all(0 <= v <= 1 for v in result.curve["J&F"])
    vos = evaluate_pvs(tmp_path, lambda: Session(model), mode="mask", split=None)
    assert 0 <= vos.summary["J&F"] <= 1
