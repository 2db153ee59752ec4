"""GLUS inference (paper Sec. 4; the official `inference_iter.py`): an MLLM that reads global
context frames and a local window of query frames answers each frame with a [SEG] token, and
SAM 2 with its memory bank decodes the frame from it.

A pass over frames (all of them in order, or from a key frame forward and then backward, Sec.
4.4) is a fresh conversation and a fresh memory bank. At pass position t: the LLM reads the 4
context frames (`frames.context_frames`, the same for every pass) and the query frames of
`frames.query_window(t)` in one conversation (`conversation.glus_prompt`), its answer is forced
up to the [SEG] slot and one token is generated; if that token is [SEG], its projected state
prompts SAM 2 on the frame (`hooks.GlusHooks`), else the frame gets an empty mask and no memory
and its turn reads "[SEG] ." in later windows, as the official code does (a model trained with
`GlusSpec.absent_answer` says so on purpose, and its turn reads as it was trained: "... empty.").

The forced answer ends "... result is " with its space, as the official inference writes it; the
official training conversation drops the space before [SEG] (the tokenizer splits around the added
token), so the published models are asked at inference after a space token they never saw before
[SEG]. refseg keeps that for published models (their outputs are the official ones) and drops the
space for the models it trains, which then read at inference exactly what they were trained on.

With a key frame k the forward pass gives frames k+1 .. N-1 and the backward pass frames k .. 0
(the official script writes the forward pass under the wrong file names, so frames after k end
up with no mask; refseg keeps each frame's own prediction).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from refseg.engine import FrameResult, ObjectResult
from refseg.io.atomic import atomic_dir
from refseg.methods.glus.conversation import SEG, glus_input_ids, glus_prompt, query_start, seg_rows
from refseg.methods.glus.frames import context_frames, query_window
from refseg.methods.glus.hooks import GlusHooks
from refseg.methods.glus.mllm import GlusLlm, Prefix
from refseg.methods.glus.vision import VisionTokens
from refseg.sam.model import Sam2

if TYPE_CHECKING:
    from refseg.methods.glus.keyframe import KeyFrameSelector  # which reads GlusSpec from here


@dataclass(frozen=True)
class GlusConfig:
    """Inference settings (the official defaults): context frames, query window, memory frames
    and stride."""

    context_frames: int = 4
    query_window: int = 4
    num_maskmem: int = 7  # 0: no memory bank (the ablation's rows without it)
    memory_stride: int = 3


@dataclass(frozen=True)
class GlusSpec:
    """What a refseg GLUS folder is built from (its config.json "glus"); the frozen parts are
    referenced, not stored.

    llm: None for SmolLM2-135M-Instruct (`refseg.encoders.llm.load_llm`), a `.gguf` file or a
        `transformers` causal-LM folder, or "tiny-test" (a 2-layer LLaMA drawn from seed 0 around
        `tokenizer`, a tokenizer folder; for tests).
    tower: "sam2" (`vision.Sam2Tower`, the SAM 2's own trunk) or a CLIP vision model folder.
    pool: 1-D pooling of the tower's tokens; prompt_width: SAM 2's prompt width C.
    lora_*: the adapters on the LLM (Sec. 5.2: r 8, alpha 16, dropout 0.05 on q_proj and v_proj).
    train_memory: gradients flow through the memory bank, and SAM 2's memory attention and memory
        encoder train (the paper, Sec. 4.2); the official code detaches memories and trains only
        the mask decoder of SAM 2.
    standardize_seg: training first calibrates a per-channel standardisation of the [SEG] state
        on training clips drawn apart from the training draws (`GlusLlm.calibrate`); the folder
        stores it.
    absent_answer: training answers each frame where the target is not (its mask is empty: a
        null expression, an object not yet arrived or gone) with `conversation.ABSENT_WORD`
        instead of [SEG], so the model can leave a frame empty; inference then writes such turns
        that way. refseg's addition: the paper's model answers [SEG] on every frame.
    presence_gate: SAM 2's presence score empties the mask of a frame where it is <= 0 (SAM 2's
        rule; the official GLUS keeps every mask), and training adds `loss.object` on it: a frame
        without the target is told apart by SAM 2's decoder from the full-resolution features and
        the [SEG] token, rather than by the LLM (refseg's addition).
    """

    llm: str | None = None
    tokenizer: str | None = None
    tower: str = "sam2"
    pool: int = 4
    prompt_width: int = 256
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    train_memory: bool = False
    standardize_seg: bool = False
    absent_answer: bool = False
    presence_gate: bool = False
    inference: GlusConfig = field(default_factory=GlusConfig)


ABSENT = -1024.0  # the logit of every pixel of a frame whose call gave no [SEG] (SAM 2's "no object" value)


@dataclass
class GlusResult:
    """Per frame of the video: its `ObjectResult` and whether its call answered [SEG] (if not,
    the logits are `ABSENT` everywhere and the presence score is -inf)."""

    frames: list[ObjectResult]
    answered: list[bool]

    @property
    def logits(self) -> list[Tensor]:
        """Mask logits [H, W] per frame."""
        return [r.logits for r in self.frames]

    @property
    def masks(self) -> list[np.ndarray]:
        return [r.mask for r in self.frames]


def absent(height: int, width: int, low_res: int) -> ObjectResult:
    """The result of a frame whose call gave no [SEG]: no mask, logits `ABSENT`."""
    return ObjectResult(np.zeros((height, width), bool), torch.full((height, width), ABSENT),
                        torch.full((low_res, low_res), ABSENT), float("-inf"), 0.0)


class GlusStream:
    """Stream frames for several expressions (object ids 1..N in the order given). GLUS reads
    the whole video (its context frames spread over it), so `push` keeps the frames and returns
    nothing, and `flush` segments them all (one `Glus.segment` per expression, from the key frame
    the model's `selector` picks when it has one) and returns every frame's results. Frames are
    held until then: a stream of a known, finite video."""

    def __init__(self, model: Glus, texts: list[str]) -> None:
        if not texts:
            raise ValueError("GlusStream needs at least one text prompt")
        self.model, self.texts = model, texts
        self._frames: list[np.ndarray] = []

    def push(self, frame: np.ndarray | Tensor) -> list[FrameResult]:
        self._frames.append(frame.numpy() if isinstance(frame, Tensor) else np.asarray(frame))
        return []

    def flush(self) -> list[FrameResult]:
        if not self._frames:
            return []
        frames, self._frames = self._frames, []
        selector = self.model.selector
        per_text = [self.model.segment(frames, text, None if selector is None else selector.key_frame(frames, text))
                    for text in self.texts]
        height, width = frames[0].shape[:2]
        return [FrameResult(t, height, width, {obj_id: r.frames[t] for obj_id, r in enumerate(per_text, start=1)})
                for t in range(len(frames))]

    def __enter__(self) -> GlusStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._frames = []


class Glus(nn.Module):
    """Vision tokens + LLM + SAM 2, and the tokenizer holding GLUS's added tokens."""

    def __init__(self, vision: VisionTokens, llm: GlusLlm, sam: Sam2, tokenizer: PreTrainedTokenizerBase,
                 config: GlusConfig | None = None, spec: GlusSpec | None = None, sam2_source: str | None = None) -> None:
        super().__init__()
        self.vision, self.llm, self.sam, self.tokenizer = vision, llm, sam, tokenizer
        self.config = config or GlusConfig()
        self.spec, self.sam2_source = spec, sam2_source  # how a refseg folder rebuilds it (None: not one)
        self.selector: KeyFrameSelector | None = None  # streams start their passes from its key frame
        self.seg_id = int(tokenizer.convert_tokens_to_ids(SEG))

    def trained_prefixes(self) -> tuple[str, ...]:
        """Names of the tensors that train, besides the LoRA adapters: the projector, the [SEG]
        projection, the added token rows, SAM 2's mask decoder (and its memory modules with
        `train_memory`)."""
        sam: tuple[str, ...] = ("sam.mask_decoder.",)
        if self.spec is not None and self.spec.train_memory:
            sam += ("sam.memory_attention.", "sam.memory_encoder.")
        return ("vision.mm_projector.", "llm.text_hidden_fcs.", "llm.added_", *sam)

    def stored_state(self) -> dict[str, Tensor]:
        """The tensors a refseg folder or training checkpoint holds: what trains (`trained_prefixes`,
        the LoRA adapters), the [SEG] standardisation with `standardize_seg`, and all of SAM 2
        when it has no `sam2_source` to reload it from."""
        standardised = ("llm.seg_",) if self.spec is not None and self.spec.standardize_seg else ()
        prefixes = self.trained_prefixes() + standardised + (("sam.",) if self.sam2_source is None else ())
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()
                if k.startswith(prefixes) or ".lora_" in k}

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """config.json (the spec; SAM 2's source, or its config when it has none) + model.safetensors
        (`stored_state`), written to a temporary folder first."""
        with atomic_dir(Path(directory)) as tmp:
            save_file(self.stored_state(), str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(self.meta(), indent=2))

    def meta(self) -> dict[str, object]:
        """What config.json records: the spec, and SAM 2's source (or its config when it has none)."""
        if self.spec is None:
            raise ValueError("this GLUS was not built from a spec (a published checkpoint): it has no refseg folder form")
        meta: dict[str, object] = {"glus": dataclasses.asdict(self.spec)}
        meta.update({"sam2_source": self.sam2_source} if self.sam2_source else {"sam2": self.sam.config.to_dict()})
        return meta

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
                for i, t in zip(new, self.vision(self.vision.pixels([frames[i] for i in new]))):
                    tokens[i] = t
            return torch.stack([tokens[i] for i in indices])

        context = context_frames(n, c.context_frames)
        passes = [list(range(n))] if not key_frame else [list(range(key_frame, n)), list(range(key_frame, -1, -1))]
        results: list[ObjectResult | None] = [None] * n
        answered = [False] * n
        shared: Prefix | None = None  # the system text and context frames, run once (mllm's docstring)
        says_absent = self.spec is not None and self.spec.absent_answer
        for order in passes:  # a later pass overwrites the key frame
            hooks = GlusHooks(c.num_maskmem, c.memory_stride, presence_gate=self.spec is not None and self.spec.presence_gate)
            session = hooks.session(self.sam)
            failed: list[bool] = []
            for step, frame in enumerate(order):
                if not c.num_maskmem:  # no memory bank: every frame is decoded as a pass's first frame
                    session = hooks.session(self.sam)
                window = query_window(step, c.query_window)
                earlier = failed[len(failed) - len(window) + 1:] if len(window) > 1 else []
                prompt = glus_prompt(expression, len(window), c.context_frames, earlier, absent=says_absent)
                if self.spec is not None:  # a model refseg trained: no space before [SEG] (module docstring)
                    prompt = prompt.rstrip()
                ids = glus_input_ids(prompt, self.tokenizer)
                images = image_tokens(context + [order[w] for w in window])
                if shared is None:
                    shared = self.llm.prefix(ids[:query_start(ids, len(context))], images[:len(context)])
                hidden, next_logits = self.llm(ids, images, shared)  # the rows after the prefix
                answer = int(next_logits.argmax())
                failed.append(answer != self.seg_id)
                answered[frame] = not failed[-1]
                if failed[-1]:
                    session.skip(frames[frame])
                    results[frame] = absent(*frames[frame].shape[:2], self.sam.image_size // 4)
                else:
                    rows = seg_rows(list(ids) + [answer], self.seg_id, images.shape[1])
                    hooks.prompt = self.llm.seg_prompts(hidden, [rows[-1] - shared.rows])[None]
                    results[frame] = session.push(frames[frame]).objects[1]
        return GlusResult(results, answered)  # type: ignore[arg-type]

    def stream(self, texts: list[str]) -> GlusStream:
        """A stream for `texts` (see `GlusStream`)."""
        return GlusStream(self, texts)
