"""Loading the published SAM-I2V checkpoints (`sam-i2v_8gpu.pt`, `sam-i2v_32gpu.pt`).

A checkpoint is `torch.load(p)["model"]`, the state dict of the official `I2VBase`:

| official prefix | refseg module |
| --- | --- |
| `image_encoder.trunk_image.*` (TinyViT; its unused classifier dropped) | `sam.vision_encoder.trunk.*` |
| `image_encoder.trunk_video.*` (TFI) | `tfi.*`, temporal blocks renamed (`TFI_RULES`) |
| `memory_prompt_generator.*` | `mpg.*` (`MPG_RULES`) |
| everything else: SAM 2 names (`sam_prompt_encoder`, `sam_mask_decoder` without `conv_s0/s1`, `memory_attention`, `memory_encoder`, `obj_ptr_proj`, `maskmem_tpos_enc`, ...) | `sam.*` through `refseg.sam.checkpoint.convert_official_state_dict` |

Sizes are read off the weights where they leave a trace (TinyViT widths, depths, heads, windows
and ratios; TFI widths and loops; the memory attention's depth and FFN width; the MPG's queries);
the input size cannot be and defaults to the published 1024. Every missing, unexpected or
misshapen key is reported by name.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import torch
from torch import Tensor

from refseg.methods.sam_i2v.config import SamI2VConfig
from refseg.methods.sam_i2v.model import SamI2V
from refseg.sam.checkpoint import CheckpointError, convert_official_state_dict, load_state, read_state_dict
from refseg.sam.single_scale import heads_config
from refseg.sam.tiny_sam import TinySam
from refseg.sam.tiny_vit import CLASSIFIER_KEYS, TinyViTConfig

TRUNK, TFI, MPG = "image_encoder.trunk_image.", "image_encoder.trunk_video.", "memory_prompt_generator."
TFI_RULES = [
    (r"^temporal_nets\.(\d+)\.temporal_net\.(\d+)\.c_fc1_\d+\.", r"temporal_nets.\1.blocks.\2.spatial."),
    (r"^temporal_nets\.(\d+)\.temporal_net\.(\d+)\.c_fc2_\d+\.", r"temporal_nets.\1.blocks.\2.temporal."),
    (r"^temporal_nets\.(\d+)\.lns\.(\d+)\.", r"temporal_nets.\1.blocks.\2.norm."),
]
MPG_RULES = [
    (r"^no_memory_prompt_embeddings_fg\.weight$", "no_memory"),
    (r"^query_embedding_fg\.weight$", "queries"),
    (r"^norm_fg_ca\.", "norm_cross."),
    (r"^norm_fg_sa\.", "norm_self."),
    (r"^norm1\.", "norm_mlp."),
    (r"^linear1\.", "mlp_in."),
    (r"^linear2\.", "mlp_out."),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def convert_official_sam_i2v(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An official SAM-I2V state dict in refseg's names (see the module docstring)."""
    out: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(TRUNK):
            name = key[len(TRUNK):]
            if name not in CLASSIFIER_KEYS:
                out[f"sam.vision_encoder.trunk.{name}"] = value
        elif key.startswith(TFI):
            out[f"tfi.{_rename(key[len(TFI):], TFI_RULES)}"] = value
        elif key.startswith(MPG):
            out[f"mpg.{_rename(key[len(MPG):], MPG_RULES)}"] = value
        else:
            rest[key] = value
    out.update({f"sam.{k}": v for k, v in convert_official_state_dict(rest).items()})
    return out


def _count(state: dict[str, Tensor], pattern: str) -> int:
    found = {m.group(1) for k in state if (m := re.match(pattern, k))}
    return len(found)


def tiny_vit_config(state: dict[str, Tensor], image_size: int) -> TinyViTConfig:
    """TinyViT sizes read off official `image_encoder.trunk_image.*` weights."""
    def get(name: str) -> Tensor:
        if TRUNK + name not in state:
            raise CheckpointError(f"not an official SAM-I2V state dict: no {TRUNK + name!r}")
        return state[TRUNK + name]

    dims = (get("patch_embed.seq.2.c.weight").shape[0], *(get(f"layers.{i}.downsample.conv1.c.weight").shape[0]
                                                         for i in range(3)))
    depths = tuple(_count(state, rf"^{re.escape(TRUNK)}layers\.{i}\.blocks\.(\d+)\.") for i in range(4))
    heads, windows = [1], [7]
    for i in (1, 2, 3):
        biases = get(f"layers.{i}.blocks.0.attn.attention_biases")
        heads.append(biases.shape[0])
        windows.append(math.isqrt(biases.shape[1]))
    return TinyViTConfig(
        img_size=image_size, embed_dims=dims, depths=depths, num_heads=tuple(heads), window_sizes=tuple(windows),
        mlp_ratio=get("layers.1.blocks.0.mlp.fc1.weight").shape[0] / dims[1],
        mbconv_expand_ratio=get("layers.0.blocks.0.conv1.c.weight").shape[0] / dims[0],
        local_conv_size=get("layers.1.blocks.0.local_conv.c.weight").shape[-1],
        out_chans=get("neck.0.weight").shape[0])  # type: ignore[arg-type]


def sam_i2v_config(state: dict[str, Tensor], **overrides: Any) -> SamI2VConfig:
    """SAM-I2V module sizes read off official weights (selection and pools: the published)."""
    stem = state.get(TFI + "temporal_stem.weight")
    if stem is None:
        raise CheckpointError(f"not an official SAM-I2V state dict: no {TFI + 'temporal_stem.weight'!r}")
    taps = _count(state, rf"^{re.escape(TFI)}input_linears\.(\d+)\.")
    fields: dict[str, Any] = dict(
        tapped_dims=tuple(state[f"{TFI}input_linears.{i}.weight"].shape[1] for i in range(taps)),
        temporal_dim=stem.shape[0], temporal_patch=stem.shape[2], spatial_patch=stem.shape[3],
        temporal_kernel=state[f"{TFI}temporal_nets.0.temporal_net.0.c_fc2_0.weight"].shape[2],
        temporal_mlp_ratio=state[f"{TFI}temporal_nets.0.temporal_net.0.c_fc1_0.weight"].shape[0] / stem.shape[0],
        temporal_loops=_count(state, rf"^{re.escape(TFI)}temporal_nets\.0\.lns\.(\d+)\."),
        integration_dim=state[f"{TFI}input_linears.0.weight"].shape[0],
        num_queries=state[f"{MPG}query_embedding_fg.weight"].shape[0],
    )
    fields.update(overrides)
    return SamI2VConfig(**fields)


def load_official_sam_i2v(source: str | os.PathLike[str] | dict[str, Tensor], image_size: int = 1024,
                          dtype: torch.dtype = torch.float32, **overrides: Any) -> SamI2V:
    """The published SAM-I2V (TinySAM + upgrader) from an official `.pt` file or its state dict.

    `overrides` are `SamI2VConfig` fields (e.g. selection="uniform") or `Sam2VideoConfig` fields
    of the heads (prefixed `sam2_`, e.g. sam2_memory_attention_num_attention_heads=1)."""
    state = source if isinstance(source, dict) else read_state_dict(source)
    name = "state dict" if isinstance(source, dict) else str(source)
    heads = {k[len("sam2_"):]: v for k, v in overrides.items() if k.startswith("sam2_")}
    method = {k: v for k, v in overrides.items() if not k.startswith("sam2_")}
    config = sam_i2v_config(state, **method)
    layers = _count(state, r"^memory_attention\.layers\.(\d+)\.")
    if not layers or "maskmem_tpos_enc" not in state:
        raise CheckpointError(f"{name}: not an official SAM-I2V state dict (no memory attention layers or maskmem_tpos_enc)")
    heads = dict(memory_attention_num_layers=layers,
                 memory_attention_feed_forward_hidden_size=state["memory_attention.layers.0.linear1.weight"].shape[0],
                 num_maskmem=state["maskmem_tpos_enc"].shape[0],
                 **heads)
    hidden = state["sam_mask_decoder.iou_token.weight"].shape[1]
    sam_config = heads_config(image_size, hidden=hidden, memory_dim=state["maskmem_tpos_enc"].shape[-1], **heads)
    decoder = sam_config.mask_decoder_config
    decoder.mlp_dim = state["sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight"].shape[0]
    decoder.iou_head_hidden_dim = state["sam_mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]
    model = SamI2V(TinySam(sam_config, tiny_vit_config(state, image_size)), config)
    load_state(model, convert_official_sam_i2v(state), name)  # type: ignore[arg-type]
    return model.to(dtype).eval()
