"""SAM 2 prompt path: clicks, boxes, masks and extra sparse embeddings (text, audio, ...).

SAM paper, Sec. 3 "Prompt encoder": points and box corners become sparse tokens (a random
Fourier positional encoding plus a learned embedding per label); a mask becomes a dense
embedding added to the image embedding. The methods refseg implements prompt SAM 2 with tokens
derived from text or audio (SAMWISE Eq. 1, EVF-SAM's fused [CLS], SAM2-LOVE's [seg]); those
enter here as `extra` sparse embeddings of shape [B, N, 256], appended after the click tokens.

Box prompts are given to the video model as two clicks with labels 2 (top-left) and 3
(bottom-right), as the SAM 2 video predictor does, so one `PointPrompt` carries clicks and boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoPromptEncoder

# Point labels understood by the SAM 2 prompt encoder.
NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT, NOT_A_POINT = 0, 1, 2, 3, -1


@dataclass
class PointPrompt:
    """Clicks (and box corners) in model input coordinates.

    coords: [B, N, 2] float, (x, y) in pixels of the S x S model input.
    labels: [B, N] int, one of NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT.
    """

    coords: Tensor
    labels: Tensor

    @property
    def num_points(self) -> int:
        return self.coords.shape[1]


def embed_prompts(
    encoder: Sam2VideoPromptEncoder,
    batch_size: int,
    points: PointPrompt | None = None,
    mask: Tensor | None = None,
    extra: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Sparse and dense prompt embeddings for the mask decoder.

    Args:
        encoder: the SAM 2 prompt encoder.
        batch_size: B, the number of objects decoded together.
        points: clicks / box corners, or None.
        mask: [B, 1, 4h, 4w] mask logits used as a dense prompt (resized if another size), or None.
        extra: [B, N, C] sparse embeddings from another modality, or None.
    Returns:
        sparse: [B, 1, K, C] tokens; with neither points nor extra embeddings these are the two
                "not a point" tokens SAM 2 uses on tracking frames.
        dense:  [B, C, h, w].
    """
    coords: Tensor | None = None
    labels: Tensor | None = None
    if points is not None:
        coords, labels = points.coords[:, None], points.labels[:, None]
    elif extra is None:
        # SAM 2 pads a prompt-less call with one point labelled "not a point".
        device = encoder.no_mask_embed.weight.device
        coords = torch.zeros(batch_size, 1, 1, 2, device=device)
        labels = torch.full((batch_size, 1, 1), NOT_A_POINT, dtype=torch.int32, device=device)
    if mask is not None and mask.shape[-2:] != encoder.mask_input_size:
        mask = F.interpolate(mask.float(), size=encoder.mask_input_size, mode="bilinear", align_corners=False,
                             antialias=True).to(mask.dtype)
    sparse, dense = encoder(input_points=coords, input_labels=labels, input_boxes=None, input_masks=mask)
    if extra is not None:
        extra = extra[:, None].to(dense.dtype)
        sparse = extra if sparse is None else torch.cat([sparse, extra], dim=2)
    if dense.shape[0] != batch_size:
        dense = dense.expand(batch_size, -1, -1, -1)
    return sparse, dense
