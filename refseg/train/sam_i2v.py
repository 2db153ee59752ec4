"""SAM-I2V training (paper Sec. 4.1 and the official training code), on the engine.

Samples are `Sam2PvsTask`'s: a clip of T frames (or, with probability `prompts.still`, its first
frame alone as a still image), one object, prompted on the first frame with its mask, a click or
its box, and sometimes a corrective click on a later frame. The clip streams through SAM-I2V's
hooks with gradients: the TFI on each frame's pixel window, SAM 2's consecutive memory (the
official training never runs the selector), the MPG's tokens. The loss is the official one:
20 x the structure loss (boundary-weighted BCE + weighted IoU, on the best of the candidates under
SAM's multimask rule) + L1 on every predicted IoU + BCE on presence (`loss.structure`,
`loss.iou`, `loss.object`). Hold the image trunk fixed with `freeze: [sam.vision_encoder]`.
"""

from __future__ import annotations

from torch import Tensor

from refseg.engine import Session
from refseg.methods.sam_i2v import SamI2V
from refseg.sam import Sam2
from refseg.train.losses import structure_multimask_losses
from refseg.train.sam2_pvs import Sam2PvsTask


class SamI2VTask(Sam2PvsTask):
    """SAM-I2V promptable video segmentation (see the module docstring)."""

    model: SamI2V  # type: ignore[assignment]

    @property
    def sam(self) -> Sam2:
        return self.model.sam

    def session(self) -> Session:
        return self.model.session(grad=True)

    def mask_losses(self, candidates: Tensor, candidate_iou: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        w = self.config.loss
        losses = structure_multimask_losses(candidates, candidate_iou, target)
        return w.structure * losses["structure"] + w.iou * losses["iou"], losses
