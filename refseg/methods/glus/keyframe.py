"""GLUS's key-frame selector (paper Sec. 4.4, App. B.4; the official `kfs/`): an MLLM of the same
kind as GLUS's that scores how well a frame shows what an expression names, trained on GLUS's own
per-frame IoU (pseudo-labels from an early GLUS checkpoint on the training videos).

A call reads `context_frames` frames spread over the video (8 in the paper; segment centres at
inference, one random frame per segment in training) and one query frame:

    SYSTEM USER: <ctx> x 8 CONTEXT_TEXT <q> SCORE_QUESTION ASSISTANT: SCORE_ANSWER[SCORE].</s>

The last-layer state at the row before [SCORE] (LISA's shift, as for [SEG]) goes through a 3-layer
MLP (Linear-ReLU-Linear-ReLU-Linear) to one score, trained with L1 against the IoU (plus the
language loss on the answer). At inference every frame is scored and the best one is the key
frame, from which `Glus.segment` runs its forward and backward passes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from refseg.io.atomic import atomic_dir
from refseg.methods.glus.conversation import (CONTEXT_TEXT, EOS, IMAGE_BLOCK, SYSTEM, clean_expression,
                                              glus_input_ids, query_start, seg_rows)
from refseg.methods.glus.frames import context_frames
from refseg.methods.glus.mllm import GlusLlm
from refseg.methods.glus.model import GlusSpec
from refseg.methods.glus.vision import VisionTokens
from refseg.sam.model import Sam2

SCORE = "[SCORE]"
SCORE_QUESTION = "\nHow well can the {} be segmented in this frame?"
SCORE_ANSWER = "The score is "
SELECTOR_TOKENS = (SCORE, "<im_start>", "<im_end>")  # added to the selector LLM's vocabulary


def score_prompt(expression: str, context_frames: int = 8) -> str:
    """The complete conversation of one selector call (see the module docstring)."""
    user = IMAGE_BLOCK * context_frames + CONTEXT_TEXT + IMAGE_BLOCK + SCORE_QUESTION.format(clean_expression(expression))
    return f"{SYSTEM} USER: {user} ASSISTANT: {SCORE_ANSWER}{SCORE}.{EOS}"


class ScoreHead(nn.Module):
    """[.., H] -> [..] (Linear H -> H, ReLU, Linear H -> H, ReLU, Linear H -> 1)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                    nn.Linear(width, 1))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.layers(hidden)[..., 0]


class KeyFrameSelector(nn.Module):
    """Vision tokens + LLM (with [SCORE]) + score head; `sam` carries a SAM 2 tower's weights."""

    def __init__(self, vision: VisionTokens, llm: GlusLlm, sam: Sam2 | None, tokenizer: PreTrainedTokenizerBase,
                 spec: GlusSpec, sam2_source: str | None, context: int = 8) -> None:
        super().__init__()
        self.vision, self.llm, self.sam, self.tokenizer = vision, llm, sam, tokenizer
        self.head = ScoreHead(llm.width)
        self.spec, self.sam2_source, self.context = spec, sam2_source, context
        self.score_id = int(tokenizer.convert_tokens_to_ids(SCORE))

    def input_ids(self, expression: str) -> list[int]:
        return glus_input_ids(score_prompt(expression, self.context), self.tokenizer, SELECTOR_TOKENS)

    def score(self, ids: Sequence[int], images: Tensor) -> tuple[Tensor, Tensor]:
        """(score [], LLM states [L', H]) of one call: ids of `input_ids`, images [context + 1, m, H]."""
        hidden = self.llm.states(ids, images)
        (row,) = seg_rows(ids, self.score_id, images.shape[1])
        return self.head(hidden[row]), hidden

    @torch.no_grad()
    def frame_scores(self, frames: Sequence[np.ndarray], expression: str) -> list[float]:
        """The score of every frame of a video ([H, W, 3] uint8 each) for `expression`."""
        context = context_frames(len(frames), self.context)
        tokens = self.vision(self.vision.pixels(list(frames)))  # [N, m, H]
        ids = self.input_ids(expression)
        # every call begins with the system text and the context frames: kept once (mllm's docstring)
        prefix = self.llm.prefix(ids[:query_start(ids, len(context))], tokens[context])
        (row,) = seg_rows(ids, self.score_id, tokens.shape[1])
        return [float(self.head(self.llm(ids, tokens[context + [t]], prefix)[0][row - prefix.rows]))
                for t in range(len(frames))]

    def key_frame(self, frames: Sequence[np.ndarray], expression: str) -> int:
        """The best-scored frame (the first of equals)."""
        return int(np.argmax(self.frame_scores(frames, expression)))

    # -- folders ---------------------------------------------------------------------------------
    def trained_prefixes(self) -> tuple[str, ...]:
        """What trains besides the LoRA adapters: the projector, the added rows, the score head."""
        return ("vision.mm_projector.", "llm.added_", "head.")

    def stored_state(self) -> dict[str, Tensor]:
        """What trains (`trained_prefixes`, LoRA), and the SAM 2 when it has no source."""
        prefixes = self.trained_prefixes() + (("sam.",) if self.sam2_source is None else ())
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()
                if k.startswith(prefixes) or ".lora_" in k}

    def meta(self) -> dict[str, object]:
        meta: dict[str, object] = {"glus_key_frames": {"spec": dataclasses.asdict(self.spec), "context": self.context}}
        if self.sam2_source:
            meta["sam2_source"] = self.sam2_source
        elif self.sam is not None:
            meta["sam2"] = self.sam.config.to_dict()
        return meta

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        with atomic_dir(Path(directory)) as tmp:
            save_file(self.stored_state(), str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(self.meta(), indent=2))
