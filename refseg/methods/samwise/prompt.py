"""SAMWISE prompt (paper Sec. 3.2, Eq. 1): the contextual prompt E_C (the sentence token) and the
motion prompt E_M (the verbs' token states, averaged) are concatenated and projected by a
3-layer MLP into SAM 2's prompt space: rho = W_prompt(CAT[E_C, E_M]).

With `motion=False` the MLP reads E_C alone, which is the layout of the released SAMWISE
checkpoints (their code keeps the motion prompt off).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from refseg.encoders.text import TextTokens
from refseg.methods.samwise.verbs import verb_spans


def verb_token_mask(tokens: TextTokens) -> Tensor:
    """[B, L] bool: the tokens whose character span overlaps a verb of their text (every
    sub-word of a verb counts)."""
    mask = torch.zeros(tokens.ids.shape, dtype=torch.bool)
    for b, (text, offsets) in enumerate(zip(tokens.texts, tokens.offsets)):
        for start, end in verb_spans(text):
            for i, (a, z) in enumerate(offsets):
                if z > a and a < end and z > start and tokens.mask[b, i]:
                    mask[b, i] = True
    return mask.to(tokens.ids.device)


class TextPrompt(nn.Module):
    """Eq. 1.

    Args:
        text_dim: C_t of the text encoder; prompt_dim: SAM 2's prompt width (256).
        motion: concatenate the motion prompt (the paper) or not (the released checkpoints).
    """

    def __init__(self, text_dim: int, prompt_dim: int = 256, motion: bool = True) -> None:
        super().__init__()
        self.motion = motion
        width = 2 * text_dim if motion else text_dim
        self.layers = nn.ModuleList([nn.Linear(width, prompt_dim), nn.Linear(prompt_dim, prompt_dim),
                                     nn.Linear(prompt_dim, prompt_dim)])

    def forward(self, text: Tensor, sentence: Tensor, verbs: Tensor) -> Tensor:
        """text [B, L, C_t] final token states, sentence [B] index of the sentence token, verbs
        [B, L] bool -> rho [B, 1, prompt_dim]. Without verbs E_M is zero."""
        rows = torch.arange(text.shape[0], device=text.device)
        x = text[rows, sentence]  # E_C [B, C_t]
        if self.motion:
            weights = verbs.to(text.dtype)
            e_m = (text * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
            x = torch.cat([x, e_m], dim=-1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x[:, None]
