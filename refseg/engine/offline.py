"""Offline helper: segment a whole list of frames through the same streaming loop."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized

import numpy as np
from tqdm import tqdm

from refseg.engine.hooks import MethodHooks
from refseg.engine.session import FrameResult, Session
from refseg.prompts import Prompt
from refseg.sam.model import Sam2


def segment_frames(
    model: Sam2,
    frames: Iterable[np.ndarray],
    prompts: Mapping[int, Mapping[int, Prompt]],
    hooks: MethodHooks | None = None,
    progress: bool = True,
) -> list[FrameResult]:
    """Segment `frames` (H x W x 3 uint8 each) given `prompts` {frame: {object id: prompt}}.

    Frames are pushed in clips of the method's `clip_len`; the results equal streaming them.
    When `frames` has a length (a list or array), the session knows it, as the official SAM 2
    predictor knows a video's length (it changes the tracking of videos under 16 frames:
    `Session(num_frames=...)`).
    """
    session = Session(model, hooks, num_frames=len(frames) if isinstance(frames, Sized) else None)
    clip_len = session.hooks.clip_len
    results: list[FrameResult] = []
    clip: list[np.ndarray] = []
    for frame in tqdm(frames, desc="segment", unit="frame", disable=not progress):
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
