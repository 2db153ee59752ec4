"""SAM2-LOVE's projections (Eq. 1) and multimodal fusion transformer (Eq. 2), paper Sec. 3.2.

Eq. 1: each frozen encoder's features go to the fusion width D through F̂_Z = Linear(ReLU(
Linear(F_Z))), Z in {A, V, T} (`audio_proj`, `visual_proj`, `text_proj`).

Eq. 2: L pre-LN bidirectional blocks, z'_l = MSA(LN(z_{l-1})) + z_{l-1}, z_l = MLP(LN(z'_l)) +
z'_l, "a naive transformer without RoPE or attention enhancements". A final LayerNorm (as ViT's)
closes the stack, so that the [seg] token propagated through N frames keeps its scale.
"""

from __future__ import annotations

from torch import Tensor, nn


def projection(width_in: int, width: int) -> nn.Sequential:
    """Eq. 1: Linear(d_Z -> D), ReLU, Linear(D -> D)."""
    return nn.Sequential(nn.Linear(width_in, width), nn.ReLU(), nn.Linear(width, width))


class FusionBlock(nn.Module):
    """One block of Eq. 2 on z [B, L, D] (key_padding [B, L], True = ignore)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, z: Tensor, key_padding: Tensor | None = None) -> Tensor:
        x = self.norm1(z)
        z = z + self.attn(x, x, x, key_padding_mask=key_padding, need_weights=False)[0]
        return z + self.mlp(self.norm2(z))


class FusionTransformer(nn.Module):
    """Eq. 2: `layers` pre-LN blocks of width D and a final LayerNorm: [B, L, D] -> [B, L, D]."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"FusionTransformer: need at least one layer, got {layers}")
        self.blocks = nn.ModuleList(FusionBlock(width, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, z: Tensor, key_padding: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            z = block(z, key_padding)
        return self.norm(z)
