"""Checkpoint loading: official SAM 2 key layout, model directories, clear errors."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import random_sam2
from transformers import Sam2VideoModel

from refseg.sam import Sam2, tiny_test_config
from refseg.sam.checkpoint import CheckpointError, convert_official_state_dict, load_official, load_sam2


def official_tiny_sam2():
    """The official `sam2` package's SAM2Base at the sizes of `tiny_test_config(1024 fuser)`."""
    import sam2
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(os.path.join(os.path.dirname(sam2.__file__), "configs/sam2.1/sam2.1_hiera_t.yaml")).model
    cfg.image_encoder.trunk.embed_dim = 16
    cfg.image_encoder.trunk.stages = [1, 1, 2, 1]
    cfg.image_encoder.trunk.global_att_blocks = [3]
    cfg.image_encoder.neck.backbone_channel_list = [128, 64, 32, 16]
    cfg.image_size = 128
    cfg.memory_attention.num_layers = 2
    cfg.memory_attention.layer.dim_feedforward = 256
    cfg.memory_attention.layer.self_attention.feat_sizes = [8, 8]
    cfg.memory_attention.layer.cross_attention.feat_sizes = [8, 8]
    cfg.memory_encoder.fuser.num_layers = 1
    torch.manual_seed(0)
    model = instantiate(cfg, _recursive_=True).eval()
    with torch.no_grad():  # no zero-initialised tensor may hide a wrong mapping
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def matching_config():
    # the official SAM2Base fixes the fuser width (4x) and the mask decoder sizes
    config = tiny_test_config(memory_fuser_intermediate_dim=1024)
    config.mask_decoder_config.mlp_dim = 2048
    config.mask_decoder_config.iou_head_hidden_dim = 256
    return config


@pytest.fixture(scope="module")
def official():
    return official_tiny_sam2()


def test_official_layout_loads_with_no_missing_or_unexpected_keys(official, tmp_path):
    state = official.state_dict()
    path = tmp_path / "sam2.1_tiny_test.pt"
    torch.save({"model": state}, path)
    model = load_official(path, matching_config())
    ours = model.state_dict()
    converted = convert_official_state_dict(state)
    assert set(converted) == set(ours)
    # every tensor arrives unchanged (the 4 point embeddings are stacked into one table)
    assert torch.equal(ours["no_memory_embedding"], state["no_mem_embed"])
    assert torch.equal(ours["prompt_encoder.point_embed.weight"][2],
                       state["sam_prompt_encoder.point_embeddings.2.weight"][0])
    assert torch.equal(ours["memory_encoder.mask_downsampler.final_conv.weight"],
                       state["memory_encoder.mask_downsampler.encoder.12.weight"])
    assert torch.equal(ours["object_pointer_proj.layers.0.weight"], state["obj_ptr_proj.layers.1.weight"])
    assert torch.equal(ours["mask_decoder.iou_prediction_head.proj_out.bias"],
                       state["sam_mask_decoder.iou_prediction_head.layers.2.bias"])
    # and transformers itself accepts the converted dict strictly
    Sam2VideoModel(matching_config()).load_state_dict(converted, strict=True)


def test_official_and_converted_image_encoders_agree(official):
    model = Sam2(matching_config())
    model.load_state_dict(convert_official_state_dict(official.state_dict()))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ours = model.eval().encode_images(x)
        theirs = official.forward_image(x)
    torch.testing.assert_close(ours.embed, theirs["backbone_fpn"][-1], atol=1e-5, rtol=1e-5)
    # the official forward_image applies conv_s0 / conv_s1 to the two high-resolution levels too
    for level in range(2):
        torch.testing.assert_close(ours.high_res[level], theirs["backbone_fpn"][level], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.pos, theirs["vision_pos_enc"][-1], atol=1e-5, rtol=1e-5)


def test_broken_official_checkpoint_names_the_offending_keys(official, tmp_path):
    state = dict(official.state_dict())
    del state["no_mem_embed"]
    state["image_encoder.trunk.extra_thing"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_official(path, matching_config())
    message = str(err.value)
    assert "missing keys ['no_memory_embedding']" in message
    assert "vision_encoder.backbone.extra_thing" in message


def test_model_directory_round_trip(tmp_path):
    model = random_sam2(3)
    model.save_pretrained(tmp_path / "m")
    loaded = load_sam2(tmp_path / "m")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_hub_id_offline_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="pass DIR instead"):
        load_sam2("facebook/sam2.1-hiera-tiny")


def test_missing_path_and_damaged_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_sam2(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_sam2(bad)


def test_half_precision_directory_loads_as_float32(tmp_path):
    model = random_sam2(4)
    half = Sam2(model.config)
    half.load_state_dict(model.state_dict())
    half.half().save_pretrained(tmp_path / "h")
    loaded = load_sam2(tmp_path / "h")
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == torch.float32, key
        torch.testing.assert_close(got, value.half().float(), rtol=0, atol=0)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "h" / "model.safetensors"), "pt") as fh:
        assert fh.get_tensor("no_memory_embedding").dtype == torch.float16  # stored at half size
