"""GLUS inference (paper Sec. 4; the official `inference_iter.py`): an MLLM that reads global
context frames and a local window of query frames answers each frame with a [SEG] token, and
SAM 2 with its memory bank decodes the frame from it.

A pass over frames (all of them in order, or from a key frame forward and then backward, Sec.
4.4) is a fresh conversation and a fresh memory bank. At pass position t: the LLM reads the 4
context frames (`frames.context_frames`, the same for every pass) and the query frames of
`frames.query_window(t)` in one conversation (`conversation.glus_prompt`), its answer is forced
up to the [SEG] slot and one token is generated; if that token is [SEG], its projected state
prompts SAM 2 on the frame (`hooks.GlusHooks`), else the frame gets an empty mask and no memory
and its turn reads "[SEG] ." in later windows, as the official code does.

With a key frame k the forward pass gives frames k+1 .. N-1 and the backward pass frames k .. 0
(the official script writes the forward pass under the wrong file names, so frames after k end
up with no mask; refseg keeps each frame's own prediction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from refseg.engine import Session
from refseg.methods.glus.conversation import SEG, glus_input_ids, glus_prompt, seg_rows
from refseg.methods.glus.frames import context_frames, query_window
from refseg.methods.glus.hooks import GlusHooks
from refseg.methods.glus.mllm import GlusLlm
from refseg.methods.glus.vision import VisionTokens, clip_pixels
from refseg.sam.model import Sam2


@dataclass(frozen=True)
class GlusConfig:
    """Inference settings (the official defaults): context frames, query window, memory frames
    and stride, the vision tower's input side (224 for CLIP ViT-L/14)."""

    context_frames: int = 4
    query_window: int = 4
    num_maskmem: int = 7
    memory_stride: int = 3
    clip_size: int = 224


ABSENT = -1024.0  # the logit of every pixel of a frame whose call gave no [SEG] (SAM 2's "no object" value)


@dataclass
class GlusResult:
    """Per frame of the video: mask logits [H, W] and whether its call answered [SEG] (if not,
    the logits are `ABSENT` everywhere)."""

    logits: list[Tensor]
    answered: list[bool]

    @property
    def masks(self) -> list[np.ndarray]:
        return [(x > 0).numpy() for x in self.logits]


class Glus(nn.Module):
    """Vision tokens + LLM + SAM 2, and the tokenizer holding GLUS's added tokens."""

    def __init__(self, vision: VisionTokens, llm: GlusLlm, sam: Sam2, tokenizer: PreTrainedTokenizerBase,
                 config: GlusConfig | None = None) -> None:
        super().__init__()
        self.vision, self.llm, self.sam, self.tokenizer = vision, llm, sam, tokenizer
        self.config = config or GlusConfig()
        self.seg_id = int(tokenizer.convert_tokens_to_ids(SEG))

    @torch.no_grad()
    def segment(self, frames: Sequence[np.ndarray], expression: str, key_frame: int | None = None) -> GlusResult:
        """Segment what `expression` names in `frames` ([H, W, 3] uint8 each, one video)."""
        n = len(frames)
        if n == 0:
            raise ValueError("segment: no frames")
        if key_frame is not None and not 0 <= key_frame < n:
            raise ValueError(f"key_frame: {key_frame} is not a frame of this {n}-frame video")
        c = self.config
        tokens: dict[int, Tensor] = {}

        def image_tokens(indices: list[int]) -> Tensor:
            new = [i for i in dict.fromkeys(indices) if i not in tokens]
            if new:
                pixels = torch.stack([clip_pixels(frames[i], c.clip_size) for i in new])
                for i, t in zip(new, self.vision(pixels)):
                    tokens[i] = t
            return torch.stack([tokens[i] for i in indices])

        context = context_frames(n, c.context_frames)
        passes = [list(range(n))] if not key_frame else [list(range(key_frame, n)), list(range(key_frame, -1, -1))]
        logits: list[Tensor] = [torch.empty(0)] * n
        answered = [False] * n
        for order in passes:  # a later pass overwrites the key frame
            hooks = GlusHooks(c.num_maskmem, c.memory_stride)
            session = Session(self.sam, hooks, memory_dtype=torch.float32)
            session.add_object(1)
            failed: list[bool] = []
            for step, frame in enumerate(order):
                window = query_window(step, c.query_window)
                earlier = failed[len(failed) - len(window) + 1:] if len(window) > 1 else []
                ids = glus_input_ids(glus_prompt(expression, len(window), c.context_frames, earlier), self.tokenizer)
                images = image_tokens(context + [order[w] for w in window])
                hidden, next_logits = self.llm(ids, images)
                answer = int(next_logits.argmax())
                failed.append(answer != self.seg_id)
                answered[frame] = not failed[-1]
                if failed[-1]:
                    session.skip(frames[frame])
                    logits[frame] = torch.full(frames[frame].shape[:2], ABSENT)
                else:
                    rows = seg_rows(list(ids) + [answer], self.seg_id, images.shape[1])
                    hooks.prompt = self.llm.seg_prompts(hidden, rows)[-1:][None]
                    logits[frame] = session.push(frames[frame]).objects[1].logits
        return GlusResult(logits, answered)
