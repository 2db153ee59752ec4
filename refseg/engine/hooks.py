"""The method contract: small hooks a method overrides for the steps of the loop it changes.

The engine (`refseg.engine.session`) owns the loop, the memory bank, resizing and object
bookkeeping; a method only says what it adds at each step (DESIGN.md, "The engine and the method
contract"). Every hook has a default that leaves plain SAM 2 tracking unchanged.
"""

from __future__ import annotations

from torch import Tensor

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
    """

    clip_len: int = 1
    multimask: bool | None = None
    stability_fallback: bool | None = None
    presence_gate: bool = True
    prompted_start: bool = True
    fill_holes: int = 8
    preprocess: Preprocess = SAM2_VIDEO

    def encode_stage(self, stage: int, features: Tensor) -> Tensor:
        """Step 1. Adapt the image encoder after Hiera stage `stage` ([T, h, w, C], T = clip)."""
        return features

    def has_stage_hook(self) -> bool:
        """Whether `encode_stage` is overridden (the stock encoder path is used when not)."""
        return type(self).encode_stage is not MethodHooks.encode_stage

    def select_memories(self, frame: int, obj_id: int, readout: MemoryReadout) -> MemoryReadout:
        """Step 2. Choose which memories `obj_id` attends to on `frame`."""
        return readout

    def prompt_tokens(self, frame: int, obj_id: int, features: ImageFeatures, embed: Tensor) -> Tensor | None:
        """Step 3. Extra sparse prompt tokens [1, N, C] for `obj_id` on `frame`, or None.

        `features` are the frame's image features and `embed` [1, C, h, w] the embedding after
        memory conditioning (what SAMWISE prompts on, Eq. 7).
        """
        return None

    def memory_mask(self, frame: int, obj_id: int, features: ImageFeatures, output: DecoderOutput) -> Tensor:
        """Step 5. Mask logits [1, 1, S, S] to write into memory (SAMWISE's CME changes this)."""
        return output.high_res
