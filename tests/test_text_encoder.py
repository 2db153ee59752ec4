"""Text encoders run layer by layer equal the stock `transformers` models."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel, RobertaConfig, RobertaModel

from refseg.encoders.text import TextEncoder, TextTokens


def _tokens(vocab: int, eos: int | None = None) -> TextTokens:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab - 1, (2, 7), generator=gen)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0  # the second text is two tokens shorter (padding)
    if eos is not None:
        ids[0, 6], ids[1, 4] = eos, eos
    return TextTokens(ids, mask, [[(0, 0)] * 7] * 2, ["a", "b"])


@pytest.mark.parametrize("kind", ["bert", "roberta", "clip"])
def test_layer_by_layer_equals_the_stock_model(kind):
    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=99)
    if kind == "bert":
        model = BertModel(BertConfig(**small), add_pooling_layer=False)
    elif kind == "roberta":
        model = RobertaModel(RobertaConfig(**small, pad_token_id=1), add_pooling_layer=False)
    else:
        model = CLIPTextModel(CLIPTextConfig(**small, eos_token_id=98, max_position_embeddings=16))
    model.eval()
    encoder = TextEncoder(model, tokenizer=None)
    tokens = _tokens(99, eos=98 if kind == "clip" else None)
    with torch.no_grad():
        mine = encoder(tokens)
        stock = model(input_ids=tokens.ids, attention_mask=tokens.mask).last_hidden_state
        # split the layers in two runs: the same result
        hidden = encoder.embed(tokens)
        bias = encoder.attention_bias(tokens, hidden.dtype)
        split = encoder.run_layers(encoder.run_layers(hidden, bias, 0, 1), bias, 1, 3)
    real = tokens.mask.bool()
    assert torch.allclose(mine[real], stock[real], atol=1e-5)
    assert torch.equal(split, mine)
    if kind == "clip":
        assert encoder.sentence_index(tokens).tolist() == [6, 4]
    else:
        assert encoder.sentence_index(tokens).tolist() == [0, 0]


def test_minilm_default_loads_offline_and_rejects_empty_text():
    encoder = TextEncoder.from_pretrained()
    assert (encoder.hidden_size, encoder.num_layers) == (384, 6)
    with pytest.raises(ValueError, match="non-empty"):
        encoder.tokenize(["  "])
