"""Promptable video segmentation protocols, driven through the engine's session API.

Clicks are simulated as in SAM 2 ("center" sampling, `refseg.data.clicks.next_click`): the first
click on an object is the centre of its ground-truth mask, the next ones the centres of the
largest error regions.

Each object is run on its own (SAM 2 paper, Sec. 6.1). In the interactive modes N clicks
(`clicks`: 1, 3 or 5 in SAM 2 and SAM-I2V, default 3) are placed on every interacted frame, one at
a time, each after looking at the prediction with the previous ones.

* offline: pass 1 clicks the object's first frame; each further pass clicks the frame with the
  lowest IoU. After each pass the video is segmented again with all clicks so far, in both
  directions (`segment_both_ways`): a forward session pushes the frames from the earliest
  interacted frame to the end, a backward session pushes them from the latest interacted frame
  back to the object's first frame; each gets the clicks of a frame when it pushes that frame.
  Frame t takes the prediction of the direction whose nearest interacted frame, at or before t
  in that direction's order, is closer: forward t - max{f <= t}, backward min{b >= t} - t. A tie
  (an interacted frame itself, or a frame midway between two) goes to forward. So frames before
  the earliest interacted frame come from the backward pass, frames after the latest from the
  forward pass, and a frame between two interacted frames from the nearer one. SAM 2's video
  predictor differs in three ways: (1) it attends to the memories of all prompted frames in both
  directions, also those its propagation has not reached yet (a session streams: a direction
  knows a prompted frame only once it has pushed it); (2) each frame keeps the output of
  whichever propagation ran last (forward then backward: the backward one on every unprompted
  frame before the latest interacted frame), where refseg chooses by distance; (3) it decodes new
  clicks together with the frame's previous mask logits, where a session decodes a clicked frame
  from its clicks only.
  The clicks of a new interacted frame are placed on the direction that predicted it: a session
  replays that direction up to the frame, and the trial clicks are pushed on forks of it.
* online: one forward pass that pauses at every frame whose IoU is below 0.75, adds clicks
  there and goes on, until `N_frame` frames were interacted with.
J&F (mean over the object's frames from its first appearance) is reported for N_frame = 1..8
and averaged. Semi-supervised VOS prompts only the first frame: 1, 3 or 5 clicks, the
ground-truth box, or the ground-truth mask.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from refseg.data.clicks import mask_box, next_click
from refseg.data.formats.davis import VOID, frame_names, read_sequence
from refseg.eval.metrics import boundary_f_frames, jaccard, jaccard_frames
from refseg.eval.protocols import ALONE, EvalResult, Shard, davis_annotations, davis_sequence_names, share, shard_result
from refseg.io.video import frames as read_frames
from refseg.prompts import Mask, Points, Prompt

DEFAULT_CLICKS = 3
ONLINE_IOU = 0.75
MAX_FRAMES = 8
INTERACTIVE_MODES = ("offline", "online")
VOS_MODES = ("1click", "3click", "5click", "box", "mask")

Click = tuple[float, float, int]  # x, y, label (1 positive, 0 negative)


class StreamSession(Protocol):
    """What the protocols need of a session (`refseg.engine.Session` is one)."""

    def add_prompt(self, obj_id: int, prompt: Prompt, frame: int | None = None) -> None: ...

    def push(self, frame: np.ndarray) -> object: ...

    def fork(self) -> StreamSession: ...


SessionFactory = Callable[[], StreamSession]
OBJ = 1  # the object id used inside each run


def _mask_of(result: object) -> np.ndarray:
    objects = result.objects  # type: ignore[attr-defined]
    return objects[OBJ].mask if OBJ in objects else None


def _click_frame(session: StreamSession, frame: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                 clicks: int) -> list[Click]:
    """Place `clicks` clicks on the session's next frame, one at a time, starting from the
    prediction `pred` it has there; the session itself is not advanced."""
    if clicks < 1:
        raise ValueError(f"clicks: at least 1 click per interacted frame, got {clicks}")
    placed: list[Click] = []
    for _ in range(clicks):
        placed.append(next_click(gt, pred))
        trial = session.fork()
        trial.add_prompt(OBJ, _points(placed))
        pred = _mask_of(trial.push(frame))
    return placed


def _points(clicks: list[Click]) -> Points:
    return Points([[x, y] for x, y, _ in clicks], [label for _, _, label in clicks])


def _stream(new_session: SessionFactory, video: Sequence[np.ndarray], order: Iterable[int],
            prompts: Mapping[int, Prompt]) -> np.ndarray:
    """Masks [T, H, W] of one session pushed `video[t]` for t in `order`, with `prompts`
    {frame: prompt} given when their frame is pushed; frames outside `order` stay empty."""
    session = new_session()
    out = np.zeros((len(video), *video[0].shape[:2]), dtype=bool)
    for t in order:
        if t in prompts:
            session.add_prompt(OBJ, prompts[t])
        mask = _mask_of(session.push(video[t]))
        if mask is not None:
            out[t] = mask
    return out


def _from_backward(t: int, prompted: Collection[int]) -> bool:
    """Whether frame `t` takes the backward pass's prediction: a prompted frame at or after it is
    strictly nearer than every prompted frame at or before it (or none is before it)."""
    before = [t - f for f in prompted if f <= t]
    after = [b - t for b in prompted if b >= t]
    return bool(after) and (not before or min(after) < min(before))


def segment_both_ways(new_session: SessionFactory, video: Sequence[np.ndarray], prompts: Mapping[int, Prompt],
                      start: int = 0) -> np.ndarray:
    """Masks [T, H, W] of frames `start` .. T - 1 given `prompts` {frame: prompt} (frames >= `start`),
    each from a forward session (earliest prompted frame -> end) or a backward one (latest
    prompted frame -> `start`), by the nearest-prompt rule of the module docstring."""
    if not prompts or min(prompts) < start:
        raise ValueError(f"segment_both_ways: needs prompts, on frames {start} or later, got frames {sorted(prompts)}")
    forward = _stream(new_session, video, range(min(prompts), len(video)), prompts)
    backward = _stream(new_session, video, range(max(prompts), start - 1, -1), prompts)
    take = np.array([_from_backward(t, prompts) for t in range(len(video))])
    return np.where(take[:, None, None], backward, forward)


def _score(gt: np.ndarray, pred: np.ndarray, start: int) -> float:
    j = jaccard_frames(gt[start:], pred[start:])
    f = boundary_f_frames(gt[start:], pred[start:])
    return float((j.mean() + f.mean()) / 2)


def _first_frame(gt: np.ndarray) -> int:
    present = np.flatnonzero(gt.any(axis=(1, 2)))
    if present.size == 0:
        raise ValueError("the object never appears")
    return int(present[0])


def _replay(new_session: SessionFactory, video: Sequence[np.ndarray], order: Iterable[int],
            clicks: Mapping[int, list[Click]]) -> StreamSession:
    """A session that has been pushed `video[t]` for t in `order`, with the clicks so far."""
    session = new_session()
    for t in order:
        if t in clicks:
            session.add_prompt(OBJ, _points(clicks[t]))
        session.push(video[t])
    return session


def _lead_in(frame: int, prompted: Collection[int]) -> range:
    """The frames the pass whose prediction `frame` (not prompted) took pushed before it."""
    if not prompted:
        return range(0)
    if _from_backward(frame, prompted):
        return range(max(prompted), frame, -1)
    return range(min(prompted), frame)


def offline_curve(new_session: SessionFactory, video: Sequence[np.ndarray], gt: np.ndarray,
                  max_frames: int = MAX_FRAMES, clicks: int = DEFAULT_CLICKS) -> list[float]:
    """J&F after 1 .. `max_frames` interacted frames with `clicks` clicks each, offline mode
    (one object, gt [T, H, W]); each pass segments the video both ways (`segment_both_ways`)."""
    start = _first_frame(gt)
    placed: dict[int, list[Click]] = {}
    pred = np.zeros_like(gt)
    curve: list[float] = []
    for _ in range(max_frames):
        candidates = [t for t in range(start, len(video)) if t not in placed]
        if not candidates:
            curve.append(curve[-1])
            continue
        frame = start if not placed else min(candidates, key=lambda t: jaccard(gt[t], pred[t]))
        session = _replay(new_session, video, _lead_in(frame, placed), placed)
        placed[frame] = _click_frame(session, video[frame], gt[frame], pred[frame], clicks)
        pred = segment_both_ways(new_session, video, {t: _points(c) for t, c in placed.items()}, start)
        curve.append(_score(gt, pred, start))
    return curve


def online_score(new_session: SessionFactory, video: Sequence[np.ndarray], gt: np.ndarray,
                 max_frames: int, clicks: int = DEFAULT_CLICKS) -> float:
    """J&F of one forward pass that interacts with at most `max_frames` frames, `clicks` clicks
    each (online mode)."""
    start = _first_frame(gt)
    session = new_session()
    pred = np.zeros_like(gt)
    interacted = 0
    for t in range(start, len(video)):
        if interacted:
            trial = session.fork()
            mask = _mask_of(trial.push(video[t]))
            if jaccard(gt[t], mask) >= ONLINE_IOU or interacted >= max_frames:
                session, pred[t] = trial, mask
                continue
        else:
            mask = np.zeros_like(gt[t])
        placed = _click_frame(session, video[t], gt[t], mask, clicks)
        session.add_prompt(OBJ, _points(placed))
        pred[t] = _mask_of(session.push(video[t]))
        interacted += 1
    return _score(gt, pred, start)


def vos_score(new_session: SessionFactory, video: Sequence[np.ndarray], gt: np.ndarray, mode: str) -> float:
    """J&F of semi-supervised VOS prompted on the object's first frame only (`VOS_MODES`)."""
    start = _first_frame(gt)
    if mode == "mask":
        prompt: Prompt = Mask(gt[start])
    elif mode == "box":
        prompt = mask_box(gt[start])
    elif mode.endswith("click") and mode[:-5].isdigit():
        session = new_session()
        prompt = _points(_click_frame(session, video[start], gt[start], np.zeros_like(gt[start]), int(mode[:-5])))
    else:
        raise ValueError(f"unknown semi-supervised mode {mode!r}; expected one of {VOS_MODES}")
    return _score(gt, _stream(new_session, video, range(start, len(video)), {start: prompt}), start)


@dataclass
class _Sequence:
    name: str
    frames: list[np.ndarray]
    objects: dict[int, np.ndarray]  # id -> [T, H, W] bool


def _sequence_names(gt: Path, split: str | None) -> list[str]:
    annotations = davis_annotations(gt)
    if _images(gt) is None:
        raise ValueError(f"{gt}: no JPEGImages/480p/<sequence>/ frames")
    return davis_sequence_names(gt, annotations, split)


def _images(gt: Path) -> Path | None:
    return next((p for p in (gt / "JPEGImages" / "480p", gt / "JPEGImages") if p.is_dir()), None)


def _load_sequences(gt: Path, sequences: list[str]) -> Iterator[_Sequence]:
    """The `sequences` of `gt`, each read when it is reached (one in memory at a time)."""
    annotations, images = davis_annotations(gt), _images(gt)
    for seq in sequences:
        names = frame_names(annotations / seq)
        ids = read_sequence(annotations / seq, names)
        ids = np.where(ids == VOID, 0, ids)
        frames = list(read_frames(images / seq))
        if len(frames) != len(names):
            raise ValueError(f"{images / seq}: {len(frames)} frames for {len(names)} annotations")
        objects = {int(k): ids == k for k in np.unique(ids) if k != 0}
        yield _Sequence(seq, frames, objects)


def evaluate_pvs(gt: Path, new_session: SessionFactory, mode: str = "offline", split: str | None = "val",
                 max_frames: int = MAX_FRAMES, clicks: int | None = None, shard: Shard = ALONE) -> EvalResult:
    """Interactive (`offline`, `online`) or semi-supervised (`VOS_MODES`) promptable video
    segmentation on a DAVIS-layout dataset (`JPEGImages/480p`, `Annotations/480p`).

    `clicks`: clicks per interacted frame in the interactive modes (default `DEFAULT_CLICKS`); the
    semi-supervised modes name their own prompt (`1click` ...) and take no `clicks`. The protocol
    name of an interactive result says it: `pvs-offline-3click`. `shard`: this process's share
    of the sequences (`refseg.eval.protocols.share`; merge the shares with `protocols.merge`).
    """
    if clicks is not None and mode not in INTERACTIVE_MODES:
        raise ValueError(f"clicks: for the modes {INTERACTIVE_MODES}; the mode {mode!r} names its own prompt")
    n_clicks = DEFAULT_CLICKS if clicks is None else clicks
    rows: list[dict[str, object]] = []
    names = _sequence_names(gt, split)
    if not names:
        raise ValueError(f"{gt}: no sequence to evaluate")
    mine = share(names, shard)
    for seq in tqdm(_load_sequences(gt, mine), total=len(mine), desc=f"pvs {mode}", unit="seq", leave=False):
        for obj_id, mask in seq.objects.items():
            row: dict[str, object] = {"sequence": f"{seq.name}_{obj_id}"}
            if mode == "offline":
                curve = offline_curve(new_session, seq.frames, mask, max_frames, n_clicks)
            elif mode == "online":
                curve = [online_score(new_session, seq.frames, mask, n, n_clicks) for n in range(1, max_frames + 1)]
            else:
                row["J&F"] = vos_score(new_session, seq.frames, mask, mode)
                rows.append(row)
                continue
            row.update({f"J&F@{n}": v for n, v in enumerate(curve, start=1)})
            row["J&F"] = float(np.mean(curve))
            rows.append(row)
    protocol = f"pvs-{mode}-{n_clicks}click" if mode in INTERACTIVE_MODES else f"vos-{mode}"
    return shard_result(protocol, rows, "sequence", [], shard)
