"""SAM (v1): the refseg SAM head equals `transformers`' SamModel; the official layout loads."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import SamConfig, SamModel

from refseg.sam.checkpoint import CheckpointError
from refseg.sam.sam1 import Sam1, convert_official_sam1, load_sam1


def tiny_config() -> SamConfig:
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, output_channels=32,
                  image_size=128, patch_size=16, global_attn_indexes=[1], window_size=4, num_pos_feats=16)
    return SamConfig(vision_config=vision, prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16),
                     mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32))


def random_sam1(seed: int = 0) -> SamModel:
    torch.manual_seed(seed)
    model = SamModel(tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        table = model.prompt_encoder.shared_embedding.positional_embedding
        model.shared_image_embedding.positional_embedding.copy_(table)  # SAM has one table
    return model


@torch.no_grad()
@pytest.mark.parametrize("multimask", [False, True])
def test_head_equals_samodel_for_clicks_and_boxes(multimask):
    reference = random_sam1()
    ours = Sam1(reference.config, reference)
    pixels = torch.randn(2, 3, 128, 128)
    points = torch.tensor([[[30.0, 40.0], [90.0, 20.0]], [[64.0, 64.0], [10.0, 100.0]]])
    labels = torch.tensor([[1, 0], [1, 1]])
    boxes = torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 110.0]])
    expected = reference(pixel_values=pixels, input_points=points[:, None], input_labels=labels[:, None],
                         input_boxes=boxes[:, None], multimask_output=multimask)
    low, iou = ours.decode(ours.encode(pixels), points, labels, boxes, multimask=multimask)
    best = expected.iou_scores[:, 0].argmax(1) if multimask else torch.zeros(2, dtype=torch.long)
    rows = torch.arange(2)
    torch.testing.assert_close(low[:, 0], expected.pred_masks[rows, 0, best], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou[:, 0], expected.iou_scores[rows, 0, best], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_extra_tokens_follow_the_clicks():
    reference = random_sam1()
    ours = Sam1(reference.config, reference)
    embed = ours.encode(torch.randn(1, 3, 128, 128))
    extra = torch.randn(1, 1, 32)
    points, labels = torch.tensor([[[30.0, 40.0]]]), torch.tensor([[1]])
    sparse, dense = reference.prompt_encoder(points[:, None], labels[:, None], None, None)
    masks = reference.mask_decoder(embed, ours.get_image_wide_positional_embeddings(),
                                   torch.cat([sparse, extra[:, None]], dim=2), dense, multimask_output=False)[0]
    torch.testing.assert_close(ours.decode(embed, points, labels, extra=extra)[0][:, 0], masks[:, 0, 0])
    alone = reference.mask_decoder(embed, ours.get_image_wide_positional_embeddings(), extra[:, None], dense,
                                   multimask_output=False)[0]
    torch.testing.assert_close(ours.decode(embed, extra=extra)[0][:, 0], alone[:, 0, 0])
    torch.testing.assert_close(ours.get_image_wide_positional_embeddings(),
                               reference.get_image_wide_positional_embeddings())


def test_preprocess_keeps_the_aspect_ratio_and_postprocess_undoes_it():
    ours = Sam1(tiny_config())
    frames = torch.randint(0, 256, (1, 60, 90, 3), dtype=torch.uint8)
    pixels, resized = ours.preprocess(frames)
    assert resized == (85, 128) and pixels.shape == (1, 3, 128, 128)
    assert torch.all(pixels[:, :, 85:] == 0)  # padding below the image
    low = torch.zeros(1, 1, 32, 32)
    low[..., :21, :] = 5.0  # the image part of the padded square (85 / 128 of 32 rows)
    logits = ours.postprocess(low, (60, 90))
    assert logits.shape == (1, 60, 90) and float(logits.min()) > 0


# the official segment_anything names, written from its modules (image_encoder.py,
# prompt_encoder.py, mask_decoder.py, transformer.py, common.py), independent of the converter
def official_name(hf: str) -> str:
    rules = [
        (r"^vision_encoder\.", "image_encoder."), (r"patch_embed\.projection", "patch_embed.proj"),
        (r"\.layers\.(\d+)\.layer_norm(\d)", r".blocks.\1.norm\2"), (r"image_encoder\.layers\.", "image_encoder.blocks."),
        (r"neck\.conv1", "neck.0"), (r"neck\.layer_norm1", "neck.1"), (r"neck\.conv2", "neck.2"),
        (r"neck\.layer_norm2", "neck.3"), (r"mask_embed\.conv1", "mask_downscaling.0"),
        (r"mask_embed\.layer_norm1", "mask_downscaling.1"), (r"mask_embed\.conv2", "mask_downscaling.3"),
        (r"mask_embed\.layer_norm2", "mask_downscaling.4"), (r"mask_embed\.conv3", "mask_downscaling.6"),
        (r"\.point_embed\.", ".point_embeddings."),
        (r"shared_embedding\.positional_embedding", "pe_layer.positional_encoding_gaussian_matrix"),
        (r"upscale_conv1", "output_upscaling.0"), (r"upscale_layer_norm", "output_upscaling.1"),
        (r"upscale_conv2", "output_upscaling.3"), (r"layer_norm_final_attn", "norm_final_attn"),
        (r"transformer\.layers\.(\d+)\.layer_norm(\d)", r"transformer.layers.\1.norm\2"),
        (r"\.layers\.(\d+)\.(weight|bias)$", lambda m: f".layers.{int(m.group(1)) + 1}.{m.group(2)}"),
        (r"\.proj_in\.", ".layers.0."), (r"\.proj_out\.", ".layers.2."),
    ]
    for pattern, repl in rules:
        hf = re.sub(pattern, repl, hf)
    return hf


def test_official_layout_loads_with_no_missing_or_unexpected_keys(tmp_path):
    reference = random_sam1()
    state = {official_name(k): v for k, v in reference.state_dict().items() if not k.startswith("shared_image_embedding.")}
    assert "image_encoder.blocks.0.norm1.weight" in state and "mask_decoder.iou_prediction_head.layers.2.bias" in state
    state.update(pixel_mean=torch.zeros(3, 1, 1), pixel_std=torch.ones(3, 1, 1))
    converted = convert_official_sam1(state)
    expected = reference.state_dict()
    assert sorted(converted) == sorted(expected)
    assert all(torch.equal(converted[k], expected[k]) for k in expected)
    torch.save({"model": state}, tmp_path / "sam_tiny.pth")
    loaded = load_sam1(tmp_path / "sam_tiny.pth", tiny_config())
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    with pytest.raises(CheckpointError, match="text_model.weight: not a SAM checkpoint key"):
        convert_official_sam1({"text_model.weight": torch.zeros(1)})
