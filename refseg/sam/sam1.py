"""`Sam1`: SAM (v1) for images, from the `transformers` `SamModel` modules (same parameter names,
so a `SamModel` folder loads as is), with extra sparse prompt tokens (EVF-SAM's text token).

SAM's image path as the official predictor runs it: the longest side of the 8-bit image resized
to S (1024) by PIL (bilinear), ImageNet mean / std, zero padding to S x S at the bottom and right; the mask decoder
predicts [B, M, S/4, S/4] logits that are upsampled to S, cropped to the resized image and
resized to the input. SAM has no memory: a video is segmented frame by frame.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import SamConfig, SamModel

from refseg.sam.checkpoint import CheckpointError, read_state_dict
from refseg.sam.preprocess import SAM1

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# The official two-way transformer's LayerNorms keep PyTorch's default eps; `transformers`' SAM
# gives them the config's 1e-6 (right for the other SAM LayerNorms, not for these).
DECODER_TRANSFORMER_EPS = 1e-5


class Sam1(nn.Module):
    """SAM parts: image encoder, prompt encoder, mask decoder (attributes as in `SamModel`)."""

    def __init__(self, config: SamConfig, parts: SamModel | None = None) -> None:
        super().__init__()
        parts = parts if parts is not None else SamModel(config)
        self.config = config
        self.shared_image_embedding = parts.shared_image_embedding
        self.vision_encoder = parts.vision_encoder
        self.prompt_encoder = parts.prompt_encoder
        self.mask_decoder = parts.mask_decoder
        for module in self.mask_decoder.transformer.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = DECODER_TRANSFORMER_EPS

    @property
    def image_size(self) -> int:
        return int(self.config.vision_config.image_size)

    @property
    def hidden_dim(self) -> int:
        return int(self.config.prompt_encoder_config.hidden_size)

    def preprocess(self, frames: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """[B, H, W, 3] uint8 -> pixels [B, 3, S, S] and the resized (h, w) before padding
        (`refseg.sam.preprocess.SAM1`: the official predictor's PIL resize of the 8-bit image)."""
        height, width = frames.shape[1:3]
        return SAM1.pixels(frames, self.image_size), SAM1.content(height, width, self.image_size)

    def encode(self, pixels: Tensor) -> Tensor:
        """[B, 3, S, S] -> image embedding [B, C, S/16, S/16]."""
        return self.vision_encoder(pixels).last_hidden_state

    def decode(self, embed: Tensor, points: Tensor | None = None, labels: Tensor | None = None,
               boxes: Tensor | None = None, extra: Tensor | None = None,
               multimask: bool = False) -> tuple[Tensor, Tensor]:
        """The SAM head for B prompts, one per image embedding.

        Args:
            embed: [B, C, h, w]. points [B, N, 2] (x, y in the S x S input) with labels [B, N]
                (1 positive, 0 negative); boxes [B, 4] (x0, y0, x1, y1); extra [B, K, C] tokens
                after the point / box tokens (the only sparse prompt when nothing else is given).
            multimask: three candidates, the best predicted IoU kept; else SAM's single mask.
        Returns:
            low-res logits [B, 1, 4h, 4w] and predicted IoU [B, 1].
        """
        batch = embed.shape[0]
        sparse, dense = self.prompt_encoder(
            input_points=None if points is None else points[:, None],
            input_labels=None if labels is None else labels[:, None],
            input_boxes=None if boxes is None else boxes[:, None],
            input_masks=None,
        )
        if dense.shape[0] != batch:
            dense = dense.expand(batch, -1, -1, -1)
        if extra is not None:
            extra = extra[:, None].to(dense.dtype)
            sparse = extra if sparse is None else torch.cat([sparse, extra], dim=2)
        if sparse is None:
            raise ValueError("Sam1.decode: give points, a box or extra tokens")
        image_pe = self.get_image_wide_positional_embeddings().expand(batch, -1, -1, -1)
        masks, iou = self.mask_decoder(image_embeddings=embed, image_positional_embeddings=image_pe,
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=multimask)[:2]
        masks, iou = masks[:, 0], iou[:, 0]  # [B, M, 4h, 4w], [B, M]
        best = iou.argmax(dim=1) if multimask else torch.zeros(batch, dtype=torch.long, device=iou.device)
        rows = torch.arange(batch, device=iou.device)
        return masks[rows, best][:, None], iou[rows, best][:, None]

    def get_image_wide_positional_embeddings(self) -> Tensor:
        """[1, C, h, w] dense positional encoding of the image grid at the cell centres."""
        side = int(self.config.prompt_encoder_config.image_embedding_size)
        table = self.shared_image_embedding.positional_embedding
        centres = (torch.arange(side, device=table.device, dtype=table.dtype) + 0.5) / side
        grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)  # [h, w, (x, y)]
        return self.shared_image_embedding(grid).permute(2, 0, 1)[None]

    def postprocess(self, low_res: Tensor, size: tuple[int, int]) -> Tensor:
        """[B, 1, 4h, 4w] logits -> [B, H, W] at the input size (SAM's postprocess_masks:
        upsampled to S, cropped to the resized image, resized; `SAM1.logits`)."""
        return SAM1.logits(low_res.float(), size[0], size[1], self.image_size)[:, 0]


_OFFICIAL_RULES = [
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.blocks\.", ".layers."),
    (r"\.neck\.0\.", ".neck.conv1."), (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."), (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."), (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."), (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.point_embeddings\.", ".point_embed."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."), (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    (r"\.norm(\d|_final_attn)", r".layer_norm\1"),
    (r"(_head|_mlps\.\d+)\.layers\.0\.", r"\1.proj_in."),
    (r"(_head|_mlps\.\d+)\.layers\.1\.", r"\1.layers.0."),
    (r"(_head|_mlps\.\d+)\.layers\.2\.", r"\1.proj_out."),
]


def convert_official_sam1(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official `segment_anything` names -> `SamModel` names (the prompt encoder's Gaussian table
    is also the model's `shared_image_embedding`, as SAM has one table). The pixel mean / std
    buffers are dropped."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in ("pixel_mean", "pixel_std"):
            continue
        if not key.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")):
            raise CheckpointError(f"{key}: not a SAM checkpoint key")
        name = key
        for pattern, repl in _OFFICIAL_RULES:
            name = re.sub(pattern, repl, name)
        out[name] = value
    table = out.get("prompt_encoder.shared_embedding.positional_embedding")
    if table is not None:
        out["shared_image_embedding.positional_embedding"] = table
    return out


def load_sam1(source: str | Path, config: SamConfig | None = None) -> Sam1:
    """SAM from a `SamModel` folder, or an official `.pth` (its config given, or ViT-B/L/H read
    from the encoder width)."""
    path = Path(source)
    if path.is_dir():
        hf = SamModel.from_pretrained(path)
        return Sam1(hf.config, hf).eval()
    if not path.is_file():
        raise CheckpointError(f"{source}: no such file or directory")
    state = convert_official_sam1(read_state_dict(path))
    if config is None:
        width = state["vision_encoder.patch_embed.projection.weight"].shape[0]
        if width not in (768, 1024, 1280):
            raise CheckpointError(f"{source}: unknown SAM size (encoder width {width}); pass its config")
        config = sam1_config(width)
    model = Sam1(config)
    expected = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
             if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatches (checkpoint vs config) " + ", ".join(wrong[:3]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{source}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return model.eval()


def sam1_config(width: int, image_size: int = 1024) -> SamConfig:
    """The published SAM ViT-B / L / H configs (by encoder width; window 14, patch 16), at any
    input side (a multiple of 16; the published checkpoints are 1024)."""
    depth, heads, globals_ = {768: (12, 12, [2, 5, 8, 11]), 1024: (24, 16, [5, 11, 17, 23]),
                              1280: (32, 16, [7, 15, 23, 31])}[width]
    vision = dict(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                  global_attn_indexes=globals_, mlp_dim=width * 4, image_size=image_size)
    return SamConfig(vision_config=vision, prompt_encoder_config=dict(image_size=image_size),
                     image_embedding_size=image_size // 16)
