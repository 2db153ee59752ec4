"""How often SAMWISE's Conditional Memory Encoder is told to switch during training, by the frame
stride of the training clips.

The CME learns from self-supervised labels (supplementary Eq. 13, `cme.switch_labels`): "switch"
when the memory-less mask and the memory-conditioned mask do not overlap. For each stride, draws
the same number of training clips (8 frames each, `configs/samwise_synth_phenomena.yaml`'s
sampling: SynthRef `train`, rare phenomena drawn more often) from one fixed sampler seed, streams
each through a trained SAMWISE exactly as training does (`SamwiseTask.sample_losses`, no
gradients) and prints, over clips, the mean share of a clip's labelled frames whose label says
switch (0 for a clip with no labelled frame) and the share of clips with at least one switch label. A stride of 1 is how the shipped default was
trained; [1, 3] lets a clip hold frames from before a late mover starts.

    python bench/samwise_switch_labels.py refseg/weights/samwise_synth --clips 150
    python bench/samwise_switch_labels.py runs/samwise_synth_shape/final --strides 1,1 1,3 2,4
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from tqdm import tqdm

import refseg
from refseg.train.config import load_config
from refseg.train.loop import load_samples
from refseg.train.samwise import SamwiseTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a SAMWISE folder (refseg/weights/samwise_synth, a run's final/)")
    parser.add_argument("--config", default="configs/samwise_synth_phenomena.yaml", help="whose data section draws the clips")
    parser.add_argument("--strides", nargs="+", default=["1,1", "1,3"], help="lo,hi frame strides to compare")
    parser.add_argument("--clips", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (the same clips' starts for every stride)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = refseg.load(args.model).eval()
    base = load_config(args.config)
    samples = load_samples(base)
    print(f"{args.model}: {args.clips} training clips per stride, sampler seed {args.seed}")
    print("| stride | switch share of labelled frames | clips with a switch label |\n| --- | --- | --- |")
    for text in args.strides:
        lo, hi = (int(v) for v in text.split(","))
        config = dataclasses.replace(base, data=dataclasses.replace(base.data, frame_stride=(lo, hi)))
        task = SamwiseTask(model, config)
        sampler = task.sampler(samples, seed=args.seed)
        rng = np.random.default_rng(args.seed)
        shares = []
        with torch.no_grad():
            for _ in tqdm(range(args.clips), desc=f"stride {lo}-{hi}", unit="clip"):
                shares.append(float(task.sample_losses(task.draw(sampler, rng))["cme_switch"]))
        print(f"| {lo}-{hi} | {np.mean(shares):.3f} | {np.mean([s > 0 for s in shares]):.3f} |")


if __name__ == "__main__":
    main()
