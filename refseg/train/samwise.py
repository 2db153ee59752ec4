"""SAMWISE training (paper Sec. 4 "Implementation details" and the supplementary): SAM 2 and the
text encoder frozen; the adapters, the prompt MLP and the CME learn.

A sample is a clip of T frames and a referring expression (its target mask is the union of the
referred objects, empty for an expression that refers to nothing). The clip streams through the
engine with gradients; per frame: focal + dice on the mask (weights `loss.focal`, `loss.dice`)
and cross-entropy on SAM 2's presence score (`loss.object`), so an expression that refers to
nothing can say so; the CME learns from its self-supervised labels (`cme.switch_labels`) with
cross-entropy weighted 1 : 2 (keep : switch) as in the official code (`loss.cme`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from refseg.engine import Session
from refseg.methods.samwise import Samwise
from refseg.train.task import ExpressionTask, Referred
from refseg.train.losses import dice_loss, focal_loss, object_score_loss

OBJ = 1


class SamwiseTask(ExpressionTask):
    """SAMWISE on referring expressions (see the module docstring)."""

    model: Samwise

    def sample_losses(self, sample: Referred) -> dict[str, Tensor]:
        w = self.config.loss
        clip = sample.clip
        hooks = self.model.hooks(clip.expression.text)
        hooks.train_cme = self.model.cme is not None
        session = Session(self.model.sam, hooks, grad=True)
        session.add_object(OBJ)
        outputs = [r.objects[OBJ].output for r in session.push_clip(clip.frames)]
        size = self.model.sam.image_size
        targets = torch.from_numpy(clip.mask).to(outputs[0].high_res.device, torch.float32)[:, None]
        targets = F.interpolate(targets, size=(size, size), mode="nearest")  # [T, 1, S, S]
        logits = torch.cat([o.high_res for o in outputs]).float()
        scores = torch.cat([o.object_score for o in outputs])[:, 0]
        visible = targets.flatten(1).any(dim=1).float()
        terms = {
            "focal": focal_loss(logits, targets),
            "dice": dice_loss(logits, targets),
            "object": object_score_loss(scores, visible),
        }
        cme = torch.zeros((), device=logits.device)
        switch = torch.zeros((), device=logits.device)
        if hooks.cme_records:
            decisions = torch.cat([r[0] for r in hooks.cme_records])
            labels = torch.cat([r[1] for r in hooks.cme_records])
            if (labels >= 0).any():
                weight = torch.tensor([1.0, 2.0], device=decisions.device)
                cme = F.cross_entropy(decisions.float(), labels, weight=weight, ignore_index=-1)
                switch = (labels[labels >= 0] == 1).float().mean()
        terms["cme"] = cme
        terms["cme_switch"] = switch  # logged only: the share of labelled frames whose label says switch
        terms["loss"] = (w.focal * terms["focal"] + w.dice * terms["dice"] + w.object * terms["object"]
                         + w.cme * terms["cme"])
        return terms
