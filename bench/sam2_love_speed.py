"""Seconds per video of SAM2-LOVE, its parts apart: the frozen encoders (frame ViT on the chain
frames, VGGish on one window per chain frame, the text encoder), the fusion chain (Eq. 1-4 over
the N chain frames) and SAM 2 (the first frame prompted, the rest tracked through memory), on
SynthRef audio-visual videos, all expressions of a video at once (as `refseg predict` runs them).

    python bench/sam2_love_speed.py --model runs/sam2_love_synth/final --videos 4
    python bench/sam2_love_speed.py --videos 4      # configs/sam2_love_synth.yaml's sizes, random weights

Prints per part the mean seconds per video, its share, and the frames per second overall.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from refseg.data import synth
from refseg.encoders.text import TextEncoder
from refseg.methods.sam2_love import LoveConfig, Sam2Love
from refseg.methods.sam2_love.model import clip_fps
from refseg.prompts import Audio
from refseg.sam.checkpoint import load_sam2
from refseg.train.config import load_config


def recipe_model() -> Sam2Love:
    """configs/sam2_love_synth.yaml's sizes with random fusion weights and random encoders."""
    config = load_config(yaml.safe_load(open("configs/sam2_love_synth.yaml")))
    love: LoveConfig = config.sam2_love
    love.audio_encoder = love.frame_encoder = None
    return Sam2Love(load_sam2(config.model.sam2), love, TextEncoder.from_pretrained(love.text)).eval()


@torch.inference_mode()
def time_video(model: Sam2Love, sample) -> dict[str, float]:
    frames = sample.load_frames()
    texts = [e.text for e in sample.expressions]
    sound = Audio(sample.audio, sample.sample_rate)
    times: dict[str, float] = {}
    began = time.perf_counter()
    clip = model.clip_features(frames, sound, clip_fps(len(frames), sound))
    text, padding = model.encode_texts(texts)
    times["encoders"] = time.perf_counter() - began
    began = time.perf_counter()
    tokens = model.prompt_tokens(clip, text, padding)
    times["fusion chain"] = time.perf_counter() - began
    began = time.perf_counter()
    model.stream(texts, sound).track(frames, tokens)
    times["SAM 2"] = time.perf_counter() - began
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a SAM2-LOVE folder (default: the recipe's sizes, random weights)")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Sam2Love.from_pretrained(args.model) if args.model else recipe_model()
    samples = list(synth.split_samples("test", 11, args.videos, audio_visual=True))
    time_video(model, samples[0])  # warm-up
    rows = [time_video(model, s) for s in samples]
    frames = sum(len(s) for s in samples) / len(samples)
    objects = sum(len(s.expressions) for s in samples) / len(samples)
    total = sum(sum(r.values()) for r in rows) / len(rows)
    print(f"SAM2-LOVE, {len(samples)} SynthRef audio-visual videos ({frames:.1f} frames, {objects:.1f} expressions "
          f"each, 256 px), {args.threads} threads, chain of {model.config.max_frames} frames, fusion "
          f"{model.config.layers} x {model.config.width}")
    for part in rows[0]:
        mean = float(np.mean([r[part] for r in rows]))
        print(f"  {part:<13} {mean:7.3f} s per video  ({mean / total:5.1%})")
    print(f"  {'total':<13} {total:7.3f} s per video  ({frames / total:.1f} frames/s)")


if __name__ == "__main__":
    main()
