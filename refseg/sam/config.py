"""SAM 2 configurations: the published Hiera sizes, any input resolution, and tiny test sizes.

All configs are plain `transformers.Sam2VideoConfig` objects, so a model directory written by
refseg (`config.json` + `model.safetensors`) is also a valid `transformers` SAM 2 video model.
"""

from __future__ import annotations

from typing import Any

from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VisionConfig

# Hiera trunk settings of the four published SAM 2 / SAM 2.1 sizes, as the official configs
# (`sam2/configs/sam2{,.1}/*_hiera_{t,s,b+,l}.yaml`, with `Hiera`'s defaults where a config is
# silent) give them; the same for SAM 2 and SAM 2.1. `heads` is the first stage's head count,
# doubled at every stage (Hiera's `head_mul=2`): tiny and small start at 1, base+ and large at 2.
HIERA_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=96, heads=1, blocks_per_stage=[1, 2, 7, 2], global_attention_blocks=[5, 7, 9],
                 window_positional_embedding_background_size=[7, 7], window_size_per_stage=[8, 4, 14, 7]),
    "small": dict(hidden_size=96, heads=1, blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13],
                  window_positional_embedding_background_size=[7, 7], window_size_per_stage=[8, 4, 14, 7]),
    "base_plus": dict(hidden_size=112, heads=2, blocks_per_stage=[2, 3, 16, 3], global_attention_blocks=[12, 16, 20],
                      window_positional_embedding_background_size=[14, 14], window_size_per_stage=[8, 4, 14, 7]),
    "large": dict(hidden_size=144, heads=2, blocks_per_stage=[2, 6, 36, 4], global_attention_blocks=[23, 33, 43],
                  window_positional_embedding_background_size=[7, 7], window_size_per_stage=[8, 4, 16, 8]),
}


def sam2_config(
    size: str = "tiny",
    image_size: int = 1024,
    version: str = "2.1",
    **overrides: Any,
) -> Sam2VideoConfig:
    """Config of a published SAM 2 size (`tiny`, `small`, `base_plus`, `large`) at any input size.

    `image_size` must be a multiple of 32 (the Hiera stride times the window pooling); the feature
    sizes of every level and of the memory-attention RoPE grid follow from it. `version` "2.1"
    enables the object-pointer temporal encoding and the occlusion spatial embedding, "2" does not.
    `overrides` are `Sam2VideoConfig` fields (e.g. `num_maskmem`, `max_cond_frame_num`).
    """
    if size not in HIERA_SIZES:
        raise ValueError(f"unknown SAM 2 size {size!r}; expected one of {sorted(HIERA_SIZES)}")
    trunk = dict(HIERA_SIZES[size])
    width, heads = trunk["hidden_size"], trunk.pop("heads")
    trunk.update(embed_dim_per_stage=[width, 2 * width, 4 * width, 8 * width],
                 num_attention_heads_per_stage=[heads, 2 * heads, 4 * heads, 8 * heads])
    return build_config(trunk, image_size=image_size, version=version, **overrides)


def tiny_test_config(image_size: int = 128, **overrides: Any) -> Sam2VideoConfig:
    """A random-weight SAM 2 small enough for unit tests (about 3 M parameters at 128 px)."""
    trunk = dict(hidden_size=16, embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 2, 4, 8],
                 blocks_per_stage=[1, 1, 2, 1], global_attention_blocks=[3], window_size_per_stage=[8, 4, 14, 7],
                 window_positional_embedding_background_size=[7, 7])
    small = dict(memory_attention_num_layers=2, memory_attention_feed_forward_hidden_size=256,
                 memory_fuser_intermediate_dim=256, memory_fuser_num_layers=1)
    small.update(overrides)
    config = build_config(trunk, image_size=image_size, version="2.1", **small)
    config.mask_decoder_config.mlp_dim = 256
    config.mask_decoder_config.iou_head_hidden_dim = 64
    return config


def synth_small_config(image_size: int = 256) -> Sam2VideoConfig:
    """The small SAM 2 refseg trains from scratch on SynthRef (Hiera widths 32-256, 7.0 M
    parameters): the frozen backbone of the embedded default model."""
    trunk = dict(hidden_size=32, embed_dim_per_stage=[32, 64, 128, 256], num_attention_heads_per_stage=[1, 2, 4, 8],
                 blocks_per_stage=[1, 2, 5, 1], global_attention_blocks=[5, 7], window_size_per_stage=[8, 4, 8, 8],
                 window_positional_embedding_background_size=[7, 7])
    config = build_config(trunk, image_size=image_size, version="2.1", memory_attention_num_layers=2,
                          memory_attention_feed_forward_hidden_size=512, memory_fuser_intermediate_dim=512,
                          memory_fuser_num_layers=2)
    config.mask_decoder_config.mlp_dim = 512
    return config


def build_config(trunk: dict[str, Any], image_size: int, version: str, **overrides: Any) -> Sam2VideoConfig:
    """Assemble a `Sam2VideoConfig` from Hiera trunk fields and an input resolution."""
    if image_size % 32:
        raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
    if version not in ("2", "2.1"):
        raise ValueError(f"SAM 2 version must be '2' or '2.1', got {version!r}")
    backbone = Sam2HieraDetConfig(image_size=[image_size, image_size], **trunk)
    dims = trunk["embed_dim_per_stage"]
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=list(reversed(dims)),
        backbone_feature_sizes=[[image_size // s, image_size // s] for s in (4, 8, 16)],
    )
    grid = image_size // 16
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=dict(image_size=image_size),
        image_size=image_size,
        memory_attention_rope_feat_sizes=[grid, grid],
        enable_temporal_pos_encoding_for_object_pointers=version == "2.1",
        enable_occlusion_spatial_embedding=version == "2.1",
    )
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"unknown SAM 2 config field {key!r}")
        setattr(config, key, value)
    return config
