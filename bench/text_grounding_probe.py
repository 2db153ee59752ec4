"""Can a small text head ground SynthRef expressions in a frozen SAM 2's features? One SAM 2
against another, each head trained with several seeds.

The image embedding the mask decoder reads ([256, 16, 16] at 256 px) of SynthRef still scenes is
computed once per SAM 2, and MiniLM's last hidden state once per expression (both frozen). A
head of one cross-attention layer (each image position asks the expression's tokens, width 128)
and a two-layer read-out gives a logit per position, trained with binary cross-entropy against
each position's share of the target mask (empty for null expressions), Adam lr 1e-3, batch 64.
Fitted on `train` scenes of seed 0 (what the SynthRef models train on), scored on `valid` scenes
of seed 21 (never trained or tuned on):

- pick: for an expression with one target, whether the object with the highest mean logit over
  its mask is the target; "needs shape" keeps those whose target shares its colour with another
  object of the scene (colour alone cannot tell), "needs colour" those whose target shares its
  shape;
- null: the share of null expressions whose every position stays below 0.5.

    python bench/text_grounding_probe.py --sam2 synth runs/sam2_synth_shape/final --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replicates import cell, compare  # noqa: E402

from refseg.data import synth  # noqa: E402
from refseg.encoders.text import TextEncoder  # noqa: E402
from refseg.sam.checkpoint import load_sam2  # noqa: E402
from refseg.sam.image_encoder import normalise_frames  # noqa: E402

log = logging.getLogger("text_grounding_probe")
COLUMNS = ("pick", "needs shape", "needs colour", "null")


@dataclass
class Split:
    """features [N_img, 256, h, w] float16; per expression: its image, its text tokens [E, L, 384]
    and mask [E, L], its target coverage [E, h, w]; per image its objects' coverage maps; and per
    expression what it is scored on (`kinds`: a subset of COLUMNS, `target`: its object's index
    among its image's objects or -1)."""

    features: Tensor
    image_of: Tensor
    tokens: Tensor
    token_mask: Tensor
    coverage: Tensor
    objects: list[Tensor]
    target: list[int]
    kinds: list[set[str]]


@torch.inference_mode()
def build_split(sam: torch.nn.Module, text: TextEncoder, split: str, seed: int, count: int) -> Split:
    size = sam.image_size
    feats, image_of, texts, coverage, objects, target, kinds = [], [], [], [], [], [], []
    for index in tqdm(range(count), desc=f"{split} seed {seed}", leave=False):
        scene = synth.make_scene(split, seed, index, size, size, image=True)
        frames, masks = synth.render(scene)
        embed = sam.encode_images(normalise_frames(torch.from_numpy(frames[:1]), size)).embed[0]
        grid = embed.shape[-2:]

        def cover(mask) -> Tensor:
            return F.adaptive_avg_pool2d(torch.from_numpy(mask[0]).float()[None, None], grid)[0, 0]

        ids = [o.obj_id for o in scene.objects]
        maps = torch.stack([cover(masks[o]) for o in ids])
        feats.append(embed.half())
        objects.append(maps)
        for exp in scene.expressions:
            image_of.append(len(feats) - 1)
            texts.append(exp.text)
            coverage.append(maps[[ids.index(t) for t in exp.target_ids]].sum(0).clamp(max=1)
                            if exp.target_ids else torch.zeros(grid))
            if not exp.target_ids:
                target.append(-1)
                kinds.append({"null"})
                continue
            if len(exp.target_ids) > 1:
                target.append(-1)
                kinds.append(set())
                continue
            obj = scene.objects[ids.index(exp.target_ids[0])]
            others = [o for o in scene.objects if o.obj_id != obj.obj_id]
            kind = {"pick"}
            if any(o.colour == obj.colour for o in others):
                kind.add("needs shape")
            if any(o.shape == obj.shape for o in others):
                kind.add("needs colour")
            target.append(ids.index(obj.obj_id))
            kinds.append(kind)
    tokens, masks = [], []
    for start in range(0, len(texts), 256):
        t = text.tokenize(texts[start : start + 256])
        tokens.append(text(t))
        masks.append(t.mask)
    length = max(x.shape[1] for x in tokens)
    tokens = torch.cat([F.pad(x, (0, 0, 0, length - x.shape[1])) for x in tokens])
    token_mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for m in masks]).bool()
    return Split(torch.stack(feats), torch.tensor(image_of), tokens, token_mask, torch.stack(coverage), objects,
                 target, kinds)


class GroundingHead(nn.Module):
    """Per-position logits [B, h, w] from image features [B, C, h, w] and text tokens [B, L, D]."""

    def __init__(self, channels: int, text_dim: int, width: int = 128) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.query, self.image = nn.Linear(channels, width), nn.Linear(channels, width)
        self.key, self.value = nn.Linear(text_dim, width), nn.Linear(text_dim, width)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, features: Tensor, tokens: Tensor, token_mask: Tensor) -> Tensor:
        b, _, h, w = features.shape
        f = self.norm(features.flatten(2).transpose(1, 2).float())  # [B, P, C]
        scores = self.query(f) @ self.key(tokens).transpose(1, 2) / self.query.out_features ** 0.5
        attended = scores.masked_fill(~token_mask[:, None], float("-inf")).softmax(-1) @ self.value(tokens)
        return self.out(self.image(f) + attended)[..., 0].view(b, h, w)


def fit_and_score(fit: Split, test: Split, seed: int, steps: int) -> dict[str, float]:
    torch.manual_seed(seed)
    head = GroundingHead(fit.features.shape[1], fit.tokens.shape[-1])
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(fit.image_of), (64,), generator=generator)
        logits = head(fit.features[fit.image_of[batch]], fit.tokens[batch], fit.token_mask[batch])
        loss = F.binary_cross_entropy_with_logits(logits, fit.coverage[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hits: dict[str, list[float]] = {c: [] for c in COLUMNS}
    with torch.no_grad():
        logits = torch.cat([head(test.features[test.image_of[s : s + 256]], test.tokens[s : s + 256],
                                 test.token_mask[s : s + 256]) for s in range(0, len(test.image_of), 256)])
    for e, kinds in enumerate(test.kinds):
        if "null" in kinds:
            hits["null"].append(float(logits[e].max() < 0))
            continue
        if test.target[e] < 0:
            continue
        maps = test.objects[int(test.image_of[e])]
        means = (maps * logits[e]).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp(min=1e-6)
        right = float(int(means.argmax()) == test.target[e])
        for kind in kinds:
            hits[kind].append(right)
    return {c: sum(v) / max(len(v), 1) for c, v in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam2", nargs="+", default=["synth"], help="SAM 2s to compare (the first is the reference)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--fit", type=int, default=800, help="train still scenes (seed 0) the head is fitted on")
    parser.add_argument("--test", type=int, default=200, help="valid still scenes (seed 21) it is scored on")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text = TextEncoder.from_pretrained().eval()
    rows: dict[str, dict[str, list[float]]] = {}
    for name in args.sam2:
        sam = load_sam2(name).eval()
        fit = build_split(sam, text, "train", 0, args.fit)
        test = build_split(sam, text, "valid", 21, args.test)
        counts = {c: sum(c in k for k in test.kinds) for c in COLUMNS}
        rows[name] = {c: [] for c in COLUMNS}
        for seed in args.seeds:
            for column, value in fit_and_score(fit, test, seed, args.steps).items():
                rows[name][column].append(value)
            log.info("%s seed %d: %s", name, seed, {c: round(v[-1], 3) for c, v in rows[name].items()})
    print(f"Text grounding on frozen SAM 2 features: {len(fit.image_of)} train expressions, scored on "
          + ", ".join(f"{n} {c}" for c, n in counts.items()) + f" valid (seed 21) expressions; "
          f"{args.steps} steps, seeds {' '.join(map(str, args.seeds))} (mean ± half range (seeds))")
    print("| SAM 2 | " + " | ".join(COLUMNS) + " |\n| --- |" + " --- |" * len(COLUMNS))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(cell(values[c]) for c in COLUMNS) + " |")
    reference = args.sam2[0]
    for name in args.sam2[1:]:
        for column in COLUMNS:
            print(compare(column, name, rows[name][column], reference, rows[reference][column]))


if __name__ == "__main__":
    main()
