"""SAM 2 memory: the memory encoder and memory attention (conditioning a frame on its past).

SAM 2 paper, Sec. 4 "Memory encoder" and "Memory attention": after each frame the predicted
mask (sigmoid of its logits, or binarised on prompted frames) is downsampled and fused with the
frame's image embedding into a 64-channel spatial memory. A frame to segment is conditioned on
the spatial memories of up to N recent frames and of prompted frames, plus the object pointers
of up to M past frames, by L transformer blocks of self-attention, cross-attention to the
memories and an MLP. Spatial memories carry a learned temporal encoding per distance (prompted
frames use the last slot); pointers carry a projected 1-D sine encoding of their signed frame
distance, normalised by M - 1 (SAM 2.1), and are split into 64-channel tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F
from transformers.models.sam2_video.modeling_sam2_video import get_1d_sine_pe, rotate_pairwise

if TYPE_CHECKING:
    from refseg.sam.model import Sam2


Rope = tuple[Tensor, Tensor]  # cos, sin of the memory-attention RoPE, each [1, h*w, head_dim]


@dataclass
class MemoryKV:
    """Cross-attention keys and values of one spatial memory, for every memory-attention layer.

    Memory features never change once stored, so their projections can be computed once
    instead of on every frame that reads them. The key projection and RoPE are linear, so
        RoPE(W_k (m + p + e_t) + b_k) = RoPE(W_k (m + p)) + RoPE(W_k e_t + b_k),
    where m is the memory, p its spatial encoding and e_t the temporal encoding of its current
    age t (which changes as the memory ages): the first term is cached, the second added on read.

    keys[l]:   [heads, h*w, head_dim], RoPE(W_k (m + p)) of layer l.
    values[l]: [heads, h*w, head_dim], W_v m + b_v of layer l.
    """

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


@dataclass
class MemoryReadout:
    """What one object attends to on one frame, in attention order.

    features:   spatial memories, each [h*w, D] (D = 64), in the bank's storage dtype.
    tpos_slots: per spatial memory, its slot in the learned temporal encoding: SAM 2 uses
                distance - 1 for recent frames and -1 (the last slot) for prompted frames; a
                method may assign slots otherwise (SAM-I2V: by rank among the selected frames).
    masks:      per spatial memory, the [4h, 4w] mask logits its frame was segmented with, where
                the bank keeps them (`MemoryEntry.mask`), else None.
    kv:         per spatial memory, its cached keys and values (None where not cached).
    pointers:   object pointers, each [C] (C = 256).
    pointer_offsets: per pointer, its frame distance from the current frame (or a method's
                pseudo-distance).
    pointer_span: the distance that normalises pointer offsets before their sine encoding:
                M - 1 (M = `max_object_pointers_in_encoder`), or one less than the video's
                length when a video of known length is shorter than M (the official predictor's
                rule), or a method's own; None: M - 1.
    temporal:   whether spatial memories get their temporal encoding (False: position only).
    """

    features: list[Tensor] = field(default_factory=list)
    tpos_slots: list[int] = field(default_factory=list)
    masks: list[Tensor | None] = field(default_factory=list)
    kv: list[MemoryKV | None] = field(default_factory=list)
    pointers: list[Tensor] = field(default_factory=list)
    pointer_offsets: list[int] = field(default_factory=list)
    pointer_span: int | None = None
    temporal: bool = True

    def add_memory(self, features: Tensor, slot: int, kv: MemoryKV | None = None,
                   mask: Tensor | None = None) -> None:
        """Append one spatial memory [h*w, D] with its temporal slot."""
        self.features.append(features)
        self.tpos_slots.append(slot)
        self.kv.append(kv)
        self.masks.append(mask)

    def add_pointer(self, pointer: Tensor, offset: int) -> None:
        """Append one object pointer [C] at frame distance `offset`."""
        self.pointers.append(pointer)
        self.pointer_offsets.append(offset)


def encode_memory(
    model: Sam2,
    embed: Tensor,
    high_res_masks: Tensor,
    object_score: Tensor,
    binarize: Tensor,
    dtype: torch.dtype,
) -> Tensor:
    """Spatial memory of B objects on one frame.

    Args:
        embed: [B, C, h, w] image embedding of the frame (not memory-conditioned).
        high_res_masks: [B, 1, S, S] mask logits.
        object_score: [B, 1] presence logits; absent objects get the occlusion embedding.
        binarize: [B] bool, threshold the mask (prompted frames at inference) instead of sigmoid.
        dtype: storage dtype of the memory (SAM 2 keeps bfloat16).
    Returns:
        [B, h*w, D] memory features.
    """
    size = model.prompt_encoder.mask_input_size[0] * 4
    if high_res_masks.shape[-1] != size:
        high_res_masks = torch.nn.functional.interpolate(high_res_masks.float(), size=(size, size), mode="bilinear",
                                                         align_corners=False, antialias=True)
    probs = torch.where(binarize[:, None, None, None], (high_res_masks > 0).to(high_res_masks.dtype),
                        torch.sigmoid(high_res_masks))
    mask_in = probs * model.config.sigmoid_scale_for_mem_enc + model.config.sigmoid_bias_for_mem_enc
    features, _ = model.memory_encoder(embed, mask_in)  # [B, D, h, w]
    if model.occlusion_spatial_embedding_parameter is not None:
        absent = 1 - (object_score > 0).to(features.dtype)  # [B, 1]
        features = features + absent[..., None, None] * model.occlusion_spatial_embedding_parameter[..., None, None]
    return features.to(dtype).flatten(2).transpose(1, 2)


def memory_position_encoding(model: Sam2) -> Tensor:
    """Sine positional encoding of a spatial memory, [h*w, D] (the same for every memory)."""
    h, w = model.prompt_encoder.image_embedding_size
    dim = model.config.memory_encoder_output_channels
    weight = model.no_memory_embedding
    pos = model.memory_encoder.position_encoding((1, dim, h, w), weight.device, weight.dtype)
    return pos.flatten(2)[0].transpose(0, 1)


def pointer_position_encoding(model: Sam2, offsets: list[int], dtype: torch.dtype,
                              span: int | None = None) -> Tensor:
    """Temporal encoding of object pointers, [P, D]: projected sine of offset / span
    (span: `MemoryReadout.pointer_span`, default M - 1)."""
    dim = model.config.memory_encoder_output_channels
    device = model.no_object_pointer.device
    if not model.config.enable_temporal_pos_encoding_for_object_pointers:
        return torch.zeros(len(offsets), dim, device=device, dtype=dtype)
    span = model.config.max_object_pointers_in_encoder - 1 if span is None else span
    normalised = torch.tensor(offsets, device=device, dtype=torch.float32) / float(max(span, 1))
    sine = get_1d_sine_pe(normalised, dim=model.hidden_dim).to(dtype)
    return model.temporal_positional_encoding_projection_layer(sine)


def memory_tokens(model: Sam2, readout: MemoryReadout, memory_pos: Tensor,
                  dtype: torch.dtype) -> tuple[Tensor, Tensor, int]:
    """The memory sequence one object attends to, as the memory attention reads it.

    Returns:
        memory: [M, D], the spatial memories' h*w tokens each, then the pointers split into
            C/D tokens each (M = m*h*w + P*C/D).
        memory_pe: [M, D], their position encodings (spatial + temporal slot; pointer temporal).
        num_pointer_tokens: P*C/D, the trailing tokens that get no RoPE.
    """
    tpos = model.memory_temporal_positional_encoding  # [N, 1, 1, D]
    memories = [f.to(dtype) for f in readout.features]
    if readout.temporal:
        memory_pe = [memory_pos + tpos[slot, 0] for slot in readout.tpos_slots]
    else:
        memory_pe = [memory_pos for _ in readout.tpos_slots]
    num_pointer_tokens = 0
    if readout.pointers:
        dim = model.config.memory_encoder_output_channels
        pointers = torch.stack(readout.pointers).to(dtype)  # [P, C]
        pointer_pe = pointer_position_encoding(model, readout.pointer_offsets, dtype, readout.pointer_span)  # [P, D]
        splits = pointers.shape[1] // dim
        memories.append(pointers.reshape(-1, dim))  # [P * C/D, D]
        memory_pe.append(pointer_pe.repeat_interleave(splits, dim=0))
        num_pointer_tokens = pointers.shape[0] * splits
    return torch.cat(memories), torch.cat(memory_pe), num_pointer_tokens


def condition_on_memory(model: Sam2, embed: Tensor, pos: Tensor, readout: MemoryReadout,
                        memory_pos: Tensor, rope: Rope | None = None) -> Tensor:
    """Memory attention for one object on one frame.

    Args:
        embed: [1, C, h, w] image embedding of the frame.
        pos: [1, C, h, w] its positional encoding.
        readout: the memories and pointers to attend to (at least one spatial memory).
        memory_pos: [h*w, D] spatial positional encoding of a memory (`memory_position_encoding`).
        rope: the RoPE tables (`memory_rope`); with them, and every memory's keys and values
            cached in `readout.kv`, the cached path runs (the same function, fewer operations).
    Returns:
        [1, C, h, w] memory-conditioned embedding.
    """
    if rope is not None and readout.kv and all(kv is not None for kv in readout.kv):
        return _attend_cached(model, embed, pos, [readout], rope)
    _, channels, h, w = embed.shape
    memory, memory_pe, num_pointer_tokens = memory_tokens(model, readout, memory_pos, embed.dtype)
    out = model.memory_attention(
        current_vision_features=embed.flatten(2).permute(2, 0, 1),
        current_vision_position_embeddings=pos.flatten(2).permute(2, 0, 1),
        memory=memory[:, None],
        memory_posision_embeddings=memory_pe[:, None],
        num_object_pointer_tokens=num_pointer_tokens,
    )  # [1, 1, h*w, C]
    return out.reshape(h * w, channels).transpose(0, 1).reshape(1, channels, h, w)


def memory_rope(model: Sam2) -> Rope:
    """cos and sin of the memory-attention RoPE over the h x w grid, each [1, h*w, head_dim]."""
    attention = model.memory_attention
    cos, sin = attention.rotary_emb(attention.position_ids, attention.position_ids)
    return cos, sin


def _rotate(x: Tensor, rope: Rope) -> Tensor:
    cos, sin = rope
    return x * cos + rotate_pairwise(x) * sin


def _heads(x: Tensor, heads: int) -> Tensor:
    """[N, heads * hd] -> [heads, N, hd]."""
    return x.reshape(x.shape[0], heads, -1).transpose(0, 1)


def memory_kv(model: Sam2, features: Tensor, memory_pos: Tensor, rope: Rope) -> MemoryKV:
    """Cache the cross-attention keys and values of one spatial memory [h*w, D] (see `MemoryKV`)."""
    memory = features.to(memory_pos.dtype)
    keys, values = [], []
    for layer in model.memory_attention.layers:
        attn = layer.cross_attn_image
        heads = attn.num_attention_heads
        keys.append(_rotate(_heads(F.linear(memory + memory_pos, attn.k_proj.weight), heads), rope).contiguous())
        values.append(_heads(attn.v_proj(memory), heads).contiguous())
    return MemoryKV(keys, values)


def condition_objects(model: Sam2, embed: Tensor, pos: Tensor, readouts: list[MemoryReadout], rope: Rope) -> Tensor:
    """Memory attention for B objects on one frame at once: `condition_on_memory` of each, in one
    batch. Every readout must have cached keys and values and the same layout (`readout_layout`).

    Args:
        embed, pos: [1, C, h, w] the frame's image embedding and its positional encoding.
        readouts: B readouts of one layout.
    Returns:
        [B, C, h, w] memory-conditioned embeddings, in the order of `readouts`.
    """
    layouts = {readout_layout(r) for r in readouts}
    if len(layouts) != 1 or not all(kv is not None for r in readouts for kv in r.kv) or not readouts[0].kv:
        raise ValueError("condition_objects: readouts of one layout, every memory's keys and values cached")
    return _attend_cached(model, embed, pos, readouts, rope)


def readout_layout(readout: MemoryReadout) -> tuple:
    """What must match for readouts to be attended in one batch: the memories' temporal slots (so
    their count), the number of pointers, and whether memories are temporally encoded (pointer
    offsets may differ: each object's pointers get their own encoding)."""
    return tuple(readout.tpos_slots), readout.temporal, len(readout.pointers)


def _heads_batch(x: Tensor, heads: int) -> Tensor:
    """[B, N, heads * hd] -> [B, heads, N, hd]."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _attend_cached(model: Sam2, embed: Tensor, pos: Tensor, readouts: list[MemoryReadout], rope: Rope) -> Tensor:
    """Memory attention with cached memory keys and values (inference; dropout is off) for B
    readouts of one layout: [1, C, h, w] -> [B, C, h, w]."""
    _, channels, h, w = embed.shape
    batch, first = len(readouts), readouts[0]
    attention = model.memory_attention
    tpos = model.memory_temporal_positional_encoding[:, 0, 0]  # [N, D]
    if not first.temporal:
        tpos = torch.zeros_like(tpos)
    x = (embed + 0.1 * pos).flatten(2).transpose(1, 2)[:, None].expand(batch, -1, -1, -1)  # [B, 1, h*w, C]
    pointers = pointer_pe = None
    if first.pointers:
        dim = model.config.memory_encoder_output_channels
        pointers = torch.stack([torch.stack(r.pointers).to(embed.dtype).reshape(-1, dim) for r in readouts])  # [B, P*C/D, D]
        pointer_pe = torch.stack([pointer_position_encoding(model, r.pointer_offsets, embed.dtype, r.pointer_span)
                                  .repeat_interleave(channels // dim, dim=0) for r in readouts])
    for index, layer in enumerate(attention.layers):
        query = layer.layer_norm1(x)
        x = x + layer.self_attn(query=query, key=query, value=query, position_embeddings=rope)[0]
        attn = layer.cross_attn_image
        heads = attn.num_attention_heads
        q = _rotate(_heads_batch(attn.q_proj(layer.layer_norm2(x))[:, 0], heads), rope)  # [B, heads, h*w, hd]
        # the age-dependent part of each key: RoPE(W_k e_t + b_k), broadcast over positions
        slot_keys = {s: _rotate(attn.k_proj(tpos[s]).reshape(heads, 1, -1), rope) for s in set(first.tpos_slots)}
        # every object's keys and values written once into [B, heads, n*h*w (+ pointer tokens), hd]
        first_kv = first.kv[0]
        tokens = first_kv.keys[index].shape[1]  # type: ignore[union-attr]
        pointer_k = pointer_v = None
        if pointers is not None:
            pointer_k = _heads_batch(attn.k_proj(pointers + pointer_pe), heads)
            pointer_v = _heads_batch(attn.v_proj(pointers), heads)
        total = len(first.kv) * tokens + (0 if pointer_k is None else pointer_k.shape[2])
        key_dtype = torch.promote_types(first_kv.keys[index].dtype, slot_keys[first.tpos_slots[0]].dtype)  # type: ignore[union-attr]
        value_dtype = first_kv.values[index].dtype  # type: ignore[union-attr]
        if pointer_k is not None:  # as torch.cat would promote
            key_dtype = torch.promote_types(key_dtype, pointer_k.dtype)
            value_dtype = torch.promote_types(value_dtype, pointer_v.dtype)  # type: ignore[union-attr]
        keys = q.new_empty(batch, heads, total, q.shape[-1], dtype=key_dtype)
        values = q.new_empty(batch, heads, total, q.shape[-1], dtype=value_dtype)
        for b, r in enumerate(readouts):
            for m, (kv, s) in enumerate(zip(r.kv, r.tpos_slots)):
                torch.add(kv.keys[index], slot_keys[s], out=keys[b, :, m * tokens : (m + 1) * tokens])  # type: ignore[union-attr]
                values[b, :, m * tokens : (m + 1) * tokens] = kv.values[index]  # type: ignore[union-attr]
        if pointer_k is not None:
            keys[:, :, len(first.kv) * tokens :] = pointer_k
            values[:, :, len(first.kv) * tokens :] = pointer_v
        out = F.scaled_dot_product_attention(q, keys, values, scale=attn.scaling)  # [B, heads, h*w, hd]
        x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, 1, h * w, -1))
        x = x + layer.linear2(layer.activation(layer.linear1(layer.layer_norm3(x))))
    out = attention.layer_norm(x)  # [B, 1, h*w, C]
    return out.reshape(batch, h * w, channels).transpose(1, 2).reshape(batch, channels, h, w)
