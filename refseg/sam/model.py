"""`Sam2`: the differentiable SAM 2 parts, assembled from the `transformers` modules.

`transformers.Sam2VideoModel` runs its tracking loop under `torch.inference_mode`, keeps every
frame and every output of a video, and mixes tracking, memory selection and prompting in one
class. refseg keeps only its parts (the same module classes, so the same parameter names and
checkpoints) and writes the loop itself in `refseg.engine`. The state dict of `Sam2` is exactly
that of `Sam2VideoModel`: `save_pretrained` writes a directory `transformers` loads as is.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import Sam2VideoConfig, Sam2VideoModel

from refseg.sam.image_encoder import ImageFeatures, StageHook, encode_images


class Sam2(nn.Module):
    """SAM 2 parts: image encoder, prompt encoder, mask decoder, memory encoder, memory
    attention and object-pointer projection, with the learned embeddings that glue them.

    Attributes mirror `Sam2VideoModel` one to one (same names, same shapes).
    """

    def __init__(self, config: Sam2VideoConfig, parts: Sam2VideoModel | None = None) -> None:
        """Wrap `parts`' modules, or build a fresh random model (`parts=None`) initialised as the
        official SAM 2 initialises one (see `init_like_sam2`)."""
        super().__init__()
        fresh = parts is None
        parts = parts if parts is not None else Sam2VideoModel(config)
        self.config = config
        # the dtype sessions compute in unless told otherwise (`Session(dtype=...)`, `refseg.load(dtype=...)`)
        self.inference_dtype = torch.float32
        self.shared_image_embedding = parts.shared_image_embedding
        self.vision_encoder = parts.vision_encoder
        self.prompt_encoder = parts.prompt_encoder
        self.mask_decoder = parts.mask_decoder
        self.memory_attention = parts.memory_attention
        self.memory_encoder = parts.memory_encoder
        self.object_pointer_proj = parts.object_pointer_proj
        self.temporal_positional_encoding_projection_layer = parts.temporal_positional_encoding_projection_layer
        self.mask_downsample = parts.mask_downsample
        self.no_memory_embedding = parts.no_memory_embedding
        self.no_memory_positional_encoding = parts.no_memory_positional_encoding
        self.memory_temporal_positional_encoding = parts.memory_temporal_positional_encoding
        self.no_object_pointer = parts.no_object_pointer
        self.occlusion_spatial_embedding_parameter = parts.occlusion_spatial_embedding_parameter
        width = config.memory_encoder_output_channels
        for layer in self.memory_attention.layers:
            attn = layer.cross_attn_image
            if attn.k_proj.in_features != width:  # `transformers` builds them for 64-wide memories only
                attn.k_proj = nn.Linear(width, attn.internal_dim)
                attn.v_proj = nn.Linear(width, attn.internal_dim)
                attn.kv_in_dim = width
        if fresh:
            self.init_like_sam2()

    @torch.no_grad()
    def init_like_sam2(self) -> None:
        """Re-initialise what `transformers`' random init gets wrong for training from scratch.

        - The clicks' positional encoding (prompt encoder) and the image's dense positional
          encoding must come from one random Gaussian table, as in SAM where the prompt encoder
          owns it and the mask decoder reads it: a click can only find its location in the
          image if both are encoded alike. `transformers` draws two independent tables (a
          converted checkpoint stores the same table twice, so loading is unaffected).
        - Layers start from PyTorch's own initialisation, as in the official SAM 2, instead of
          `transformers`' normal(0.02): with 0.02 the mask decoder's products (hypernetwork
          token x upscaled embedding) start near zero and learn slowly.
        - Learned embeddings (no-memory embedding and position, temporal memory encodings,
          no-object pointer, occlusion embedding) start trunc-normal(0.02) instead of zero, and
          the memory fuser's layer scales at 1e-6, as the official SAM 2 starts them.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding, nn.LayerNorm)):
                module.reset_parameters()
        self.prompt_encoder.shared_embedding.positional_embedding.copy_(self.shared_image_embedding.positional_embedding)
        for embedding in (self.no_memory_embedding, self.no_memory_positional_encoding,
                          self.memory_temporal_positional_encoding, self.no_object_pointer,
                          self.occlusion_spatial_embedding_parameter):
            if embedding is not None:
                nn.init.trunc_normal_(embedding, std=0.02)
        for block in self.memory_encoder.memory_fuser.layers:
            if block.scale is not None:
                block.scale.fill_(1e-6)
        self.init_local_memory_readout()

    @torch.no_grad()
    def init_local_memory_readout(self, peak_logit: float = 32.0) -> None:
        """Start the memory attention's readout local: each position of the current frame reads
        the memories at and around its own position (objects move little between frames).

        From a random init the memory cross-attention is uniform over the memory grid, so the
        decoder only learns what the tracked object looks like, not where it was, and learning
        where takes long (measured on SynthRef: dice loss on tracked frames flat for 200 steps;
        with this init it drops within 20; docs/RESULTS.md). Queries and keys get one shared bias
        c on the RoPE pairs of the highest frequencies (a quarter of the pairs), so the initial
        logit between a query at p and a memory at p' is c . R(p - p') c / sqrt(d), largest at
        p = p' (`peak_logit` there) and falling off within a cell or two: at 16 x 16 about 60 %
        of the attention falls on the same cell and the rest on its 3 x 3 neighbours. Training
        changes these biases freely; object-pointer keys (no RoPE) get the bias too.
        """
        attention = self.memory_attention
        cos, _ = attention.rotary_emb(attention.position_ids, attention.position_ids)
        cos = cos.reshape(-1, cos.shape[-1])  # [h*w, head_dim]
        head_dim = cos.shape[-1]
        pairs = max(1, head_dim // 8)  # a quarter of the head_dim / 2 rotation pairs
        fastest = cos[:, 0::2].var(dim=0).argsort(descending=True)[:pairs]  # pairs that turn fastest
        c = torch.zeros(head_dim)
        c[2 * fastest] = (peak_logit * head_dim**0.5 / pairs) ** 0.5
        for layer in attention.layers:
            cross = layer.cross_attn_image
            bias = c.repeat(cross.q_proj.out_features // head_dim).to(cross.q_proj.bias)
            cross.q_proj.bias.copy_(bias)
            cross.k_proj.bias.copy_(bias)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """S, the square model input side."""
        return int(self.config.image_size)

    @property
    def hidden_dim(self) -> int:
        """C, the channels of the image embedding and of prompt tokens (256)."""
        return int(self.config.vision_config.fpn_hidden_size)

    @property
    def num_maskmem(self) -> int:
        """N, spatial memories attended to: the prompted frames plus N - 1 recent frames."""
        return int(self.config.num_maskmem)

    @property
    def max_object_pointers(self) -> int:
        """M, object pointers attended to: prompted frames plus M - 1 recent frames."""
        return int(self.config.max_object_pointers_in_encoder)

    # -- building blocks -------------------------------------------------------------------------
    def encode_images(self, pixel_values: Tensor, hook: StageHook | None = None) -> ImageFeatures:
        """Image features of T frames [T, 3, S, S], with an optional hook after each Hiera stage."""
        return encode_images(self.vision_encoder, self.mask_decoder, pixel_values, hook)

    def image_positional_embeddings(self) -> Tensor:
        """[1, C, h, w] dense positional encoding the mask decoder adds to the image embedding."""
        h, w = self.prompt_encoder.image_embedding_size
        table = self.shared_image_embedding.positional_embedding
        ys = (torch.arange(h, device=table.device, dtype=table.dtype) + 0.5) / h
        xs = (torch.arange(w, device=table.device, dtype=table.dtype) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [h, w, 2] as (x, y)
        return self.shared_image_embedding(grid).permute(2, 0, 1)[None]

    # -- checkpoints -----------------------------------------------------------------------------
    def to_transformers(self) -> Sam2VideoModel:
        """A `Sam2VideoModel` holding these weights, in their dtype (shares nothing)."""
        model = Sam2VideoModel(self.config).to(self.no_memory_embedding.dtype)
        model.load_state_dict(self.state_dict(), strict=True)
        return model

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write `config.json` + `model.safetensors`, loadable by refseg and by `transformers`."""
        self.to_transformers().save_pretrained(Path(directory))
