"""Vision-language pretraining of the BEiT-3 that EVF-SAM starts from, on SynthRef (image,
expression) pairs.

EVF-SAM's early-fusion prompt relies on an encoder already pretrained on image-text data (BEiT-3,
Wang et al. 2022), whose image [CLS] reads image and text together from the first fine-tuning
step; trained from scratch on SynthRef the fused encoder learned to ignore the image
(docs/RESULTS.md). The published
weights cannot be fetched offline, so refseg pretrains its small BEiT-3 on SynthRef `train` with
two objectives, one per sample (`pretrain.mlm_share` of the samples for the first):

* masked language modelling, BEiT-3's own objective on image-text pairs: `pretrain.mask_prob`
  of the text tokens (BEiT-3: 50 % for pairs) become [MASK] and are predicted from the image and
  the rest of the text (logits against the text table, tied, plus a bias; weight `loss.mlm`).
  "the [MASK] circle" can be answered only by looking at the image.
* referring grounding, on the other samples: each image patch's output predicts how much of it
  the expression's targets cover (a linear head, BCE against the covered fraction, weight
  `loss.patch`), and the image [CLS] (the token EVF-SAM prompts SAM with), through a 2-layer MLP,
  the box of the targets (centre x, y, width, height in [0, 1] of the image; L1, weight
  `loss.box`, on samples with a target) and whether the expression names anything in the image
  (BCE, weight `loss.object`). The patch term gives every patch a word-to-pixels signal of its
  own: with it the patches ground the text within 1000 steps, the [CLS] box not yet
  (docs/RESULTS.md, `bench/beit3_grounding.py`).

The encoder alone is exported (`save_beit3`); `evf.encoder_weights` starts EVF-SAM from it.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from refseg.data.sample import VideoSample
from refseg.data.sampler import ClipSampler
from refseg.encoders.fusion import Beit3, encoder_pixels, save_beit3
from refseg.methods.evf_sam import MINILM, EvfConfig, load_tokenizer, seed_text_table, tokenize
from refseg.train.task import ExpressionTask, Referred, seeded


class Beit3Pretrainer(nn.Module):
    """A `Beit3` (sizes, tokenizer and text table per `EvfConfig`) with its pretraining heads:
    `mlm_bias` [V] (`mlm_logits`: text outputs against the text table, plus this bias),
    `ground` (image [CLS] -> 4 box numbers + 1 presence logit) and `patch` (a patch's output ->
    the logit of its covered fraction)."""

    def __init__(self, config: EvfConfig) -> None:
        super().__init__()
        if config.encoder != "beit3":
            raise ValueError(f"the beit3 pretraining task trains evf.encoder beit3, got {config.encoder!r}")
        self.config = config
        self.tokenizer = load_tokenizer(config.tokenizer)
        self.encoder = Beit3(config.beit3)
        if config.text_embeddings == MINILM:
            seed_text_table(self.encoder.text_embed.weight)
        d = config.beit3.hidden_size
        self.mlm_bias = nn.Parameter(torch.zeros(config.beit3.vocab_size))
        self.ground = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 5))
        self.patch = nn.Linear(d, 1)

    def forward(self, images: Tensor, ids: Tensor, padding: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """images [B, H, W, 3] uint8, ids / padding [B, L] -> the text outputs [B, L, C] (for
        `mlm_logits`), patch logits [B, g, g] (g = image_size / patch_size), boxes [B, 4] (cx,
        cy, w, h in [0, 1]) and presence logits [B]."""
        x, split = self.encoder(encoder_pixels(images, self.config.beit3.image_size), ids, padding)
        g = self.config.beit3.image_size // self.config.beit3.patch_size
        patches = self.patch(x[:, 1:split])[..., 0].unflatten(1, (g, g))
        ground = self.ground(x[:, 0])
        return x[:, split:], patches, ground[:, :4].sigmoid(), ground[:, 4]

    def mlm_logits(self, text: Tensor) -> Tensor:
        """Text outputs [..., C] -> vocabulary logits [..., V] (tied to the text table)."""
        return text @ self.encoder.text_embed.weight.T + self.mlm_bias

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """The encoder alone (`save_beit3`): what EVF-SAM starts from."""
        save_beit3(self.encoder, directory)


def target_boxes(masks: Tensor) -> Tensor:
    """masks [B, H, W] bool -> [B, 4] (cx, cy, w, h) of each mask's bounding box as fractions of
    the image (pixel edges: a mask covering columns 2..5 of 8 spans 0.25..0.75); zeros if empty."""
    b, h, w = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [B, W], [B, H]
    out = torch.zeros(b, 4)
    for i in range(b):
        if not cols[i].any():
            continue
        xs, ys = torch.nonzero(cols[i])[:, 0], torch.nonzero(rows[i])[:, 0]
        x0, x1, y0, y1 = float(xs[0]), float(xs[-1] + 1), float(ys[0]), float(ys[-1] + 1)
        out[i] = torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return out


def patch_coverage(masks: Tensor, grid: int) -> Tensor:
    """masks [B, H, W] bool -> [B, grid, grid]: the fraction of each patch the mask covers."""
    return F.adaptive_avg_pool2d(masks[:, None].float(), (grid, grid))[:, 0]


def special_positions(tokenizer: object, ids: Tensor, padding: Tensor) -> Tensor:
    """[B, L] bool: the tokenizer's special tokens ([CLS], [SEP], ...) and the padding."""
    return padding | torch.from_numpy(np.isin(ids.cpu().numpy(), tokenizer.all_special_ids)).to(padding.device)


def mask_tokens(ids: Tensor, special: Tensor, chosen: Tensor, mask_id: int, prob: float) -> tuple[Tensor, Tensor]:
    """Masked language modelling inputs: in each row `chosen` [B] bool, `prob` of the positions
    that are not `special` [B, L] (nor padding, which counts as special) become `mask_id`, at
    least one. Returns the masked ids [B, L] and the labels [B, L] (the original id where masked,
    -100 elsewhere)."""
    candidates = ~special & chosen[:, None]
    picked = (torch.rand(ids.shape) < prob) & candidates
    for i in torch.nonzero(candidates.any(dim=1) & ~picked.any(dim=1))[:, 0]:  # at least one per row
        options = torch.nonzero(candidates[i])[:, 0]
        picked[i, options[torch.randint(len(options), ())]] = True
    return ids.masked_fill(picked, mask_id), ids.masked_fill(~picked, -100)


class Beit3PretrainTask(ExpressionTask):
    """BEiT-3 pretraining on referring expressions of single images (see the module docstring)."""

    model: Beit3Pretrainer

    def sampler(self, samples: list[VideoSample], seed: int) -> ClipSampler:
        return ClipSampler(samples, clip_len=1, size=self.model.config.beit3.image_size, seed=seed, by="expression",
                           weights=self.config.data.phenomenon_weights)

    def forward(self, batch: list[Referred]) -> dict[str, Tensor]:
        with seeded(batch[0].seed):
            return self._losses(batch)

    def _losses(self, batch: list[Referred]) -> dict[str, Tensor]:
        model, w, p = self.model, self.config.loss, self.config.pretrain
        device = model.mlm_bias.device
        ids, padding = tokenize(model.tokenizer, [s.clip.expression.text for s in batch],
                                model.config.max_text_tokens)
        special = special_positions(model.tokenizer, ids, padding)
        chosen = torch.rand(len(batch)) < p.mlm_share
        inputs, labels = mask_tokens(ids, special, chosen, model.tokenizer.mask_token_id, p.mask_prob)
        images = torch.from_numpy(np.stack([s.clip.frames[0] for s in batch]))
        masks = torch.from_numpy(np.stack([s.clip.mask[0] for s in batch]))
        text, patches, boxes, presence = model(images.to(device), inputs.to(device), padding.to(device))
        labels = labels.to(device)
        masked = labels >= 0  # the vocabulary logits only where a token is to be predicted
        present = masks.flatten(1).any(dim=1).to(device)
        grounded = ~chosen.to(device)
        covered = patch_coverage(masks, patches.shape[-1]).to(device)  # [B, g, g]
        zero = torch.zeros((), device=device)
        terms = {
            "mlm": F.cross_entropy(model.mlm_logits(text[masked]).float(), labels[masked]) if chosen.any() else zero,
            "patch": (F.binary_cross_entropy_with_logits(patches[grounded].float(), covered[grounded])
                      if grounded.any() else zero),
            "box": (F.l1_loss(boxes[grounded & present], target_boxes(masks).to(device)[grounded & present])
                    if (grounded & present).any() else zero),
            "object": (F.binary_cross_entropy_with_logits(presence[grounded], present[grounded].float())
                       if grounded.any() else zero),
        }
        terms["loss"] = (w.mlm * terms["mlm"] + w.patch * terms["patch"] + w.box * terms["box"]
                         + w.object * terms["object"])
        return terms
