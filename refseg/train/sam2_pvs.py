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

import dataclasses
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
        """One training sample: a clip whose first frame shows the object, and its prompts; with
        probability `prompts.still`, the clip's first frame alone (a still image, clicked or boxed)."""
        p = self.config.prompts
        clip = sampler.sample()
        while not clip.mask[0].any():  # the crop may cut the object out of the first frame
            clip = sampler.sample()
        still = bool(p.still) and rng.random() < p.still
        if still:  # prompted by a click or a box: a mask prompt is its own output, nothing to learn
            clip = dataclasses.replace(clip, frames=clip.frames[:1], mask=clip.mask[:1],
                                       objects={o: m[:1] for o, m in clip.objects.items()})
        weights = np.array([0.0 if still else p.mask, p.click, p.box])
        kind = rng.choice(["mask", "click", "box"], p=weights / weights.sum())
        if kind == "mask":
            prompt: Prompt = Mask(clip.mask[0])
        elif kind == "click":
            ys, xs = np.nonzero(clip.mask[0])
            pick = int(rng.integers(len(xs)))
            prompt = Points([[float(xs[pick]), float(ys[pick])]])
        else:
            prompt = mask_box(clip.mask[0])
        corrective = 0
        if len(clip.frames) > 1 and rng.random() < p.corrective_prob:
            corrective = int(rng.integers(1, len(clip.frames)))
        return PromptedClip(clip, prompt, corrective, int(rng.integers(2**31)))

    @property
    def sam(self) -> Sam2:
        """The SAM 2 parts the session runs."""
        return self.model

    def session(self) -> Session:
        """A session with gradients for one clip."""
        return Session(self.model, grad=True)

    def mask_losses(self, candidates: Tensor, candidate_iou: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The mask and IoU losses of one visible frame (SAM's multimask rule) and the terms to log.

        candidates [1, M, S, S] logits, candidate_iou [1, M], target [1, 1, S, S]."""
        w = self.config.loss
        losses = multimask_losses(candidates, candidate_iou, target, w.focal, w.dice)
        return w.focal * losses["focal"] + w.dice * losses["dice"] + w.iou * losses["iou"], losses

    def sample_losses(self, sample: PromptedClip) -> dict[str, Tensor]:
        w = self.config.loss
        clip = sample.clip
        session = self.session()
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
        masks: list[Tensor] = []
        logged: dict[str, list[Tensor]] = {}
        presence = []
        size = self.sam.image_size
        for t, out in enumerate(outputs):
            target = torch.from_numpy(clip.mask[t]).to(out.high_res.device, torch.float32)[None, None]
            target = F.interpolate(target, size=(size, size), mode="nearest")
            visible = bool(clip.mask[t].any())
            presence.append(object_score_loss(out.object_score[:, 0], torch.full((1,), float(visible), device=target.device)))
            if visible:
                candidates = F.interpolate(out.candidates.float(), size=(size, size), mode="bilinear",
                                           align_corners=False)
                loss, terms = self.mask_losses(candidates, out.candidate_iou, target)
                masks.append(loss)
                for name, value in terms.items():
                    logged.setdefault(name, []).append(value)
        zero = torch.zeros((), device=presence[0].device)
        result = {name: torch.stack(values).mean() for name, values in logged.items()}
        result["object"] = torch.stack(presence).mean()
        result["loss"] = (torch.stack(masks).mean() if masks else zero) + w.object * result["object"]
        return result

