"""GLUS's multimodal LLM (paper Sec. 4.1; LISA / LLaVA layout): image tokens spliced into the
token sequence, one causal-LM pass, and the [SEG] embeddings projected into SAM 2 prompt tokens.

For one call (`conversation.glus_prompt` / `glus_input_ids`), every `IMAGE_TOKEN` of the ids is
replaced by that image's m tokens (`vision.VisionTokens`), in order; the sequence runs through the
LLM without a padding mask (plain causal attention, positions 0 .. L-1, as the official inference
runs it). The [SEG] embedding of a query frame is the LLM's last-layer state after its final norm
at the row before that frame's [SEG] (`conversation.seg_rows`), and `text_hidden_fcs` (Linear, ReLU,
Linear to the SAM width C) turns it into the one sparse prompt token of that frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from refseg.methods.glus.conversation import IMAGE_TOKEN


class SegProjection(nn.Module):
    """`text_hidden_fcs`: [.., H] -> [.., C] (Linear H -> H, ReLU, Linear H -> C)."""

    def __init__(self, llm_width: int, prompt_width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(llm_width, llm_width), nn.ReLU(), nn.Linear(llm_width, prompt_width))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.layers(hidden)


class GlusLlm(nn.Module):
    """A causal LM (`transformers`, e.g. `LlamaForCausalLM`) with GLUS's image splicing and
    [SEG] projection."""

    def __init__(self, llm: PreTrainedModel, prompt_width: int = 256) -> None:
        super().__init__()
        self.llm = llm
        self.text_hidden_fcs = SegProjection(int(llm.config.hidden_size), prompt_width)

    def embed(self, input_ids: Sequence[int], images: Tensor) -> Tensor:
        """Token embeddings [1, L', H] with image i's tokens (images [n, m, H]) in place of the
        i-th `IMAGE_TOKEN`; L' = L + n (m - 1)."""
        ids = torch.tensor(list(input_ids), device=images.device)
        slots = (ids == IMAGE_TOKEN).nonzero().flatten().tolist()
        if len(slots) != len(images):
            raise ValueError(f"the prompt has {len(slots)} image places for {len(images)} images")
        text = self.llm.get_input_embeddings()(ids.clamp(min=0))
        pieces, start = [], 0
        for slot, tokens in zip(slots, images):
            pieces += [text[start:slot], tokens.to(text.dtype)]
            start = slot + 1
        pieces.append(text[start:])
        return torch.cat(pieces)[None]

    def forward(self, input_ids: Sequence[int], images: Tensor) -> tuple[Tensor, Tensor]:
        """(last-layer states after the final norm [L', H], next-token logits [V] at the last row)."""
        embeds = self.embed(input_ids, images)
        out = self.llm.model(inputs_embeds=embeds, use_cache=False)
        hidden = out.last_hidden_state[0]
        return hidden, self.llm.lm_head(hidden[-1])

    def seg_prompts(self, hidden: Tensor, rows: Sequence[int]) -> Tensor:
        """[k, C] prompt tokens of the [SEG]s at `rows` (`conversation.seg_rows`) of `hidden`."""
        return self.text_hidden_fcs(hidden[list(rows)])
