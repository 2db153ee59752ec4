"""SAMWISE per-frame cost against plain SAM 2 tracking at the same size, side by side.

Both use the same SAM 2 (synth-small at 256 px, the embedded default's backbone, random
weights: speed does not depend on their values) and stream the same frames: plain SAM 2 tracks
one object clicked on frame 0, frame by frame; SAMWISE (MiniLM-L6 text encoder, adapters, CME)
tracks one expression in clips of 8. They alternate clip by clip, so machine noise hits both
alike. Printed: ms/frame of each (median over clips) and the ratio.

    python bench/samwise_speed.py [--frames 96] [--size 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from refseg.data import synth
from refseg.encoders.text import TextEncoder
from refseg.engine import Session
from refseg.methods.samwise import Samwise, SamwiseConfig
from refseg.prompts import Points
from refseg.sam import Sam2
from refseg.sam.config import synth_small_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Samwise(Sam2(synth_small_config(args.size)), TextEncoder.from_pretrained(), SamwiseConfig()).eval()
    scene = synth.make_scene("valid", 0, 1, args.size, args.size)
    video, _ = synth.render(scene)
    frames = [video[t % len(video)] for t in range(args.frames)]
    clip = model.config.clip_len
    plain = Session(model.sam)
    plain.add_prompt(1, Points([[args.size / 2, args.size / 2]]))
    text = model.stream(["the red circle moving left"])
    times: dict[str, list[float]] = {"sam2": [], "samwise": []}
    with torch.inference_mode():
        for start in range(0, args.frames, clip):
            chunk = frames[start : start + clip]
            order = ["sam2", "samwise"] if (start // clip) % 2 == 0 else ["samwise", "sam2"]
            for name in order:
                began = time.perf_counter()
                if name == "sam2":
                    for frame in chunk:
                        plain.push(frame)
                else:
                    results = [r for frame in chunk for r in text.push(frame)] + text.flush()
                    assert len(results) == len(chunk)
                if start > 0:  # the first clip warms up both
                    times[name].append((time.perf_counter() - began) * 1000 / len(chunk))
    sam2_ms, samwise_ms = statistics.median(times["sam2"]), statistics.median(times["samwise"])
    print(f"SAM 2 synth-small {args.size} px, {args.frames} frames, {args.threads} threads")
    print(f"  plain SAM 2 tracking: {sam2_ms:8.1f} ms/frame")
    print(f"  SAMWISE (T={clip}):    {samwise_ms:8.1f} ms/frame")
    print(f"  ratio SAMWISE / SAM 2: {samwise_ms / sam2_ms:.3f}")


if __name__ == "__main__":
    main()
