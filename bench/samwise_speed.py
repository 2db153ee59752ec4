"""SAMWISE per-frame cost against plain SAM 2 tracking at the same size, side by side.

All variants use the same SAM 2 (synth-small at 256 px, the embedded default's backbone, random
weights: speed does not depend on their values) and stream the same frames: plain SAM 2 tracks
one object clicked on frame 0, frame by frame; SAMWISE (MiniLM-L6 text encoder, adapters, CME)
tracks one expression in clips of 8, once with the adapters of `--config` (the embedded
default's: bottleneck 64, scaled to the small backbone's stage widths 64-256) and once with the
paper's bottleneck of 256 (sized for Hiera-B+, whose adapted stages are 224-896 wide). They
alternate clip by clip, so machine noise hits all alike. Printed: ms/frame of each (median over
clips) and the ratios to plain SAM 2.

    python bench/samwise_speed.py [--config configs/samwise_synth.yaml] [--frames 96] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from refseg.data import synth
from refseg.encoders.text import TextEncoder
from refseg.engine import Session
from refseg.methods.samwise import Samwise
from refseg.prompts import Points
from refseg.sam import Sam2
from refseg.sam.config import synth_small_config
from refseg.train.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/samwise_synth.yaml")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(args.config).samwise
    sam, text = Sam2(synth_small_config(args.size)).eval(), TextEncoder.from_pretrained()
    variants = {
        f"SAMWISE, adapters {config.adapter_dim} wide": Samwise(sam, text, config).eval(),
        "SAMWISE, adapters 256 wide": Samwise(sam, text, dataclasses.replace(config, adapter_dim=256, heads=8)).eval(),
    }
    scene = synth.make_scene("valid", 0, 1, args.size, args.size)
    video, _ = synth.render(scene)
    frames = [video[t % len(video)] for t in range(args.frames)]
    clip = config.clip_len
    plain = Session(sam)
    plain.add_prompt(1, Points([[args.size / 2, args.size / 2]]))
    streams = {name: model.stream(["the red circle moving left"]) for name, model in variants.items()}
    names = ["SAM 2", *streams]
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for k, start in enumerate(range(0, args.frames, clip)):
            chunk = frames[start : start + clip]
            for name in names[k % len(names):] + names[: k % len(names)]:  # who goes first rotates
                began = time.perf_counter()
                if name == "SAM 2":
                    for frame in chunk:
                        plain.push(frame)
                else:
                    stream = streams[name]
                    results = [r for frame in chunk for r in stream.push(frame)] + stream.flush()
                    assert len(results) == len(chunk)
                if start > 0:  # the first clip warms up every variant
                    times[name].append((time.perf_counter() - began) * 1000 / len(chunk))
    base = statistics.median(times["SAM 2"])
    print(f"SAM 2 synth-small {args.size} px, {args.frames} frames, {args.threads} threads, clips of {clip}")
    for name in names:
        ms = statistics.median(times[name])
        trainable = "" if name == "SAM 2" else f", {sum(p.numel() for p in variants[name].trainable_parameters()) / 1e6:.2f} M trainable"
        print(f"  {name:32s} {ms:8.1f} ms/frame  ratio to SAM 2 {ms / base:.3f}{trainable}")


if __name__ == "__main__":
    main()
