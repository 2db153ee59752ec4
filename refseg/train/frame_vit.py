"""Pretraining refseg's offline frame ViT (task `frame_vit`) on SynthRef frames, so that its patch
tokens say what covers them and its [CLS] what the frame holds, as an ImageNet ViT's features
would for real scenes (SAM2-LOVE's frozen visual encoder).

A sample is one frame of a `train` scene (rendered once per scene, `data.count` scenes of seed
`data.seed`, kept in memory at the ViT's input size). Targets: for every patch, the colour and the
shape of the object covering most of it (or background when objects cover less than a third)
(cross-entropy); from [CLS], which colours and which shapes are visible in the frame (BCE).
Random horizontal flips. `save_pretrained` writes the ViT alone (a `FrameViT` folder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from refseg.data import synth
from refseg.encoders.vit import FrameViT, VitSizes
from refseg.train.config import TrainConfig

COLOUR_NAMES = tuple(synth.COLOURS)
SHAPE_NAMES = synth.SEEN_SHAPES + synth.UNSEEN_SHAPES


class FrameVitPretrainer(nn.Module):
    """A `FrameViT` and its heads: per patch, colour and shape (+ background); from [CLS], the
    colours and shapes present."""

    def __init__(self, sizes: VitSizes) -> None:
        super().__init__()
        self.encoder = FrameViT.new(sizes)
        width = sizes.hidden_size
        self.patch_head = nn.Linear(width, len(COLOUR_NAMES) + len(SHAPE_NAMES) + 2)
        self.cls_head = nn.Linear(width, len(COLOUR_NAMES) + len(SHAPE_NAMES))

    def meta(self) -> dict[str, object]:
        return {"frame_vit": dataclasses.asdict(VitSizes.of(self.encoder.model.config))}

    def save_pretrained(self, directory: object) -> None:
        self.encoder.save_pretrained(directory)  # type: ignore[arg-type]


@dataclass
class FrameTargets:
    """frame [s, s, 3] uint8; patch_colour, patch_shape [g, g] class ids (last = background);
    colours [len(COLOUR_NAMES)], shapes [len(SHAPE_NAMES)] multi-hot."""

    frame: np.ndarray
    patch_colour: np.ndarray
    patch_shape: np.ndarray
    colours: np.ndarray
    shapes: np.ndarray


def scene_targets(scene: synth.Scene, size: int, grid: int) -> list[FrameTargets]:
    """Every frame of a scene, resized to `size`, with its targets on a `grid` x `grid` patch grid."""
    frames, masks = synth.render(scene)
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    small = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    small = small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    by_id = {o.obj_id: o for o in scene.objects}
    ids = sorted(masks)
    cover = F.adaptive_avg_pool2d(torch.from_numpy(np.stack([masks[i] for i in ids], 1)).float(), grid)  # [T, O, g, g]
    out = []
    for t in range(len(frames)):
        best, which = cover[t].max(0)
        colour = np.full((grid, grid), len(COLOUR_NAMES))
        shape = np.full((grid, grid), len(SHAPE_NAMES))
        for k, obj_id in enumerate(ids):
            here = ((which == k) & (best > 1 / 3)).numpy()
            colour[here] = COLOUR_NAMES.index(by_id[obj_id].colour)
            shape[here] = SHAPE_NAMES.index(by_id[obj_id].shape)
        visible = [by_id[i] for i in ids if masks[i][t].any()]
        colours = np.zeros(len(COLOUR_NAMES), np.float32)
        shapes = np.zeros(len(SHAPE_NAMES), np.float32)
        for obj in visible:
            colours[COLOUR_NAMES.index(obj.colour)] = 1.0
            shapes[SHAPE_NAMES.index(obj.shape)] = 1.0
        out.append(FrameTargets(small[t], colour, shape, colours, shapes))
    return out


class SceneFrames:
    """The frames of `count` scenes of a split, rendered once; `rng` draws them."""

    def __init__(self, config: TrainConfig, size: int, grid: int, seed: int) -> None:
        data = config.data
        indices = synth.scene_indices(data.split, data.count)
        self.frames = [f for i in tqdm(indices, desc="render scenes", unit="scene")
                       for f in scene_targets(synth.make_scene(data.split, data.seed, i), size,
                                              grid)]
        self.rng = np.random.default_rng(seed)


class FrameVitPretrainTask(nn.Module):
    """Task `frame_vit`: patch colour + shape CE, [CLS] colour + shape BCE."""

    def __init__(self, model: FrameVitPretrainer, config: TrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config

    def sampler(self, samples: list, seed: int) -> SceneFrames:
        encoder = self.model.encoder
        return SceneFrames(self.config, encoder.image_size, encoder.grid, seed)

    def draw_batch(self, sampler: SceneFrames, rng: np.random.Generator, size: int) -> list[FrameTargets]:
        batch = []
        for i in sampler.rng.integers(len(sampler.frames), size=size):
            f = sampler.frames[int(i)]
            if sampler.rng.random() < 0.5:  # horizontal flip
                f = FrameTargets(f.frame[:, ::-1].copy(), f.patch_colour[:, ::-1].copy(), f.patch_shape[:, ::-1].copy(),
                                 f.colours, f.shapes)
            batch.append(f)
        return batch

    def forward(self, batch: list[FrameTargets]) -> dict[str, Tensor]:
        model = self.model
        device = model.cls_head.weight.device
        cls, patches = model.encoder(torch.from_numpy(np.stack([b.frame for b in batch])).to(device))
        logits = model.patch_head(patches)  # [B, g*g, classes]
        nc = len(COLOUR_NAMES) + 1
        colour = torch.from_numpy(np.stack([b.patch_colour for b in batch])).to(device).flatten(1)
        shape = torch.from_numpy(np.stack([b.patch_shape for b in batch])).to(device).flatten(1)
        present = torch.from_numpy(np.stack([np.concatenate([b.colours, b.shapes]) for b in batch])).to(device)
        glob = model.cls_head(cls)
        terms = {"patch_colour": F.cross_entropy(logits[..., :nc].flatten(0, 1), colour.flatten()),
                 "patch_shape": F.cross_entropy(logits[..., nc:].flatten(0, 1), shape.flatten()),
                 "present": F.binary_cross_entropy_with_logits(glob, present)}
        terms["loss"] = terms["patch_colour"] + terms["patch_shape"] + terms["present"]
        with torch.no_grad():
            terms["shape_acc"] = (logits[..., nc:].argmax(-1) == shape).float().mean()
        return terms
