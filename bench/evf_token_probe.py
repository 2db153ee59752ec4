"""How far one sparse token steers the frozen SAM 2 decoder on SynthRef images, and how much a
trained EVF-SAM's token depends on its inputs.

EVF-SAM prompts SAM 2 with a single token (the projected [CLS], Sec. 3.2). Two bounds, with the
SAM 2 frozen and no encoder at all (Adam on the tokens themselves, the EVF training losses:
dice + BCE on the best of three masks, presence CE):
  - per sample: a free token for each of 32 (image, expression) pairs, all in every step - can
    one token segment the target?
  - per text: one free token per distinct expression text, shared by every image it describes -
    what a prompt that sees only the text can reach (the `text only` row of Table 3 at best).
With `--model` (an EVF-SAM folder or a training checkpoint folder with its run's `--config`),
it also prints how much that model's token varies across images with the text fixed and across
texts with the image fixed: a token that varies with neither is one constant prompt for all.

    python bench/evf_token_probe.py [--sam2 synth] [--scenes 300] [--steps 400]
    python bench/evf_token_probe.py --model runs/evf_synth/final
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch import Tensor

from refseg.data import synth
from refseg.data.sampler import Clip, ClipSampler
from refseg.sam.checkpoint import load_sam2
from refseg.sam.image_encoder import normalise_frames
from refseg.sam.model import Sam2
from refseg.train.evf import decode_token, mask_losses


def clips(scenes: int, count: int, seed: int) -> list[Clip]:
    """`count` (image, expression) pairs of SynthRef `train` still scenes, uncropped, unflipped."""
    samples = list(synth.split_samples("train", 0, scenes, image=True))
    sampler = ClipSampler(samples, clip_len=1, size=256, seed=seed, by="expression", flip_p=0.0,
                          crop_scale=(1.0, 1.0), brightness=0.0, contrast=0.0)
    return [sampler.sample() for _ in range(count)]


class Decoder:
    """The frozen SAM 2 head on cached image features; `losses(indices, tokens [B, 256])`."""

    def __init__(self, sam: Sam2, items: list[Clip]) -> None:
        self.sam = sam
        images = torch.from_numpy(np.stack([c.frames[0] for c in items]))
        with torch.no_grad():
            features = [sam.encode_images(normalise_frames(images[i : i + 16], sam.image_size))
                        for i in range(0, len(items), 16)]
        self.high_res = [torch.cat([f.high_res[k] for f in features]) for k in range(2)]
        self.embed = torch.cat([f.embed for f in features])
        self.targets = torch.from_numpy(np.stack([c.mask[0] for c in items])).float()[:, None]

    def losses(self, index: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(training loss, per-sample IoU of the thresholded best mask; NaN where no target)."""
        out = decode_token(self.sam, [h[index] for h in self.high_res], self.embed[index], tokens[:, None])
        target = self.targets[index]
        present = target.flatten(1).any(dim=1)
        terms, logits = mask_losses(out.low_res, out.object_score[:, 0], target, present)
        loss = terms["bce"] + terms["dice"] + terms["object"]
        pred, truth = (logits > 0).flatten(1), target.flatten(1) > 0
        iou = (pred & truth).sum(1) / (pred | truth).sum(1).clamp(min=1)
        return loss, torch.where(present, iou.float(), torch.nan)


def fit_tokens(decoder: Decoder, slot: Tensor, slots: int, steps: int, batch: int, lr: float) -> float:
    """Adam on one free token per slot (sample i uses token slot[i]); returns the mean IoU of the
    samples with a target over the last 10 % of the steps."""
    generator = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter(0.1 * torch.randn(slots, 256, generator=generator))
    optimizer = torch.optim.Adam([table], lr=lr)
    ious: list[float] = []
    for step in range(steps):
        index = torch.randint(len(slot), (batch,), generator=generator)
        loss, iou = decoder.losses(index, table[slot[index]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= steps - max(steps // 10, 1):
            ious += [v for v in iou.tolist() if v == v]
    return float(np.mean(ious))


def sensitivity(model_dir: Path, config: str | None, items: list[Clip]) -> None:
    from refseg.methods.evf_sam import EvfSam
    from refseg.train.config import load_config
    from refseg.train.loop import _load_weights, build_task

    if config:
        model = build_task(load_config(config)).model
        _load_weights(model, model_dir / "model.safetensors")
    else:
        model = EvfSam.from_pretrained(model_dir)
    model.eval()
    images = torch.from_numpy(np.stack([c.frames[0] for c in items[:8]]))
    texts = [c.expression.text for c in items[:8]]
    with torch.no_grad():
        by_text = model.prompt_embedding(images[:1].expand(8, -1, -1, -1), texts)[:, 0]
        by_image = model.prompt_embedding(images, texts[:1] * 8)[:, 0]
    for name, tokens in (("texts vary, image fixed", by_text), ("images vary, text fixed", by_image)):
        print(f"| {name} | {tokens.norm(dim=-1).mean():.3f} | {tokens.std(dim=0).norm():.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam2", default="synth")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--model", type=Path, help="also measure this EVF-SAM's token sensitivity")
    parser.add_argument("--config", help="the run's config, when --model is a training checkpoint")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model:
        print("| tokens of 8 pairs | mean norm | std across the 8 (norm) |\n| --- | --- | --- |")
        sensitivity(args.model, args.config, clips(30, 8, seed=1))
        return
    sam = load_sam2(args.sam2).eval().requires_grad_(False)
    items = clips(args.scenes, 4 * args.scenes, seed=0)
    texts = sorted({c.expression.text for c in items})
    print(f"frozen {args.sam2} SAM 2, SynthRef train still scenes; Adam on free tokens, {args.steps} steps")
    print("| token | pairs | tokens | batch | mIoU (last 10 % of steps) |\n| --- | --- | --- | --- | --- |")
    few = items[:32]  # per sample: every pair in every step, as a bound needs
    iou = fit_tokens(Decoder(sam, few), torch.arange(len(few)), len(few), args.steps, len(few), 0.05)
    print(f"| one per sample | {len(few)} | {len(few)} | {len(few)} | {iou:.3f} |", flush=True)
    slot = torch.tensor([texts.index(c.expression.text) for c in items])
    iou = fit_tokens(Decoder(sam, items), slot, len(texts), args.steps, 16, 0.02)
    print(f"| one per text | {len(items)} | {len(texts)} | 16 | {iou:.3f} |", flush=True)


if __name__ == "__main__":
    main()
