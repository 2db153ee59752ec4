"""Offline helper: segment a whole list of frames through the same streaming loop.

`segment_frames` pushes the frames in their own order, or in any `order` of their indices (reversed
for a backward pass, a permutation, a subsequence). Prompts are always given by original frame
index and results come back labelled by original frame index, sorted by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from refseg.engine.hooks import MethodHooks
from refseg.engine.session import FrameResult, Session
from refseg.prompts import Prompt
from refseg.sam.model import Sam2

Prompts = Mapping[int, Mapping[int, Prompt]]


def segment_frames(
    model: Sam2,
    frames: Iterable[np.ndarray],
    prompts: Prompts,
    hooks: MethodHooks | None = None,
    progress: bool = True,
    order: Iterable[int] | None = None,
) -> list[FrameResult]:
    """Segment `frames` (H x W x 3 uint8 each) given `prompts` {frame: {object id: prompt}}.

    Frames are pushed in clips of the method's `clip_len`; the results equal streaming them.
    When `frames` has a length (a list or array), the session knows it, as the official SAM 2
    predictor knows a video's length (it changes the tracking of videos under 16 frames:
    `Session(num_frames=...)`).

    `order` (distinct frame indices, e.g. `range(n - 1, -1, -1)`) pushes `frames[order[0]]`,
    `frames[order[1]]`, ... into one session instead; `frames` must then be indexable (a list or
    an array). The session counts push positions, so its memory distances are distances in
    `order`, and it is told the whole video's length, as the official predictor is when it
    propagates backwards. Prompts stay keyed by original frame index and are given when their
    frame is pushed; a prompt on a frame `order` leaves out is an error. The result is one
    `FrameResult` per pushed frame, with `index` = its original frame index, sorted by that
    index: for a permutation of all frames `results[t]` is frame t, as without `order`.
    """
    num_frames = len(frames) if isinstance(frames, Sized) else None
    if order is None:
        return _stream(Session(model, hooks, num_frames=num_frames), frames, prompts, progress)
    if not (isinstance(frames, Sized) and hasattr(frames, "__getitem__")):
        raise ValueError(f"segment_frames: an order needs indexable frames (a list or an array), "
                         f"got {type(frames).__name__}")
    indices = _check_order(order, len(frames))
    position = {t: i for i, t in enumerate(indices)}
    skipped = sorted(t for t in prompts if t not in position)
    if skipped:
        raise ValueError(f"segment_frames: prompts on frames {skipped} that the order does not visit")
    pushed = {position[t]: p for t, p in prompts.items()}
    session = Session(model, hooks, num_frames=num_frames)
    results = _stream(session, (frames[t] for t in indices), pushed, progress, total=len(indices))
    return sorted((replace(r, index=t) for r, t in zip(results, indices)), key=lambda r: r.index)


def _check_order(order: Iterable[int], num_frames: int) -> list[int]:
    """`order` as a list of distinct indices in 0 .. `num_frames` - 1 (ValueError otherwise)."""
    indices = [int(t) for t in order]
    bad = sorted({t for t in indices if not 0 <= t < num_frames})
    if bad:
        raise ValueError(f"segment_frames: order has frames {bad} outside 0 .. {num_frames - 1}")
    if len(set(indices)) != len(indices):
        raise ValueError("segment_frames: order visits a frame twice")
    return indices


def _stream(session: Session, frames: Iterable[np.ndarray], prompts: Prompts, progress: bool,
            total: int | None = None) -> list[FrameResult]:
    """Push `frames` into `session` in clips of its `clip_len`, giving `prompts` {push position:
    {object id: prompt}} before the clip holding their position; results in push order."""
    clip_len = session.hooks.clip_len
    results: list[FrameResult] = []
    clip: list[np.ndarray] = []
    for frame in tqdm(frames, desc="segment", unit="frame", total=total, disable=not progress):
        if not clip:
            for t in range(session.frame_index, session.frame_index + clip_len):
                for obj_id, prompt in prompts.get(t, {}).items():
                    session.add_prompt(obj_id, prompt, frame=t)
        clip.append(frame)
        if len(clip) == clip_len:
            results += session.push_clip(clip)
            clip = []
    if clip:
        results += session.push_clip(clip)
    return results
