"""GLUS's image tokens (paper Sec. 4.1, the image-token equation; LLaVA / LISA layout).

A frozen vision tower (CLIP ViT-L/14 at 224 px for the published checkpoints) embeds each frame;
the patch tokens of its penultimate layer (`select_layer`, CLS dropped) are averaged along the
token sequence in groups of `pool` consecutive tokens (GLUS's 1-D pooling: in raster order, so 1 x 4
horizontal strips, not 2 x 2 squares; 256 -> 64 tokens) and projected into the LLM's width by
`mm_projector` (one Linear, trained).

`clip_pixels` is the CLIP preprocessing the official inference uses (`CLIPImageProcessor`): the
short side resized to the input side with PIL bicubic, a centred crop, x / 255, then the OpenAI
mean and std.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from transformers import PreTrainedModel

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


class VisionTokens(nn.Module):
    """Image tokens of frames for the LLM: tower features -> 1-D pooling -> projector.

    `tower`: a `transformers` vision model that returns `hidden_states` (e.g. `CLIPVisionModel`),
    held frozen. Its position-0 token (CLS) is dropped.
    """

    def __init__(self, tower: PreTrainedModel, llm_width: int, select_layer: int = -2, pool: int = 4) -> None:
        super().__init__()
        self.tower = tower.requires_grad_(False).eval()
        self.select_layer, self.pool = select_layer, pool
        self.mm_projector = nn.Linear(int(tower.config.hidden_size), llm_width)

    def patches(self, pixels: Tensor) -> Tensor:
        """[T, 3, s, s] -> the selected layer's patch tokens [T, n, C_v]."""
        with torch.no_grad():
            hidden = self.tower(pixels, output_hidden_states=True).hidden_states[self.select_layer]
        return hidden[:, 1:]

    def forward(self, pixels: Tensor) -> Tensor:
        """[T, 3, s, s] -> [T, n / pool, llm_width]."""
        patches = self.patches(pixels)
        pooled = nn.functional.avg_pool1d(patches.transpose(1, 2), self.pool, self.pool).transpose(1, 2)
        return self.mm_projector(pooled)
