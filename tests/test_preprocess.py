"""Input rules (`refseg.sam.preprocess`): stretch and fit-and-pad, three resizers, and the way
prompts and masks map between a frame and the model input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import disk_mask, synthetic_video
from PIL import Image

from refseg.engine import MethodHooks, Session
from refseg.prompts import Mask
from refseg.sam.preprocess import SAM1, SAM2, Preprocess

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def frame(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (1, height, width, 3), dtype=np.uint8))


def test_stretch_resizes_float_pixels_to_the_square():
    x = frame(75, 131)
    expected = F.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=(128, 128), mode="bilinear",
                             align_corners=False, antialias=True)
    torch.testing.assert_close(SAM2.pixels(x, 128), (expected - MEAN) / STD)


@pytest.mark.parametrize(("height", "width", "content"), [(75, 131, (73, 128)), (300, 200, (128, 85)),
                                                           (64, 64, (128, 128))])
def test_fit_keeps_the_aspect_ratio_and_pads_with_zeros(height, width, content):
    assert SAM1.content(height, width, 128) == content
    x = frame(height, width)
    pixels = SAM1.pixels(x, 128)
    h, w = content
    resized = np.array(Image.fromarray(x[0].numpy()).resize((w, h), Image.Resampling.BILINEAR))
    expected = (torch.from_numpy(resized).permute(2, 0, 1)[None].float() / 255 - MEAN) / STD
    torch.testing.assert_close(pixels[..., :h, :w], expected)
    assert torch.all(pixels[..., h:, :] == 0) and torch.all(pixels[..., :, w:] == 0)


def test_uint8_resizer_rounds_to_8_bits_before_normalising():
    x = frame(75, 131)
    rule = Preprocess(resizer="uint8", antialias=False)
    resized = F.interpolate(x.permute(0, 3, 1, 2).contiguous(), size=(128, 128), mode="bilinear", align_corners=False)
    assert resized.dtype == torch.uint8
    torch.testing.assert_close(rule.pixels(x, 128), (resized.float() / 255 - MEAN) / STD)
    assert not torch.allclose(rule.pixels(x, 128), SAM2.pixels(x, 128))


def test_points_and_logits_map_through_the_padded_input():
    rule = Preprocess(resize="fit")  # 60 x 120 -> 64 x 128 of a 128 x 128 input
    xy = rule.points(torch.tensor([[30.0, 15.0], [120.0, 60.0]]), 60, 120, 128)
    torch.testing.assert_close(xy, torch.tensor([[32.0, 16.0], [128.0, 64.0]]))
    low = torch.full((1, 1, 32, 32), -5.0)
    low[..., :16, 16:] = 5.0  # the right half of the image region (rows 0-63 of the input)
    low[..., 16:, :] = 9.0  # padding: cropped away (only its bilinear blur reaches the last row)
    logits = rule.logits(low, 60, 120, 128)
    assert logits.shape == (1, 1, 60, 120)
    assert float(logits[..., :58, 64:].min()) > 0 and float(logits[..., :58, :56].max()) < 0
    assert float(logits[..., :58, :].max()) <= 5.0 + 1e-5


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="resize must be one of"):
        Preprocess(resize="crop")
    with pytest.raises(ValueError, match="PIL always antialiases"):
        Preprocess(resizer="pil", antialias=False)


class FitHooks(MethodHooks):
    preprocess = Preprocess(resize="fit")


def test_a_session_with_a_fit_rule_gives_masks_where_the_prompt_was(tiny_model):
    frames = synthetic_video(3, height=75, width=131)
    given = disk_mask(0, 75, 131)
    session = Session(tiny_model, FitHooks())
    session.add_prompt(1, Mask(given))
    result = session.push(frames[0]).objects[1]
    assert result.mask.shape == (75, 131)
    assert (result.mask == given).mean() > 0.98  # a mask prompt is the frame's output
    stretched = Session(tiny_model)
    stretched.add_prompt(1, Mask(given))
    stretched.push(frames[0])
    assert not torch.equal(session.push(frames[1]).objects[1].logits, stretched.push(frames[1]).objects[1].logits)
