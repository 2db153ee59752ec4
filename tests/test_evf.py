"""EVF-SAM: the fused prompt token, the three fusion settings, the engine path (image, video,
clicks with text), frozen SAM 2, checkpoints and the official layout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import random_sam2

from refseg.encoders.fusion import Beit3Config
from refseg.methods.evf_sam import EvfConfig, EvfSam, convert_official_evf
from refseg.prompts import Points

TINY = Beit3Config(hidden_size=32, layers=2, heads=4, ffn_size=48, vocab_size=30522, image_size=32, patch_size=16,
                   max_text_positions=34)


def tiny_evf(seed: int = 0, **changes) -> EvfSam:
    config = EvfConfig(beit3=TINY, text_embeddings=None, **changes)
    model = EvfSam(random_sam2(seed), config)
    torch.manual_seed(seed)
    with torch.no_grad():  # random biases and norms too, so every path matters
        for p in [*model.encoder.parameters(), *model.projector.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def image(seed: int, size: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size + 16, 3), dtype=np.uint8)


def as_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images))


@torch.no_grad()
def test_fusion_settings_see_what_they_should():
    a, b = as_batch(image(0), image(0)), as_batch(image(0), image(1))
    early = tiny_evf()
    same_image = early.fused(a, ["the red circle", "the blue square"])
    assert not torch.allclose(same_image[0], same_image[1])  # the text changes the image [CLS]
    same_text = early.fused(b, ["the red circle", "the red circle"])
    assert not torch.allclose(same_text[0], same_text[1])

    late = tiny_evf(fusion="late")
    out = late.fused(a, ["the red circle", "the blue square"])
    assert out.shape == (2, 64)
    torch.testing.assert_close(out[0, :32], out[1, :32])  # image half: blind to the text
    assert not torch.allclose(out[0, 32:], out[1, 32:])
    out = late.fused(b, ["the red circle", "the red circle"])
    torch.testing.assert_close(out[0, 32:], out[1, 32:])  # text half: blind to the image
    assert not torch.allclose(out[0, :32], out[1, :32])

    text = tiny_evf(fusion="text")
    out = text.fused(b, ["the red circle", "the red circle"])
    torch.testing.assert_close(out[0], out[1])


@torch.no_grad()
def test_padding_does_not_change_a_prompt():
    model = tiny_evf()
    pair = as_batch(image(0), image(0))
    alone = model.prompt_embedding(pair[:1], ["the circle"])
    padded = model.prompt_embedding(pair, ["the circle", "the small striped blue square moving left"])
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)
    assert alone.shape == (1, 1, 256)


@torch.no_grad()
def test_fusion_layers_stop_early():
    full, first = tiny_evf(), tiny_evf(fusion_layers=1)
    pair = as_batch(image(0))
    out = first.encoder(first.preprocess(pair), *first.tokenize(["the circle"]), num_layers=1)[0][:, 0]
    torch.testing.assert_close(first.fused(pair, ["the circle"]), out)
    assert not torch.allclose(full.fused(pair, ["the circle"]), out)


@torch.no_grad()
def test_image_segmentation_goes_through_the_engine_with_the_token_as_only_prompt():
    from refseg.sam.image_encoder import normalise_frames
    from refseg.sam.mask_decoder import decode_masks

    model = tiny_evf()
    frame = image(3)
    result = model.segment(frame, ["the red circle", "the blue square"])
    assert sorted(result.objects) == [1, 2]
    assert result.objects[1].mask.shape == frame.shape[:2]
    # the same by hand: SAM 2 image path, the projected [CLS] as the only sparse token, best of 3
    sam = model.sam
    features = sam.encode_images(normalise_frames(torch.from_numpy(frame)[None], sam.image_size))
    token = model.prompt_embedding(torch.from_numpy(frame)[None], ["the blue square"])
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(features.embed)
    embed = features.embed + sam.no_memory_embedding.view(1, -1, 1, 1)
    out = decode_masks(sam, features.high_res, embed, token[:, None], dense, multimask=True)
    logits = torch.nn.functional.interpolate(out.low_res.float(), size=frame.shape[:2], mode="bilinear",
                                             align_corners=False)[0, 0]
    torch.testing.assert_close(result.objects[2].logits, logits, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_video_prompts_the_named_frame_and_tracks_after_it():
    model = tiny_evf()
    frames = [image(10 + t) for t in range(4)]
    stream = model.stream(["the red circle"], frame=1)
    results = [r for f in frames for r in stream.push(f)] + stream.flush()
    assert [sorted(r.objects) for r in results] == [[], [1], [1], [1]]
    # frame 1 equals segmenting that image alone; later frames come from memory
    alone = model.segment(frames[1], ["the red circle"]).objects[1].logits
    torch.testing.assert_close(results[1].objects[1].logits, alone)


@torch.no_grad()
def test_clicks_join_the_text():
    model = tiny_evf()
    frame = image(4)
    plain = model.segment(frame, ["the circle"]).objects[1].logits
    stream = model.stream(["the circle"])
    stream.add_prompt(1, Points([[40.0, 30.0]]))
    clicked = stream.push(frame)[0].objects[1].logits
    assert not torch.allclose(plain, clicked)
    with pytest.raises(ValueError, match="object 2: the texts give objects 1..1"):
        stream.add_prompt(2, Points([[1.0, 1.0]]))


def test_sam2_is_frozen_unless_asked():
    model = tiny_evf()
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"encoder", "projector"}
    tuned = tiny_evf(train_mask_decoder=True, train_prompt_encoder=True)
    names = {n for n, p in tuned.named_parameters() if p.requires_grad and n.startswith("sam.")}
    assert names and all(n.startswith(("sam.mask_decoder.", "sam.prompt_encoder.")) for n in names)


def test_bad_settings_and_texts_fail_clearly():
    with pytest.raises(ValueError, match="evf.fusion: expected one of early, late, text, got 'mid'"):
        tiny_evf(fusion="mid")
    with pytest.raises(ValueError, match="ViLT is an early-fusion encoder"):
        tiny_evf(encoder="vilt", fusion="late")
    with pytest.raises(ValueError, match="text prompts must be non-empty strings"):
        tiny_evf().stream(["  "])
    with pytest.raises(ValueError, match="MiniLM's table is"):
        EvfSam(random_sam2(0), EvfConfig(beit3=TINY))  # width 32 cannot take MiniLM's 384


@torch.no_grad()
def test_vilt_is_an_early_fusion_option():
    model = tiny_evf(encoder="vilt")
    pair = as_batch(image(0), image(0))
    out = model.fused(pair, ["the red circle", "the blue square"])
    assert out.shape == (2, 32) and not torch.allclose(out[0], out[1])
    other = model.fused(as_batch(image(0), image(1)), ["the red circle", "the red circle"])
    assert not torch.allclose(other[0], other[1])


@torch.no_grad()
def test_save_and_load_round_trip(tmp_path):
    model = tiny_evf(fusion="late")
    model.save_pretrained(tmp_path / "evf")
    again = EvfSam.from_pretrained(tmp_path / "evf")
    frame = image(5)
    torch.testing.assert_close(again.segment(frame, ["the circle"]).objects[1].logits,
                               model.segment(frame, ["the circle"]).objects[1].logits)


def test_official_layout_loads_with_no_missing_or_unexpected_keys(tmp_path):
    from test_checkpoint import matching_config, official_tiny_sam2
    from test_fusion import official_state

    from refseg.sam import Sam2
    from refseg.sam.checkpoint import CheckpointError

    sizes = dataclasses.replace(TINY, hidden_size=64, heads=1)  # published BEiT-3 heads are 64 wide
    model = EvfSam(Sam2(matching_config()), EvfConfig(beit3=sizes, text_embeddings=None))
    with torch.no_grad():
        for p in [*model.encoder.parameters(), *model.projector.parameters()]:
            p.normal_()
    state = official_state(model.encoder)
    state["mm_extractor.beit3.vision_embed.mask_token"] = torch.zeros(1, 1, 64)
    state.update({f"visual_model.{k}": v for k, v in official_tiny_sam2().state_dict().items()})
    state.update({f"text_hidden_fcs.0.{k}": v for k, v in model.projector.state_dict().items()})
    converted = convert_official_evf(state)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not missing and not unexpected
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(converted[f"encoder.{name}"], value)
    with pytest.raises(ValueError, match="lm_head.weight: not an EVF-SAM2 checkpoint key"):
        convert_official_evf({**state, "lm_head.weight": torch.zeros(1)})
    # a checkpoint folder as published: weights + tokenizer files
    from safetensors.torch import save_file

    folder = tmp_path / "evf-sam2"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    model.tokenizer.save_pretrained(folder)
    loaded = EvfSam.from_official(folder, sam_config=matching_config())
    assert loaded.config.beit3 == sizes
    from refseg import load

    with pytest.raises(CheckpointError, match="unknown SAM 2 size"):  # published sizes are recognised
        load("evf-sam", folder)
    with pytest.raises(CheckpointError, match="unknown SAM 2 size"):  # the folder alone is told by its weight names
        load(folder)
    other = tmp_path / "other"
    other.mkdir()
    save_file({"image_encoder.weight": torch.zeros(1)}, str(other / "model.safetensors"))
    with pytest.raises(ValueError, match="not a model folder"):
        load(other)
    frame = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    # an official folder runs the official pre- and postprocessing; with the same rules, the same masks
    model.config = dataclasses.replace(model.config, encoder_resize="official", sam_input="official")
    with torch.no_grad():
        torch.testing.assert_close(loaded.segment(frame, ["the dog"]).objects[1].logits,
                                   model.eval().segment(frame, ["the dog"]).objects[1].logits)


def test_cli_segments_an_image_and_predicts_refcoco_that_eval_scores(tmp_path, capsys):
    import json

    from PIL import Image

    from refseg import load
    from refseg.cli import main
    from refseg.data import formats
    from refseg.io.masks import read_mask_png

    model = tiny_evf()
    folder = tmp_path / "evf"
    model.save_pretrained(folder)
    assert isinstance(load("evf-sam", folder), EvfSam)  # a refseg folder as the evf-sam source
    photo = tmp_path / "photo.png"
    Image.fromarray(image(7)).save(photo)
    out = tmp_path / "semantic"
    assert main(["segment", str(photo), "--text", "circle", "--semantic", "--model", str(folder), "--out", str(out)]) == 0
    expected = load(folder).segment(image(7), ["[semantic] circle"]).objects[1].mask
    assert np.array_equal(read_mask_png(out / "masks" / "1" / "00000.png"), expected)
    out = tmp_path / "seg"
    assert main(["segment", str(photo), "--text", "the red circle", "--model", str(folder), "--out", str(out)]) == 0
    expected = load(folder).segment(image(7), ["the red circle"]).objects[1].mask
    assert np.array_equal(read_mask_png(out / "masks" / "1" / "00000.png"), expected)
    assert json.loads((out / "masks.json").read_text())["objects"] == {"1": "the red circle"}

    clip = tmp_path / "clip"  # a folder of frames, the text on frame 2, tracked after it
    clip.mkdir()
    for t in range(4):
        Image.fromarray(image(20 + t)).save(clip / f"{t:05d}.png")
    out = tmp_path / "seg_video"
    assert main(["segment", str(clip), "--text", "the circle", "--frame", "2", "--model", str(folder), "--out", str(out)]) == 0
    stream = load(folder).stream(["the circle"], frame=2)
    results = [r for t in range(4) for r in stream.push(image(20 + t))]
    for result in results[2:]:
        assert np.array_equal(read_mask_png(out / "masks" / "1" / f"{result.index:05d}.png"), result.objects[1].mask)
    assert [f["index"] for f in json.loads((out / "masks.json").read_text())["frames"]] == [0, 1, 2, 3]

    data = tmp_path / "refcoco"
    assert main(["synth", "--out", str(data), "--split", "valid", "--count", "2", "--size", "128",
                 "--format", "refcoco"]) == 0
    pred = tmp_path / "pred"
    assert main(["predict", "--data", str(data), "--format", "refcoco", "--model", str(folder),
                 "--out", str(pred)]) == 0
    samples = list(formats.reader("refcoco")(data))
    sample = samples[-1]
    result = load(folder).segment(sample.load_frame(0), [e.text for e in sample.expressions])
    for obj_id, expression in enumerate(sample.expressions, start=1):
        assert np.array_equal(read_mask_png(pred / f"{expression.exp_id}.png"), result.objects[obj_id].mask)
    assert sorted(p.stem for p in pred.glob("*.png")) == sorted(e.exp_id for s in samples for e in s.expressions)
    capsys.readouterr()
    assert main(["eval", "--protocol", "ris", "--gt", str(data), "--pred", str(pred), "--split", "valid",
                 "--out", str(tmp_path / "r.json")]) == 0
    assert "cIoU" in capsys.readouterr().out


def test_load_names_the_missing_weights_and_the_command_that_trains_them():
    from refseg import load

    with pytest.raises(ValueError, match="refseg train configs/evf_synth.yaml"):
        load("evf-sam")
    with pytest.raises(ValueError, match="evf-sam: no such model folder"):
        load("evf-sam", "/nonexistent/evf-sam2")


def tiny_evf_sam1(seed: int = 0) -> EvfSam:
    from test_sam1 import random_sam1

    from refseg.sam.sam1 import Sam1

    reference = random_sam1(seed)
    model = EvfSam(Sam1(reference.config, reference), EvfConfig(beit3=TINY, text_embeddings=None))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in [*model.encoder.parameters(), *model.projector.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@torch.no_grad()
def test_sam1_backbone_segments_each_frame_from_the_text_with_one_mask():
    model = tiny_evf_sam1()
    sam = model.sam
    frame = image(8, size=80)  # 80 x 96: resized longest side, padded
    result = model.segment(frame, ["the red circle", "the blue square"])
    token = model.prompt_embedding(torch.from_numpy(frame)[None], ["the blue square"])
    pixels, _ = sam.preprocess(torch.from_numpy(frame)[None])
    low = sam.mask_decoder(sam.encode(pixels), sam.get_image_wide_positional_embeddings(), token[:, None],
                           sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 8, 8),
                           multimask_output=False)[0][:, 0]
    torch.testing.assert_close(result.objects[2].logits, sam.postprocess(low, frame.shape[:2])[0])
    assert result.objects[2].mask.shape == frame.shape[:2]
    stream = model.stream(["the red circle"], frame=1)
    results = [r for t in range(3) for r in stream.push(image(30 + t, size=80))]
    assert [sorted(r.objects) for r in results] == [[], [1], [1]]
    alone = model.segment(image(32, size=80), ["the red circle"]).objects[1].logits
    torch.testing.assert_close(results[2].objects[1].logits, alone)  # no memory: each frame alone
    stream = model.stream(["the red circle"])
    stream.add_prompt(1, Points([[40.0, 30.0]]))
    assert not torch.allclose(stream.push(frame)[0].objects[1].logits, model.segment(frame, ["the red circle"]).objects[1].logits)


def test_official_evf_sam1_layout_and_training_on_sam1(tmp_path):
    from safetensors.torch import save_file
    from test_fusion import official_state
    from test_sam1 import official_name, tiny_config

    from refseg.train.config import load_config
    from refseg.train.evf import EvfTask

    sizes = dataclasses.replace(TINY, hidden_size=64, heads=1)
    model = tiny_evf_sam1()
    model = EvfSam(model.sam, EvfConfig(beit3=sizes, text_embeddings=None))
    state = official_state(model.encoder)
    state["mm_extractor.beit3.vision_embed.mask_token"] = torch.zeros(1, 1, 64)
    state.update({f"visual_model.{official_name(k)}": v for k, v in model.sam.state_dict().items()
                  if not k.startswith("shared_image_embedding.")})
    state.update({f"text_hidden_fcs.0.{k}": v for k, v in model.projector.state_dict().items()})
    folder = tmp_path / "evf-sam"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    model.tokenizer.save_pretrained(folder)
    loaded = EvfSam.from_official(folder, sam_config=tiny_config())
    frame = image(9, size=64)
    # an official folder runs the official pre- and postprocessing; with the same rules, the same masks
    model.config = dataclasses.replace(model.config, encoder_resize="official", sam_input="official")
    with torch.no_grad():
        torch.testing.assert_close(loaded.segment(frame, ["the dog"]).objects[1].logits,
                                   model.eval().segment(frame, ["the dog"]).objects[1].logits)
    # one training step on SAM (v1): only the encoder and the projector get gradients
    config = load_config({"task": "evf", "data": {"clip_len": 1, "image": True}})
    task = EvfTask(model.train(), config)
    from refseg.data import synth

    sampler = task.sampler(list(synth.split_samples("train", 0, 2, 128, 128, image=True)), seed=0)
    batch = [task.draw(sampler, np.random.default_rng(i)) for i in range(2)]
    losses = task(batch)
    losses["loss"].backward()
    assert float(losses["bce"].detach()) > 0 and float(losses["dice"].detach()) > 0
    graded = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert graded == {"encoder", "projector"}
