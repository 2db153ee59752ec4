"""GLUS's multimodal LLM (paper Sec. 4.1; LISA / LLaVA layout): image tokens spliced into the
token sequence, one causal-LM pass, and the [SEG] embeddings projected into SAM 2 prompt tokens.

For one call (`conversation.glus_prompt` / `glus_input_ids`), every `IMAGE_TOKEN` of the ids is
replaced by that image's m tokens (`vision.VisionTokens`), in order; the sequence runs through the
LLM without a padding mask (plain causal attention, positions 0 .. L-1, as the official inference
runs it). The [SEG] embedding of a query frame is the LLM's last-layer state after its final norm
at the row before that frame's [SEG] (`conversation.seg_rows`), and `text_hidden_fcs` (Linear, ReLU,
Linear to the SAM width C) turns it into the one sparse prompt token of that frame.

GLUS's added tokens ([SEG], <im_start>, <im_end>) are part of a published checkpoint's vocabulary.
A language model without them (refseg's SmolLM2 default) gets them as `added` extra rows: token
id V + i (V the LLM's vocabulary) is looked up in `added_embed[i]` and scored by `added_head[i]`
(the same tensor when the LLM ties its input and output embeddings). Only these rows train, so a
trained model stores 3 x H numbers for them instead of the whole V x H table.

Every call over one video begins with the same ids and images (the system text and the context
frames, `conversation.query_start`): `prefix` runs them once and keeps their keys and values, and
a call given that `Prefix` computes only the rows after it. Causal attention makes this the same
computation as the whole sequence (the prefix's rows never see what follows them).

Fine-tuning (Sec. 5.2): LoRA (`peft`) on the attention projections (`add_lora`), merged into the
base weights for inference (`merge_lora`; the merged model computes what the unmerged one does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel

from refseg.methods.glus.conversation import IMAGE_TOKEN, token_rows


class SegProjection(nn.Module):
    """`text_hidden_fcs`: [.., H] -> [.., C] (Linear H -> H, ReLU, Linear H -> C)."""

    def __init__(self, llm_width: int, prompt_width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(llm_width, llm_width), nn.ReLU(), nn.Linear(llm_width, prompt_width))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.layers(hidden)


@dataclass
class Prefix:
    """The LLM's keys and values (`cache`) of the leading `ids` of a call, which hold `images`
    images and fill `rows` rows of the LLM sequence."""

    ids: tuple[int, ...]
    images: int
    rows: int
    cache: DynamicCache


class GlusLlm(nn.Module):
    """A causal LM (`transformers`, e.g. `LlamaForCausalLM`) with GLUS's image splicing, its
    `added` token rows and the [SEG] projection."""

    def __init__(self, llm: PreTrainedModel, prompt_width: int = 256, added: int = 0) -> None:
        super().__init__()
        self.llm = llm
        width = int(llm.config.hidden_size)
        self.vocab = int(llm.get_input_embeddings().weight.shape[0])
        self.text_hidden_fcs = SegProjection(width, prompt_width)
        # per-channel standardisation of the [SEG] state before `text_hidden_fcs` (identity unless calibrated)
        self.register_buffer("seg_shift", torch.zeros(width))
        self.register_buffer("seg_gain", torch.ones(width))
        self.added_embed = nn.Parameter(torch.zeros(added, width))
        self.tied = bool(getattr(llm.config, "tie_word_embeddings", False))
        self.added_head = None if self.tied else nn.Parameter(torch.zeros(added, width))
        if added:
            with torch.no_grad():  # new tokens start at the mean embedding (as `resize_token_embeddings` does)
                self.added_embed.copy_(llm.get_input_embeddings().weight.mean(0).expand(added, -1))
                if self.added_head is not None:
                    self.added_head.copy_(llm.get_output_embeddings().weight.mean(0).expand(added, -1))

    @property
    def width(self) -> int:
        return int(self.llm.config.hidden_size)

    def embed(self, input_ids: Sequence[int], images: Tensor) -> Tensor:
        """Token embeddings [1, L', H] with image i's tokens (images [n, m, H]) in place of the
        i-th `IMAGE_TOKEN`; L' = L + n (m - 1)."""
        ids = torch.tensor(list(input_ids), device=images.device)
        slots = (ids == IMAGE_TOKEN).nonzero().flatten().tolist()
        if len(slots) != len(images):
            raise ValueError(f"the prompt has {len(slots)} image places for {len(images)} images")
        if int(ids.max()) >= self.vocab + len(self.added_embed):
            raise ValueError(f"token id {int(ids.max())} is beyond the vocabulary ({self.vocab} + "
                             f"{len(self.added_embed)} added)")
        base = ids.clamp(min=0, max=self.vocab - 1)
        text = self.llm.get_input_embeddings()(base)
        extra = ids >= self.vocab
        if extra.any():
            text = torch.where(extra[:, None], self.added_embed[(ids - self.vocab).clamp(min=0)].to(text.dtype), text)
        pieces, start = [], 0
        for slot, tokens in zip(slots, images):
            pieces += [text[start:slot], tokens.to(text.dtype)]
            start = slot + 1
        pieces.append(text[start:])
        return torch.cat(pieces)[None]

    def states(self, input_ids: Sequence[int], images: Tensor) -> Tensor:
        """Last-layer states after the final norm [L', H]."""
        out = self.llm.model(inputs_embeds=self.embed(input_ids, images), use_cache=False)
        return out.last_hidden_state[0]

    def logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits [.., V + added] of states [.., H]."""
        head = self.added_embed if self.added_head is None else self.added_head
        return torch.cat([self.llm.lm_head(hidden), hidden @ head.to(hidden.dtype).T], dim=-1)

    def answer_loss(self, hidden: Tensor, input_ids: Sequence[int], targets: Sequence[int], image_tokens: int) -> Tensor:
        """Cross-entropy of the tokens at positions `targets` of `input_ids` (the assistant's,
        `conversation.answer_targets`), each predicted from the row before it in `hidden` [L', H]
        (images of `image_tokens` rows each)."""
        rows = token_rows(input_ids, image_tokens)
        logits = self.logits(hidden[[rows[t] - 1 for t in targets]])
        labels = torch.tensor([input_ids[t] for t in targets], device=logits.device)
        return nn.functional.cross_entropy(logits.float(), labels)

    def prefix(self, input_ids: Sequence[int], images: Tensor) -> Prefix:
        """Run the leading `input_ids` of later calls (their `images` [n, m, H]) once and keep
        their keys and values (module docstring)."""
        embeds = self.embed(input_ids, images)
        cache = DynamicCache(config=self.llm.config)
        self.llm.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
        return Prefix(tuple(input_ids), len(images), embeds.shape[1], cache)

    def forward(self, input_ids: Sequence[int], images: Tensor, prefix: Prefix | None = None) -> tuple[Tensor, Tensor]:
        """(last-layer states after the final norm [L', H], next-token logits [V + added] at the
        last row). With `prefix` (`input_ids` and `images` must begin with its ids and images),
        the states of the rows after the prefix only: [L' - prefix.rows, H]."""
        if prefix is None:
            hidden = self.states(input_ids, images)
            return hidden, self.logits(hidden[-1])
        if tuple(input_ids[:len(prefix.ids)]) != prefix.ids or len(images) < prefix.images:
            raise ValueError("the call does not begin with the prefix's ids and images")
        embeds = self.embed(input_ids[len(prefix.ids):], images[prefix.images:])
        out = self.llm.model(inputs_embeds=embeds, past_key_values=prefix.cache, use_cache=True)
        prefix.cache.crop(prefix.rows - prefix.cache.get_seq_length())  # back to the prefix's rows
        hidden = out.last_hidden_state[0]
        return hidden, self.logits(hidden[-1])

    def seg_prompts(self, hidden: Tensor, rows: Sequence[int]) -> Tensor:
        """[k, C] prompt tokens of the [SEG]s at `rows` (`conversation.seg_rows`) of `hidden`."""
        return self.text_hidden_fcs((hidden[list(rows)] - self.seg_shift) * self.seg_gain)

    @property
    def calibrated(self) -> bool:
        return bool(self.seg_shift.any() or (self.seg_gain != 1).any())

    def calibrate(self, states: Tensor) -> None:
        """Standardise each channel of the [SEG] state by its mean and spread over `states` [n, H]
        (what `text_hidden_fcs` reads then has zero mean and unit spread per channel). A small LLM's
        last-layer states share one large direction and a few huge channels (here 93 % of a state's
        norm is common to every expression), which a freshly initialised projection reads as one
        constant token."""
        with torch.no_grad():
            self.seg_shift.copy_(states.mean(0))
            self.seg_gain.copy_(1 / states.std(0).clamp(min=1e-4))

    def add_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.05,
                 targets: Sequence[str] = ("q_proj", "v_proj")) -> None:
        """LoRA adapters (r, alpha, dropout) on the LLM's linear layers named `targets`; the LLM's
        own weights are held fixed (the adapters start at zero, so outputs do not change)."""
        self.llm.requires_grad_(False)
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                           target_modules=list(targets)), self.llm)

    def merge_lora(self) -> None:
        """Fold every LoRA adapter into its base layer and drop the adapters (inference speed)."""
        for name, module in list(self.llm.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, _, child = name.rpartition(".")
                setattr(self.llm.get_submodule(parent) if parent else self.llm, child, module.get_base_layer())
