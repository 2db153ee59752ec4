"""How fast can SAM2-LOVE's fusion learn to find a named object on frame 0? A probe on the
appearance expressions of SynthRef audio-visual scenes ("the red triangle": colour and shape, which
frame 0 alone shows), from the frozen frame-ViT patches and MiniLM token states of
configs/sam2_love_synth.yaml's encoders, each head trained in batches of `--batch` expressions:

    bilinear  no fusion: MLP(mean of the text's token states) . MLP(patch), softmax over the frame's
              h x w patches (the matching a reader needs, with nothing to learn but two MLPs)
    pointer   the fusion's first chain step ([seg], silence, text, frame 0's patches and [cls])
              with `loss.ground`'s two heads: the [seg]'s place pointer (cross-entropy toward the
              target's share of each patch) and each patch output's cover (BCE)

Printed every 100 steps: how often the best-scored patch holds some of the target, on the last 100
training batches and on `--held-out` scenes after the training ones (never trained on); for the
pointer also the best patch by the patch outputs' cover logits ("patch held").

    python bench/sam2_love_matching_probe.py --count 600 --held-out 100 --heads bilinear pointer --steps 600
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from refseg.data import synth
from refseg.train.config import load_config
from refseg.train.loop import build_task
from refseg.train.beit3 import patch_coverage
from refseg.train.sam2_love import LoveTask, best_patch_hits, pad_texts

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "sam2_love_synth.yaml"


@dataclass
class Item:
    """One appearance expression: frame 0's frozen patches [hw, d_V] and [cls] [d_V], its text, the
    target's share of each patch (normalised to sum 1) and its cover of each patch ([hw])."""

    patches: Tensor
    cls: Tensor
    text: str
    share: Tensor
    cover: Tensor


def items(task: LoveTask, samples, desc: str) -> list[Item]:
    model, grid = task.model, task.model.frame_encoder.grid
    out = []
    for sample in tqdm(samples, desc=desc, unit="scene"):
        with torch.no_grad():
            cls, patches = model.encode_frames(sample.load_frames()[:1])
        for x in sample.expressions:
            if "appearance" not in x.phenomena or not x.target_ids:
                continue
            mask = torch.from_numpy(sample.target_mask(x)[0]).float()
            cover = patch_coverage(mask[None], grid).flatten()
            if cover.sum() > 0:
                out.append(Item(patches[0], cls[0], x.text, cover / cover.sum(), cover))
    return out


class Bilinear(nn.Module):
    def __init__(self, text_width: int, patch_width: int, width: int) -> None:
        super().__init__()
        self.text = nn.Sequential(nn.Linear(text_width, width), nn.ReLU(), nn.Linear(width, width))
        self.patch = nn.Sequential(nn.Linear(patch_width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, texts: list[Tensor], patches: Tensor) -> Tensor:
        """texts: B token states [P_i, d_T]; patches [B, hw, d_V] -> logits [B, hw]."""
        q = self.text(torch.stack([t.mean(0) for t in texts]))
        k = self.patch(patches)
        return (k @ q[:, :, None])[..., 0] / k.shape[-1] ** 0.5


class Pointer(nn.Module):
    """The fusion's first chain step with `loss.ground`'s heads (the task's `pointer`)."""

    def __init__(self, task: LoveTask) -> None:
        super().__init__()
        self.task = task
        model = task.model
        self.parts = nn.ModuleList([model.audio_proj, model.text_proj, model.visual_proj, model.fusion, model.tokens,
                                    task.pointer])

    def forward(self, texts: list[Tensor], patches: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
        """-> (place logits of the [seg] [B, hw], cover logits of the patch outputs [B, hw])."""
        model, pointer = self.task.model, self.task.pointer
        words, padding = pad_texts(texts)
        batch = len(texts)
        audio = model.audio_proj(torch.zeros(batch, model.config.max_frames, model.config.audio.dim))
        seg, out = model.tokens.step(model.fusion, model.tokens.initial(batch), audio, model.text_proj(words), padding,
                                     model.visual_proj(cls[:, None]), model.visual_proj(patches), 0)
        return self.task.place_logits(seg[:, :1]), pointer["patch"](out)[..., 0]


def hit(logits: Tensor, batch: list[Item]) -> float:
    share = torch.stack([b.share for b in batch])
    return float(best_patch_hits(logits, share).float().mean())


def run(head: str, seed: int, args: argparse.Namespace) -> None:
    torch.manual_seed(seed)
    raw = load_config(args.recipe)
    raw.loss.ground = 1.0  # the task builds the pointer heads
    task = build_task(raw)
    model = task.model
    scenes = synth.split_samples(raw.data.split, raw.data.seed, args.count + args.held_out, audio_visual=True)
    train = items(task, itertools.islice(scenes, args.count), "train scenes")
    test = items(task, scenes, "held-out scenes")
    texts: dict[str, Tensor] = {}

    def text(value: str) -> Tensor:
        if value not in texts:
            states, padding = model.encode_texts([value])
            texts[value] = states[0, ~padding[0]]
        return texts[value]

    torch.manual_seed(seed)
    net = Bilinear(model.text.hidden_size, model.frame_encoder.hidden_size, model.config.width) \
        if head == "bilinear" else Pointer(task)

    def forward(batch: list[Item]) -> tuple[Tensor, Tensor | None]:
        words = [text(b.text) for b in batch]
        patches = torch.stack([b.patches for b in batch])
        if isinstance(net, Bilinear):
            return net(words, patches), None
        return net(words, patches, torch.stack([b.cls for b in batch]))

    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    accuracy = []
    print(f"{head} seed {seed}: {len(train)} training expressions, {len(test)} held out", flush=True)
    for step in range(args.steps):
        batch = [train[int(i)] for i in rng.integers(len(train), size=args.batch)]
        place, cover = forward(batch)
        loss = -(torch.stack([b.share for b in batch]) * place.log_softmax(-1)).sum(-1).mean()
        if cover is not None:
            loss = loss + F.binary_cross_entropy_with_logits(cover, torch.stack([b.cover for b in batch]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        accuracy.append(hit(place.detach(), batch))
        if (step + 1) % 100 == 0:
            held, held_patch = [], []
            with torch.no_grad():
                for i in range(0, len(test), 64):
                    place, cover = forward(test[i : i + 64])
                    held.append(hit(place, test[i : i + 64]))
                    held_patch.append(hit(cover, test[i : i + 64]) if cover is not None else float("nan"))
            print(f"{head} seed {seed} step {step + 1}: train {statistics.mean(accuracy[-100:]):.3f} "
                  f"held {statistics.mean(held):.3f} patch held {statistics.mean(held_patch):.3f} "
                  f"loss {float(loss):.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the SAM2-LOVE config whose encoders and fusion run")
    parser.add_argument("--count", type=int, default=600, help="training scenes")
    parser.add_argument("--held-out", type=int, default=100, help="scenes after them, never trained on")
    parser.add_argument("--heads", nargs="+", default=["bilinear", "pointer"], choices=["bilinear", "pointer"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    for seed in args.seeds:
        for head in args.heads:
            run(head, seed, args)


if __name__ == "__main__":
    main()
