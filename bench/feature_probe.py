"""What a SAM 2's image features say about SynthRef objects: linear probes of colour, shape,
size and texture.

Each object of SynthRef still scenes is described by the mean of a feature map over its mask
(after each of the last three Hiera stages, and the image embedding the mask decoder reads).
A linear classifier (multinomial logistic regression, L2 1e-3, Adam, 300 full-batch steps) is
fitted on the objects of the first 75 % of the scenes and scored on the rest. A text-prompted
method on a frozen SAM 2 can ground a word only in what these features carry. The scenes come
from a split and seed no SynthRef model is trained on (`valid`, seed 21, by default).

    python bench/feature_probe.py [--sam2 synth] [--scenes 160] [--split valid] [--seed 21]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import Tensor
from torch.nn import functional as F

from refseg.data import synth
from refseg.sam.checkpoint import load_sam2
from refseg.sam.image_encoder import normalise_frames

ATTRIBUTES = ("colour", "shape", "size", "texture")


def probe_accuracy(x: Tensor, y: Tensor, classes: int, cut: int) -> float:
    """Held-out accuracy of a linear classifier fitted on x[:cut] (standardised on them)."""
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-5)
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(x[:cut] @ weight + bias, y[:cut]) + 1e-3 * weight.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(((x[cut:] @ weight + bias).argmax(1) == y[cut:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam2", default="synth", help="SAM 2 to probe (default: the shipped synth)")
    parser.add_argument("--scenes", type=int, default=160, help="SynthRef still scenes")
    parser.add_argument("--split", default="valid", help="SynthRef split of the scenes (default: valid)")
    parser.add_argument("--seed", type=int, default=21, help="SynthRef seed of the scenes (default: 21, never trained on)")
    args = parser.parse_args()
    sam = load_sam2(args.sam2).eval()
    size = sam.image_size
    stages: dict[int, Tensor] = {}

    def keep(stage: int, x: Tensor) -> Tensor:
        stages[stage] = x
        return x

    pooled: dict[str, list[Tensor]] = {}
    labels: dict[str, list[str]] = {name: [] for name in ATTRIBUTES}
    scene_of = []
    with torch.inference_mode():
        for index in range(args.scenes):
            scene = synth.make_scene(args.split, args.seed, index, size, size, image=True)
            frames, masks = synth.render(scene)
            features = sam.encode_images(normalise_frames(torch.from_numpy(frames[:1]), size), keep)
            maps = {f"stage {s + 1} ({stages[s].shape[-1]} ch)": stages[s][0].permute(2, 0, 1) for s in sorted(stages)[-3:]}
            maps[f"image embedding ({features.embed.shape[1]} ch)"] = features.embed[0]
            for obj in scene.objects:
                mask = torch.from_numpy(masks[obj.obj_id][0]).float()[None, None]
                if mask.sum() < 30:  # mostly hidden behind others
                    continue
                for name, x in maps.items():
                    m = F.interpolate(mask, size=x.shape[-2:], mode="area")[0, 0]
                    pooled.setdefault(name, []).append((x * m).sum((1, 2)) / m.sum().clamp(min=1e-6))
                for name in ATTRIBUTES:
                    labels[name].append(getattr(obj, name))
                scene_of.append(index)
    cut = sum(1 for s in scene_of if s < int(0.75 * args.scenes))
    classes = {name: sorted(set(values)) for name, values in labels.items()}
    targets = {name: torch.tensor([classes[name].index(v) for v in values]) for name, values in labels.items()}
    print(f"SAM 2 {args.sam2}: {len(scene_of)} objects of {args.scenes} SynthRef {args.split} still scenes "
          f"(seed {args.seed}), probes fitted on {cut}, scored on {len(scene_of) - cut}")
    print("| features | " + " | ".join(f"{n} ({len(classes[n])} classes)" for n in ATTRIBUTES) + " |")
    print("| --- " * (len(ATTRIBUTES) + 1) + "|")
    for name, rows in pooled.items():
        x = torch.stack(rows).float()
        scores = [probe_accuracy(x, targets[n], len(classes[n]), cut) for n in ATTRIBUTES]
        print(f"| {name} | " + " | ".join(f"{a:.2f}" for a in scores) + " |")


if __name__ == "__main__":
    main()
