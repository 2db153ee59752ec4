"""A per-frame visual encoder with a real [CLS]: a `transformers` ViT (SAM2-LOVE's visual
encoder, paper Sec. 3.2: patch tokens F_V^i and the global [cls]^i of every frame).

Any `ViTModel` folder loads (the ImageNet `google/vit-base-patch16-224` the paper's Ref-AVS
features come from, for users who have it; its `preprocessor_config.json` gives the
normalisation). Offline, refseg pretrains a small one on SynthRef frames (`refseg train
configs/frame_vit_synth.yaml`: per-patch colour and shape of the object under each patch, and
the frame's colours and shapes from [CLS]) and freezes it.

Frames are squashed to the ViT's square (bilinear with antialiasing), scaled to [0, 1] and
normalised with the processor's mean and std.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import ViTConfig, ViTModel

from refseg.io.atomic import atomic_dir


@dataclass
class VitSizes:
    """A ViT's sizes (the rest of `ViTConfig` keeps its defaults, which the published ViTs use);
    the defaults are the SynthRef frame ViT: 128 px, patch 16 (8 x 8 patches), width 192, 4 layers."""

    image_size: int = 128
    patch_size: int = 16
    hidden_size: int = 192
    layers: int = 4
    heads: int = 3
    intermediate_size: int = 768

    def vit_config(self) -> ViTConfig:
        return ViTConfig(image_size=self.image_size, patch_size=self.patch_size, hidden_size=self.hidden_size,
                         num_hidden_layers=self.layers, num_attention_heads=self.heads,
                         intermediate_size=self.intermediate_size)

    @classmethod
    def of(cls, config: ViTConfig) -> VitSizes:
        return cls(int(config.image_size), int(config.patch_size), int(config.hidden_size),
                   int(config.num_hidden_layers), int(config.num_attention_heads), int(config.intermediate_size))


class FrameViT(nn.Module):
    """frames [B, H, W, 3] uint8 -> (cls [B, D], patches [B, h*w, D]) from the last layer
    (after the final LayerNorm)."""

    def __init__(self, model: ViTModel, mean: tuple[float, ...] = (0.5, 0.5, 0.5),
                 std: tuple[float, ...] = (0.5, 0.5, 0.5)) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def new(cls, sizes: VitSizes) -> FrameViT:
        return cls(ViTModel(sizes.vit_config(), add_pooling_layer=False))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def grid(self) -> int:
        """Patches per side, h = w."""
        return self.image_size // int(self.model.config.patch_size)

    def pixels(self, frames: Tensor) -> Tensor:
        """[B, H, W, 3] uint8 -> [B, 3, s, s] normalised."""
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self.mean) / self.std

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        device = self.mean.device
        hidden = self.model(pixel_values=self.pixels(frames.to(device))).last_hidden_state
        return hidden[:, 0], hidden[:, 1:]

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """A `transformers` ViT folder plus refseg's normalisation (preprocessor_config.json)."""
        with atomic_dir(directory) as tmp:
            self.model.save_pretrained(tmp)
            (tmp / "preprocessor_config.json").write_text(json.dumps(
                {"image_mean": self.mean.flatten().tolist(), "image_std": self.std.flatten().tolist(),
                 "size": {"height": self.image_size, "width": self.image_size}}, indent=1))

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str]) -> FrameViT:
        """A `transformers` ViT folder (config.json with model_type "vit" and its weights)."""
        path = Path(source)
        meta_file = path / "config.json"
        if not meta_file.is_file():
            raise ValueError(f"{path}: not a ViT folder (no config.json)")
        if json.loads(meta_file.read_text()).get("model_type") != "vit":
            raise ValueError(f"{path}: config.json is not a ViT's (model_type 'vit')")
        processor = path / "preprocessor_config.json"
        norm = json.loads(processor.read_text()) if processor.is_file() else {}
        model = ViTModel.from_pretrained(path, add_pooling_layer=False)
        return cls(model, tuple(norm.get("image_mean", (0.5,) * 3)), tuple(norm.get("image_std", (0.5,) * 3))).eval()
