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

from refseg.encoders.audio import SAMPLE_RATE
from refseg.engine.session import FrameResult, Session
from refseg.io.audio import resample
from refseg.methods.evf_sam import EvfHooks
from refseg.methods.sam2_love.model import Sam2Love, clip_fps
from refseg.prompts import Audio


def love_hooks(model: Sam2Love) -> EvfHooks:
    """The engine hooks of SAM2-LOVE: the prompt token on the frames it is set for (`tokens`),
    one mask or SAM 2's three per `config.multimask`."""
    hooks = EvfHooks()
    hooks.multimask = model.config.multimask
    return hooks


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
        self.hooks = love_hooks(model)
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
        results = self.track(self.frames, self.tokens)
        self.frames = []
        return results

    @torch.inference_mode()
    def track(self, frames: Sequence[np.ndarray], tokens: Tensor) -> list[FrameResult]:
        """SAM 2's half: `tokens` [B, 1, C] prompt the first of `frames` (object i+1 from row i),
        and SAM 2's memory tracks every later frame."""
        self.session = Session(self.model.sam, self.hooks, memory_dtype=self.memory_dtype)
        for obj_id in range(1, len(tokens) + 1):
            self.session.add_object(obj_id, 0)
        results = []
        for index, frame in enumerate(frames):
            if index == 0:  # the final [seg] prompts the first frame only
                self.hooks.tokens = {i: tokens[i - 1 : i] for i in range(1, len(tokens) + 1)}
            try:
                results.append(self.session.push(frame))
            finally:
                self.hooks.tokens = {}
        return results

    def __enter__(self) -> LoveStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.frames = []
        self.hooks.tokens = {}


class LoveOnlineStream:
    """The streaming alternative (not the paper's method): a result per pushed frame, from what
    has been seen so far.

    Every `stride` frames (while the chain has time embeddings left: `max_frames` steps) the
    chain takes one step on the new frame, with the audio windows heard so far (one centred on
    each chain frame, so a result needs the sound up to half a window, 0.48 s, past its frame),
    and with the motion cue (`LoveConfig.motion`) the change since the previous step's frame.
    Frame 0 is prompted with the token after the first step, as the offline method prompts it
    with the final one; later, when the token has turned away from the one that last prompted
    SAM 2 (cosine similarity below `threshold`), the new token prompts that frame too, on top of
    SAM 2's memory. `reprompts` counts those frames. Measured against the offline form in
    docs/RESULTS.md (`bench/sam2_love_online.py`).
    """

    def __init__(self, model: Sam2Love, texts: Sequence[str], audio: Audio | None, fps: float,
                 stride: int | None = None, threshold: float = 0.9,
                 memory_dtype: torch.dtype = torch.bfloat16) -> None:
        if not texts:
            raise ValueError("LoveOnlineStream needs at least one text prompt")
        if fps <= 0:
            raise ValueError(f"LoveOnlineStream: fps must be positive, got {fps}")
        self.model, self.texts, self.fps = model, list(texts), float(fps)
        # the sound at the encoder's rate; windows past its end (or no sound at all) are silence
        self.samples = resample(audio, SAMPLE_RATE).samples if audio is not None else np.zeros(1, np.float32)
        self.stride = max(1, int(round(fps / 2))) if stride is None else int(stride)
        self.threshold = float(threshold)
        text, padding = model.encode_texts(self.texts)
        self.text, self.padding = model.text_proj(text.to(model.device)), padding.to(model.device)
        self.hooks = love_hooks(model)
        self.session = Session(model.sam, self.hooks, memory_dtype=memory_dtype)
        for obj_id in range(1, len(self.texts) + 1):
            self.session.add_object(obj_id, 0)
        self.seg = model.tokens.initial(len(self.texts))
        self.audio_tokens: list[Tensor] = []  # [D] per chain step
        self.cls_tokens: list[Tensor] = []
        self.last_patches: Tensor | None = None  # [1, hw, d_V] of the previous chain step (the motion cue)
        self.prompted: Tensor | None = None  # [B, 1, C], the token that last prompted SAM 2
        self.index = 0
        self.reprompts = 0

    @property
    def memory_nbytes(self) -> int:
        return self.session.bank.nbytes

    @torch.inference_mode()
    def push(self, frame: np.ndarray | Tensor) -> list[FrameResult]:
        model, index = self.model, self.index
        self.index += 1
        step = len(self.audio_tokens)
        if index % self.stride == 0 and step < model.config.max_frames:
            image = np.ascontiguousarray(np.asarray(frame))[None]
            cls, patches = model.encode_frames(image)
            audio = model.audio_encoder.embed(self.samples, np.array([index / self.fps]))  # centred on the frame
            batch = len(self.texts)
            self.audio_tokens.append(model.audio_proj(audio.to(model.device))[0])
            self.cls_tokens.append(model.visual_proj(cls.to(model.device))[0])
            audio_so_far = torch.stack(self.audio_tokens)[None].expand(batch, -1, -1)
            cls_so_far = torch.stack(self.cls_tokens)[None].expand(batch, -1, -1)
            patches = patches.to(model.device)
            patches_i = model.visual_tokens(patches[None], self.last_patches)[0].expand(batch, -1, -1)
            self.last_patches = patches
            self.seg, _ = model.tokens.step(model.fusion, self.seg, audio_so_far, self.text, self.padding, cls_so_far,
                                            patches_i, step)
            token = model.text_hidden_fcs[0](self.seg[:, :1])
            turned = self.prompted is None or bool(
                (torch.nn.functional.cosine_similarity(token.flatten(1), self.prompted.flatten(1)) < self.threshold).any())
            if turned:
                self.hooks.tokens = {i: token[i - 1 : i] for i in range(1, batch + 1)}
                self.prompted = token
                self.reprompts += int(index > 0)
        try:
            return [self.session.push(frame)]
        finally:
            self.hooks.tokens = {}

    def flush(self) -> list[FrameResult]:
        """Nothing is buffered."""
        return []

    def __enter__(self) -> LoveOnlineStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.tokens = {}
