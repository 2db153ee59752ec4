"""SAM (v1) as a SAM 2 model: SAM 2's heads on SAM's ViT image encoder, a carrier SAM-I2V can upgrade.

SAM-I2V (Mei et al., CVPR 2025, Sec. 3.1) holds that any image SAM can be upgraded into a
promptable video segmenter. `ViTSam` is the original SAM as such a carrier: a
`SingleScaleSam` (`refseg.sam.single_scale`) whose encoder is SAM's ViT with its neck, and whose
prompt encoder and mask decoder carry SAM's weights (`from_sam1`). What SAM does not have starts
afresh, as SAM-I2V starts it on TinySAM: the decoder's object-score token and head, the memory
parts, and the no-memory embedding, which `from_sam1` sets to zero so that a prompted frame's
embedding is SAM's own.

Three of SAM 2's rules differ from SAM's and apply from the start: a box prompt is followed by a
"not a point" token, the object-score token joins the decoder's tokens, and the predicted IoU passes
through a sigmoid (SAM's head regresses it
directly; the order of the candidates, and so SAM's multimask choice, is kept). Frames are
preprocessed as SAM-I2V preprocesses them (SAM 2's square resize), not with SAM's padding.

The TFI taps the ViT at two depths (`tap_layers`): the output of the second-to-last
global-attention block and of the last block, both [T, width, S/16, S/16], as it taps the last two
stages of TinyViT and Hiera.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Sam2VideoConfig, SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionEncoder

from refseg.sam.checkpoint import CheckpointError
from refseg.sam.sam1 import Sam1
from refseg.sam.single_scale import SingleScaleSam, heads_config

# SAM's decoder names -> SAM 2's (same modules in `transformers`, renamed).
_DECODER_RULES = [(r"\.out_proj\.", ".o_proj."), (r"\.mlp\.lin1\.", ".mlp.proj_in."), (r"\.mlp\.lin2\.", ".mlp.proj_out.")]
# Heads config fields copied from SAM's (same meaning in both `transformers` configs).
_DECODER_FIELDS = ("mlp_dim", "num_attention_heads", "num_hidden_layers", "attention_downsample_rate",
                   "iou_head_depth", "iou_head_hidden_dim", "num_multimask_outputs")
# Parts of the carrier SAM does not have (left at SAM 2's initialisation; `no_memory_embedding` zeroed).
NEW_PARTS = ("mask_decoder.obj_score_token.", "mask_decoder.pred_obj_score_head.", "memory_", "mask_downsample.",
             "no_memory_", "no_object_pointer", "occlusion_spatial_embedding_parameter", "object_pointer_proj.",
             "temporal_positional_encoding_projection_layer.")


def tap_layers(config: SamVisionConfig) -> tuple[int, int]:
    """The ViT blocks whose outputs the TFI taps: the second-to-last global-attention block (the
    block before the last one if there is a single global block) and the last block."""
    last = config.num_hidden_layers - 1
    globals_ = [i for i in config.global_attn_indexes if i < last]
    return (globals_[-1] if globals_ else last - 1), last


class SamViTEncoder(nn.Module):
    """SAM's ViT + neck (`transformers`' `SamVisionEncoder` as `vit`), run block by block so that
    the tapped blocks' outputs come out too; the embedding equals `SamVisionEncoder`'s exactly."""

    def __init__(self, config: SamVisionConfig) -> None:
        super().__init__()
        self.vit = SamVisionEncoder(config)
        self.taps = tap_layers(config)

    def forward(self, pixels: Tensor) -> tuple[list[Tensor], Tensor]:
        """pixels [T, 3, S, S] -> (the tapped blocks' outputs, each [T, width, S/16, S/16]; the
        neck's embedding [T, output_channels, S/16, S/16])."""
        vit = self.vit
        hidden = vit.patch_embed(pixels)
        if vit.pos_embed is not None:
            hidden = hidden + vit.pos_embed
        taps = []
        for index, layer in enumerate(vit.layers):
            hidden = layer(hidden)
            if index in self.taps:
                taps.append(hidden.permute(0, 3, 1, 2))
        return taps, vit.neck(hidden)


class ViTSam(SingleScaleSam):
    """`Sam2` heads on SAM's ViT (see the module docstring)."""

    META_KEY = "sam1_vision"

    def __init__(self, config: Sam2VideoConfig, trunk: SamVisionConfig) -> None:
        if trunk.image_size != config.image_size:
            raise ValueError(f"SAM's ViT ({trunk.image_size} px) does not fit SAM 2 heads ({config.image_size} px)")
        super().__init__(config, trunk, SamViTEncoder(trunk))

    @property
    def neck_dim(self) -> int:
        return int(self.trunk_config.output_channels)

    @property
    def tapped_dims(self) -> tuple[int, int]:
        width = int(self.trunk_config.hidden_size)
        return width, width

    def trunk_meta(self) -> dict[str, Any]:
        return self.trunk_config.to_dict()

    @classmethod
    def from_trunk_meta(cls, config: Sam2VideoConfig, meta: dict[str, Any]) -> ViTSam:
        return cls(config, SamVisionConfig(**meta))


def sam1_heads_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A `Sam1` state dict in `ViTSam` names: the encoder under `vision_encoder.vit.`, SAM's four
    point embeddings stacked into SAM 2's one table, the decoder's attention and MLP layers renamed."""
    out: dict[str, Tensor] = {}
    points: dict[int, Tensor] = {}
    for key, value in state.items():
        match = re.fullmatch(r"prompt_encoder\.point_embed\.(\d+)\.weight", key)
        if match:
            points[int(match.group(1))] = value[0]
        elif key.startswith("vision_encoder."):
            out["vision_encoder.vit." + key[len("vision_encoder."):]] = value
        else:
            name = key
            for pattern, repl in _DECODER_RULES:
                name = re.sub(pattern, repl, name)
            out[name] = value
    if points:
        out["prompt_encoder.point_embed.weight"] = torch.stack([points[i] for i in sorted(points)])
    return out


def from_sam1(sam1: Sam1, memory_dim: int | None = None) -> ViTSam:
    """The `ViTSam` carrying a SAM's encoder, prompt encoder and decoder weights (the heads sized
    from SAM's config, memories `memory_dim` wide: by default a quarter of the width, SAM 2's 64
    for SAM's 256); `NEW_PARTS` start afresh."""
    config = sam1.config
    hidden = sam1.hidden_dim
    memory_dim = hidden // 4 if memory_dim is None else memory_dim
    if config.vision_config.num_pos_feats != hidden // 2:
        raise CheckpointError(f"SAM's position table has {config.vision_config.num_pos_feats} frequencies; "
                              f"SAM 2's heads need hidden / 2 = {hidden // 2}")
    heads = heads_config(sam1.image_size, hidden=hidden, memory_dim=memory_dim)
    for field in _DECODER_FIELDS:
        setattr(heads.mask_decoder_config, field, getattr(config.mask_decoder_config, field))
    heads.prompt_encoder_config.mask_input_channels = config.prompt_encoder_config.mask_input_channels
    carrier = ViTSam(heads, config.vision_config)
    state = sam1_heads_state(sam1.state_dict())
    expected = carrier.state_dict()
    misshapen = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
                 if k in expected and v.shape != expected[k].shape]
    if misshapen:
        raise CheckpointError("SAM -> SAM 2 heads: shape mismatches " + ", ".join(misshapen[:3]))
    missing, unexpected = carrier.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(NEW_PARTS)]
    if missing or unexpected:
        raise CheckpointError(f"SAM -> SAM 2 heads: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    with torch.no_grad():
        carrier.no_memory_embedding.zero_()
    return carrier.eval()
