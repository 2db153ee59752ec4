"""Can SAM2-LOVE's fusion find the target on frame 0 from the frozen features, without SAM 2? A
probe: the fusion transformer and projections of configs/sam2_love_synth.yaml read one frame (the
chain's first step: [seg], audio, text, frame 0's patches, its [cls]) and a Linear on the output
[seg] classifies which of the frame's h x w patches holds the target's centroid (expressions with a
target only). Training accuracy is printed over windows of steps; the held-out accuracy on other
scenes (`--held-out` videos after the training ones, never trained on) at the end.

    python bench/sam2_love_grounding_probe.py --steps 600 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from refseg.data import synth
from refseg.methods.sam2_love.model import clip_fps
from refseg.prompts import Audio
from refseg.train.config import load_config
from refseg.train.loop import build_task
from refseg.train.sam2_love import pad_texts


def patch_of(mask: np.ndarray, grid: int) -> int:
    ys, xs = np.nonzero(mask)
    row = min(int(ys.mean() * grid / mask.shape[0]), grid - 1)
    col = min(int(xs.mean() * grid / mask.shape[1]), grid - 1)
    return row * grid + col


@dataclass
class Item:
    """What the probe keeps of one expression: frame 0's frozen features, the text, the label."""

    audio: torch.Tensor  # [N, d_A]
    cls: torch.Tensor  # [1, d_V]
    patches: torch.Tensor  # [hw, d_V] of frame 0
    text: str
    label: int


def items(model, samples, grid: int, desc: str) -> list[Item]:
    """Scenes are generated one by one and dropped once frame 0's features are kept, so memory
    holds thousands of scenes (the training task keeps whole videos)."""
    out = []
    for sample in tqdm(samples, desc=desc, unit="scene"):
        frames = sample.load_frames()
        audio = Audio(sample.audio, sample.sample_rate)
        with torch.no_grad():
            f = model.clip_features(frames, audio, clip_fps(len(frames), audio))
        for x in sample.expressions:
            mask = sample.target_mask(x)[0] if x.target_ids else None
            if mask is not None and mask.any():
                out.append(Item(f.audio.half(), f.cls[:1].half(), f.patches[0].half(), x.text, patch_of(mask, grid)))
    return out


def run(seed: int, steps: int, count: int, held_out: int, lr: float) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    config = load_config("configs/sam2_love_synth.yaml")
    model = build_task(config).model
    grid = model.frame_encoder.grid
    data = config.data
    scenes = synth.split_samples(data.split, data.seed, count + held_out, audio_visual=True)
    train = items(model, itertools.islice(scenes, count), grid, "train scenes")
    test = items(model, scenes, grid, "held-out scenes")
    head = torch.nn.Linear(model.config.width, grid * grid)
    parts = [model.audio_proj, model.text_proj, model.visual_proj, model.fusion, model.tokens, head]
    params = [p for m in parts for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    texts: dict[str, torch.Tensor] = {}

    def text(value: str) -> torch.Tensor:
        if value not in texts:
            states, padding = model.encode_texts([value])
            texts[value] = states[0, ~padding[0]]
        return texts[value]

    def logits(batch: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        words, padding = pad_texts([text(x.text) for x in batch])
        audio = model.audio_proj(torch.stack([x.audio.float() for x in batch]))
        cls = model.visual_proj(torch.stack([x.cls.float() for x in batch]))
        patches = model.visual_proj(torch.stack([x.patches.float() for x in batch]))
        seg, _ = model.tokens.step(model.fusion, model.tokens.initial(len(batch)), audio, model.text_proj(words), padding,
                                cls, patches, 0)
        return head(seg[:, 0]), torch.tensor([x.label for x in batch])

    accuracy = []
    for _ in tqdm(range(steps), desc=f"probe seed {seed}", unit="step"):
        out, labels = logits([train[int(i)] for i in rng.integers(len(train), size=8)])
        F.cross_entropy(out, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        accuracy.append(float((out.argmax(-1) == labels).float().mean()))
    hits = 0.0
    with torch.no_grad():
        for i in range(0, len(test), 16):
            out, labels = logits(test[i : i + 16])
            hits += float((out.argmax(-1) == labels).float().sum())
    return accuracy, hits / max(len(test), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--count", type=int, default=200, help="training scenes")
    parser.add_argument("--held-out", type=int, default=40, help="scenes after them, never trained on")
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    runs = [run(seed, args.steps, args.count, args.held_out, args.lr) for seed in args.seeds]
    for end in range(100, args.steps + 1, 100):
        window = [statistics.mean(a[end - 100 : end]) for a, _ in runs]
        print(f"steps {end - 99:4d}-{end:4d}  train patch accuracy {statistics.mean(window):.3f} "
              f"+- {(max(window) - min(window)) / 2:.3f}")
    held = [h for _, h in runs]
    print(f"held-out patch accuracy {statistics.mean(held):.3f} +- {(max(held) - min(held)) / 2:.3f}")


if __name__ == "__main__":
    main()
