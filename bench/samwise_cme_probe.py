"""What the Conditional Memory Encoder does on SynthRef's tracking-bias expressions.

For each SAMWISE model folder given, streams every tracking-bias expression of the first
`--videos` tracking-bias scenes of `valid_u`'s generator (default 2: `valid_u`'s own) twice: as
trained, and with the CME removed (`model.cme = None`, so the memory encoder always sees the
memory-conditioned mask). Prints J for both and how many frames the CME fused the memory-less
mask on (Eq. 10), then their means per model. Equal J and zero switches mean the CME's decisions
play no part in that model's result on the subset.

    python bench/samwise_cme_probe.py runs/ablation/plus_cme/final refseg/weights/samwise_synth
    python bench/samwise_cme_probe.py refseg/weights/samwise_synth --videos 20
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from refseg.data.sample import Expression, VideoSample
from refseg.data.synth import split_samples
from refseg.eval.metrics import jaccard_frames
from refseg.methods.samwise import Samwise


def stream(model: Samwise, sample: VideoSample, expression: Expression) -> tuple[np.ndarray, int]:
    """[T, H, W] bool masks of one expression, streamed clip by clip, and the CME's switches."""
    results = []
    with torch.no_grad(), model.stream([expression.text]) as s:
        for frame in sample.frames():
            results += s.push(frame)
        results += s.flush()
    return np.stack([r.objects[1].mask for r in results]), s.sessions[1].hooks.switches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="SAMWISE model folders")
    parser.add_argument("--seed", type=int, default=0, help="SynthRef valid_u seed (as `refseg synth`)")
    parser.add_argument("--videos", type=int, default=2, help="tracking-bias scenes (the first 2 are valid_u's)")
    args = parser.parse_args()
    cases = [(s, e) for s in split_samples("valid_u", args.seed, args.videos, scenario="tracking_bias")
             for e in s.expressions if "tracking_bias" in e.phenomena]
    print("| model | video | expression | J | J without CME | CME switches |")
    print("| --- | --- | --- | --- | --- | --- |")
    means = []
    for folder in args.models:
        model = Samwise.from_pretrained(folder)
        cme = model.cme
        rows = []
        for sample, expression in cases:
            truth = sample.target_mask(expression)
            masks, switches = stream(model, sample, expression)
            model.cme = None
            masks_off, _ = stream(model, sample, expression)
            model.cme = cme
            with_cme, without = jaccard_frames(truth, masks).mean(), jaccard_frames(truth, masks_off).mean()
            print(f"| {folder} | {sample.video_id} | {expression.text} | {with_cme:.3f} | {without:.3f} | {switches} |")
            rows.append((with_cme, without, switches))
        with_cme, without, switches = np.array(rows).sum(axis=0) / [len(rows), len(rows), 1]
        means.append((folder, with_cme, without, int(switches)))
    print("\n| model | expressions | mean J | mean J without CME | CME switches |\n| --- | --- | --- | --- | --- |")
    for folder, with_cme, without, switches in means:
        print(f"| {folder} | {len(cases)} | {with_cme:.3f} | {without:.3f} | {switches} |")


if __name__ == "__main__":
    main()
