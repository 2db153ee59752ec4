"""TinySAM as a SAM 2 model: SAM 2's heads on a TinyViT image encoder, as SAM-I2V builds it.

SAM-I2V (Mei et al., CVPR 2025) upgrades TinySAM, an image SAM with a TinyViT trunk, by adding
SAM 2's memory parts. Its prompt encoder, mask decoder (SAM 2's, with the object-score token and
head), memory encoder and memory attention have SAM 2's structure and names, so `TinySam` is a
`SingleScaleSam` (`refseg.sam.single_scale`) whose vision encoder is TinyViT with SAM's neck
(`refseg.sam.tiny_vit`, the official `trunk_image`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn
from transformers import Sam2VideoConfig

from refseg.sam.single_scale import SingleScaleSam
from refseg.sam.tiny_vit import TinyViT, TinyViTConfig


class TinyViTEncoder(nn.Module):
    """TinyViT + neck (SAM-I2V's `trunk_image` and `FpnNeck`)."""

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__()
        self.trunk = TinyViT(config)

    def forward(self, pixels: Tensor) -> tuple[list[Tensor], Tensor]:
        """pixels [T, 3, S, S] -> (the four stage maps, the neck's embedding [T, out_chans, S/16, S/16])."""
        maps = self.trunk(pixels)
        return maps[:-1], maps[-1]


class TinySam(SingleScaleSam):
    """`Sam2` heads on a TinyViT encoder (see the module docstring)."""

    META_KEY = "tiny_vit"

    def __init__(self, config: Sam2VideoConfig, trunk: TinyViTConfig) -> None:
        if trunk.img_size != config.image_size:
            raise ValueError(f"TinyViT ({trunk.img_size} px) does not fit SAM heads ({config.image_size} px)")
        super().__init__(config, trunk, TinyViTEncoder(trunk))

    @property
    def neck_dim(self) -> int:
        return int(self.trunk_config.out_chans)

    @property
    def tapped_dims(self) -> tuple[int, int]:
        """TinyViT's stages 2 and 3 (both at stride 16)."""
        dims = self.trunk_config.embed_dims
        return int(dims[2]), int(dims[3])

    def trunk_meta(self) -> dict[str, Any]:
        return dataclasses.asdict(self.trunk_config)

    @classmethod
    def from_trunk_meta(cls, config: Sam2VideoConfig, meta: dict[str, Any]) -> TinySam:
        return cls(config, TinyViTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.items()}))
