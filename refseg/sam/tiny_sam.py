"""TinySAM as a SAM 2 model: SAM 2's heads on a TinyViT image encoder, as SAM-I2V builds it.

SAM-I2V (Mei et al., CVPR 2025) upgrades TinySAM, an image SAM with a TinyViT trunk, by adding
SAM 2's memory parts. Its prompt encoder, mask decoder (SAM 2's, with the object-score token and
head), memory encoder and memory attention have SAM 2's structure and names, so `TinySam` is a
`Sam2` whose vision encoder is replaced:

- `vision_encoder` is a `TinyViTEncoder`: TinyViT with SAM's neck (`refseg.sam.tiny_vit`) and
  the sine position encoding SAM 2's neck adds; no feature pyramid.
- The mask decoder gets no high-resolution features (`use_high_res_features_in_sam: false` in
  SAM-I2V): `encode_images` hands it zeros, which `transformers`' decoder adds where SAM 2 adds
  the projected stride-4 and stride-8 maps, so its upscaling is SAM's plain one; the projections
  (`conv_s0`, `conv_s1`) do not exist.

The `Sam2VideoConfig` keeps describing the heads (image size, memory sizes); its Hiera vision
config describes a stand-in no module follows. Save and load through the method that uses the model
(`refseg.methods.sam_i2v`), not `save_pretrained` / `transformers`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import Sam2VideoConfig
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoPositionEmbeddingSine

from refseg.sam.config import build_config
from refseg.sam.image_encoder import ImageFeatures, StageHook
from refseg.sam.model import Sam2
from refseg.sam.tiny_vit import TinyViT, TinyViTConfig

# The smallest Hiera `transformers` builds: a stand-in the TinyViT encoder replaces at once.
_STAND_IN_TRUNK: dict[str, Any] = dict(
    hidden_size=8, embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
    blocks_per_stage=[1, 1, 1, 1], global_attention_blocks=[2], window_size_per_stage=[8, 4, 14, 7],
    window_positional_embedding_background_size=[7, 7])


def tiny_sam_config(image_size: int = 1024, hidden: int = 256, memory_dim: int = 64, **overrides: Any) -> Sam2VideoConfig:
    """The heads of SAM-I2V's TinySAM at `image_size` (a multiple of 32): SAM 2.1's prompt
    encoder, decoder and memory encoder, and SAM-I2V's memory attention (4 layers, 1 head, FFN
    512), all `hidden` wide (C, 256 published) with memories `memory_dim` wide (64).
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


class TinyViTEncoder(nn.Module):
    """TinyViT + neck + the sine position encoding of a `hidden`-wide embedding (SAM-I2V's
    `trunk_image` and `FpnNeck`)."""

    def __init__(self, config: TinyViTConfig, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.trunk = TinyViT(config)
        self.position_encoding = Sam2VideoPositionEmbeddingSine(num_position_features=hidden // 2, normalize=True)

    def forward(self, pixels: Tensor) -> tuple[list[Tensor], Tensor]:
        """pixels [T, 3, S, S] -> (the five TinyViT maps, `TinyViT.forward`; pos [T, C, h, w])."""
        maps = self.trunk(pixels)
        t, _, h, w = maps[-1].shape
        pos = self.position_encoding((t, self.hidden, h, w), pixels.device, maps[-1].dtype)
        return maps, pos


class TinySam(Sam2):
    """`Sam2` heads on a TinyViT encoder (see the module docstring)."""

    def __init__(self, config: Sam2VideoConfig, trunk: TinyViTConfig) -> None:
        if trunk.img_size != config.image_size:
            raise ValueError(f"TinyViT ({trunk.img_size} px) does not fit SAM heads ({config.image_size} px)")
        super().__init__(config)
        self.trunk_config = trunk
        self.vision_encoder = TinyViTEncoder(trunk, self.hidden_dim)
        self.mask_decoder.conv_s0 = None
        self.mask_decoder.conv_s1 = None

    def encode_images(self, pixel_values: Tensor, hook: StageHook | None = None) -> ImageFeatures:
        """Features of T frames [T, 3, S, S]: TinyViT's neck output as the embedding, its five maps
        as `trunk`, zero high-resolution features (no stage hook: TinyViT is not Hiera). The neck
        is `out_chans` wide; where that is not the heads' width C, a method must bring the
        embedding to C (SAM-I2V's TFI, whose output replaces it)."""
        if hook is not None:
            raise ValueError("TinySam: stage hooks need a Hiera trunk")
        maps, pos = self.vision_encoder(pixel_values)
        t, _, h, w = maps[-1].shape
        c, like = self.hidden_dim, maps[-1]
        zeros = [torch.zeros(t, c // 8, 4 * h, 4 * w, dtype=like.dtype, device=like.device),
                 torch.zeros(t, c // 4, 2 * h, 2 * w, dtype=like.dtype, device=like.device)]
        return ImageFeatures(high_res=zeros, embed=maps[-1], pos=pos, trunk=maps[:-1])

    def to_transformers(self):  # type: ignore[override]
        raise TypeError("TinySam has no transformers counterpart; save the SAM-I2V model that holds it")
