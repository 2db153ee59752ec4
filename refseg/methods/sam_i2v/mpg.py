"""SAM-I2V Memory Prompt Generator (MPG; paper Sec. 3.4, Fig. 5, Eq. 1-3).

Memory attention conditions the image embedding on memory; the MPG also turns memory into prompt
tokens for the mask decoder. g = 3 learned queries G read the same memory tokens F_mem that memory
attention reads (the selected frames' spatial memories, then the object-pointer tokens) through
cross-attention masked to what was foreground:

    G'   = softmax(M + Q K^T / sqrt(d)) V + G,  Q = psi_q(G), K = psi_k(F_mem + P), V = psi_v(F_mem)  (Eq. 1-2)
    M(x) = 0 where M_mem(x) = 1, -inf elsewhere                                                       (Eq. 3)

with M_mem per spatial token: sigmoid of the memory frame's mask logits, resized to the memory grid,
>= 0.5; object-pointer tokens are always visible. Then self-attention and an MLP (G'' and G''').
As in the official code (`MemoryPromptGeneratorFG`), each step is a pre-norm residual block with
dropout; queries get 1-D RoPE over their g positions, memory keys 2-D RoPE over the memory grid
(pointer tokens none); keys carry the memory's position encoding (temporal slot included),
queries none; when no token is visible, the cross-attention output is the rotated query
projection. On frames without memory the tokens are one learned embedding repeated g times.
The g output tokens join the sparse prompt on every frame (`SamI2VHooks.prompt_tokens`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers.models.sam2_video.modeling_sam2_video import rotate_pairwise

Rope = tuple[Tensor, Tensor]


def axial_rope(dim: int, width: int, height: int, theta: float = 10000.0) -> Rope:
    """cos and sin [width*height, dim] of SAM 2's axial RoPE over a row-major width x height
    grid: dim/4 frequencies theta^(-4k/dim) for x, then the same for y, each angle applied to a
    pair of adjacent channels."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    index = torch.arange(width * height, dtype=torch.float32)
    xs, ys = index % width, torch.div(index, width, rounding_mode="floor")
    angles = torch.cat([torch.outer(xs, freqs), torch.outer(ys, freqs)], dim=-1).repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: Tensor, rope: Rope) -> Tensor:
    """Apply RoPE to x [..., N, dim] with cos, sin [N, dim]."""
    cos, sin = rope
    return x * cos.to(x) + rotate_pairwise(x) * sin.to(x)


class RopeAttention(nn.Module):
    """Attention with RoPE on queries and the first keys; names as SAM's `Attention`.

    q_proj: C -> C, k_proj / v_proj: kv_dim -> C, out_proj: C -> C, `heads` heads.
    """

    def __init__(self, dim: int, kv_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)  # [B, heads, N, hd]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, q_rope: Rope, k_rope: Rope, rope_keys: int,
                visible: Tensor | None = None) -> Tensor:
        """q [B, Nq, C], k [B, Nk, kv_dim], v [B, Nk, kv_dim] -> [B, Nq, C].

        q_rope [Nq, hd]; k_rope [n, hd] repeated over the first `rope_keys` keys (a multiple of n);
        visible [B, Nk] bool: keys a query may attend to (None: all). Where no key of the batch is
        visible the output is the rotated query projection.
        """
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        q = rotate(q, q_rope)
        if rope_keys:
            repeats = rope_keys // k_rope[0].shape[0]
            cos, sin = (r.repeat(repeats, 1) for r in k_rope)
            k = torch.cat([rotate(k[:, :, :rope_keys], (cos, sin)), k[:, :, rope_keys:]], dim=2)
        if visible is not None and not bool(visible.any()):
            out = q
        else:
            mask = None if visible is None else visible[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class MemoryPromptGenerator(nn.Module):
    """Eq. 1-3 and the self-attention and MLP after them.

    Args:
        dim: C, token width (256); memory_dim: D, memory token width (64); num_queries: g;
        grid: (h, w) of a spatial memory; heads (1 published); dropout (0.1); masked: mask
        the cross-attention to foreground memory (False: the Tab. 6 ablation).
    """

    def __init__(self, dim: int, memory_dim: int, num_queries: int, grid: tuple[int, int], heads: int = 1,
                 dropout: float = 0.1, masked: bool = True) -> None:
        super().__init__()
        self.grid = grid
        self.masked = masked
        self.no_memory = nn.Parameter(torch.randn(1, dim))
        self.queries = nn.Parameter(torch.randn(num_queries, dim))
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attn = RopeAttention(dim, memory_dim, heads, dropout)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = RopeAttention(dim, dim, heads, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp_in = nn.Linear(dim, dim)
        self.mlp_out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        head_dim = dim // heads
        h, w = grid
        for name, rope in (("query_rope", axial_rope(head_dim, num_queries, 1)), ("key_rope", axial_rope(head_dim, w, h))):
            self.register_buffer(f"{name}_cos", rope[0], persistent=False)
            self.register_buffer(f"{name}_sin", rope[1], persistent=False)

    @property
    def num_queries(self) -> int:
        return self.queries.shape[0]

    def no_memory_tokens(self) -> Tensor:
        """[1, g, C] tokens of a frame without memory."""
        return self.no_memory.expand(self.num_queries, -1)[None]

    def foreground(self, masks: list[Tensor], num_pointer_tokens: int) -> Tensor:
        """M_mem [M] bool over the memory tokens: per spatial memory, sigmoid(mask logits [4h, 4w])
        resized to h x w (bilinear) >= 0.5; pointer tokens True."""
        stacked = torch.stack([m.float() for m in masks])[:, None]  # [m, 1, 4h, 4w]
        resized = F.interpolate(torch.sigmoid(stacked), size=self.grid, mode="bilinear", align_corners=False)
        pointers = torch.ones(num_pointer_tokens, dtype=torch.bool, device=stacked.device)
        return torch.cat([(resized >= 0.5).flatten(), pointers])

    def forward(self, memory: Tensor, memory_pe: Tensor, foreground: Tensor, num_pointer_tokens: int) -> Tensor:
        """Memory prompt tokens of one object.

        Args:
            memory: [M, D] memory tokens (m spatial memories of h*w tokens, then pointer tokens).
            memory_pe: [M, D] their position encodings (spatial + temporal slot; pointers temporal).
            foreground: [M] bool, M_mem (`foreground`); ignored when not `masked`.
            num_pointer_tokens: the trailing pointer tokens (no RoPE).
        Returns:
            [1, g, C] tokens G'''.
        """
        queries = self.queries[None].to(memory.dtype)  # [1, g, C]
        q_rope = (self.query_rope_cos, self.query_rope_sin)
        k_rope = (self.key_rope_cos, self.key_rope_sin)
        visible = foreground[None] if self.masked else None
        x = self.norm_cross(queries)
        attended = self.cross_attn(x, (memory + memory_pe)[None], memory[None], q_rope, k_rope,
                                   memory.shape[0] - num_pointer_tokens, visible)
        g = queries + self.drop(attended)  # G', Eq. 1-2
        x = self.norm_self(g)
        g = g + self.drop(self.self_attn(x, x, x, q_rope, q_rope, x.shape[1]))  # G''
        return g + self.drop(self.mlp_out(self.drop(F.relu(self.mlp_in(self.norm_mlp(g))))))  # G'''
