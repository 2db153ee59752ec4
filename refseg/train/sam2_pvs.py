"""Promptable video segmentation training of SAM 2, as the SAM 2 paper trains it.

A training sample is a clip of T frames and one object. The object is prompted on the first
frame with its ground-truth mask, one positive click inside it or its box (50 / 25 / 25 %); with
some probability one later frame gets a corrective click, sampled from the error between the
ground truth and what the model predicts there. The clip is streamed through the engine with
gradients (`Session(grad=True)`), so the loss trains through memory. Per frame: focal (x20) +
dice on the mask where the object is visible (on the best of the three candidates when the
prompt is ambiguous: SAM's multimask rule), L1 on the predicted IoU, cross-entropy on the
presence score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from refseg.data.clicks import mask_box, next_click
from refseg.data.sampler import Clip, ClipSampler
from refseg.engine import Session
from refseg.prompts import Mask, Points, Prompt
from refseg.sam import Sam2
from refseg.train.task import Task
from refseg.train.losses import multimask_losses, object_score_loss

OBJ = 1


@dataclass
class PromptedClip:
    """A clip with its first-frame prompt, an optional corrective click frame (0: none) and the
    seed of its own random numbers (dropout), so that the result does not depend on which
    process trains on it or in which order."""

    clip: Clip
    prompt: Prompt
    corrective_frame: int
    seed: int


class Sam2PvsTask(Task):
    """SAM 2 promptable video segmentation (see the module docstring)."""

    model: Sam2

    def draw(self, sampler: ClipSampler, rng: np.random.Generator) -> PromptedClip:
        """One training sample: a clip whose first frame shows the object, and its prompts."""
        p = self.config.prompts
        clip = sampler.sample()
        while not clip.mask[0].any():  # the crop may cut the object out of the first frame
            clip = sampler.sample()
        kind = rng.choice(["mask", "click", "box"], p=np.array([p.mask, p.click, p.box]) / (p.mask + p.click + p.box))
        if kind == "mask":
            prompt: Prompt = Mask(clip.mask[0])
        elif kind == "click":
            ys, xs = np.nonzero(clip.mask[0])
            pick = int(rng.integers(len(xs)))
            prompt = Points([[float(xs[pick]), float(ys[pick])]])
        else:
            prompt = mask_box(clip.mask[0])
        corrective = int(rng.integers(1, len(clip.frames))) if rng.random() < p.corrective_prob else 0
        return PromptedClip(clip, prompt, corrective, int(rng.integers(2**31)))

    def sample_losses(self, sample: PromptedClip) -> dict[str, Tensor]:
        w = self.config.loss
        clip = sample.clip
        session = Session(self.model, grad=True)
        session.add_prompt(OBJ, sample.prompt)
        # frames before the corrective click go through the encoder as one batch, the rest as another
        cut = sample.corrective_frame or len(clip.frames)
        outputs = [r.objects[OBJ].output for r in session.push_clip(clip.frames[:cut])]
        if cut < len(clip.frames):
            with torch.no_grad():
                guess = session.fork().push(clip.frames[cut]).objects[OBJ].mask
            x, y, label = next_click(clip.mask[cut], guess)
            session.add_prompt(OBJ, Points([[x, y]], [label]))
            outputs += [r.objects[OBJ].output for r in session.push_clip(clip.frames[cut:])]
        focal, dice, iou, presence = [], [], [], []
        size = self.model.image_size
        for t, out in enumerate(outputs):
            target = torch.from_numpy(clip.mask[t]).to(out.high_res.device, torch.float32)[None, None]
            target = F.interpolate(target, size=(size, size), mode="nearest")
            visible = bool(clip.mask[t].any())
            presence.append(object_score_loss(out.object_score[:, 0], torch.full((1,), float(visible), device=target.device)))
            if visible:
                candidates = F.interpolate(out.candidates.float(), size=(size, size), mode="bilinear",
                                           align_corners=False)
                losses = multimask_losses(candidates, out.candidate_iou, target, w.focal, w.dice)
                focal.append(losses["focal"])
                dice.append(losses["dice"])
                iou.append(losses["iou"])
        zero = torch.zeros((), device=presence[0].device)
        terms = {
            "focal": torch.stack(focal).mean() if focal else zero,
            "dice": torch.stack(dice).mean() if dice else zero,
            "iou": torch.stack(iou).mean() if iou else zero,
            "object": torch.stack(presence).mean(),
        }
        terms["loss"] = w.focal * terms["focal"] + w.dice * terms["dice"] + w.iou * terms["iou"] + w.object * terms["object"]
        return terms

