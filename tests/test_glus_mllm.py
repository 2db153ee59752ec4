"""GLUS's MLLM pass ([SEG] states, prompt tokens, next-token logits) against the official
inference recorded in tests/fixtures/glus_official, call by call."""

from __future__ import annotations

import json

import numpy as np
import torch
from test_glus_vision import FIXTURE, official_state
from transformers import LlamaConfig, LlamaForCausalLM

from refseg.methods.glus.checkpoint import LLAMA_FIELDS
from refseg.methods.glus.conversation import IMAGE_TOKEN, seg_rows
from refseg.methods.glus.mllm import GlusLlm


def official_llm() -> tuple[GlusLlm, dict]:
    state, config, _ = official_state()
    llava = config["llava_config"]
    llm = LlamaForCausalLM(LlamaConfig(**{k: llava[k] for k in LLAMA_FIELDS if k in llava}))
    llm.load_state_dict({k: v for k, v in state.items() if k.startswith(("model.layers.", "model.embed_tokens.",
                                                                         "model.norm.", "lm_head."))
                         and not k.endswith("rotary_emb.inv_freq")})  # a 4.31 buffer, recomputed
    model = GlusLlm(llm, prompt_width=llava["out_dim"]).eval()
    model.text_hidden_fcs.layers.load_state_dict({k[len("model.text_hidden_fcs.0."):]: v for k, v in state.items()
                                                  if k.startswith("model.text_hidden_fcs.0.")})
    return model, config


@torch.no_grad()
def test_seg_states_prompts_and_logits_equal_the_official_calls():
    model, _ = official_llm()
    with np.load(FIXTURE, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        image_tokens = torch.from_numpy(f["image_tokens"])
        worst = {"seg_hidden": 0.0, "seg_proj": 0.0, "last_logits": 0.0}
        for p in ("main", "kf_forward", "kf_backward"):
            for i, step in enumerate(meta[p]):
                ids = f[f"{p}/{i}/input_ids"].tolist()
                images = image_tokens[step["images"]]
                if p == "main" and i == 0:
                    embeds = model.embed(ids, images)[0]
                    assert torch.allclose(embeds, torch.from_numpy(f["main/0/inputs_embeds"]), atol=1e-6)
                hidden, logits = model(ids, images)
                assert hidden.shape[0] == step["seq_len"] == len(ids) + len(images) * 15
                rows = seg_rows(ids + [int(logits.argmax())], meta["token_ids"]["[SEG]"], images.shape[1])
                assert rows == step["seg_positions"] and int(logits.argmax()) == step["generated"]
                got = {"seg_hidden": hidden[rows], "seg_proj": model.seg_prompts(hidden, rows)}
                if p == "main":
                    got["last_logits"] = logits
                for key, value in got.items():
                    expected = torch.from_numpy(f[f"{p}/{i}/{key}"]).reshape(value.shape)
                    worst[key] = max(worst[key], float((value - expected).abs().max()))
    assert max(worst.values()) <= 1e-4, worst


def test_image_places_must_match_the_images():
    model, _ = official_llm()
    import pytest
    with pytest.raises(ValueError, match="2 image places for 1 images"):
        model.embed([1, IMAGE_TOKEN, 5, IMAGE_TOKEN], torch.zeros(1, 16, 64))


@torch.no_grad()
def test_a_kept_prefix_computes_what_the_whole_call_computes():
    """The system text and context frames run once (`GlusLlm.prefix`); every later call of the
    video computes only its own rows, and they equal the whole pass's rows."""
    from refseg.methods.glus.conversation import query_start

    model, _ = official_llm()
    with np.load(FIXTURE, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        image_tokens = torch.from_numpy(f["image_tokens"])
        calls = [(f[f"main/{i}/input_ids"].tolist(), image_tokens[step["images"]]) for i, step in enumerate(meta["main"])]
    context = meta["main"][0]["images"][:4]
    assert all(step["images"][:4] == context for step in meta["main"])  # every call shares the context frames
    ids0, images0 = calls[0]
    cut = query_start(ids0, 4)
    assert ids0[cut + 1] == IMAGE_TOKEN and sum(t == IMAGE_TOKEN for t in ids0[:cut]) == 4
    prefix = model.prefix(ids0[:cut], images0[:4])
    assert len(calls) > 2
    for ids, images in calls:
        whole, whole_logits = model(ids, images)
        tail, logits = model(ids, images, prefix)
        assert prefix.cache.get_seq_length() == prefix.rows  # the call's own rows are dropped again
        assert tail.shape[0] == whole.shape[0] - prefix.rows
        torch.testing.assert_close(tail, whole[prefix.rows:], atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, whole_logits, atol=1e-5, rtol=0)
    import pytest

    with pytest.raises(ValueError, match="does not begin with the prefix"):
        model(ids0[1:], images0, prefix)
    with pytest.raises(ValueError, match="not 4 context frames and a query frame"):
        query_start(ids0[:cut], 4)
