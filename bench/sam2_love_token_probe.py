"""What kind of single prompt token can SAM 2's decoder learn to segment from? SAM2-LOVE prompts
SAM 2 with one token; this probe trains SAM 2's prompt encoder and mask decoder (as SAM2-LOVE
does) together with one Linear that makes the token from an oracle of the target, no text and no
fusion:

    inside   SAM 2's own image embedding averaged inside the target's frame-0 mask (what it looks like)
    point    SAM 2's prompt-encoder encoding of the target's centroid (where it is; a click's
             Fourier features without the click's label embedding)
    text     the frozen text encoder's token states of the expression, averaged (what is said,
             with no fusion: how far a prompt that reads only the words gets)

on SynthRef audio-visual `train` scenes (configs/sam2_love_synth.yaml's SAM 2, frame 0, BCE + dice
+ presence), and prints the training dice loss every 25 steps, for each oracle and seed.

    python bench/sam2_love_token_probe.py --oracles inside point text --seeds 0 1 2 --steps 300
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from torch.nn import functional as F

from refseg.sam.mask_decoder import decode_masks
from refseg.train.config import load_config
from refseg.train.evf import mask_losses
from refseg.train.loop import build_task, load_samples


def oracle_token(oracle: str, task, embed: torch.Tensor, target: torch.Tensor, text: str) -> torch.Tensor:
    """Oracle features of one target: embed [C, h, w] (frame 0), target [H, W] float, text its
    expression; [C] (inside, point) or [d_T] (text)."""
    sam = task.model.sam
    if oracle == "text":
        return task.text(text).mean(0)
    if oracle == "inside":
        weight = F.adaptive_avg_pool2d(target[None, None], embed.shape[-2:])[0, 0]
        return (embed * weight).sum((1, 2)) / weight.sum().clamp(min=1e-6)
    ys, xs = np.nonzero(target.numpy())
    scale = sam.image_size / target.shape[-1]
    xy = torch.tensor([[xs.mean() * scale + 0.5, ys.mean() * scale + 0.5]]) if len(xs) else torch.zeros(1, 2)
    size = (sam.image_size, sam.image_size)
    return sam.prompt_encoder.shared_embedding(xy[None, None].float(), size)[0, 0, 0].detach()


def probe(oracle: str, seed: int, steps: int, count: int) -> list[float]:
    torch.manual_seed(seed)
    config = load_config("configs/sam2_love_synth.yaml")
    config.data.count = count
    config.sam2_love.audio_encoder = config.sam2_love.frame_encoder = None  # unused here
    task = build_task(config)
    sampler = task.sampler(load_samples(config, lazy=True), seed)
    rng = np.random.default_rng(seed)
    sam = task.model.sam
    width = task.model.text.hidden_size if oracle == "text" else sam.hidden_dim
    make = torch.nn.Linear(width, sam.hidden_dim)
    params = list(make.parameters()) + [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.0)
    curve = []
    for step in range(steps):
        batch = task.draw_batch(sampler, rng, 8)
        feats, high0, high1, embeds, targets = [], [], [], [], []
        for s in batch:
            video = task.videos[s.video]
            h0, h1, e = (t.float() for t in video.first)
            target = torch.from_numpy(video.target(s.expression)).float()
            feats.append(oracle_token(oracle, task, e, target, video.expressions[s.expression].text))
            high0.append(h0)
            high1.append(h1)
            embeds.append(e)
            targets.append(target)
        embed = torch.stack(embeds)
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embed)
        out = decode_masks(sam, [torch.stack(high0), torch.stack(high1)],
                           embed + sam.no_memory_embedding.view(1, -1, 1, 1), make(torch.stack(feats))[:, None, None],
                           dense, multimask=False, presence_gate=False)
        terms, _ = mask_losses(out.low_res, out.object_score[:, 0], torch.stack(targets)[:, None],
                               torch.ones(len(batch), dtype=torch.bool))
        (terms["bce"] + terms["dice"] + terms["object"]).backward()
        optimizer.step()
        optimizer.zero_grad()
        curve.append(float(terms["dice"]))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oracles", nargs="+", default=["inside", "point"], choices=["inside", "point", "text"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--count", type=int, default=120, help="train scenes")
    args = parser.parse_args()
    for oracle in args.oracles:
        curves = [probe(oracle, seed, args.steps, args.count) for seed in args.seeds]
        for end in range(25, args.steps + 1, 25):
            window = [statistics.mean(c[end - 25 : end]) for c in curves]
            print(f"{oracle:<7} steps {end - 24:4d}-{end:4d}  dice loss {statistics.mean(window):.3f} "
                  f"+- {(max(window) - min(window)) / 2:.3f}", flush=True)


if __name__ == "__main__":
    main()
