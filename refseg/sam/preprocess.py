"""How frames of any size become a SAM model's square input, and how masks go back.

Each method's official code prepares pixels its own way, and the difference shows in the masks
(a stretched 480 x 854 frame and a letterboxed one give masks with IoU 0.7-0.8 on the same
weights), so the rule is part of a method, not of the engine:

* "stretch" (SAM 2's predictors): both sides resized to S, the aspect ratio not kept; output
  logits are resized from the low-resolution mask straight to the frame size. The image
  predictor resizes float pixels (bilinear, antialiased: `SAM2`), the video predictor the 8-bit
  frames with PIL's default filter (bicubic: `SAM2_VIDEO`, the engine's default).
* "fit" (SAMWISE, SAM v1): the longer side resized to `longest` (S by default), the aspect ratio
  kept, the S x S input padded at the bottom and right with zeros after normalisation; output
  logits are upsampled to S x S, cropped to the frame's region and resized to the frame size.

Resizing happens on the float pixels in [0, 1] (`resizer="float"`, as `torchvision`'s Resize on
a tensor), on the 8-bit tensor by `F.interpolate`, which rounds to 8 bits (`"uint8"`, EVF-SAM2's
inference), or on the 8-bit image by PIL (`"pil"`, as the official code that resizes PIL images
does: SAM's `ResizeLongestSide`, SAM 2's JPEG frame loader). PIL always filters when it shrinks;
the two torch resizers do when `antialias` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZES = ("stretch", "fit")
RESIZERS = ("float", "uint8", "pil")


@dataclass(frozen=True)
class Preprocess:
    """One method's input rule (see the module docstring).

    resize: "stretch" or "fit".
    longest: with "fit", the longer side after resizing (None: the model input side S).
    mode: "bilinear" or "bicubic".
    antialias: low-pass filter when shrinking (torchvision does; plain `F.interpolate` does
        not). PIL always does, so "pil" needs it.
    resizer: "float", "uint8" or "pil" (see the module docstring).
    """

    resize: str = "stretch"
    longest: int | None = None
    mode: str = "bilinear"
    antialias: bool = True
    resizer: str = "float"

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        if self.mode not in ("bilinear", "bicubic"):
            raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {self.mode!r}")
        if self.resizer not in RESIZERS:
            raise ValueError(f"resizer must be one of {RESIZERS}, got {self.resizer!r}")
        if self.resizer == "pil" and not self.antialias:
            raise ValueError("PIL always antialiases when it shrinks: set antialias=True with resizer='pil'")

    def content(self, height: int, width: int, size: int) -> tuple[int, int]:
        """(h, w): the part of the S x S input that holds an H x W frame (top left)."""
        if self.resize == "stretch":
            return size, size
        longest = self.longest or size
        if longest > size:
            raise ValueError(f"longest side {longest} exceeds the model input side {size}")
        scale = longest / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def pixels(self, frames: Tensor, size: int) -> Tensor:
        """[T, H, W, 3] uint8 RGB -> [T, 3, S, S] float32, normalised by the ImageNet mean and std."""
        h, w = self.content(frames.shape[1], frames.shape[2], size)
        if self.resizer == "pil" and frames.shape[1:3] != (h, w):
            resample = Image.Resampling.BILINEAR if self.mode == "bilinear" else Image.Resampling.BICUBIC
            resized = [np.asarray(Image.fromarray(f.cpu().numpy()).resize((w, h), resample)) for f in frames]
            frames = torch.from_numpy(np.stack(resized)).to(frames.device)
        x = frames.permute(0, 3, 1, 2)
        if self.resizer == "uint8" and x.shape[-2:] != (h, w):
            x = F.interpolate(x.contiguous(), size=(h, w), mode=self.mode, align_corners=False,
                              antialias=self.antialias)
        x = x.float().div_(255.0)
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode=self.mode, align_corners=False, antialias=self.antialias)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        if (h, w) != (size, size):
            x = F.pad(x, (0, size - w, 0, size - h))
        return x

    def points(self, xy: Tensor, height: int, width: int, size: int) -> Tensor:
        """Frame pixel coordinates [..., 2] (x, y) -> model input coordinates."""
        h, w = self.content(height, width, size)
        return xy * torch.tensor([w / width, h / height], dtype=xy.dtype, device=xy.device)

    def mask(self, mask: Tensor, size: int) -> Tensor:
        """A binary frame mask [1, 1, H, W] float -> [1, 1, S, S] in {0, 1} at the input."""
        h, w = self.content(mask.shape[-2], mask.shape[-1], size)
        if mask.shape[-2:] != (h, w):
            mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            mask = (mask >= 0.5).float()
        return F.pad(mask, (0, size - w, 0, size - h))

    def logits(self, low_res: Tensor, height: int, width: int, size: int) -> Tensor:
        """Low-resolution mask logits [B, 1, s, s] -> [B, 1, H, W] at the frame size."""
        if self.resize == "stretch":
            return F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False)
        h, w = self.content(height, width, size)
        full = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)[..., :h, :w]
        return F.interpolate(full, size=(height, width), mode="bilinear", align_corners=False)


SAM2 = Preprocess()  # SAM 2's image predictor: stretch, bilinear, antialiased, on float pixels
SAM2_VIDEO = Preprocess(mode="bicubic", resizer="pil")  # SAM 2's video predictor: PIL's default resize
SAM1 = Preprocess(resize="fit", resizer="pil")  # SAM's predictor: longest side to S with PIL, padded
