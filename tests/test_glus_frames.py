"""GLUS's prompt layout, token ids, [SEG] rows and frame choices, against the official inference
recorded in tests/fixtures/glus_official (41 calls: a forward pass and a key-frame run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from refseg.methods.glus.conversation import (IMAGE_TOKEN, clean_expression, glus_input_ids, glus_prompt,
                                              seg_rows)
from refseg.methods.glus.frames import context_frames, memory_frames, query_window

FIXTURE = Path(__file__).parent / "fixtures" / "glus_official"
PASSES = ("main", "kf_forward", "kf_backward")


@pytest.fixture(scope="module")
def official():
    with np.load(FIXTURE / "glus_official.npz", allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        ids = {f"{p}/{i}": f[f"{p}/{i}/input_ids"].tolist() for p in PASSES for i in range(len(meta[p]))}
    return meta, ids


def calls(meta):
    return [(p, i, step) for p in PASSES for i, step in enumerate(meta[p])]


def test_prompt_token_ids_and_seg_rows_are_the_official_ones(official):
    meta, ids = official
    tokenizer = AutoTokenizer.from_pretrained(FIXTURE / "tokenizer")
    assert len(calls(meta)) == 41
    for p, i, step in calls(meta):
        prompt = glus_prompt(meta["expression"], len(step["query_frames"]))
        assert prompt == step["prompt"], (p, i)
        assert glus_input_ids(prompt, tokenizer) == ids[f"{p}/{i}"], (p, i)
        assert seg_rows(ids[f"{p}/{i}"] + [step["generated"]], meta["token_ids"]["[SEG]"], 16) == step["seg_positions"]
    # the window: the context images always lead, then one image per query turn
    step = meta["main"][7]
    assert step["query_frames"] == [4, 5, 6, 7] and ids["main/7"].count(IMAGE_TOKEN) == 8


def test_the_layout_by_hand():
    prompt = glus_prompt("The red ball.", 2, context_frames=2, failed=[True])
    assert prompt.count("<image>") == 4 and prompt.endswith("ASSISTANT: Sure, the segmentation result is ")
    assert "the red ball in this frame?" in prompt and "[SEG] .</s>USER: <im_start><image><im_end>\nCan" in prompt
    first_turn = prompt.split("</s>")[0]
    assert first_turn.count("<image>") == 3 and first_turn.index("context frames above") < first_turn.rindex("<image>")
    assert clean_expression("  Cat on the LEFT. ") == "cat on the left"
    with pytest.raises(ValueError, match="one flag per earlier turn"):
        glus_prompt("x", 3, failed=[False])
    # the shift: a [SEG] takes the row before it; each earlier image adds its extra rows
    assert seg_rows([1, 5, IMAGE_TOKEN, 6, 9, 7, IMAGE_TOKEN, 8, 9], seg_id=9, image_tokens=4) == [3 + 3, 7 + 6]


def test_frames_the_official_inference_reads(official):
    meta, _ = official
    assert context_frames(meta["num_frames"]) == meta["context_frames"] == [2, 7, 12, 17]
    order = {"main": list(range(meta["num_frames"])), "kf_forward": meta["kf_forward_frames"],
             "kf_backward": meta["kf_backward_frames"]}  # pass position -> frame
    for p, i, step in calls(meta):
        assert memory_frames(i) == step["mem_frames"], (p, i)
        assert [order[p][k] for k in memory_frames(i)] == step["mem_clip_frames"], (p, i)
        assert [order[p][k] for k in query_window(i)] == step["query_frames"], (p, i)
    assert memory_frames(19) == [0, 3, 6, 9, 12, 15, 18] and memory_frames(20) == [3, 6, 9, 12, 15, 18, 19]
    assert memory_frames(5, stride=1) == [0, 1, 2, 3, 4] and memory_frames(0) == []


def test_training_context_frames_draw_one_per_segment():
    rng = np.random.default_rng(0)
    draws = np.array([context_frames(40, rng=rng) for _ in range(400)])
    for j in range(4):
        assert set(draws[:, j]) == set(range(10 * j, 10 * j + 10))  # every frame of the segment, no other
    # shorter than 4: b = [0, 0, 1, 1, 2], offset 0 -> min(0, -1), min(0, 0), min(1, 0), min(1, 1);
    # the official -1 indexes the last frame
    assert context_frames(2) == [1, 0, 0, 1]


def test_no_context_frames_for_a_model_without_global_context():
    assert context_frames(40, 0) == [] and context_frames(1, 0, np.random.default_rng(0)) == []
