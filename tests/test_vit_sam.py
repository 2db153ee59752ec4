"""SAM (v1) as a SAM-I2V carrier: SAM 2 heads computing what SAM computes, upgraded, saved, trained."""

from __future__ import annotations

import pytest
import torch
from test_sam1 import random_sam1, tiny_config

from conftest import synthetic_video
from refseg.methods.sam_i2v import SamI2V, SamI2VConfig, upgrade
from refseg.prompts import Points
from refseg.sam.checkpoint import CheckpointError
from refseg.sam.sam1 import Sam1
from refseg.sam.vit_sam import ViTSam, from_sam1, tap_layers


def sam1_and_carrier() -> tuple[Sam1, ViTSam]:
    reference = random_sam1()
    sam1 = Sam1(reference.config, reference).eval()
    return sam1, from_sam1(sam1, memory_dim=16)


@torch.no_grad()
def test_carrier_encoder_is_sams_and_taps_its_blocks():
    sam1, carrier = sam1_and_carrier()
    pixels = torch.randn(2, 3, 128, 128)
    features = carrier.encode_images(pixels)
    assert torch.equal(features.embed, sam1.encode(pixels))
    hidden = sam1.vision_encoder(pixels, output_hidden_states=True).hidden_states  # the input, then each block's output
    first, last = tap_layers(sam1.config.vision_config)
    assert (first, last) == (0, 1)  # two blocks, the last one global: the block before it and it
    assert torch.equal(features.trunk[0], hidden[first + 1].permute(0, 3, 1, 2))
    assert torch.equal(features.trunk[1], hidden[last + 1].permute(0, 3, 1, 2))
    assert features.high_res[0].abs().sum() == 0 and features.high_res[0].shape == (2, 4, 32, 32)
    assert torch.count_nonzero(carrier.no_memory_embedding) == 0


@torch.no_grad()
def test_carrier_prompt_encoder_and_decoder_parts_compute_sams_functions():
    sam1, carrier = sam1_and_carrier()
    points = torch.tensor([[[[30.0, 40.0], [90.0, 20.0]]]])
    labels = torch.tensor([[[1, 0]]])
    boxes = torch.tensor([[[10.0, 12.0, 80.0, 90.0]]])
    masks = torch.randn(1, 1, 32, 32)
    nap = carrier.prompt_encoder.not_a_point_embed.weight[0]
    for args in [(points, labels, None, None), (None, None, boxes, masks), (points, labels, boxes, None)]:
        ours, theirs = carrier.prompt_encoder(*args), sam1.prompt_encoder(*args)
        assert torch.equal(ours[1], theirs[1])
        n = theirs[0].shape[2]
        assert torch.equal(ours[0][:, :, :n], theirs[0])
        if args[2] is not None:  # SAM 2 pads a box with a "not a point" token, SAM does not
            assert ours[0].shape[2] == n + 1 and torch.equal(ours[0][0, 0, n], nap)
    a, b = carrier.mask_decoder, sam1.mask_decoder
    tokens, image, pe = torch.randn(1, 1, 7, 32), torch.randn(1, 32, 8, 8), torch.randn(1, 32, 8, 8)
    ours, theirs = a.transformer(tokens, image, pe, None), b.transformer(tokens, image, pe, None)
    assert torch.allclose(ours[0], theirs[0], atol=1e-6) and torch.allclose(ours[1], theirs[1], atol=1e-6)
    token = torch.randn(3, 32)
    assert all(torch.equal(x(token), y(token)) for x, y in zip(a.output_hypernetworks_mlps, b.output_hypernetworks_mlps))
    # SAM 2's IoU head is SAM's through a sigmoid: the multimask choice is SAM's
    assert torch.allclose(a.iou_prediction_head(token), torch.sigmoid(b.iou_prediction_head(token)), atol=1e-6)
    grid = torch.randn(1, 32, 8, 8)
    ours = a.upscale_conv2(a.activation(a.upscale_layer_norm(a.upscale_conv1(grid))))
    theirs = b.upscale_conv2(b.activation(b.upscale_layer_norm(b.upscale_conv1(grid))))
    assert torch.equal(ours, theirs)


def test_a_sam_whose_position_table_does_not_fit_the_heads_is_refused():
    from transformers import SamModel
    config = tiny_config()
    config.vision_config.num_pos_feats = 8
    reference = SamModel(config)
    with pytest.raises(CheckpointError, match="position table has 8 frequencies"):
        from_sam1(Sam1(config, reference))


@torch.no_grad()
def test_sam_i2v_on_sam_tracks_and_round_trips_through_its_folder(tmp_path):
    _, carrier = sam1_and_carrier()
    torch.manual_seed(1)
    model = upgrade(carrier, SamI2VConfig(temporal_dim=8, integration_dim=32), memory_layers=1).eval()
    assert isinstance(model.sam, ViTSam) and model.config.tapped_dims == (32, 32, 32)
    old, new = carrier.state_dict(), model.sam.state_dict()
    assert all(torch.equal(new[k], old[k]) for k in new if k.startswith(("vision_encoder.", "prompt_encoder.")))
    frames = synthetic_video(8, height=64, width=64)

    def track(m: SamI2V) -> list[torch.Tensor]:
        session = m.session(seed=0)
        out = []
        for t, frame in enumerate(frames):
            if t == 0:
                session.add_prompt(1, Points([[20, 32]]))
            out.append(session.push(frame).objects[1].logits)
        return out

    logits = track(model)
    assert len(logits) == 8 and logits[-1].shape == (64, 64)
    model.save_pretrained(tmp_path / "i2v")
    loaded = SamI2V.from_pretrained(tmp_path / "i2v")
    assert isinstance(loaded.sam, ViTSam)
    assert all(torch.equal(x, y) for x, y in zip(logits, track(loaded)))


def test_sam_i2v_trains_on_a_sam_folder(tmp_path):
    from refseg.train.config import load_config
    from refseg.train.loop import train

    random_sam1().save_pretrained(tmp_path / "sam")
    config = load_config({
        "task": "sam_i2v", "out": str(tmp_path / "run"), "steps": 2, "batch_size": 1, "log_every": 1,
        "checkpoint_every": 2, "seed": 0, "freeze": ["sam.vision_encoder"],
        "data": {"count": 2, "clip_len": 3}, "model": {"sam1": str(tmp_path / "sam"), "image_size": 128, "memory_layers": 1},
        "sam_i2v": {"temporal_dim": 8, "integration_dim": 32},
        "optim": {"lr": 0.001, "warmup_steps": 1}, "loss": {"structure": 20.0, "iou": 1.0, "object": 1.0}})
    train(config)
    model = SamI2V.from_pretrained(tmp_path / "run" / "final")
    assert isinstance(model.sam, ViTSam)
    reference = random_sam1().state_dict()
    ours = model.sam.state_dict()
    assert torch.equal(ours["vision_encoder.vit.neck.conv1.weight"], reference["vision_encoder.neck.conv1.weight"])
