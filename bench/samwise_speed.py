"""SAMWISE per-frame cost against plain SAM 2 tracking at the same size, side by side.

All variants use the same SAM 2 (synth-small at 256 px, the embedded default's backbone, random
weights: speed does not depend on their values) and stream the same frames: plain SAM 2 tracks
one object clicked on frame 0, frame by frame; SAMWISE (MiniLM-L6 text encoder, adapters, CME)
tracks one expression in clips of 8, once with the adapters of `--config` (the embedded
default's: bottleneck 64, scaled to the small backbone's stage widths 64-256) and once with the
paper's bottleneck of 256 (sized for Hiera-B+, whose adapted stages are 224-896 wide). They
alternate clip by clip, so machine noise hits all alike. Printed: ms/frame of each (median over
clips) and the ratios to plain SAM 2.

`--expressions 1 4 8`: instead, for each count N, plain SAM 2 tracking N objects clicked on
frame 0 (objects batched, `Session(batch_objects=True)`), and SAMWISE (the `--config` adapters)
tracking N expressions encoded one by one (`stream(texts, batch=1)`) and together
(`batch=N`), alternating clip by clip; printed: ms/frame of each and the ratios.

    python bench/samwise_speed.py [--config configs/samwise_synth.yaml] [--frames 96] [--threads 2]
    python bench/samwise_speed.py --expressions 1 4 8 [--frames 48]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from tqdm import tqdm

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
    parser.add_argument("--expressions", type=int, nargs="+", help="measure these expression counts instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(args.config).samwise
    sam, text = Sam2(synth_small_config(args.size)).eval(), TextEncoder.from_pretrained()
    if args.expressions:
        expression_cost(Samwise(sam, text, config).eval(), args.expressions, args.frames, args.size, args.threads)
        return
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


TEXTS = ["the red circle moving left", "the blue square", "the small green triangle on the right",
         "the object that moves first", "the large striped diamond", "the yellow star moving up",
         "the circle", "the purple hexagon that stops"]


def expression_cost(model: Samwise, counts: list[int], num_frames: int, size: int, threads: int) -> None:
    """ms/frame of SAM 2 with N clicked objects and SAMWISE with N expressions, one by one and
    batched, alternating clip by clip (the first clip warms up and is not counted)."""
    scene = synth.make_scene("valid", 0, 1, size, size)
    video, _ = synth.render(scene)
    frames = [video[t % len(video)] for t in range(num_frames)]
    clip = model.config.clip_len
    runs: dict[tuple[int, str], object] = {}
    for n in counts:
        if n > len(TEXTS):
            raise SystemExit(f"--expressions: at most {len(TEXTS)}")
        plain = Session(model.sam, batch_objects=True)
        side = int(np.ceil(np.sqrt(n)))
        for k in range(n):
            plain.add_prompt(k + 1, Points([[(k % side + 0.5) * size / side, (k // side + 0.5) * size / side]]))
        runs[(n, "SAM 2, objects batched")] = plain
        runs[(n, "SAMWISE one by one")] = model.stream(TEXTS[:n], batch=1)
        runs[(n, "SAMWISE batched")] = model.stream(TEXTS[:n], batch=n)
    keys = list(runs)
    times: dict[tuple[int, str], list[float]] = {k: [] for k in keys}
    with torch.inference_mode():
        for c, start in enumerate(tqdm(range(0, num_frames, clip), desc="clips", unit="clip")):
            chunk = frames[start : start + clip]
            for key in keys[c % len(keys):] + keys[: c % len(keys)]:
                began = time.perf_counter()
                run = runs[key]
                if isinstance(run, Session):
                    for frame in chunk:
                        run.push(frame)
                else:
                    assert len([r for frame in chunk for r in run.push(frame)] + run.flush()) == len(chunk)
                if start > 0:
                    times[key].append((time.perf_counter() - began) * 1000 / len(chunk))
    print(f"SAM 2 synth-small {size} px, SAMWISE adapters {model.config.adapter_dim} wide, {num_frames} frames, "
          f"{threads} threads, clips of {clip}")
    for n in counts:
        ms = {name: statistics.median(times[(n, name)]) for _, name in keys[:3]}
        base, alone, together = ms["SAM 2, objects batched"], ms["SAMWISE one by one"], ms["SAMWISE batched"]
        print(f"  {n} expressions / objects: SAM 2 {base:7.1f} ms/frame; SAMWISE one by one {alone:7.1f} "
              f"(x{alone / base:.2f} SAM 2), batched {together:7.1f} (x{together / base:.2f} SAM 2, "
              f"{together / alone:.2f} of one by one)")


if __name__ == "__main__":
    main()
