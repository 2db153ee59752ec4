"""What a SAM 2's image features say about SynthRef objects: linear probes of colour and shape.

Each object of SynthRef still scenes is described by the mean of a feature map over its mask
(after each of the last three Hiera stages, and the image embedding the mask decoder reads).
A linear classifier (multinomial logistic regression, L2 1e-3, Adam, 300 full-batch steps) is
fitted on the objects of the first 75 % of the scenes and scored on the rest. A text-prompted
method on a frozen SAM 2 can ground a word only in what these features carry.

    python bench/feature_probe.py [--sam2 synth] [--scenes 160]
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

COLOURS, SHAPES = list(synth.SEEN_COLOURS), list(synth.SEEN_SHAPES)


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
    parser.add_argument("--scenes", type=int, default=160, help="SynthRef train still scenes")
    args = parser.parse_args()
    sam = load_sam2(args.sam2).eval()
    size = sam.image_size
    stages: dict[int, Tensor] = {}

    def keep(stage: int, x: Tensor) -> Tensor:
        stages[stage] = x
        return x

    pooled: dict[str, list[Tensor]] = {}
    colours, shapes, scene_of = [], [], []
    with torch.inference_mode():
        for index in range(args.scenes):
            scene = synth.make_scene("train", 0, index, size, size, image=True)
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
                colours.append(COLOURS.index(obj.colour))
                shapes.append(SHAPES.index(obj.shape))
                scene_of.append(index)
    cut = sum(1 for s in scene_of if s < int(0.75 * args.scenes))
    y_colour, y_shape = torch.tensor(colours), torch.tensor(shapes)
    print(f"SAM 2 {args.sam2}: {len(colours)} objects of {args.scenes} SynthRef train still scenes, "
          f"probes fitted on {cut}, scored on {len(colours) - cut}")
    print(f"| features | colour ({len(COLOURS)} classes) | shape ({len(SHAPES)} classes) |\n| --- | --- | --- |")
    for name, rows in pooled.items():
        x = torch.stack(rows).float()
        print(f"| {name} | {probe_accuracy(x, y_colour, len(COLOURS), cut):.2f} "
              f"| {probe_accuracy(x, y_shape, len(SHAPES), cut):.2f} |")


if __name__ == "__main__":
    main()
