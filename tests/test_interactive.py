"""Promptable video segmentation protocols, with a scripted session and with the real engine."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import random_sam2, synthetic_video

from refseg.engine import MethodHooks, Session
from refseg.engine.offline import segment_frames
from refseg.data.clicks import mask_box, next_click
from refseg.eval.protocols import merge
from refseg.eval.interactive import evaluate_pvs, offline_curve, online_score, segment_both_ways, vos_score
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


def recording(log):
    """A `ScriptedSession` class that logs (frame, number of clicks, on a fork) for every pushed
    frame that has clicks; frames carry their index in their pixels (`indexed_video`)."""

    class Recording(ScriptedSession):
        trial = False

        def fork(self):
            other = super().fork()
            other.trial = True
            return other

        def push(self, frame):
            if isinstance(self.prompt, Points):
                log.append((int(frame[0, 0, 0]), len(self.prompt.labels), self.trial))
            return super().push(frame)

    return Recording


def indexed_video():
    return [np.full((S, S, 3), t, np.uint8) for t in range(T)]


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
    # them; streaming forward from there predicts the square of frame 3 on frames 3 .. 5, and
    # backward on frame 2, nearer to frame 3 than to frame 0 (frame 1 keeps the forward pass's)
    second = static.copy()
    second[2:] = gt[3]
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
    for name, order in (("shapes", range(5)), ("shapes_back", range(4, -1, -1))):
        for k, t in enumerate(order):
            folder = tmp_path / "JPEGImages" / "480p" / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene.frames[t]).save(folder / f"{k:05d}.jpg", quality=95)
            write_index_png(tmp_path / "Annotations" / "480p" / name / f"{k:05d}.png",
                            scene.masks[1][t] * 1 + scene.masks[2][t] * 2)
    model = random_sam2(0)
    result = evaluate_pvs(tmp_path, lambda: Session(model), mode="online", split=None, max_frames=2)
    assert [r["sequence"] for r in result.rows] == ["shapes_1", "shapes_2", "shapes_back_1", "shapes_back_2"]
    # two processes' shares (one sequence each), merged, are the one-process result
    parts = [evaluate_pvs(tmp_path, lambda: Session(model), mode="online", split=None, max_frames=2, shard=(r, 2))
             for r in range(2)]
    assert [len(p.rows) for p in parts] == [2, 2] and all(not p.summary for p in parts)
    merged = merge(parts)
    assert merged.rows == result.rows and merged.curve == result.curve and merged.summary == result.summary
    assert result.curve["N_frame"] == [1.0, 2.0]
    assert all(0 <= v <= 1 for v in result.curve["J&F"])
    assert result.protocol == "pvs-online-3click"
    offline = evaluate_pvs(tmp_path, lambda: Session(model), mode="offline", split=None, max_frames=2, clicks=1)
    assert offline.protocol == "pvs-offline-1click" and len(offline.curve["J&F"]) == 2
    with pytest.raises(ValueError, match="names its own prompt"):
        evaluate_pvs(tmp_path, lambda: Session(model), mode="mask", split=None, clicks=1)
    vos = evaluate_pvs(tmp_path, lambda: Session(model), mode="mask", split=None)
    assert 0 <= vos.summary["J&F"] <= 1


def test_both_ways_takes_the_direction_of_the_nearest_prompt():
    gt = moving_square()
    video = indexed_video()
    click = {t: Points([[8 + 4 * t, 20]]) for t in range(T)}  # the centre of frame t's square
    # one prompt in the middle: the frames before it are reached by the backward pass only
    middle = segment_both_ways(ScriptedSession, video, {3: click[3]})
    assert np.array_equal(middle, np.stack([gt[3]] * T))
    # 0 and 3: frame 1 is nearer to 0 (forward), frame 2 to 3 (backward), 4 and 5 follow 3
    two = segment_both_ways(ScriptedSession, video, {0: click[0], 3: click[3]})
    assert np.array_equal(two, gt[[0, 0, 3, 3, 3, 3]])
    # 1 and 3: frame 2 is as near to both; a tie goes to forward. Frame 0 is only reached backward
    tie = segment_both_ways(ScriptedSession, video, {1: click[1], 3: click[3]})
    assert np.array_equal(tie, gt[[1, 1, 1, 3, 3, 3]])
    # nothing before `start` is segmented
    late = segment_both_ways(ScriptedSession, video, {3: click[3]}, start=2)
    assert not late[:2].any() and np.array_equal(late[2:], np.stack([gt[3]] * (T - 2)))
    with pytest.raises(ValueError, match="frames 2 or later"):
        segment_both_ways(ScriptedSession, video, {1: click[1]}, start=2)


@pytest.mark.parametrize("clicks", [1, 3, 5])
def test_clicks_per_interacted_frame(clicks):
    gt = moving_square()
    log = []
    offline_curve(recording(log), indexed_video(), gt, max_frames=3, clicks=clicks)
    # every run given the clicks of a frame gets all `clicks` of them; the trials on forks that
    # placed them saw 1, 2, .. `clicks`, one at a time
    assert {n for _, n, trial in log if not trial} == {clicks}
    trials = {}
    for frame, n, trial in log:
        if trial:
            trials.setdefault(frame, []).append(n)
    assert len(trials) == 3 and 0 in trials  # pass 1 clicks the first frame, then two more
    assert all(sizes == list(range(1, clicks + 1)) for sizes in trials.values())
    log.clear()
    online_score(recording(log), indexed_video(), gt, 2, clicks=clicks)
    assert [(f, n) for f, n, trial in log if not trial] == [(0, clicks), (1, clicks)]
    assert [n for _, n, trial in log if trial] == list(range(1, clicks + 1)) * 2
    with pytest.raises(ValueError, match="at least 1"):
        online_score(ScriptedSession, indexed_video(), gt, 1, clicks=0)


class Clips(MethodHooks):
    clip_len = 2


def _by_hand(model, frames, order, prompts, hooks=None):
    """Push `frames[order[i]]` into a fresh session, prompting each frame's push position."""
    session = Session(model, hooks, num_frames=len(frames))
    clip_len = session.hooks.clip_len
    results = []
    for i in range(0, len(order), clip_len):
        clip = order[i : i + clip_len]
        for k, t in enumerate(clip):
            for obj_id, prompt in prompts.get(t, {}).items():
                session.add_prompt(obj_id, prompt, frame=i + k)
        results += session.push_clip([frames[t] for t in clip])
    return results


def _assert_same(a, b):
    assert a.objects.keys() == b.objects.keys()
    for o in a.objects:
        assert torch.equal(a.objects[o].logits, b.objects[o].logits)


def test_segment_frames_in_any_order_maps_results_back(tiny_model):
    frames = synthetic_video(5)
    prompts = {4: {1: Points([[20, 48]])}, 2: {2: Box(85, 8, 110, 32)}}
    backward = segment_frames(tiny_model, frames, prompts, progress=False, order=range(4, -1, -1))
    assert [r.index for r in backward] == [0, 1, 2, 3, 4]
    by_hand = _by_hand(tiny_model, frames, [4, 3, 2, 1, 0], prompts)
    for t in range(5):
        _assert_same(backward[t], by_hand[4 - t])
    # a subsequence: one result per visited frame, sorted by frame; clips of 2 as well
    hooks = Clips()
    sub = segment_frames(tiny_model, list(frames), prompts, hooks, progress=False, order=[4, 0, 2])
    assert [r.index for r in sub] == [0, 2, 4]
    by_hand = _by_hand(tiny_model, frames, [4, 0, 2], prompts, hooks)
    for r, h in zip(sub, [by_hand[1], by_hand[2], by_hand[0]]):
        _assert_same(r, h)
    # without an order nothing changes: frame t is result t
    forward = segment_frames(tiny_model, frames, prompts, progress=False)
    assert [r.index for r in forward] == [0, 1, 2, 3, 4]
    for a, b in zip(forward, _by_hand(tiny_model, frames, [0, 1, 2, 3, 4], prompts)):
        _assert_same(a, b)


def test_segment_frames_order_errors(tiny_model):
    frames = synthetic_video(3)
    with pytest.raises(ValueError, match="indexable"):
        segment_frames(tiny_model, iter(frames), {}, progress=False, order=[1, 0])
    with pytest.raises(ValueError, match=r"prompts on frames \[2\]"):
        segment_frames(tiny_model, frames, {2: {1: Points([[20, 48]])}}, progress=False, order=[1, 0])
    with pytest.raises(ValueError, match="twice"):
        segment_frames(tiny_model, frames, {}, progress=False, order=[1, 1])
    with pytest.raises(ValueError, match="outside"):
        segment_frames(tiny_model, frames, {}, progress=False, order=[3])
