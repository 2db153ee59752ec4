"""SAM 2 mask decoder head: masks, IoU, object presence and the object pointer.

SAM 2 paper, Sec. 4 "Prompt encoder and mask decoder": a two-way transformer turns prompt
tokens and the (memory-conditioned) image embedding into up to three masks with predicted IoU;
an extra head predicts whether the object is present in the frame ("occlusion prediction"),
and the output token of the chosen mask, passed through an MLP, is the object pointer kept in
memory. When the object is predicted absent, mask logits become -1024 and the pointer becomes
the learned "no object" pointer, so memory records the occlusion.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torch.nn import functional as F

from refseg.sam.prompt_encoder import embed_prompts

if TYPE_CHECKING:
    from refseg.sam.model import Sam2

NO_OBJECT_SCORE = -1024.0  # mask logit SAM 2 writes where the object is predicted absent
MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0  # binary mask -> logits, for masks used as output


@dataclass
class DecoderOutput:
    """SAM head output for B objects on one frame.

    low_res:      [B, 1, 4h, 4w] mask logits (h = S/16).
    high_res:     [B, 1, S, S] mask logits at the model input size.
    iou:          [B, 1] predicted IoU of the chosen mask.
    object_score: [B, 1] presence logit (> 0: the object is visible).
    pointer:      [B, C] object pointer.
    candidates:   [B, M, 4h, 4w] logits of all M candidate masks (M = 3 for an ambiguous prompt,
                  else 1) and candidate_iou [B, M] their predicted IoU: what training reads.
    """

    low_res: Tensor
    high_res: Tensor
    iou: Tensor
    object_score: Tensor
    pointer: Tensor
    candidates: Tensor
    candidate_iou: Tensor


def decode_masks(
    model: Sam2,
    high_res_features: list[Tensor],
    embed: Tensor,
    sparse: Tensor,
    dense: Tensor,
    multimask: bool,
    stability_fallback: bool | None = None,
    presence_gate: bool = True,
) -> DecoderOutput:
    """Run the SAM head.

    Args:
        model: the SAM 2 parts.
        high_res_features: [B, C/8, 4h, 4w] and [B, C/4, 2h, 2w] projected features.
        embed: [B, C, h, w] image embedding (memory-conditioned on tracking frames).
        sparse: [B, 1, K, C] prompt tokens; dense: [B, C, h, w] dense prompt.
        multimask: predict three masks and keep the one with the highest predicted IoU.
        stability_fallback: for a single mask, fall back to the best candidate when its
            stability score is low (None: the config's `dynamic_multimask_via_stability`).
        presence_gate: empty the masks (logits -1024) where the object score is <= 0.
    """
    batch = embed.shape[0]
    image_pe = model.image_positional_embeddings().expand(batch, -1, -1, -1)
    decoder = model.mask_decoder
    configured = decoder.dynamic_multimask_via_stability
    decoder.dynamic_multimask_via_stability = configured if stability_fallback is None else stability_fallback
    try:
        masks, iou, tokens, object_score = decoder(
            image_embeddings=embed,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=high_res_features,
        )
    finally:
        decoder.dynamic_multimask_via_stability = configured
    # masks [B, 1, M, 4h, 4w], iou [B, 1, M], tokens [B, 1, M, C], object_score [B, 1, 1]
    object_score = object_score[:, 0]
    present = object_score > 0
    if presence_gate:
        masks = torch.where(present[:, :, None, None, None], masks, NO_OBJECT_SCORE)
    best = iou.argmax(dim=-1)[:, 0] if multimask else torch.zeros(batch, dtype=torch.long, device=iou.device)
    rows = torch.arange(batch, device=masks.device)
    low_res = masks[rows, 0, best][:, None]
    token = tokens[rows, 0, best] if tokens.shape[2] > 1 else tokens[:, 0, 0]
    high_res = F.interpolate(low_res.float(), size=(model.image_size, model.image_size), mode="bilinear",
                             align_corners=False).to(low_res.dtype)
    pointer = present_or_no_object(model, model.object_pointer_proj(token), present)
    return DecoderOutput(low_res=low_res, high_res=high_res, iou=iou[rows, 0, best][:, None],
                         object_score=object_score, pointer=pointer, candidates=masks[:, 0], candidate_iou=iou[:, 0])


def present_or_no_object(model: Sam2, pointer: Tensor, present: Tensor) -> Tensor:
    """Keep `pointer` [B, C] where `present` [B, 1] is true, else the learned no-object pointer."""
    weight = present.to(pointer.dtype)
    return weight * pointer + (1 - weight) * model.no_object_pointer


def mask_as_output(model: Sam2, high_res_features: list[Tensor], embed: Tensor, mask: Tensor,
                   extra: Tensor | None = None) -> DecoderOutput:
    """Use a given binary mask as the frame's output, as SAM 2 does for mask prompts.

    The mask becomes logits (+10 inside, -10 outside); the SAM head is still run on the mask,
    downsampled to a dense prompt, to obtain an object pointer; presence is read off the mask.

    Args:
        high_res_features, embed: as in `decode_masks` (embed without memory conditioning).
        mask: [B, 1, S, S] float in {0, 1} at the model input size.
        extra: [B, N, C] a method's sparse tokens for that decoder call (`embed_prompts`), or None.
    """
    mask = mask.to(embed.dtype)
    high_res = mask * MASK_OUT_SCALE + MASK_OUT_BIAS
    low_res = F.interpolate(high_res.float(), size=model.prompt_encoder.mask_input_size, mode="bilinear",
                            align_corners=False, antialias=True).to(embed.dtype)
    sparse, dense = embed_prompts(model.prompt_encoder, embed.shape[0], mask=model.mask_downsample(mask), extra=extra)
    pointer = decode_masks(model, high_res_features, embed, sparse, dense, multimask=True).pointer
    present = mask.flatten(1).gt(0).any(dim=1, keepdim=True)
    object_score = MASK_OUT_SCALE * present.to(embed.dtype) + MASK_OUT_BIAS
    pointer = present_or_no_object(model, pointer, present)
    iou = torch.ones_like(object_score)
    return DecoderOutput(low_res=low_res, high_res=high_res, iou=iou, object_score=object_score, pointer=pointer,
                         candidates=low_res, candidate_iou=iou)


def fill_holes(low_res: Tensor, max_area: int) -> Tensor:
    """SAM 2's video-predictor post-processing of output masks (`fill_hole_area`): every
    8-connected background region (logits <= 0) of at most `max_area` pixels becomes foreground
    with logit 0.1. Memory is encoded from the masks before this step, as in SAM 2.

    Args:
        low_res: [B, 1, 4h, 4w] mask logits.
        max_area: largest region filled, in low-resolution pixels; 0 fills nothing.
    """
    if max_area <= 0:
        return low_res
    background = (low_res <= 0).detach().cpu().numpy()
    holes = np.zeros_like(background)
    for index in np.ndindex(*background.shape[:2]):
        labels, count = ndimage.label(background[index], structure=np.ones((3, 3), dtype=bool))
        if count:
            small = np.bincount(labels.ravel()) <= max_area
            small[0] = False  # label 0 is the foreground
            holes[index] = small[labels]
    if not holes.any():
        return low_res
    return torch.where(torch.from_numpy(holes).to(low_res.device), torch.tensor(0.1, dtype=low_res.dtype), low_res)


def with_holes_filled(model: Sam2, out: DecoderOutput, max_area: int) -> DecoderOutput:
    """`out` with `fill_holes` applied to its mask, at low and model input resolution."""
    low_res = fill_holes(out.low_res, max_area)
    if low_res is out.low_res:
        return out
    high_res = F.interpolate(low_res.float(), size=(model.image_size, model.image_size), mode="bilinear",
                             align_corners=False).to(low_res.dtype)
    return dataclasses.replace(out, low_res=low_res, high_res=high_res)
