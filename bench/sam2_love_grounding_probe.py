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
import statistics

import numpy as np
import torch
from torch.nn import functional as F

from refseg.train.config import load_config
from refseg.train.loop import build_task, load_samples
from refseg.train.sam2_love import pad_texts


def patch_of(mask: np.ndarray, grid: int) -> int:
    ys, xs = np.nonzero(mask)
    row = min(int(ys.mean() * grid / mask.shape[0]), grid - 1)
    col = min(int(xs.mean() * grid / mask.shape[1]), grid - 1)
    return row * grid + col


def run(seed: int, steps: int, count: int, held_out: int, lr: float) -> tuple[list[float], float]:
    torch.manual_seed(seed)
    config = load_config("configs/sam2_love_synth.yaml")
    config.data.count = count + held_out
    task = build_task(config)
    model = task.model
    samples = load_samples(config)
    task.sampler(samples, seed)
    grid = model.frame_encoder.grid
    pairs = [(v, e) for v, s in enumerate(samples) for e, x in enumerate(s.expressions) if x.target_ids
             and s.target_mask(x)[0].any()]
    train = [p for p in pairs if p[0] < count]
    test = [p for p in pairs if p[0] >= count]
    head = torch.nn.Linear(model.config.width, grid * grid)
    parts = [model.audio_proj, model.text_proj, model.visual_proj, model.fusion, model.tokens, head]
    params = [p for m in parts for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)

    def logits(batch: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        clips = [task.clip(v) for v, _ in batch]
        text, padding = pad_texts([task.text(samples[v].expressions[e].text) for v, e in batch])
        audio = model.audio_proj(torch.stack([c.audio for c in clips]))
        cls = model.visual_proj(torch.stack([c.cls for c in clips]))
        patches = model.visual_proj(torch.stack([c.patches[0] for c in clips]))
        seg = model.tokens.step(model.fusion, model.tokens.initial(len(batch)), audio, model.text_proj(text), padding,
                                cls, patches, 0)
        labels = torch.tensor([patch_of(samples[v].target_mask(samples[v].expressions[e])[0], grid) for v, e in batch])
        return head(seg[:, 0]), labels

    accuracy = []
    for _ in range(steps):
        batch = [train[int(i)] for i in rng.integers(len(train), size=8)]
        out, labels = logits(batch)
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
