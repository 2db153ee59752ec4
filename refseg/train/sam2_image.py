"""Promptable image segmentation training of SAM 2 (SAM's interactive recipe, which SAM 2 also
trains on images).

A sample is one frame and up to `prompts.objects_per_image` of its objects (the drawn one and
others visible in the frame, as SAM trains many masks per image: prompts on the same image that
differ only by where they point are what teaches the decoder to locate a click). Round 1 prompts
each object with one positive click inside it or its box (`prompts.click` : `prompts.box`); every further round adds a corrective click
sampled from the error of the previous round's mask (SAM 2's centre sampling) and feeds that
mask's low-resolution logits back as the dense prompt, as SAM trains its interactive loop. Each
round is supervised with SAM's multimask rule (`multimask_losses`: focal x20 + dice on the best
of the three candidates for one click, on the single mask otherwise; L1 on every predicted IoU)
and cross-entropy on presence. The image encoder runs once per batch; rounds rerun only the head.

With `loss.attributes` > 0 the encoder also learns to say what each prompted object looks like
(`refseg.train.attributes`: colour, shape, size and texture read linearly from the object's
mean feature on the last three Hiera stages and the image embedding), for samples that know their
objects' attributes (SynthRef).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from refseg.data import synth
from refseg.data.clicks import mask_box, next_click
from refseg.data.sample import VideoSample
from refseg.data.sampler import ClipSampler
from refseg.sam import Sam2
from refseg.sam.image_encoder import normalise_frames
from refseg.sam.mask_decoder import DecoderOutput, decode_masks
from refseg.sam.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, NOT_A_POINT, POSITIVE, PointPrompt, embed_prompts
from refseg.train.attributes import AttributeHeads, scored_accuracy, scored_loss
from refseg.train.config import TrainConfig
from refseg.train.task import Task, seeded
from refseg.train.losses import multimask_losses, object_score_loss


@dataclass
class PromptedImage:
    """image [S, S, 3] uint8; per prompted object its mask [S, S] bool (non-empty), its
    first-round prompt as points [(x, y, label)] (one positive click, or the two box corners)
    and its attributes (empty where the source does not know them); the sample's seed."""

    image: np.ndarray
    masks: list[np.ndarray]
    points: list[list[tuple[float, float, int]]]
    seed: int
    attributes: list[dict[str, str]]


class Sam2ImageTask(Task):
    """SAM 2 promptable image segmentation, batched (see the module docstring)."""

    model: Sam2
    levels = 3  # Hiera stages the attribute objective reads (the last ones), beside the image embedding

    def __init__(self, model: Sam2, config: TrainConfig) -> None:
        super().__init__(model, config)
        self.attributes: AttributeHeads | None = None
        if config.loss.attributes > 0:
            stages = model.config.vision_config.backbone_config.embed_dim_per_stage[-self.levels:]
            self.attributes = AttributeHeads([*stages, model.config.vision_config.fpn_hidden_size], synth.ATTRIBUTES)

    def sampler(self, samples: list[VideoSample], seed: int) -> ClipSampler:
        return ClipSampler(samples, clip_len=1, size=self.config.model.image_size, seed=seed, by="object", objects=True)

    def draw(self, sampler: ClipSampler, rng: np.random.Generator) -> PromptedImage:
        p = self.config.prompts
        clip = sampler.sample()
        while not clip.mask[0].any():  # the crop may cut the object out
            clip = sampler.sample()
        (target,) = clip.expression.target_ids
        others = [o for o, m in clip.objects.items() if m[0].any() and o != target]
        order = rng.permutation(len(others))[: max(p.objects_per_image - 1, 0)]
        ids = [target, *(others[i] for i in order)]
        masks = [clip.objects[o][0] for o in ids]
        if self.attributes is not None and any(o not in clip.attributes for o in ids):
            raise ValueError(f"loss.attributes: video {clip.video_id} does not say what its objects look like "
                             "(only SynthRef samples carry attributes); set loss.attributes: 0")
        looks = [dict(clip.attributes.get(o, {})) for o in ids]
        for a in looks:  # the size the crop shows, not the scene's: a cropped medium object looks large
            if "size" in a:
                a["size"] = synth.seen_size(a["size"], clip.zoom)
        return PromptedImage(clip.frames[0], masks, [self._first_prompt(m, rng) for m in masks],
                             int(rng.integers(2**31)), looks)

    def _first_prompt(self, mask: np.ndarray, rng: np.random.Generator) -> list[tuple[float, float, int]]:
        p = self.config.prompts
        if rng.random() < p.click / (p.click + p.box):
            ys, xs = np.nonzero(mask)
            pick = int(rng.integers(len(xs)))
            return [(float(xs[pick]), float(ys[pick]), POSITIVE)]
        box = mask_box(mask)
        return [(box.x0, box.y0, BOX_TOP_LEFT), (box.x1, box.y1, BOX_BOTTOM_RIGHT)]

    def forward(self, batch: list[PromptedImage]) -> dict[str, Tensor]:
        with seeded(batch[0].seed):
            return self._losses(batch)

    def _losses(self, batch: list[PromptedImage]) -> dict[str, Tensor]:
        model, w = self.model, self.config.loss
        device = model.no_memory_embedding.device
        pixels = normalise_frames(torch.from_numpy(np.stack([s.image for s in batch])).to(device), model.image_size)
        stages: dict[int, Tensor] = {}

        def keep(stage: int, x: Tensor) -> Tensor:
            stages[stage] = x
            return x

        features = model.encode_images(pixels, keep if self.attributes is not None else None)
        # one row per prompted object: its image's features, target and prompt
        image_of = torch.tensor([i for i, s in enumerate(batch) for _ in s.masks], device=device)
        masks = [m for s in batch for m in s.masks]
        high_res = [h[image_of] for h in features.high_res]
        embed = (features.embed + model.no_memory_embedding.view(1, -1, 1, 1))[image_of]
        targets = torch.from_numpy(np.stack(masks)).to(device, torch.float32)[:, None]
        points = [list(p) for s in batch for p in s.points]
        previous: Tensor | None = None  # [N, 1, 4h, 4w] logits of the last round's mask
        guesses = np.zeros((len(masks), *masks[0].shape), dtype=bool)
        terms: dict[str, list[Tensor]] = {"focal": [], "dice": [], "iou": [], "object": []}
        for round_ in range(self.config.prompts.rounds):
            if round_ > 0:
                for i, mask in enumerate(masks):
                    x, y, label = next_click(mask, guesses[i])
                    points[i].append((x, y, label))
            out = self._decode(high_res, embed, points, previous)
            high = F.interpolate(out.candidates.float(), size=targets.shape[-2:], mode="bilinear", align_corners=False)
            for k, v in multimask_losses(high, out.candidate_iou, targets, w.focal, w.dice).items():
                terms[k].append(v)
            terms["object"].append(object_score_loss(out.object_score[:, 0], torch.ones(len(masks), device=device)))
            previous = out.low_res.detach()
            guesses = (F.interpolate(previous.float(), size=targets.shape[-2:], mode="bilinear",
                                     align_corners=False)[:, 0] > 0).cpu().numpy()
        mean = {k: torch.stack(v).mean() for k, v in terms.items()}
        mean["loss"] = w.focal * mean["focal"] + w.dice * mean["dice"] + w.iou * mean["iou"] + w.object * mean["object"]
        if self.attributes is not None:
            levels = [stages[s].permute(0, 3, 1, 2) for s in sorted(stages)[-self.levels:]] + [features.embed]
            labels = [a for s in batch for a in s.attributes]
            scored = self.attributes.pooled_logits(levels, image_of, targets, labels)
            mean["attributes"] = scored_loss(scored, targets)
            mean["loss"] = mean["loss"] + w.attributes * mean["attributes"]
            for name, value in scored_accuracy(scored).items():
                mean[f"{name}_accuracy"] = value
        return mean

    def _decode(self, high_res: list[Tensor], embed: Tensor, points: list[list[tuple[float, float, int]]],
                previous: Tensor | None) -> DecoderOutput:
        """Decode the batch; samples with one click get three candidates, the others one, so the
        two groups are decoded apart and put back in batch order."""
        device = embed.device
        single = [i for i, p in enumerate(points) if len(p) == 1]
        many = [i for i, p in enumerate(points) if len(p) > 1]
        parts: list[tuple[list[int], DecoderOutput]] = []
        for rows, multimask in ((single, True), (many, False)):
            if not rows:
                continue
            n = max(len(points[i]) for i in rows)
            padded = [points[i] + [(0.0, 0.0, NOT_A_POINT)] * (n - len(points[i])) for i in rows]
            coords = torch.tensor([[[x, y] for x, y, _ in p] for p in padded], dtype=torch.float32, device=device)
            labels = torch.tensor([[lab for _, _, lab in p] for p in padded], dtype=torch.int32, device=device)
            index = torch.tensor(rows, device=device)
            mask = None if previous is None else previous[index]
            sparse, dense = embed_prompts(self.model.prompt_encoder, len(rows), points=PointPrompt(coords, labels), mask=mask)
            out = decode_masks(self.model, [h[index] for h in high_res], embed[index], sparse, dense, multimask)
            parts.append((rows, out))
        if len(parts) == 1:
            return parts[0][1]
        (rows_a, a), (rows_b, b) = parts
        order = torch.argsort(torch.tensor(rows_a + rows_b, device=device))
        # a has three candidates per sample, b one: give b's single mask as three equal copies so
        # the minimum over candidates is the same as over its one mask
        cand_b = b.candidates.expand(-1, a.candidates.shape[1], -1, -1)
        iou_b = b.candidate_iou.expand(-1, a.candidate_iou.shape[1])
        return DecoderOutput(
            low_res=torch.cat([a.low_res, b.low_res])[order], high_res=torch.cat([a.high_res, b.high_res])[order],
            iou=torch.cat([a.iou, b.iou])[order], object_score=torch.cat([a.object_score, b.object_score])[order],
            pointer=torch.cat([a.pointer, b.pointer])[order], candidates=torch.cat([a.candidates, cand_b])[order],
            candidate_iou=torch.cat([a.candidate_iou, iou_b])[order])
