"""SAMWISE Cross-Modal Temporal (CMT) adapter (paper Sec. 3.3, Eq. 2-6, Fig. 3-4).

One adapter sits after each of the last three Hiera stages and the matching text layer. It
down-projects both modalities to a bottleneck (256), lets the visual tokens attend within
spatio-temporal sub-volumes (Hierarchical Selective Attention, Eq. 4), gates them by their
attention over the text (Visual-to-Text, Eq. 5), gates the text by its attention over the
clip-averaged visual tokens (Text-to-Visual, Eq. 6), and adds both back up-projected (Eq. 3).

Following the official implementation (so its checkpoints load): the visual projections are
followed by ReLU on both sides (its BatchNorms fold into these linear layers' biases at load
time), the gates multiply, and HSA's spatial embedding is a learned table, here initialised with
the paper's 2-D sinusoids; the temporal embedding is the fixed 1-D sinusoid over the clip.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def temporal_sine(num_frames: int, dim: int, device: torch.device | None = None) -> Tensor:
    """[T, dim] 1-D sinusoid of frame positions 1..T scaled to (0, 2 pi], channels interleaved
    sin / cos with temperature 10000."""
    pos = torch.arange(1, num_frames + 1, dtype=torch.float32, device=device) / num_frames * 2 * math.pi
    freq = 10000 ** (2 * (torch.arange(dim, device=device) // 2) / dim)
    angles = pos[:, None] / freq
    return torch.where(torch.arange(dim, device=device) % 2 == 0, angles.sin(), angles.cos())


def spatial_sine(patch: int, dim: int) -> Tensor:
    """[P * P, dim] 2-D sinusoid over a P x P grid: first half of the channels encodes y, the
    second half x (each as `temporal_sine` over P positions)."""
    half = dim // 2
    ys = temporal_sine(patch, half)[:, None, :].expand(patch, patch, half)
    xs = temporal_sine(patch, dim - half)[None, :, :].expand(patch, patch, dim - half)
    return torch.cat([ys, xs], dim=-1).reshape(patch * patch, dim)


class HierarchicalSelectiveAttention(nn.Module):
    """Eq. 4: self-attention restricted to non-overlapping T x P x P sub-volumes.

    Args:
        dim: channels of the (down-projected) tokens.
        patch: P; the feature map sides must be multiples of P.
        heads, dropout: of the attention.
    """

    def __init__(self, dim: int, patch: int, heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.patch = patch
        self.spatial_pos = nn.Parameter(spatial_sine(patch, dim))
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: Tensor, clips: int = 1) -> Tensor:
        """x [N * T, H, W, C]: N clips of T frames one after the other -> the same shape (x plus
        the attention output); sub-volumes never span two clips."""
        n, h, w, c = x.shape
        p, t = self.patch, n // clips
        if h % p or w % p:
            raise ValueError(f"HSA: feature map {h}x{w} is not a multiple of the patch size {p}")
        pos = temporal_sine(t, c, x.device)[:, None, None, :].to(x.dtype).repeat(clips, 1, 1, 1)
        tokens = x + pos
        # [N, T, H/P, P, W/P, P, C] -> [N (H/P)(W/P), T * P * P, C]: one sequence per sub-volume
        tokens = tokens.view(clips, t, h // p, p, w // p, p, c).permute(0, 2, 4, 1, 3, 5, 6).reshape(-1, t, p * p, c)
        tokens = (tokens + self.spatial_pos.to(x.dtype)).reshape(-1, t * p * p, c)
        tokens = self.norm(tokens)
        out = self.linear(self.attn(tokens, tokens, tokens, need_weights=False)[0])
        out = out.view(clips, h // p, w // p, t, p, p, c).permute(0, 3, 1, 4, 2, 5, 6).reshape(n, h, w, c)
        return x + out


class CrossAttention(nn.Module):
    """Multi-head cross-attention whose output gates its queries (Eq. 5 and 6: q * CA(q, kv))."""

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, query: Tensor, context: Tensor, context_padding: Tensor | None = None) -> Tensor:
        """query [B, Q, C], context [B, K, C], context_padding [B, K] (True = ignore) -> [B, Q, C]."""
        out = self.attn(query, context, context, key_padding_mask=context_padding, need_weights=False)[0]
        return query * out


class CrossModalTemporalAdapter(nn.Module):
    """Eq. 3 at one (Hiera stage, text layer) pair.

    Args:
        visual_dim: C_k of the Hiera stage; text_dim: C of the text encoder.
        dim: bottleneck width (256).
        patch: HSA sub-volume side P.
        hsa, vta, tva: which parts exist (the paper's Table 2 ablation). The visual branch exists
            when HSA or VTA does, the text branch when TVA does.
    """

    def __init__(self, visual_dim: int, text_dim: int, dim: int = 256, patch: int = 8, heads: int = 8,
                 hsa: bool = True, vta: bool = True, tva: bool = True) -> None:
        super().__init__()
        self.visual = hsa or vta
        self.down_v = nn.Linear(visual_dim, dim)
        self.down_t = nn.Linear(text_dim, dim, bias=False)
        self.hsa = HierarchicalSelectiveAttention(dim, patch, heads) if hsa else None
        self.vta = CrossAttention(dim, heads) if vta else None
        self.tva = CrossAttention(dim, heads) if tva else None
        self.up_v = nn.Linear(dim, visual_dim) if self.visual else None
        self.up_t = nn.Linear(dim, text_dim, bias=False) if tva else None

    def forward(self, visual: Tensor, text: Tensor, text_padding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """visual [E * T, H, W, C_k] (E copies of one clip of T frames, expression-major), text
        [E, L, C] (the E expressions), text_padding [E, L] (True = padding) -> both adapted, same
        shapes; copy e is adapted by expression e alone, as it would be on its own."""
        n, h, w, _ = visual.shape
        clips = text.shape[0]
        if n % clips:
            raise ValueError(f"CMT adapter: {n} frames are not {clips} clips of equal length")
        t = n // clips
        v = F.relu(self.down_v(visual))  # [E T, H, W, d]
        e = self.down_t(text)  # [E, L, d]
        if self.visual:
            x = self.hsa(v, clips) if self.hsa is not None else v
            if self.vta is not None:  # Eq. 5, per frame against the whole expression
                padding = None if text_padding is None else text_padding.repeat_interleave(t, 0)
                x = self.vta(x.reshape(n, h * w, -1), e.repeat_interleave(t, 0), padding).view(n, h, w, -1)
            visual = visual + F.relu(self.up_v(x))
        if self.tva is not None:  # Eq. 6, against the clip-averaged visual tokens
            text = text + self.up_t(self.tva(e, v.view(clips, t, h * w, -1).mean(dim=1)))
        return visual, text
