"""Shared fixtures: tiny random-weight SAM 2 models and synthetic videos, nothing downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from refseg.demo import DISK, moving_shapes
from refseg.sam import Sam2, tiny_test_config
from refseg.sam.config import build_config

torch.set_num_threads(2)


def narrow_sam2_config(trunk: dict, image_size: int, width: int, memory_width: int, **overrides):
    """A SAM 2.0 config whose heads are all `width` wide (neck, prompt encoder, decoder, memory
    attention and encoder, fuser 4 x width) with memories `memory_width` wide: the tiny models the
    official-parity fixtures were made with. `overrides` are `Sam2VideoConfig` fields."""
    fields = dict(num_maskmem=7, memory_attention_hidden_size=width, memory_encoder_hidden_size=width,
                  memory_encoder_output_channels=memory_width, mask_downsampler_embed_dim=width,
                  memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=4 * width)
    config = build_config(trunk, image_size=image_size, version="2", **{**fields, **overrides})
    config.vision_config.fpn_hidden_size = width
    config.prompt_encoder_config.hidden_size = width
    config.mask_decoder_config.hidden_size = width
    return config


def random_sam2(seed: int = 0, image_size: int = 128, **overrides) -> Sam2:
    """A tiny SAM 2 whose every parameter is random and non-zero.

    `transformers` initialises several SAM 2 embeddings to zero (no-memory embedding, temporal
    encodings, occlusion embedding); randomising them makes every path of the model matter.
    """
    torch.manual_seed(seed)
    model = Sam2(tiny_test_config(image_size=image_size, **overrides))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif p.dim() >= 2 and "weight" in name:
                p.copy_(noise / p[0].numel() ** 0.5)
            else:
                p.copy_(0.1 * noise)
    return model.eval()


def synthetic_video(num_frames: int, height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """[T, H, W, 3] uint8: the demo scene (a disk and a square moving over texture)."""
    return moving_shapes(num_frames, height, width, seed).frames


def disk_mask(frame_index: int, height: int = 96, width: int = 128) -> np.ndarray:
    """Ground-truth mask of the disk of `synthetic_video` on a frame."""
    return moving_shapes(frame_index + 1, height, width).masks[DISK][frame_index]


@pytest.fixture(scope="session")
def tiny_model() -> Sam2:
    return random_sam2(0)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """`random_sam2(0)` saved as a `transformers` SAM 2 model folder (`--sam2 DIR`)."""
    path = tmp_path_factory.mktemp("model")
    random_sam2(0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def video(tmp_path_factory):
    """An 8-frame lossless H.264 clip of `refseg.demo.moving_shapes` (96 x 128)."""
    from refseg.io import VideoWriter

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(path, fps=10, crf=0) as writer:
        for frame in moving_shapes(8).frames:
            writer.write(frame)
    return path
