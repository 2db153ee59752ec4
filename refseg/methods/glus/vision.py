"""GLUS's image tokens (paper Sec. 4.1, the image-token equation; LLaVA / LISA layout).

A frozen vision tower embeds each frame into a sequence of patch tokens [n, C_v]; the tokens are
averaged along the sequence in groups of `pool` consecutive tokens (GLUS's 1-D pooling: in raster
order, so 1 x `pool` horizontal strips, not squares) and projected into the LLM's width by
`mm_projector` (one Linear, trained).

Two towers:

- `ClipTower`: a `transformers` vision model (CLIP ViT-L/14 at 224 px for the published
  checkpoints): the patch tokens of its penultimate layer (`select_layer`, CLS dropped), 256 per
  frame -> 64 after pooling. `clip_pixels` is the CLIP preprocessing the official inference uses
  (`CLIPImageProcessor`): the short side resized to the input side with PIL bicubic, a centred
  crop, x / 255, then the OpenAI mean and std.
- `Sam2Tower`: the frozen image encoder of GLUS's own SAM 2 (refseg's offline default): the
  last Hiera stage before the neck, the trunk's most abstract map, (S/32)^2 tokens per frame
  (64 at 256 px -> 16 after pooling), with SAM 2's preprocessing. It ships with SAM 2, so it adds
  no weights, and it is the model that was trained on SynthRef's frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from transformers import PreTrainedModel

from refseg.sam.image_encoder import trunk_stages
from refseg.sam.model import Sam2
from refseg.sam.preprocess import SAM2

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(frame: np.ndarray, size: int, mean: tuple[float, ...] = CLIP_MEAN,
                std: tuple[float, ...] = CLIP_STD) -> Tensor:
    """[H, W, 3] uint8 -> [3, size, size] float32 (see the module docstring)."""
    height, width = frame.shape[:2]
    short, long = min(height, width), max(height, width)
    scaled = int(size * long / short)
    new_w, new_h = (scaled, size) if width >= height else (size, scaled)
    resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top:top + size, left:left + size].astype(np.float64) * (1 / 255)
    pixels = (crop.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


class ClipTower(nn.Module):
    """A `transformers` vision model that returns `hidden_states` (e.g. `CLIPVisionModel`), frozen;
    its position-0 token (CLS) is dropped."""

    def __init__(self, model: PreTrainedModel, select_layer: int = -2) -> None:
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.select_layer = select_layer

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    def pixels(self, frames: Sequence[np.ndarray]) -> Tensor:
        """T frames [H, W, 3] uint8 -> [T, 3, s, s] (`clip_pixels`)."""
        size = int(self.model.config.image_size)
        return torch.stack([clip_pixels(frame, size) for frame in frames])

    def patches(self, pixels: Tensor) -> Tensor:
        """[T, 3, s, s] -> the selected layer's patch tokens [T, n, C_v]."""
        hidden = self.model(pixels, output_hidden_states=True).hidden_states[self.select_layer]
        return hidden[:, 1:]


class Sam2Tower(nn.Module):
    """The frozen Hiera trunk of a SAM 2 (shared with it, not copied): its last stage's map
    [T, S/32, S/32, C_v] in raster order as [T, (S/32)^2, C_v]."""

    def __init__(self, sam: Sam2) -> None:
        super().__init__()
        self.encoder = sam.vision_encoder
        self.image_size = sam.image_size
        self._width = int(sam.config.vision_config.backbone_config.embed_dim_per_stage[-1])

    @property
    def width(self) -> int:
        return self._width

    def pixels(self, frames: Sequence[np.ndarray]) -> Tensor:
        """T frames [H, W, 3] uint8 -> [T, 3, S, S] (SAM 2's preprocessing)."""
        return SAM2.pixels(torch.from_numpy(np.stack(frames)), self.image_size)

    def patches(self, pixels: Tensor) -> Tensor:
        """[T, 3, S, S] -> [T, (S/32)^2, C_v]."""
        return trunk_stages(self.encoder, pixels)[-1].flatten(1, 2)


Tower = ClipTower | Sam2Tower


class VisionTokens(nn.Module):
    """Image tokens of frames for the LLM: tower patches -> 1-D pooling -> projector."""

    def __init__(self, tower: Tower, llm_width: int, pool: int = 4) -> None:
        super().__init__()
        self.tower, self.pool = tower, pool
        self.mm_projector = nn.Linear(tower.width, llm_width)

    def pixels(self, frames: Sequence[np.ndarray]) -> Tensor:
        """The tower's input [T, 3, s, s] of T frames [H, W, 3] uint8."""
        return self.tower.pixels(frames)

    def patches(self, pixels: Tensor) -> Tensor:
        """[T, 3, s, s] -> the tower's patch tokens [T, n, C_v] (no gradient: the tower is frozen)."""
        with torch.no_grad():
            return self.tower.patches(pixels)

    def forward(self, pixels: Tensor) -> Tensor:
        """[T, 3, s, s] -> [T, n / pool, llm_width]."""
        patches = self.patches(pixels)
        if patches.shape[1] % self.pool:
            raise ValueError(f"the tower gives {patches.shape[1]} tokens per frame, not a multiple of pool {self.pool}")
        pooled = nn.functional.avg_pool1d(patches.transpose(1, 2), self.pool, self.pool).transpose(1, 2)
        return self.mm_projector(pooled)
