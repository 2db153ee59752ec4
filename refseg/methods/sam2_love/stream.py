"""SAM2-LOVE's inference (paper Sec. 3.2, 2.3 of the reading): the whole clip first, then SAM 2.

The method is not streaming: the prompt is the [seg] token after the chain has read all N chain
frames and the whole sound track, and it prompts the first frame. `LoveStream` therefore keeps
every pushed frame (as the paper's offline inference does) and returns nothing until `flush()`,
which computes each expression's token, prompts frame 0 with it (one object per expression) and
lets SAM 2's memory track frames 1..T-1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from refseg.engine.session import FrameResult, Session
from refseg.methods.evf_sam import EvfHooks
from refseg.methods.sam2_love.model import Sam2Love, clip_fps
from refseg.prompts import Audio


class LoveStream:
    """One object per text (ids 1..B), segmented from the texts and the clip's `audio` (None:
    silence) at `fps` frames per second (which aligns the sound to the frames; None: the frames
    are spread over the sound, `clip_fps`, as a dataset's frame folder and audio file are)."""

    def __init__(self, model: Sam2Love, texts: Sequence[str], audio: Audio | None, fps: float | None,
                 memory_dtype: torch.dtype = torch.bfloat16) -> None:
        if not texts:
            raise ValueError("LoveStream needs at least one text prompt")
        if fps is None and audio is None:
            raise ValueError("LoveStream: give the frame rate (fps) when there is no audio to spread the frames over")
        if fps is not None and fps <= 0:
            raise ValueError(f"LoveStream: fps must be positive, got {fps}")
        model.text.tokenize(list(texts))  # bad texts fail here, before any frame
        self.model, self.texts, self.audio, self.fps = model, list(texts), audio, fps
        self.memory_dtype = memory_dtype
        self.frames: list[np.ndarray] = []
        self.hooks = EvfHooks()
        self.hooks.multimask = model.config.multimask
        self.session: Session | None = None
        self.tokens: Tensor | None = None  # [B, 1, C], after flush

    @property
    def memory_nbytes(self) -> int:
        """Bytes held between frames: the buffered frames, then SAM 2's memory bank."""
        buffered = sum(f.nbytes for f in self.frames)
        return buffered + (self.session.bank.nbytes if self.session is not None else 0)

    def push(self, frame: np.ndarray | Tensor) -> list[FrameResult]:
        """Keep the frame; nothing is returned before `flush`."""
        self.frames.append(np.ascontiguousarray(np.asarray(frame)))
        return []

    @torch.inference_mode()
    def flush(self) -> list[FrameResult]:
        """Every frame's result, in order."""
        if not self.frames:
            return []
        model = self.model
        fps = self.fps if self.fps is not None else clip_fps(len(self.frames), self.audio)
        clip = model.clip_features(self.frames, self.audio, fps)
        text, padding = model.encode_texts(self.texts)
        self.tokens = model.prompt_tokens(clip, text, padding)
        self.session = Session(model.sam, self.hooks, memory_dtype=self.memory_dtype)
        for obj_id in range(1, len(self.texts) + 1):
            self.session.add_object(obj_id, 0)
        results = []
        for index, frame in enumerate(self.frames):
            if index == 0:  # the final [seg] prompts the first frame only
                self.hooks.tokens = {i: self.tokens[i - 1 : i] for i in range(1, len(self.texts) + 1)}
            try:
                results.append(self.session.push(frame))
            finally:
                self.hooks.tokens = {}
        self.frames = []
        return results

    def __enter__(self) -> LoveStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.frames = []
        self.hooks.tokens = {}
