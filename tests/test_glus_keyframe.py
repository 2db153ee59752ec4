"""GLUS's key-frame selector: its call, pseudo-labels from a GLUS, training from them (what
trains, the L1 target), folders, and streams that start their passes at the selected frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from test_glus_train import TOKENIZER, frames_of, tiny_config

from refseg.cli import main
from refseg.data import synth
from refseg.methods.glus.build import load_glus, load_selector
from refseg.methods.glus.conversation import IMAGE_TOKEN, glus_input_ids
from refseg.methods.glus.frames import context_frames
from refseg.methods.glus.keyframe import SCORE, SELECTOR_TOKENS, score_prompt
from refseg.train.config import load_config
from refseg.train.glus_kfs import frame_ious, pseudo_labels
from refseg.train.loop import train

import pytest


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kfs")
    glus = train(load_config(tiny_config(root / "glus", steps=2)), progress=False)
    values = tiny_config(root / "kfs", steps=3, task="glus_kfs",
                         key_frames={"context": 3, "labels": str(root / "labels.json"), "early": str(glus / "final")},
                         loss={"score": 1.0, "ce": 1.0})
    values["data"] = {**values["data"], "expressions_per_clip": 1}
    return {"glus": glus, "kfs": train(load_config(values), progress=False), "labels": root / "labels.json"}


def test_a_selector_call_holds_the_context_frames_then_the_query_frame_and_one_score_token():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    tok.add_tokens([SCORE], special_tokens=True)
    prompt = score_prompt("The dog that runs.", context_frames=8)
    assert prompt.count("<image>") == 9 and prompt.count(SCORE) == 1 and "the dog that runs" in prompt
    assert prompt.index("context frames above") < prompt.rindex("<image>")  # the query frame comes last
    ids = glus_input_ids(prompt, tok, SELECTOR_TOKENS)
    assert ids.count(IMAGE_TOKEN) == 9 and ids.count(tok.convert_tokens_to_ids(SCORE)) == 1


def test_frame_ious_against_hand_counts():
    a = np.zeros((3, 4, 4), bool)
    b = np.zeros((3, 4, 4), bool)
    a[0, :2, :2] = True  # 4 pixels
    b[0, :2, :3] = True  # 6 pixels, 4 shared
    b[1, 0, 0] = True  # predicted nothing, target one pixel
    assert frame_ious(list(a), b) == [4 / 6, 0.0, 1.0]


def test_pseudo_labels_are_the_glus_masks_iou_per_frame(runs):
    labels = json.loads(runs["labels"].read_text())
    glus = load_glus(runs["glus"] / "final")
    sample = next(iter(synth.split_samples("train", 0, 1)))
    assert set(labels[sample.video_id]) == {e.exp_id for e in sample.expressions}
    expression = sample.expressions[0]
    frames = list(sample.frames())
    result = glus.segment(frames, expression.text)
    target = sample.target_mask(expression)
    expected = []
    for mask, t in zip(result.masks, target):
        union = (mask | t).sum()
        expected.append(1.0 if union == 0 else (mask & t).sum() / union)
    assert np.allclose(labels[sample.video_id][expression.exp_id], expected)
    assert pseudo_labels(glus, [sample])[sample.video_id][expression.exp_id] == labels[sample.video_id][expression.exp_id]


def test_the_selector_task_trains_its_parts_only(runs):
    run = runs["kfs"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"score", "ce", "loss"} <= set(r) for r in records)
    first = load_file(str(run / "checkpoints" / "step_0000001" / "model.safetensors"))
    last = load_file(str(run / "final" / "model.safetensors"))
    for prefix in ("vision.mm_projector.", "llm.added_embed", "head."):
        assert any(not torch.equal(first[k], last[k]) for k in last if k.startswith(prefix)), prefix
    assert any(".lora_B" in k and not torch.equal(first[k], last[k]) for k in last)
    assert all(torch.equal(first[k], last[k]) for k in last if k.startswith("sam."))


def test_key_frame_is_the_best_scored_frame_and_streams_start_there(runs, monkeypatch):
    selector = load_selector(runs["kfs"] / "final")
    frames = frames_of(6)
    scores = selector.frame_scores(frames, "the red thing")
    assert len(scores) == 6 and selector.key_frame(frames, "the red thing") == int(np.argmax(scores))
    # frame t's score reads the context frames and frame t (a different query frame, a different score)
    assert len(set(round(s, 6) for s in scores)) > 1
    with torch.no_grad():  # each the score of that frame's whole call (the kept prefix changes nothing)
        context = context_frames(6, selector.context)
        tokens = selector.vision(selector.vision.pixels(frames))
        ids = selector.input_ids("the red thing")
        whole = [float(selector.score(ids, tokens[context + [t]])[0]) for t in range(6)]
    np.testing.assert_allclose(scores, whole, atol=1e-5, rtol=0)
    glus = load_glus(runs["glus"] / "final")
    glus.selector = selector
    key = int(np.argmax(scores))
    seen = []
    segment = glus.segment

    def recording(frames_, text, key_frame=None):  # noqa: ANN001, ANN202
        seen.append(key_frame)
        return segment(frames_, text, key_frame)

    monkeypatch.setattr(glus, "segment", recording)
    stream = glus.stream(["the red thing"])
    for frame in frames:
        assert stream.push(frame) == []
    results = stream.flush()
    assert seen == [key] and [r.index for r in results] == list(range(6))
    assert all(np.array_equal(r.objects[1].mask, m) for r, m in zip(results, segment(frames, "the red thing", key).masks))


def test_cli_takes_a_selector_with_glus_only(runs, tmp_path):
    folder = tmp_path / "video"
    folder.mkdir()
    from PIL import Image

    for t, frame in enumerate(frames_of(3)):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg")
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--method", "glus", "--model", str(runs["glus"] / "final"),
                 "--selector", str(runs["kfs"] / "final"), "--text", "the red one", "--out", str(out)]) == 0
    assert len(list((out / "masks" / "1").iterdir())) == 3
    assert main(["segment", str(folder), "--selector", str(runs["kfs"] / "final"), "--text", "x",
                 "--out", str(tmp_path / "o2")]) == 2
