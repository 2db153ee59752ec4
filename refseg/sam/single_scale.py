"""SAM 2's heads on a single-scale image SAM encoder: the carriers SAM-I2V upgrades.

SAM-I2V (Mei et al., CVPR 2025, Sec. 3.1) turns an *image* SAM into a video segmenter by adding
SAM 2's memory parts around it. An image SAM's encoder gives one stride-16 embedding (SAM's neck
output) and no feature pyramid, so a `SingleScaleSam` is a `Sam2` whose vision encoder is replaced:

- `vision_encoder(pixels)` returns the trunk maps a method may tap (channels first) and the
  embedding [T, C, h, w]; the sine position encoding SAM 2's neck adds is computed here.
- The mask decoder gets no high-resolution features (`use_high_res_features_in_sam: false` in
  SAM-I2V): `encode_images` hands it zeros, which `transformers`' decoder adds where SAM 2 adds the
  projected stride-4 and stride-8 maps, so its upscaling is SAM's plain one; the projections
  (`conv_s0`, `conv_s1`) do not exist.

Carriers: `refseg.sam.tiny_sam.TinySam` (TinyViT, the paper's) and `refseg.sam.vit_sam.ViTSam`
(SAM v1's ViT). The `Sam2VideoConfig` describes the heads (image size, memory sizes); its Hiera
vision config describes a stand-in no module follows. Save and load through the method that uses
the model (`refseg.methods.sam_i2v`), not `save_pretrained` / `transformers`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import Sam2VideoConfig
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoPositionEmbeddingSine

from refseg.sam.config import build_config
from refseg.sam.image_encoder import ImageFeatures, StageHook
from refseg.sam.model import Sam2

# The smallest Hiera `transformers` builds: a stand-in the carrier's encoder replaces at once.
_STAND_IN_TRUNK: dict[str, Any] = dict(
    hidden_size=8, embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
    blocks_per_stage=[1, 1, 1, 1], global_attention_blocks=[2], window_size_per_stage=[8, 4, 14, 7],
    window_positional_embedding_background_size=[7, 7])


def heads_config(image_size: int = 1024, hidden: int = 256, memory_dim: int = 64, **overrides: Any) -> Sam2VideoConfig:
    """The SAM 2 heads SAM-I2V puts on an image SAM at `image_size` (a multiple of 32): SAM 2.1's
    prompt encoder, decoder and memory encoder, and SAM-I2V's memory attention (4 layers, 1 head,
    FFN 512), all `hidden` wide (C, 256 published) with memories `memory_dim` wide (64).
    `overrides` are `Sam2VideoConfig` fields."""
    heads = dict(memory_attention_num_layers=4, memory_attention_feed_forward_hidden_size=512,
                 memory_attention_num_attention_heads=1, memory_attention_hidden_size=hidden,
                 memory_encoder_hidden_size=hidden, mask_downsampler_embed_dim=hidden, memory_fuser_embed_dim=hidden,
                 memory_fuser_intermediate_dim=4 * hidden, memory_encoder_output_channels=memory_dim)
    heads.update(overrides)
    config = build_config(dict(_STAND_IN_TRUNK), image_size=image_size, version="2.1", **heads)
    config.vision_config.fpn_hidden_size = hidden
    config.prompt_encoder_config.hidden_size = hidden
    config.mask_decoder_config.hidden_size = hidden
    return config


class SinePosition(nn.Module):
    """The sine position encoding SAM 2's neck gives a [T, C, h, w] embedding (C = `hidden`)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.encoding = Sam2VideoPositionEmbeddingSine(num_position_features=hidden // 2, normalize=True)

    def forward(self, embed: Tensor) -> Tensor:
        t, _, h, w = embed.shape
        return self.encoding((t, self.hidden, h, w), embed.device, embed.dtype)


class SingleScaleSam(Sam2, ABC):
    """`Sam2` heads on a single-scale encoder (see the module docstring). A subclass sets
    `META_KEY` (where a saved model records `trunk_config`) and builds its encoder from it."""

    META_KEY: ClassVar[str]

    def __init__(self, config: Sam2VideoConfig, trunk_config: Any, encoder: nn.Module) -> None:
        super().__init__(config)
        self.trunk_config = trunk_config
        self.vision_encoder = encoder
        self.position = SinePosition(self.hidden_dim)
        self.mask_decoder.conv_s0 = None
        self.mask_decoder.conv_s1 = None

    @property
    @abstractmethod
    def neck_dim(self) -> int:
        """Channels of the encoder's embedding (the heads' width C unless a method maps it there)."""

    @property
    @abstractmethod
    def tapped_dims(self) -> tuple[int, int]:
        """Channels of the last two `trunk` maps (what SAM-I2V's TFI taps besides the embedding)."""

    @abstractmethod
    def trunk_meta(self) -> dict[str, Any]:
        """`trunk_config` as plain JSON values (what `from_trunk_meta` reads back)."""

    @classmethod
    @abstractmethod
    def from_trunk_meta(cls, config: Sam2VideoConfig, meta: dict[str, Any]) -> SingleScaleSam:
        """A random-weight carrier with the heads of `config` and the trunk `meta` records."""

    def encode_images(self, pixel_values: Tensor, hook: StageHook | None = None) -> ImageFeatures:
        """Features of T frames [T, 3, S, S]: the encoder's embedding, its tapped maps as `trunk`,
        zero high-resolution features (no stage hook: the trunk is not Hiera). Where the embedding
        is not the heads' width C, a method must bring it to C (SAM-I2V's TFI, whose output
        replaces it)."""
        if hook is not None:
            raise ValueError(f"{type(self).__name__}: stage hooks need a Hiera trunk")
        trunk, embed = self.vision_encoder(pixel_values)
        t, _, h, w = embed.shape
        c = self.hidden_dim
        zeros = [torch.zeros(t, c // 8, 4 * h, 4 * w, dtype=embed.dtype, device=embed.device),
                 torch.zeros(t, c // 4, 2 * h, 2 * w, dtype=embed.dtype, device=embed.device)]
        return ImageFeatures(high_res=zeros, embed=embed, pos=self.position(embed), trunk=trunk)

    def to_transformers(self):  # type: ignore[override]
        raise TypeError(f"{type(self).__name__} has no transformers counterpart; save the SAM-I2V model that holds it")
