"""GLUS's image tokens (CLIP preprocessing, penultimate patch tokens, 1-D pooling, projector)
against the official inference recorded in tests/fixtures/glus_official."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from refseg.methods.glus.vision import ClipTower, VisionTokens, clip_pixels

FIXTURE = Path(__file__).parent / "fixtures" / "glus_official" / "glus_official.npz"
TOWER = "model.vision_tower.vision_tower.vision_model."  # `transformers` 5 names drop `vision_model.`


def official_state() -> tuple[dict[str, torch.Tensor], dict, dict[str, np.ndarray]]:
    with np.load(FIXTURE, allow_pickle=False) as f:
        state = {k[6:]: torch.from_numpy(f[k]) for k in f.files if k.startswith("state/")}
        for key, e in json.loads(str(f["exponents"])).items():
            state[key] = torch.from_numpy(f["codes/" + key]).float() * 2.0 ** e
        arrays = {k: f[k] for k in ("frames", "clip_pixels", "clip_patches", "image_tokens")}
        config = json.loads(str(f["config"]))
    return state, config, arrays


def test_image_tokens_equal_the_official_ones():
    state, config, arrays = official_state()
    pixels = torch.stack([clip_pixels(frame, config["clip"]["image_size"]) for frame in arrays["frames"]])
    assert torch.allclose(pixels, torch.from_numpy(arrays["clip_pixels"]), atol=1e-6)
    tower = CLIPVisionModel(CLIPVisionConfig(**config["clip"]))
    weights = {k[len(TOWER):]: v for k, v in state.items() if k.startswith(TOWER) and not k.endswith("position_ids")}
    tower.load_state_dict(weights)
    tokens = VisionTokens(ClipTower(tower), llm_width=64)
    tokens.mm_projector.load_state_dict({"weight": state["model.mm_projector.weight"],
                                         "bias": state["model.mm_projector.bias"]})
    assert torch.allclose(tokens.patches(pixels), torch.from_numpy(arrays["clip_patches"]), atol=1e-5)
    out = tokens(pixels)
    assert out.shape == (20, 16, 64)
    assert torch.allclose(out, torch.from_numpy(arrays["image_tokens"]), atol=1e-5)


def test_pooling_is_along_the_token_sequence_not_square():
    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                             num_attention_heads=2, image_size=28, patch_size=7))
    tokens = VisionTokens(ClipTower(tower), llm_width=8)
    with torch.no_grad():
        tokens.mm_projector.weight.copy_(torch.eye(8))
        tokens.mm_projector.bias.zero_()
    pixels = torch.randn(1, 3, 28, 28)
    patches = tokens.patches(pixels)  # 4 x 4 grid in raster order
    out = tokens(pixels)
    assert torch.allclose(out[0, 1], patches[0, 4:8].mean(0), atol=1e-6)  # the grid's second row, 1 x 4
