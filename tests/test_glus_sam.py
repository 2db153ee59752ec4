"""GLUS's SAM 2 half on the engine (stride-3 memory without temporal encoding or pointers, the
[SEG]-prompted single-mask decode with SAM 2's stability fallback, memory from the conditioned
embedding) against the official inference in tests/fixtures/glus_official: the official [SEG]
prompt of each call in, mask logits and memories out, every step of the three passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_glus_vision import FIXTURE, official_state

from conftest import narrow_sam2_config

from refseg.engine import Session
from refseg.methods.glus.hooks import GlusHooks
from refseg.sam.checkpoint import convert_official_state_dict, load_state
from refseg.sam.model import Sam2

ATOL, RTOL = 1e-4, 1e-5  # the fixture's mask logits reach +-70 (its decoder gains): |a - b| <= ATOL + RTOL |b|


def excess(ours: torch.Tensor, official: torch.Tensor) -> float:
    """How far `ours` is outside the tolerance around `official` (<= ATOL passes)."""
    return float(((ours - official).abs() - RTOL * official.abs()).max())


def official_sam2() -> Sam2:
    """The fixture's SAM 2: sam2_hiera_l.yaml (SAM 2.0) at tiny widths, 64 px (its README)."""
    trunk = dict(hidden_size=8, embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 2, 4, 8],
                 blocks_per_stage=[1, 2, 3, 1], global_attention_blocks=[4], window_size_per_stage=[4, 4, 2, 2],
                 window_positional_embedding_background_size=[7, 7])
    config = narrow_sam2_config(trunk, 64, width=32, memory_width=8, memory_attention_num_layers=4,
                                memory_attention_feed_forward_hidden_size=64)
    state, _, _ = official_state()
    prefix = "model.visual_model."
    sam = convert_official_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return load_state(Sam2(config), sam, "glus fixture").eval()


@pytest.fixture(scope="module")
def recorded():
    with np.load(FIXTURE, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        data = {k: torch.from_numpy(f[k]) for k in f.files if k.startswith(("main/", "kf_")) or k == "frames"}
    return meta, data


@torch.no_grad()
@pytest.mark.parametrize("name", ["main", "kf_forward", "kf_backward"])
def test_each_pass_gives_the_official_masks_and_memories(recorded, name):
    meta, data = recorded
    frames = data["frames"].numpy()
    order = {"main": list(range(len(frames))), "kf_forward": meta["kf_forward_frames"],
             "kf_backward": meta["kf_backward_frames"]}[name]
    sam = official_sam2()
    hooks = GlusHooks()
    session = Session(sam, hooks, memory_dtype=torch.float32)
    session.add_object(1)
    worst = {"low_res": -1.0, "maskmem": -1.0, "frame_logits": -1.0}
    for i, frame in enumerate(order):
        hooks.prompt = data[f"{name}/{i}/seg_proj"][-1].view(1, 1, -1)
        result = session.push(frames[frame]).objects[1]
        low = result.low_res_logits
        worst["low_res"] = max(worst["low_res"], excess(low, data[f"{name}/{i}/low_res"][0]))
        memory = session.bank.object(1).recent[i].features  # [h*w, D]
        expected = data[f"{name}/{i}/maskmem"].flatten(1).T
        worst["maskmem"] = max(worst["maskmem"], excess(memory, expected))
        if name == "main":
            worst["frame_logits"] = max(worst["frame_logits"], excess(result.logits, data[f"main/{i}/frame_logits"]))
    assert max(worst.values()) <= ATOL, worst


def test_a_frame_needs_its_seg_token():
    session = Session(official_sam2(), GlusHooks())
    session.add_object(1)
    with pytest.raises(RuntimeError, match="frame 0: GLUS decodes from the frame's \\[SEG\\] token"):
        session.push(np.zeros((48, 80, 3), np.uint8))
