"""SAMWISE against the official implementation (ClaudiaCuttano/SAMWISE), float32 on CPU.

The fixture (tests/fixtures/samwise_official, made by its make_fixture.py from the official code)
holds a tiny official SAMWISE checkpoint with base+ structure, its tokenizer, 8 frames of 120x215
and what the official inference computed on them for one expression. refseg loads the checkpoint
through `load_official_samwise`, streams the same frames and text, and must reproduce the official
mask logits to 1e-4.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from refseg.methods.samwise.checkpoint import load_official_samwise  # noqa: E402
from refseg.methods.samwise.model import SamwiseConfig  # noqa: E402
from conftest import narrow_sam2_config  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "samwise_official"
ATOL = 1e-4


def tiny_official_sam2_config():
    """The SAM 2 that make_fixture.py builds: sam2_hiera_b+.yaml (SAM 2.0) at tiny widths."""
    trunk = dict(hidden_size=8, embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[2, 4, 8, 16],
                 blocks_per_stage=[2, 2, 4, 2], global_attention_blocks=[5, 7], window_size_per_stage=[8, 4, 14, 7],
                 window_positional_embedding_background_size=[14, 14])
    config = narrow_sam2_config(trunk, 1024, width=64, memory_width=64, memory_attention_num_layers=1,
                                memory_attention_feed_forward_hidden_size=64)
    config.mask_decoder_config.mlp_dim = 64
    config.mask_decoder_config.iou_head_hidden_dim = 64
    return config


SAMWISE_CONFIG = SamwiseConfig(text_encoder="roberta", text_layers=[2, 3, 4], adapter_dim=32, heads=8,
                               patches=[8, 4, 2], motion=False, cme=True, cme_window=4, cme_weight=10.0, clip_len=8)


@pytest.fixture(scope="module")
def fixture():
    assert (FIXTURE / "outputs.pt").is_file(), f"the official fixture is missing: regenerate it ({FIXTURE}/README.md)"
    torch.set_num_threads(2)
    outputs = torch.load(FIXTURE / "outputs.pt", weights_only=False)
    outputs["frames"] = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((FIXTURE / "frames").glob("*.png"))])
    return outputs


@pytest.fixture(scope="module")
def model(fixture):
    return load_official_samwise(FIXTURE / "samwise_tiny.pth", FIXTURE / "tokenizer", config=SAMWISE_CONFIG,
                                 sam2_config=tiny_official_sam2_config(), text_heads=2)


def stream(model, frames, text, force_cme=None):
    """Stream the clip; return the per-frame results of the object and the hooks. `force_cme`
    1 / 0 replaces every CME decision by fuse / keep (its logits by [0, 1] / [1, 0])."""
    original = model.cme.forward
    if force_cme is not None:
        logits = torch.tensor([[0.0, 1.0]] if force_cme else [[1.0, 0.0]])
        model.cme.forward = lambda tau_m, tau_l: logits.expand(tau_m.shape[0], 2)
    try:
        s = model.stream([text], memory_dtype=torch.float32)
        results = []
        for frame in frames:
            results += s.push(frame)
        results += s.flush()
    finally:
        model.cme.forward = original
    objects = [r.objects[1] for r in results]
    return objects, s.sessions[1].hooks


def test_tokens(fixture, model):
    tokens = model.text.tokenize([fixture["text"]])
    assert tokens.ids[0].tolist() == fixture["token_ids"].tolist()


@pytest.fixture(scope="module")
def learned(fixture, model):
    with torch.inference_mode():
        return stream(model, fixture["frames"], fixture["text"])


def test_object_scores(fixture, learned):
    objects, _ = learned
    scores = torch.tensor([o.score for o in objects])
    torch.testing.assert_close(scores, fixture["object_score"], atol=ATOL, rtol=0)


def test_low_res_logits(fixture, learned):
    objects, _ = learned
    low = torch.stack([o.low_res_logits for o in objects])
    torch.testing.assert_close(low[:, ::8, ::8], fixture["low_res_sub"], atol=ATOL, rtol=0)
    torch.testing.assert_close(low.double().sum(-1).float(), fixture["low_res_rowsum"], atol=ATOL * 256, rtol=1e-5)


def test_mask_logits_at_frame_size(fixture, learned):
    objects, _ = learned
    logits = torch.stack([o.logits for o in objects])[fixture["logits_frames"]]
    assert logits.shape == fixture["logits"].shape
    torch.testing.assert_close(logits, fixture["logits"], atol=ATOL, rtol=0)


def test_cme_decisions(fixture, learned):
    _, hooks = learned
    assert hooks.switches == len(fixture["fused"])


@pytest.mark.parametrize("variant", ["switch", "keep"])
def test_forced_cme(fixture, model, learned, variant):
    with torch.inference_mode():
        objects, hooks = stream(model, fixture["frames"], fixture["text"], force_cme=int(variant == "switch"))
    assert hooks.switches == len(fixture[f"{variant}_fused"])
    start = int(fixture["forced_from"])
    logits = torch.stack([o.logits for o in objects])[start:]
    expected = fixture[f"{variant}_logits"]
    if expected is None:  # the same as the learned run
        expected = torch.stack([o.logits for o in learned[0]])[start:]
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_refseg_load_routes_an_official_file_and_names_what_is_missing(tmp_path, monkeypatch):
    """`refseg.load(FILE.pth, tokenizer=DIR)` (and `--model FILE.pth --tokenizer DIR`) is this
    loader: the tiny fixture's SAM 2 is no published size, and the error says so; a tokenizer
    that is neither a folder nor reachable is named before any weight is read."""
    from refseg.models import load
    from refseg.sam.checkpoint import CheckpointError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="unknown SAM 2 size"):
        load(FIXTURE / "samwise_tiny.pth", tokenizer=FIXTURE / "tokenizer")
    with pytest.raises(CheckpointError, match="SAMWISE tokenizer .*pass the folder of a RoBERTa-base tokenizer"):
        load(FIXTURE / "samwise_tiny.pth", tokenizer=tmp_path / "none")
