"""Does a SAM2-LOVE run's fusion find the referred object on frame 0 of videos it never trained on?
For each checkpoint folder of a run trained with `loss.ground` (a grounding stage,
configs/sam2_love_synth_ground.yaml, or the recipe with `ground` on), on SynthRef audio-visual
scenes of `--split` / `--seed` (never trained on), with each video's sound:

    frame-0 hit  how often the patch the pointer scores best for the [seg] leaving frame 0 holds
                 some of the expression's frame-0 target
    final hit    the same for the [seg] after the whole chain (the token that prompts SAM 2), or
                 after its first `--chain-frames` frames (what a stage with data.chain_frames read)

per phenomenon of the expressions that name something (appearance, audio, sound_sync) and over
all of them. A pointer that guesses scores about the share of frame 0's patches a target touches.

    python bench/sam2_love_pointer_probe.py runs/sam2_love_synth_ground/checkpoints/step_0002000 [more] --videos 200
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from refseg.data import synth
from refseg.train.config import load_config
from refseg.train.loop import build_task, load_init
from refseg.train.beit3 import patch_coverage
from refseg.train.sam2_love import LoveTask, best_patch_hits, pad_texts

PHENOMENA = ("appearance", "audio", "sound_sync")


def load_checkpoint(folder: Path) -> LoveTask:
    """The task (model and pointer heads) of a run's checkpoint folder, as it trained."""
    raw = json.loads((folder / "config.json").read_text())["train"]
    raw["data"] = {**raw["data"], "feature_store": None}
    raw["model"] = {**raw["model"], "init": str(folder)}
    config = load_config(raw)
    task = build_task(config)
    if task.pointer is None:
        raise ValueError(f"{folder}: its run trained without loss.ground, so it has no pointer to probe")
    load_init(task, config)
    return task.eval()


@torch.no_grad()
def probe(task: LoveTask, split: str, seed: int, videos: int,
          chain_frames: int | None = None) -> dict[str, tuple[float, float, int]]:
    """phenomenon (and "all") -> (frame-0 hit, final hit, expressions)."""
    task.config.data.chain_frames = chain_frames  # None: the whole chain, whatever the stage trained on
    task.sampler(synth.split_samples(split, seed, videos, audio_visual=True), 0)
    grid = task.model.frame_encoder.grid
    hits: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for v, video in enumerate(task.videos):
        named = [e for e, x in enumerate(video.expressions) if x.target_ids]
        if not named:
            continue
        text, padding = pad_texts([task.text(video.expressions[e].text) for e in named])
        chain = task.model.seg_chain(task.clip(v), text, padding)
        for row, e in enumerate(named):
            share = patch_coverage(torch.from_numpy(video.target(e))[None], grid).flatten(1)  # [1, hw]
            if share.sum() == 0:
                continue
            pair = tuple(float(best_patch_hits(task.place_logits(token[row : row + 1, :1]), share)[0])
                         for token in (chain.steps[:, 0], chain.final))
            for p in (*[p for p in PHENOMENA if p in video.expressions[e].phenomena], "all"):
                hits[p].append(pair)
    return {p: (float(np.mean([h[0] for h in hs])), float(np.mean([h[1] for h in hs])), len(hs))
            for p, hs in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="checkpoint folders (checkpoints/step_N)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--chain-frames", type=int, help="stop the chain after this many frames (default: all)")
    args = parser.parse_args()
    print("| checkpoint | " + " | ".join(f"{p}: frame-0 / final hit (n)" for p in (*PHENOMENA, "all")) + " |")
    print("| --- |" + " --- |" * (len(PHENOMENA) + 1))
    for folder in args.folders:
        result = probe(load_checkpoint(folder), args.split, args.seed, args.videos, args.chain_frames)
        cells = [f"{result[p][0]:.3f} / {result[p][1]:.3f} ({result[p][2]})" if p in result else "-"
                 for p in (*PHENOMENA, "all")]
        print(f"| {folder} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
