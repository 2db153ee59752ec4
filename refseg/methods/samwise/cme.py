"""SAMWISE Conditional Memory Encoder (paper Sec. 3.5, Eq. 8-10, Fig. 6).

SAM 2 can keep tracking an object chosen before the expression became true ("tracking bias").
On memory-less features (the frame alone, no memory attention) the prompt may point at another
object. The CME reads the memory-conditioned token tau_m and the memory-less token tau_l with a
learnable [DEC] token (Eq. 9) and decides whether a new text-aligned object appeared; when it
did, the memory-less mask is fused into the mask the memory encoder sees (Eq. 10), so memory
holds both candidates and later frames can switch. The output mask itself is unchanged.

As in the official code: tau_l is the mask token after the first layer of the (frozen) SAM 2
mask decoder on memory-less features (Eq. 8: a cross-attention initialised from and frozen to
SAM 2's), tau_m is the object pointer of the memory-conditioned prediction, the classifier has
two logits (softmax, "switch" when p > 0.5), and training labels come from self-supervision:
"switch" when the two predicted masks hardly overlap.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from refseg.sam.model import Sam2


class ConditionalMemoryEncoder(nn.Module):
    """Eq. 9: [z_DEC, z_MT, z_ML] = SA([DEC], tau_m, tau_l); p_detect = softmax(phi(z_DEC))[1].

    Args:
        dim: token width (SAM 2's 256); heads; ffn: feed-forward width; dropout.
    """

    def __init__(self, dim: int = 256, heads: int = 8, ffn: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.decision_token = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, 2)

    def forward(self, tau_m: Tensor, tau_l: Tensor) -> Tensor:
        """tau_m, tau_l [B, C] -> decision logits [B, 2] (index 1: a new object, switch)."""
        x = torch.stack([self.decision_token.expand(tau_m.shape[0], -1).to(tau_m.dtype), tau_m, tau_l], dim=1)
        x = self.norm1(x + self.dropout(self.attn(x, x, x, need_weights=False)[0]))  # post-norm block
        x = self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        return self.classifier(x[:, 0])


def memory_less_token(model: Sam2, embed: Tensor, sparse: Tensor, dense: Tensor) -> Tensor:
    """Eq. 8: tau_l [B, C], the first mask token after the first two-way layer of the SAM 2 mask
    decoder (embed [B, C, h, w] memory-less, with the no-memory embedding added; sparse
    [B, 1, K, C] and dense [B, C, h, w] the prompt)."""
    decoder = model.mask_decoder
    output_tokens = torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight, decoder.mask_tokens.weight])
    tokens = torch.cat([output_tokens.expand(embed.shape[0], 1, -1, -1).to(sparse.dtype), sparse], dim=2)
    keys = (embed + dense).flatten(2).transpose(1, 2)[:, None]  # [B, 1, hw, C]
    pos = model.image_positional_embeddings().flatten(2).transpose(1, 2)[:, None].expand_as(keys)
    queries, _, _ = decoder.transformer.layers[0](queries=tokens, keys=keys, query_point_embedding=tokens,
                                                   key_point_embedding=pos, attention_similarity=None)
    return queries[:, 0, 2]  # [obj_score, iou, mask_0, ...]: mask token 0


def fuse_masks(memory_logits: Tensor, memory_less_logits: Tensor, weight: float) -> Tensor:
    """Eq. 10: P = lambda * P_l o M + P_m o (1 - M), M = [P_l > 0]; any equal shapes."""
    inside = memory_less_logits > 0
    return torch.where(inside, weight * memory_less_logits, memory_logits)


def switch_labels(memory_logits: Tensor, memory_less_logits: Tensor, memory_less_score: Tensor,
                  min_pixels: int, max_overlap: float = 0.1) -> Tensor:
    """Self-supervised CME targets [B] from masks [B, 1, H, W] and the memory-less presence logit
    [B, 1]: 1 (switch) when the two masks overlap by less than `max_overlap` of the smaller one,
    0 otherwise, -1 (ignored) when the memory-less prediction sees no object or both masks are
    smaller than `min_pixels`."""
    a, b = (memory_logits > 0).flatten(1), (memory_less_logits > 0).flatten(1)
    inter = (a & b).sum(1).float()
    smaller = torch.minimum(a.sum(1), b.sum(1)).float()
    labels = (inter / smaller.clamp(min=1) < max_overlap).long()
    ignore = (memory_less_score.reshape(-1) < 0) | ((a.sum(1) <= min_pixels) & (b.sum(1) <= min_pixels))
    return labels.masked_fill(ignore, -1)
