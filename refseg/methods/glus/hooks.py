"""GLUS's SAM 2 half on the engine (paper Sec. 4.1-4.2; the official `GLUS.py` inference).

Every frame of a pass is decoded from one sparse prompt token, the frame's projected [SEG] (the
MLLM's answer for that frame, handed over through `prompt` before the frame is pushed); the dense
prompt is SAM's no-mask embedding and SAM 2 gives a single mask (`multimask_output=False`, with
its stability fallback to the best of three candidates, which SAM 2 keeps on in eval mode). The
object score gates nothing (the official code; `presence_gate` for a model refseg trained with
`GlusSpec.presence_gate`: SAM 2's own rule, the mask emptied where the score is <= 0) and no holes
are filled.

Memory (Sec. 4.2): a frame at pass position t attends to the memories of
`frames.memory_frames(t)` (t - 1 and a stride-r history, at most 7 frames, oldest first) with
their positional encoding only: no temporal encoding, no object pointers, no prompted frames (the
first frame is decoded without memory and kept as an ordinary one). The memory encoder reads the
embedding the decoder read (memory-conditioned, or plus the no-memory embedding on the first
frame), as the official code overwrites the feature in place. The engine keeps the last
(7 - 1) * r + 1 unprompted memories, what the stride reaches. In training (stride 1) memories
are stored detached, as the official code stores them, unless `train_memory` (the paper's Sec. 4.2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from refseg.engine import Session
from refseg.engine.hooks import MethodHooks
from refseg.engine.memory_bank import ObjectMemory
from refseg.methods.glus.frames import memory_frames
from refseg.sam.image_encoder import ImageFeatures
from refseg.sam.mask_decoder import DecoderOutput
from refseg.sam.model import Sam2
from refseg.sam.memory import MemoryReadout
from refseg.sam.preprocess import SAM2


class GlusHooks(MethodHooks):
    """The hooks of a GLUS pass; `prompt` [1, 1, C] is the next frame's projected [SEG]."""

    multimask = False
    stability_fallback = True
    presence_gate = False
    prompted_start = False
    fill_holes = 0
    preprocess = SAM2
    memory_reads_decoder_input = True

    def __init__(self, num_maskmem: int = 7, stride: int = 3, train_memory: bool = False,
                 presence_gate: bool = False) -> None:
        self.num_maskmem, self.stride, self.train_memory = num_maskmem, stride, train_memory
        self.presence_gate = presence_gate
        self.keep_recent = max(num_maskmem - 1, 0) * stride + 1
        self.prompt: Tensor | None = None

    def session(self, sam: Sam2, grad: bool = False) -> Session:
        """A fresh pass: a session on `sam` with these hooks and the object (id 1) it segments,
        memories kept in float32."""
        session = Session(sam, self, grad=grad, memory_dtype=torch.float32)
        session.add_object(1)
        return session

    def select_memories(self, frame: int, obj_id: int, memory: ObjectMemory, features: ImageFeatures,
                        generator: torch.Generator) -> MemoryReadout:
        stored = {entry.frame: entry for entry in memory.recent_before(frame, 0)}
        out = MemoryReadout(temporal=False)
        for t in memory_frames(frame, self.num_maskmem, self.stride):
            if t in stored:  # a frame whose [SEG] failed stored no memory
                out.add_memory(stored[t].features, 0, stored[t].kv, stored[t].mask)
        return out

    def memory_mask(self, frame: int, obj_id: int, features: ImageFeatures, output: DecoderOutput) -> Tensor:
        """The decoded mask, detached unless gradients train through memory (`train_memory`; the
        official training stores memories detached)."""
        return output.high_res if self.train_memory else output.high_res.detach()

    def prompt_tokens(self, frame: int, obj_id: int, features: ImageFeatures, embed: Tensor,
                      readout: MemoryReadout | None, has_points: bool) -> Tensor:
        if self.prompt is None:
            raise RuntimeError(f"frame {frame}: GLUS decodes from the frame's [SEG] token; none was given")
        return self.prompt.to(embed.dtype)
