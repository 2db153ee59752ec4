"""What the Conditional Memory Encoder does on SynthRef's tracking-bias expressions, in the shape
of the paper's Table 3 (bottom): when is the memory-less mask fused into memory (Eq. 10)?

For each SAMWISE model folder given, streams every tracking-bias expression of the first
`--videos` tracking-bias scenes of `valid_u`'s generator (default 2: `valid_u`'s own) under each
fusion policy (`SamwiseConfig.cme_policy`): the CME's decisions ("learned"), never (the same as
no CME), always (every frame after the first `cme_window`) and 1 frame in 4 at random. Prints J
per expression and policy, how many frames each fused on, then the means per model. Equal J under
"learned" and "never" with zero switches mean the CME's decisions play no part in that model's
result on the subset; "always" and "1 in 4" say whether fusing could help there at all.

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

POLICIES = {"learned": "CME", "never": "never", "always": "always", "random": "1 in 4"}


def stream(model: Samwise, sample: VideoSample, expression: Expression) -> tuple[np.ndarray, int]:
    """[T, H, W] bool masks of one expression, streamed clip by clip, and the frames fused on."""
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
    columns = " | ".join(f"J {name} | fused" for name in POLICIES.values())
    print(f"| model | video | expression | {columns} |\n|{' --- |' * (3 + 2 * len(POLICIES))}")
    means = []
    for folder in args.models:
        model = Samwise.from_pretrained(folder)
        rows = []
        for sample, expression in cases:
            truth = sample.target_mask(expression)
            row = []
            for policy in POLICIES:
                model.config.cme_policy = policy
                masks, switches = stream(model, sample, expression)
                row += [float(jaccard_frames(truth, masks).mean()), switches]
            rows.append(row)
            cells = " | ".join(f"{j:.3f} | {n}" for j, n in zip(row[::2], row[1::2]))
            print(f"| {folder} | {sample.video_id} | {expression.text} | {cells} |", flush=True)
        table = np.array(rows)
        means.append((folder, table[:, ::2].mean(0), table[:, 1::2].sum(0)))
    print(f"\n| model | expressions | {columns} |\n|{' --- |' * (2 + 2 * len(POLICIES))}")
    for folder, j, fused in means:
        cells = " | ".join(f"{a:.3f} | {int(n)}" for a, n in zip(j, fused))
        print(f"| {folder} | {len(cases)} | {cells} |")


if __name__ == "__main__":
    main()
