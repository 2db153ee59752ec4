"""Promptable video segmentation protocols, driven through the engine's session API.

Clicks are simulated as in SAM 2 ("center" sampling, `refseg.data.clicks.next_click`): the first
click on an object is the centre of its ground-truth mask, the next ones the centres of the
largest error regions.

Each object is run on its own (SAM 2 paper, Sec. 6.1). `N_CLICKS` clicks are placed on every
interacted frame, one at a time, each after looking at the prediction with the previous ones.

* offline: pass 1 prompts the object's first frame and segments the whole video; each further
  pass adds clicks on the frame with the lowest IoU and segments the video again from the start
  with all prompts so far. refseg's engine streams forward, so a prompt changes the frames after
  it, not those before (SAM 2's offline evaluation also propagates backwards from each prompt).
* online: one forward pass that pauses at every frame whose IoU is below 0.75, adds clicks
  there and goes on, until `N_frame` frames were interacted with.
J&F (mean over the object's frames from its first appearance) is reported for N_frame = 1..8
and averaged. Semi-supervised VOS prompts only the first frame: 1, 3 or 5 clicks, the
ground-truth box, or the ground-truth mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from refseg.data.clicks import mask_box, next_click
from refseg.data.formats.davis import VOID, frame_names, read_sequence
from refseg.eval.metrics import boundary_f_frames, jaccard, jaccard_frames
from refseg.eval.protocols import EvalResult, davis_annotations, davis_sequence_names
from refseg.io.video import frames as read_frames
from refseg.prompts import Mask, Points, Prompt

N_CLICKS = 3
ONLINE_IOU = 0.75
MAX_FRAMES = 8
VOS_MODES = ("1click", "3click", "5click", "box", "mask")


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
                 clicks: int) -> list[tuple[float, float, int]]:
    """Place `clicks` clicks on the session's next frame, one at a time, starting from the
    prediction `pred` it has there; the session itself is not advanced."""
    placed: list[tuple[float, float, int]] = []
    for _ in range(clicks):
        placed.append(next_click(gt, pred))
        trial = session.fork()
        trial.add_prompt(OBJ, _points(placed))
        pred = _mask_of(trial.push(frame))
    return placed


def _points(clicks: list[tuple[float, float, int]]) -> Points:
    return Points([[x, y] for x, y, _ in clicks], [label for _, _, label in clicks])


def _stream(new_session: SessionFactory, video: Sequence[np.ndarray], start: int,
            prompts: dict[int, Prompt]) -> np.ndarray:
    """Masks [T, H, W] of a run from frame `start` with `prompts` {frame: prompt}."""
    session = new_session()
    out = np.zeros((len(video), *video[0].shape[:2]), dtype=bool)
    for t in range(start, len(video)):
        if t in prompts:
            session.add_prompt(OBJ, prompts[t])
        mask = _mask_of(session.push(video[t]))
        if mask is not None:
            out[t] = mask
    return out


def _score(gt: np.ndarray, pred: np.ndarray, start: int) -> float:
    j = jaccard_frames(gt[start:], pred[start:])
    f = boundary_f_frames(gt[start:], pred[start:])
    return float((j.mean() + f.mean()) / 2)


def _first_frame(gt: np.ndarray) -> int:
    present = np.flatnonzero(gt.any(axis=(1, 2)))
    if present.size == 0:
        raise ValueError("the object never appears")
    return int(present[0])


def _replay(new_session: SessionFactory, video: Sequence[np.ndarray], start: int, until: int,
            clicks: dict[int, list[tuple[float, float, int]]]) -> StreamSession:
    """A session that has seen frames `start` .. `until` - 1 with the clicks so far."""
    session = new_session()
    for t in range(start, until):
        if t in clicks:
            session.add_prompt(OBJ, _points(clicks[t]))
        session.push(video[t])
    return session


def offline_curve(new_session: SessionFactory, video: Sequence[np.ndarray], gt: np.ndarray,
                  max_frames: int = MAX_FRAMES) -> list[float]:
    """J&F after 1 .. `max_frames` interacted frames, offline mode (one object, gt [T, H, W])."""
    start = _first_frame(gt)
    clicks: dict[int, list[tuple[float, float, int]]] = {}
    pred = np.zeros_like(gt)
    curve: list[float] = []
    for _ in range(max_frames):
        candidates = [t for t in range(start, len(video)) if t not in clicks]
        if not candidates:
            curve.append(curve[-1])
            continue
        frame = start if not clicks else min(candidates, key=lambda t: jaccard(gt[t], pred[t]))
        session = _replay(new_session, video, start, frame, clicks)
        clicks[frame] = _click_frame(session, video[frame], gt[frame], pred[frame], N_CLICKS)
        pred = _stream(new_session, video, start, {t: _points(c) for t, c in clicks.items()})
        curve.append(_score(gt, pred, start))
    return curve


def online_score(new_session: SessionFactory, video: Sequence[np.ndarray], gt: np.ndarray,
                 max_frames: int) -> float:
    """J&F of one forward pass that interacts with at most `max_frames` frames (online mode)."""
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
        clicks = _click_frame(session, video[t], gt[t], mask, N_CLICKS)
        session.add_prompt(OBJ, _points(clicks))
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
    return _score(gt, _stream(new_session, video, start, {start: prompt}), start)


@dataclass
class _Sequence:
    name: str
    frames: list[np.ndarray]
    objects: dict[int, np.ndarray]  # id -> [T, H, W] bool


def _load_sequences(gt: Path, split: str | None) -> list[_Sequence]:
    annotations = davis_annotations(gt)
    images = next((p for p in (gt / "JPEGImages" / "480p", gt / "JPEGImages") if p.is_dir()), None)
    if images is None:
        raise ValueError(f"{gt}: no JPEGImages/480p/<sequence>/ frames")
    out = []
    for seq in davis_sequence_names(gt, annotations, split):
        names = frame_names(annotations / seq)
        ids = read_sequence(annotations / seq, names)
        ids = np.where(ids == VOID, 0, ids)
        frames = list(read_frames(images / seq))
        if len(frames) != len(names):
            raise ValueError(f"{images / seq}: {len(frames)} frames for {len(names)} annotations")
        objects = {int(k): ids == k for k in np.unique(ids) if k != 0}
        out.append(_Sequence(seq, frames, objects))
    return out


def evaluate_pvs(gt: Path, new_session: SessionFactory, mode: str = "offline", split: str | None = "val",
                 max_frames: int = MAX_FRAMES) -> EvalResult:
    """Interactive (`offline`, `online`) or semi-supervised (`VOS_MODES`) promptable video
    segmentation on a DAVIS-layout dataset (`JPEGImages/480p`, `Annotations/480p`)."""
    rows: list[dict[str, object]] = []
    for seq in tqdm(_load_sequences(gt, split), desc=f"pvs {mode}", unit="seq", leave=False):
        for obj_id, mask in seq.objects.items():
            row: dict[str, object] = {"sequence": f"{seq.name}_{obj_id}"}
            if mode == "offline":
                curve = offline_curve(new_session, seq.frames, mask, max_frames)
            elif mode == "online":
                curve = [online_score(new_session, seq.frames, mask, n) for n in range(1, max_frames + 1)]
            else:
                row["J&F"] = vos_score(new_session, seq.frames, mask, mode)
                rows.append(row)
                continue
            row.update({f"J&F@{n}": v for n, v in enumerate(curve, start=1)})
            row["J&F"] = float(np.mean(curve))
            rows.append(row)
    if not rows:
        raise ValueError(f"{gt}: no object to evaluate")
    if mode in ("offline", "online"):
        per_n = [float(np.mean([r[f"J&F@{n}"] for r in rows])) for n in range(1, max_frames + 1)]
        summary = {"J&F (mean over N_frame)": float(np.mean(per_n)), **{f"J&F@{n}": v for n, v in enumerate(per_n, 1)}}
        curve = {"N_frame": [float(n) for n in range(1, max_frames + 1)], "J&F": per_n}
        return EvalResult(f"pvs-{mode}", summary, rows, key="sequence", curve=curve)
    return EvalResult(f"vos-{mode}", {"J&F": float(np.mean([r["J&F"] for r in rows]))}, rows, key="sequence")
