"""Training GLUS's key-frame selector (paper Sec. 4.4, App. B.4; the official `kfs/`).

Pseudo-labels: an early GLUS checkpoint (`key_frames.early`, a GLUS folder) segments every
expression of the training videos in one pass from frame 0, and the IoU of each frame's mask with
the expression's target is that frame's label (1 where both are empty). They are written once to
`key_frames.labels` (JSON: video -> expression id -> one IoU per frame) and read from there by
every later run.

A sample is one (video, expression) with `key_frames.context` context frames (one random frame per
segment of the video) and one random query frame; the loss is `loss.score` x L1(score, label) +
`loss.ce` x the language loss on the answer ("The score is [SCORE].").
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from refseg.data.sample import VideoSample
from refseg.data.sampler import ClipSampler
from refseg.io.atomic import atomic_file
from refseg.methods.glus import Glus
from refseg.methods.glus.build import load_glus
from refseg.methods.glus.conversation import answer_targets
from refseg.methods.glus.frames import training_context
from refseg.methods.glus.keyframe import SCORE_ANSWER, KeyFrameSelector
from refseg.train.config import TrainConfig
from refseg.train.task import ExpressionTask, Referred

log = logging.getLogger(__name__)

Labels = dict[str, dict[str, list[float]]]


def frame_ious(masks: Sequence[np.ndarray], targets: np.ndarray) -> list[float]:
    """IoU of each predicted mask [H, W] with its target (targets [T, H, W]); 1.0 where both are empty."""
    out = []
    for mask, target in zip(masks, targets, strict=True):
        union = np.logical_or(mask, target).sum()
        out.append(1.0 if union == 0 else float(np.logical_and(mask, target).sum() / union))
    return out


@torch.no_grad()
def pseudo_labels(glus: Glus, samples: Sequence[VideoSample]) -> Labels:
    """Per-frame IoU of `glus`'s masks for every expression of `samples` (see the module docstring)."""
    labels: Labels = {}
    for sample in tqdm(samples, desc="key-frame labels", unit="video"):
        frames = list(sample.frames())
        labels[sample.video_id] = {e.exp_id: frame_ious(glus.segment(frames, e.text).masks, sample.target_mask(e))
                                   for e in sample.expressions}
    return labels


def read_labels(path: str | os.PathLike[str], early: str | None, samples: Sequence[VideoSample]) -> Labels:
    """The labels at `path`, made first from the GLUS folder `early` when the file does not exist."""
    file = Path(path)
    if not file.is_file():
        if early is None:
            raise ValueError(f"key_frames.labels {file}: no such file; set key_frames.early (an early GLUS folder) "
                             "to make it")
        log.info("labelling %d training videos with %s into %s", len(samples), early, file)
        labels = pseudo_labels(load_glus(early), samples)
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(file) as tmp:
            tmp.write_text(json.dumps(labels))
    return json.loads(file.read_text())


class GlusKeyFrameTask(ExpressionTask):
    """The key-frame selector on pseudo-labelled expressions (see the module docstring)."""

    model: KeyFrameSelector

    def __init__(self, model: KeyFrameSelector, config: TrainConfig) -> None:
        super().__init__(model, config)
        self.labels: Labels = {}

    def sampler(self, samples: Sequence[VideoSample], seed: int) -> ClipSampler:
        settings = self.config.key_frames
        if settings.labels is None:
            raise ValueError("key_frames.labels: give the pseudo-label file (made from key_frames.early when missing)")
        self.labels = read_labels(settings.labels, settings.early, samples)
        missing = [s.video_id for s in samples if s.video_id not in self.labels]
        if missing:
            raise ValueError(f"key_frames.labels {settings.labels}: no labels for video {missing[0]!r}")
        return ClipSampler(samples, clip_len=1, size=self.config.model.image_size, seed=seed, by="expression",
                           weights=self.config.data.phenomenon_weights, context=training_context(self.model.context))

    def sample_losses(self, sample: Referred) -> dict[str, Tensor]:
        model, w, clip = self.model, self.config.loss, sample.clip
        ids = model.input_ids(clip.expression.text)
        images = model.vision(model.vision.pixels(list(clip.frames)))  # [context + 1, m, H]
        score, hidden = model.score(ids, images)
        label = self.labels[clip.video_id][clip.expression.exp_id][clip.start]
        l1 = (score.float() - label).abs()
        targets = answer_targets(ids, int(model.tokenizer.eos_token_id), model.tokenizer, SCORE_ANSWER)
        ce = model.llm.answer_loss(hidden, ids, targets, images.shape[1])
        return {"score": l1, "ce": ce, "loss": w.score * l1 + w.ce * ce}
