"""The method contract: small hooks a method overrides for the steps of the loop it changes.

The engine (`refseg.engine.session`) owns the loop, the memory bank, resizing and object
bookkeeping; a method only says what it adds at each step (DESIGN.md, "The engine and the method
contract"). Every hook has a default that leaves plain SAM 2 tracking unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from refseg.engine.memory_bank import ObjectMemory
from refseg.sam.image_encoder import ImageFeatures
from refseg.sam.mask_decoder import DecoderOutput
from refseg.sam.memory import MemoryReadout
from refseg.sam.preprocess import SAM2_VIDEO, Preprocess


class MethodHooks:
    """Base class of a method's hooks; the defaults are plain SAM 2.

    Attributes:
        clip_len: frames the image encoder sees at once (1 = per frame; SAMWISE uses 8).
        multimask: None keeps SAM 2's rule (three candidates for an ambiguous prompt); False
            always decodes the single mask (what text-prompted methods do).
        stability_fallback: whether a single-mask output whose stability score is low falls back
            to the best of the three candidates (`dynamic_multimask_via_stability`: on in SAM 2's
            predictors, off where a method builds SAM 2 without it, as SAMWISE does); None keeps
            the model config's setting.
        presence_gate: whether a mask is emptied (logits -1024) when the occlusion head says the
            object is absent, as SAM 2's tracking step does; False keeps the decoder's logits
            (EVF-SAM's image path never reads the occlusion logit).
        prompted_start: whether the first frame of an object started without clicks, box or mask
            (by text or sound: `Session.add_object`) becomes a prompted memory, attended to on
            every later frame with the prompted temporal slot, as a clicked frame does. False makes
            it an ordinary memory that ages out after `num_maskmem - 1` frames (SAMWISE).
        fill_holes: background regions of the output mask of at most this many low-resolution
            pixels are filled (SAM 2's video predictor: `fill_hole_area=8`, done by its CUDA
            extension; without one the official code skips it, and so does refseg with 0).
            Memories are encoded before, from the unfilled masks.
        preprocess: how frames become the model input and masks go back (`Preprocess`; default
            SAM 2's video predictor: frames stretched to S x S by PIL's bicubic filter).
        pixel_window: n, input frames `encode_output` reads per frame: the frame and the n - 1
            pushed before it (0: `encode_output` gets no window).
        keep_recent: K, unprompted memories kept per object for `select_memories` to choose
            from (0: only the N - 1 SAM 2 reads; `MemoryBank`).
        store_keys: keep each frame's image embedding in its memories (`MemoryEntry.key`).
        store_masks: keep each frame's low-resolution mask logits in its memories
            (`MemoryEntry.mask`, read back as `MemoryReadout.masks`).
        memory_reads_decoder_input: the memory encoder reads the embedding the decoder read
            (memory-conditioned, or with the no-memory embedding added) instead of the frame's
            own embedding, as GLUS's code does; SAM 2 encodes memory from the frame's embedding.
    """

    clip_len: int = 1
    multimask: bool | None = None
    stability_fallback: bool | None = None
    presence_gate: bool = True
    prompted_start: bool = True
    fill_holes: int = 8
    preprocess: Preprocess = SAM2_VIDEO
    pixel_window: int = 0
    keep_recent: int = 0
    store_keys: bool = False
    store_masks: bool = False
    memory_reads_decoder_input: bool = False

    def encode_stage(self, stage: int, features: Tensor) -> Tensor:
        """Step 1. Adapt the image encoder after Hiera stage `stage` ([T, h, w, C], T = clip)."""
        return features

    def has_stage_hook(self) -> bool:
        """Whether `encode_stage` is overridden (the stock encoder path is used when not)."""
        return type(self).encode_stage is not MethodHooks.encode_stage

    def encode_output(self, window: Tensor | None, features: ImageFeatures) -> ImageFeatures:
        """Step 1, after the neck. Replace the image features of T frames.

        `window` is [T, n, 3, S, S]: per frame, the model input of the n - 1 frames pushed
        before it and of the frame itself, oldest first. At the start of a stream, where fewer
        than n - 1 frames were pushed, the window is the frames so far followed by repeats of the
        frame (SAM-I2V's padding: frame 2 of a 5-frame window reads 0, 1, 2, 2, 2). None when
        `pixel_window` is 0.
        `features.trunk` holds the trunk's stage outputs.
        """
        return features

    def has_output_hook(self) -> bool:
        """Whether `encode_output` is overridden."""
        return type(self).encode_output is not MethodHooks.encode_output

    def select_memories(self, frame: int, obj_id: int, memory: ObjectMemory, features: ImageFeatures,
                        generator: torch.Generator) -> MemoryReadout:
        """Step 2. Choose which memories `obj_id` attends to on `frame` (default: SAM 2's).

        `memory` is the object's bank (`ObjectMemory.readout`, `recent_before`,
        `select_prompted`), `features` the frame's image features, `generator` the session's
        seeded random numbers (for methods that sample; forked sessions get a copy).
        """
        return memory.readout(frame)

    def prompt_tokens(self, frame: int, obj_id: int, features: ImageFeatures, embed: Tensor,
                      readout: MemoryReadout | None, has_points: bool) -> Tensor | None:
        """Step 3. Extra sparse prompt tokens [1, N, C] for `obj_id` on `frame`, or None.

        `features` are the frame's image features and `embed` [1, C, h, w] the embedding after
        memory conditioning (what SAMWISE prompts on, Eq. 7); `readout` the memories it was
        conditioned on (None on a frame decoded without memory); `has_points` whether the frame
        has clicks or a box for the object. With clicks the engine places the extra tokens after
        them and SAM's padding token; without, the extra tokens are the whole sparse prompt (a
        method that wants SAM's two "not a point" tokens adds them).
        """
        return None

    def memory_mask(self, frame: int, obj_id: int, features: ImageFeatures, output: DecoderOutput) -> Tensor:
        """Step 5. Mask logits [1, 1, S, S] to write into memory (SAMWISE's CME changes this)."""
        return output.high_res
