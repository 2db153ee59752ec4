"""GLUS end to end against the official inference (tests/fixtures/glus_official): the masks of a
forward pass over 20 frames and of a key-frame run, from the official checkpoint layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_glus_sam import official_sam2
from test_glus_vision import FIXTURE, official_state
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from refseg.methods.glus.checkpoint import LLAMA_FIELDS, official_parts
from refseg.methods.glus.mllm import GlusLlm
from refseg.methods.glus.model import Glus, GlusConfig
from refseg.methods.glus.vision import ClipTower, VisionTokens
from refseg.sam.checkpoint import CheckpointError

MARGIN = 1e-3  # pixels whose official logit is this close to 0 may flip (the fixture's smallest is 1.3e-4)


def official_glus() -> Glus:
    state, config, _ = official_state()
    parts = official_parts(state)
    llava = config["llava_config"]
    llm = LlamaForCausalLM(LlamaConfig(**{k: llava[k] for k in LLAMA_FIELDS if k in llava}))
    llm.load_state_dict(parts["llm"])
    glus_llm = GlusLlm(llm, prompt_width=llava["out_dim"])
    glus_llm.text_hidden_fcs.layers.load_state_dict(parts["text_hidden_fcs"])
    tower = CLIPVisionModel(CLIPVisionConfig(**config["clip"]))
    tower.load_state_dict(parts["vision_tower"])
    vision = VisionTokens(ClipTower(tower), llava["hidden_size"])
    vision.mm_projector.load_state_dict(parts["mm_projector"])
    sam = official_sam2()
    sam.load_state_dict(parts["sam"])
    tokenizer = AutoTokenizer.from_pretrained(FIXTURE.parent / "tokenizer")
    return Glus(vision, glus_llm, sam, tokenizer, GlusConfig()).eval()


@pytest.fixture(scope="module")
def recorded():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return json.loads(str(f["meta"])), {k: f[k] for k in f.files if k.startswith(("main/", "kf/", "frames"))}


def agree(ours: np.ndarray, theirs: np.ndarray, logits: np.ndarray) -> bool:
    sure = np.abs(logits) > MARGIN
    return bool(np.array_equal(ours[sure], theirs[sure]))


def test_forward_pass_masks_and_logits_equal_the_official_run(recorded):
    meta, data = recorded
    result = official_glus().segment(list(data["frames"]), meta["expression"])
    assert all(result.answered)
    for t in range(20):
        official = data[f"main/{t}/frame_logits"]
        assert np.abs(result.logits[t].numpy() - official).max() <= 1e-4 + 1e-5 * np.abs(official).max(), t
        assert agree(result.masks[t], data["main/masks"][t], official), t


def test_key_frame_run_takes_each_frame_from_its_own_pass(recorded):
    meta, data = recorded
    key = meta["key_frame"]
    result = official_glus().segment(list(data["frames"]), meta["expression"], key_frame=key)
    forward, backward = data["kf/forward_masks"], data["kf/backward_masks"]  # per step of each pass
    for step, frame in enumerate(meta["kf_forward_frames"][1:], start=1):
        assert np.array_equal(result.masks[frame], forward[step]), frame
    for step, frame in enumerate(meta["kf_backward_frames"]):
        assert np.array_equal(result.masks[frame], backward[step]), frame


def test_foreign_keys_are_named():
    with pytest.raises(CheckpointError, match="not a GLUS checkpoint key: \\['model.extra.weight'\\]"):
        official_parts({"model.extra.weight": torch.zeros(1)})


def published_folder(tmp_path, gamma: float):
    """The fixture's model written as a published GLUS folder: config.json, pytorch_model.bin
    (no vision tower; fuser layer scales set to `gamma`, as trained SAM 2 weights hold), the
    tokenizer, and a CLIP folder beside it."""
    import shutil

    state, config, _ = official_state()
    tower = CLIPVisionModel(CLIPVisionConfig(**config["clip"]))
    tower.load_state_dict(official_parts(state)["vision_tower"])
    tower.save_pretrained(tmp_path / "clip")
    folder = tmp_path / "glus"
    shutil.copytree(FIXTURE.parent / "tokenizer", folder)
    weights = {k: v for k, v in state.items() if not k.startswith("model.vision_tower.")}
    for key in ("model.visual_model.memory_encoder.fuser.layers.0.gamma",
                "model.visual_model.memory_encoder.fuser.layers.1.gamma"):
        weights[key] = torch.full_like(weights[key], gamma)
    torch.save(weights, folder / "pytorch_model.bin")
    meta = {**config["llava_config"], "vision_tower": str(tmp_path / "clip")}
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def test_a_published_folder_loads_and_computes_the_official_masks(recorded, tmp_path):
    from refseg.methods.glus.checkpoint import load_official_glus

    meta, data = recorded
    folder = published_folder(tmp_path, gamma=0.5)
    sam_config = official_sam2().config  # a tiny SAM 2 is no published size: its config is given
    model = load_official_glus(folder, sam_config=sam_config)
    result = model.segment(list(data["frames"]), meta["expression"])
    for t in range(20):
        assert agree(result.masks[t], data["main/masks"][t], data[f"main/{t}/frame_logits"]), t
    # the official inference never loads the fuser's layer scales; the checkpoint's change the masks
    kept = load_official_glus(folder, sam_config=sam_config, fuser="checkpoint").segment(list(data["frames"][:6]),
                                                                                         meta["expression"])
    assert any(not torch.allclose(a, b, atol=1e-3) for a, b in zip(kept.logits[1:], result.logits[1:6]))
    with pytest.raises(CheckpointError, match="is not a local folder; pass vision_tower"):
        load_official_glus(folder, vision_tower=tmp_path / "nowhere", sam_config=sam_config)
