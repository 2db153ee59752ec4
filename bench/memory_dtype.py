"""Long streams: do bfloat16 memories (SAM 2's own storage, refseg's default) keep tracking as
float32 memories do, over thousands of frames?

The shipped SynthRef SAM 2 (`--sam2`, default `synth`) tracks the objects of a SynthRef `valid`
scene clicked on frame 0, over a stream that plays the scene forward and backward (so motion is
continuous and the ground truth is known on every frame), in three sessions side by side:
float32 compute with float32 memories, float32 compute with bfloat16 memories, and bfloat16
compute (autocast) with bfloat16 memories. Printed per block of frames: each session's mean J
against the ground truth and the mean IoU of the bfloat16 sessions' masks with the all-float32
one's.

    python bench/memory_dtype.py [--frames 2000] [--block 250] [--scene 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from tqdm import tqdm

from refseg.data import synth
from refseg.engine import Session
from refseg.eval.metrics import jaccard
from refseg.prompts import Points
from refseg.sam.checkpoint import load_sam2

VARIANTS = {"float32, float32 memories": (torch.float32, torch.float32),
            "float32, bfloat16 memories": (torch.float32, torch.bfloat16),
            "bfloat16, bfloat16 memories": (torch.bfloat16, torch.bfloat16)}


def ping_pong(length: int, count: int) -> list[int]:
    """Frame indices 0, 1, ..., L-1, L-2, ..., 1, 0, 1, ... (`count` of them)."""
    cycle = list(range(length)) + list(range(length - 2, 0, -1))
    return [cycle[t % len(cycle)] for t in range(count)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam2", default="synth")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--block", type=int, default=250)
    parser.add_argument("--scene", type=int, default=3, help="index of the SynthRef valid (seed 0) scene")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_sam2(args.sam2)
    sample = synth.generate(synth.make_scene("valid", 0, args.scene))
    video = sample.load_frames()
    objects = {o: m for o, m in sorted(sample.masks.items()) if m[0].sum() > 30}
    sessions = {}
    for name, (dtype, memory_dtype) in VARIANTS.items():
        session = Session(model, dtype=dtype, memory_dtype=memory_dtype)
        for obj_id, mask in objects.items():
            ys, xs = np.nonzero(mask[0])
            pick = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
            session.add_prompt(obj_id, Points([[float(xs[pick]), float(ys[pick])]]))
        sessions[name] = session
    order = ping_pong(len(video), args.frames)
    rows: dict[str, list[float]] = {name: [] for name in VARIANTS}
    agree: dict[str, list[float]] = {name: [] for name in list(VARIANTS)[1:]}
    reference = list(VARIANTS)[0]
    with torch.inference_mode():
        for t in tqdm(order, desc="frames", unit="frame"):
            masks = {name: s.push(video[t]).masks() for name, s in sessions.items()}
            for name in VARIANTS:
                rows[name].append(float(np.mean([jaccard(objects[o][t], masks[name][o]) for o in objects])))
            for name in agree:
                agree[name].append(float(np.mean([iou(masks[reference][o], masks[name][o]) for o in objects])))
    print(f"SAM 2 {args.sam2}, SynthRef valid seed 0 scene {args.scene} ({len(video)} frames played forward and "
          f"backward), {len(objects)} objects clicked on frame 0, {args.frames} frames, {args.threads} threads")
    print("| frames | " + " | ".join(f"J {n}" for n in VARIANTS) + " | " + " | ".join(f"IoU with float32: {n}" for n in agree) + " |")
    for start in range(0, args.frames, args.block):
        end = min(start + args.block, args.frames)
        cells = [f"{np.mean(rows[n][start:end]):.4f}" for n in VARIANTS]
        cells += [f"{np.mean(agree[n][start:end]):.4f} (min {np.min(agree[n][start:end]):.3f})" for n in agree]
        print(f"| {start}-{end} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
