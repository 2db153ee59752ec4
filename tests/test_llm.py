"""The offline language model: SmolLM2 from its GGUF file, dequantised once into refseg's cache."""

from __future__ import annotations

import time

import pytest
import torch

from refseg.encoders.llm import cache_root, default_gguf, gguf_digest, load_llm


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REFSEG_CACHE", str(tmp_path / "a"))
    assert cache_root() == tmp_path / "a"
    monkeypatch.delenv("REFSEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "refseg"


def test_the_digest_sees_a_changed_file(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(3 << 20))
    before = gguf_digest(path)
    data = bytearray(path.read_bytes())
    data[-5] = 1  # the last MiB
    path.write_bytes(bytes(data))
    assert gguf_digest(path) != before


def test_bad_sources_get_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such language model file or folder"):
        load_llm(tmp_path / "missing.gguf")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not a language model folder"):
        load_llm(tmp_path / "folder")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a .gguf file"):
        load_llm(tmp_path / "weights.bin")


@pytest.mark.slow
def test_smollm2_is_dequantised_once_then_read_from_the_cache_and_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("REFSEG_CACHE", str(tmp_path))
    first, tokenizer = load_llm()
    folders = list((tmp_path / "llm").iterdir())
    assert [f.name for f in folders] == [f"{default_gguf().stem}-{gguf_digest(default_gguf())}"]
    assert not [p for p in (tmp_path / "llm").iterdir() if "partial" in p.name]
    start = time.perf_counter()
    again, tokenizer = load_llm()
    assert time.perf_counter() - start < 20  # the dequantisation takes about 40 s
    assert type(again).__name__ == "LlamaForCausalLM" and again.num_parameters() == first.num_parameters()
    a, b = first.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()  # tied, as SmolLM2
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    answer = tokenizer.decode(again.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:])
    assert "Paris" in answer
