"""SAM2-LOVE: the [seg] chain (Eq. 3), [his] (Eq. 4), first-frame-only prompting, gradients through
the chain, the training task, SynthRef's audio-visual scenes, and the CLI end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from refseg.data import synth
from refseg.encoders.text import TextEncoder
from refseg.methods.sam2_love import ClipFeatures, LoveConfig, Sam2Love, chain_frames
from refseg.prompts import Audio
from refseg.sam.config import tiny_test_config
from refseg.sam.model import Sam2

TINY = dict(width=32, layers=2, heads=2, max_frames=4)


@pytest.fixture(scope="module")
def text():
    return TextEncoder.from_pretrained()


def tiny(text, **overrides) -> Sam2Love:
    torch.manual_seed(0)
    return Sam2Love(Sam2(tiny_test_config()), LoveConfig(**{**TINY, **overrides}), text).eval()


def random_clip(model: Sam2Love, frames: int = 4, seed: int = 0, grad: bool = False) -> ClipFeatures:
    g = torch.Generator().manual_seed(seed)
    hw, dv = model.frame_encoder.grid ** 2, model.frame_encoder.hidden_size
    clip = ClipFeatures(torch.randn(frames, model.config.audio.dim, generator=g),
                        torch.randn(frames, dv, generator=g), torch.randn(frames, hw, dv, generator=g))
    if grad:
        for t in (clip.audio, clip.cls, clip.patches):
            t.requires_grad_(True)
    return clip


class Recorder:
    """Wraps the fusion transformer and records every sequence it is given and returns."""

    def __init__(self, fusion):
        self.fusion, self.inputs, self.outputs = fusion, [], []

    def __call__(self, seq, mask=None):
        out = self.fusion(seq, mask)
        self.inputs.append(seq)
        self.outputs.append(out)
        return out


def spy_prompted(hooks) -> list[int]:
    """The frames on which `hooks` gives SAM 2 a prompt token (filled as the stream runs)."""
    prompted, original = [], hooks.prompt_tokens

    def spy(frame, obj_id, *args, **kwargs):
        token = original(frame, obj_id, *args, **kwargs)
        if token is not None:
            prompted.append(frame)
        return token

    hooks.prompt_tokens = spy
    return prompted


def task_and_batch(**overrides):
    """A tiny SAM2-LOVE training task over 3 SynthRef audio-visual videos (config `overrides` on
    top), its features summarised, and a batch of two draws of expressions that name something."""
    from refseg.train.config import load_config
    from refseg.train.loop import build_task, load_samples
    from refseg.train.sam2_love import LoveSample

    config = load_config({"task": "sam2_love", "model": {"sam2": "tiny-test"}, "sam2_love": TINY, **overrides,
                          "data": {"count": 3, "audio_visual": True, **overrides.get("data", {})}})
    task = build_task(config)
    task.sampler(load_samples(config), 0)
    named = [(v, e) for v, s in enumerate(task.videos) for e, x in enumerate(s.expressions) if x.target_ids]
    return task, [LoveSample(*named[0], 1), LoveSample(*named[1], 2)]


def test_chain_frames_spread_over_the_video():
    assert chain_frames(45, 12).tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44]
    assert chain_frames(3, 12).tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        chain_frames(0, 12)


@pytest.mark.parametrize("history,extra", [("current", 1), ("previous", 0), ("off", None)])
def test_seg_token_propagates_and_history_grows(text, history, extra):
    model = tiny(text, history=history, seg_tokens=2)
    recorder = Recorder(model.fusion)
    clip = random_clip(model)
    states, padding = model.encode_texts(["the one making the high sound"])
    with torch.no_grad():
        chain = model.tokens(recorder, model.audio_proj(clip.audio[None]), model.text_proj(states), padding,
                             model.visual_proj(clip.cls[None]), model.visual_proj(clip.patches[None]))
    final, steps = chain.final, chain.steps
    assert len(recorder.inputs) == 4 and steps.shape == (1, 4, 2, 32)
    torch.testing.assert_close(recorder.inputs[0][:, :2], model.tokens.seg[None])  # the learnt [seg] enters frame 0
    for i in range(1, 4):  # the [seg] entering frame i is the one leaving frame i-1
        torch.testing.assert_close(recorder.inputs[i][:, :2], recorder.outputs[i - 1][:, :2])
        torch.testing.assert_close(recorder.inputs[i][:, :2], steps[:, i - 1])
    torch.testing.assert_close(final, steps[:, -1])
    at = 2 + 4 + 1 + states.shape[1] + 1  # [seg] x 2, audio x 4, [aud], text, [vis]: then frame 0's patches
    torch.testing.assert_close(chain.first_patches, recorder.outputs[0][:, at : at + model.frame_encoder.grid ** 2])
    lengths = [seq.shape[1] for seq in recorder.inputs]
    growth = [b - a for a, b in zip(lengths, lengths[1:])]
    assert growth == [0 if extra is None else 1] * 3  # one more [cls] per frame, or none without [his]
    base = 2 + 4 + 1 + states.shape[1] + 1 + model.frame_encoder.grid ** 2
    assert lengths[0] == base + (0 if extra is None else extra)


def test_gradients_reach_the_first_frame_through_the_chain(text):
    model = tiny(text, history="off")  # no [his]: frame 0 reaches the prompt only through the chain
    clip = random_clip(model, grad=True)
    states, padding = model.encode_texts(["the beeping circle"])
    model.prompt_tokens(clip, states, padding).pow(2).sum().backward()
    assert clip.patches.grad[0].abs().sum() > 0
    assert clip.cls.grad is None or clip.cls.grad.abs().sum() == 0  # [cls] only enters through [his]
    with_history = tiny(text)
    clip = random_clip(with_history, grad=True)
    with_history.prompt_tokens(clip, states, padding).pow(2).sum().backward()
    assert clip.cls.grad[0].abs().sum() > 0


def test_mean_prompt_is_one_pass_over_all_frames(text):
    model = tiny(text, prompt="mean")
    inputs = []
    model.fusion.register_forward_hook(lambda module, args, out: inputs.append(args[0]))
    states, padding = model.encode_texts(["the red square", "a"])
    with torch.no_grad():
        tokens = model.prompt_tokens(random_clip(model), states, padding)
    assert tokens.shape == (2, 1, 256) and len(inputs) == 1
    hw = model.frame_encoder.grid ** 2
    assert inputs[0].shape[1] == 4 + 1 + states.shape[1] + 1 + 4 * hw + 4
    with pytest.raises(ValueError, match="mean prompt has no"):
        LoveConfig(prompt="mean", seg_tokens=2).check()


def test_stream_prompts_only_the_first_frame_and_the_token_is_the_final_seg(text, tmp_path):
    model = tiny(text)
    sample = next(synth.split_samples("train", 0, 1, 128, 128, scenario="sound_sync", audio_visual=True))
    texts = [e.text for e in sample.expressions]
    sound = Audio(sample.audio, sample.sample_rate)
    stream = model.stream(texts, sound)  # frames spread over the sound: 8 fps
    prompted = spy_prompted(stream.hooks)
    assert all(stream.push(f) == [] for f in sample.frames())
    results = stream.flush()
    assert len(results) == len(sample) and set(prompted) == {0}
    assert sorted(results[5].objects) == list(range(1, len(texts) + 1))
    clip = model.clip_features(sample.load_frames(), sound, 8.0)
    states, padding = model.encode_texts(texts)
    with torch.no_grad():
        seg = model.seg_chain(clip, states, padding).final
        torch.testing.assert_close(stream.tokens, model.text_hidden_fcs[0](seg[:, :1]))
    # the chain reads frames spread over the clip and one audio window per chain frame
    assert clip.audio.shape == (4, 128) and clip.patches.shape[:2] == (4, model.frame_encoder.grid ** 2)
    silent = model.clip_features(sample.load_frames(), None, 8.0).audio
    assert not torch.equal(silent, clip.audio)
    model.save_pretrained(tmp_path / "love")
    loaded = Sam2Love.from_pretrained(tmp_path / "love")
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded.prompt_tokens(clip, states, padding), model.prompt_tokens(clip, states, padding))


def test_sound_sync_scenes_are_told_apart_only_by_when_each_sounds():
    for index in synth.scene_indices("train", 3, "sound_sync", audio_visual=True):
        scene = synth.make_scene("train", 0, index, audio_visual=True)
        a, b = scene.objects[:2]
        assert (a.shape, a.colour, a.size, a.texture) == (b.shape, b.colour, b.size, b.texture)
        assert {a.pitch, b.pitch} == set(synth.PITCHES)
        audio = synth.render_audio(scene)
        spf = synth.SAMPLE_RATE // synth.FPS
        for obj in (a, b):
            path = synth.trajectory(obj, scene.num_frames, scene.height, scene.width)
            moving = [t for t in range(scene.num_frames - 1) if path[t + 1] != path[t]]
            start, end = obj.sound_span
            assert moving and min(moving) >= start - 1 and max(moving) < end  # it moves while it sounds
            hz = synth.PITCHES[obj.pitch]
            for t in (start + 1, end - 2):  # its pitch is heard in its span, not in the other's
                window = audio[t * spf : (t + 1) * spf]
                other = audio[(end + 1) * spf : (end + 2) * spf] if end + 2 <= scene.num_frames else \
                    audio[(start - 2) * spf : (start - 1) * spf]
                tone = np.exp(-2j * np.pi * hz * np.arange(spf) / synth.SAMPLE_RATE)
                assert abs(window @ tone) > 10 * abs(other @ tone)
        said = {e.text: e.target_ids for e in scene.expressions if "sound_sync" in e.phenomena}
        assert len(said) == 2 and sorted(t for ids in said.values() for t in ids) == [a.obj_id, b.obj_id]


def test_training_task_trains_and_resumes(tmp_path):
    from refseg.errors import CheckpointError
    from refseg.train.config import load_config
    from refseg.train.loop import train

    config = {"task": "sam2_love", "out": str(tmp_path / "run"), "steps": 2, "batch_size": 2, "log_every": 1,
              "checkpoint_every": 1, "data": {"count": 2, "audio_visual": True}, "model": {"sam2": "tiny-test"},
              "sam2_love": TINY}
    run = train(load_config(config), progress=False)
    assert (run / "final" / "model.safetensors").is_file()
    config["steps"] = 3
    train(load_config(config), resume=True, progress=False)
    steps = [line for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 3
    config.update(steps=4, sam2_love={**TINY, "train_prompt_encoder": False})  # trains fewer tensors than it holds
    with pytest.raises(CheckpointError, match=r"step_0000003: its optimizer state is for \d+ trained tensors, "
                       r"this run trains \d+.*model.init"):
        train(load_config(config), resume=True, progress=False)
    model = Sam2Love.from_pretrained(run / "final")
    frozen = [n for n, p in model.named_parameters() if n.startswith(("sam.image_encoder.", "audio_encoder."))]
    assert frozen  # stored, as trained: the frozen parts come back too


def test_cli_segments_a_video_with_its_sound_and_predicts_refavs(text, tmp_path, capsys):
    from refseg.cli import main
    from refseg.io import read_mask_png
    from test_audio import write_av

    model = tiny(text)
    folder = tmp_path / "love"
    model.save_pretrained(folder)
    sample = next(synth.split_samples("train", 0, 1, 128, 128, scenario="sound_sync", audio_visual=True))
    clip = tmp_path / "clip.mkv"
    write_av(clip, 10, 8, np.round(sample.audio[: 10 * 2000] * 32767) / 32767)
    out = tmp_path / "out"
    assert main(["segment", str(clip), "--method", "sam2-love", "--model", str(folder), "--text",
                 "the object making the high-pitched sound", "--out", str(out)]) == 0
    assert len(list((out / "masks" / "1").glob("*.png"))) == 10 and (out / "overlay.mp4").is_file()
    # a video without sound: one line, exit 2, nothing written
    silent = tmp_path / "silent.mkv"
    write_av(silent, 4, 8, None)
    capsys.readouterr()
    assert main(["segment", str(silent), "--method", "sam2-love", "--model", str(folder), "--text", "x",
                 "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "silent.mkv: no audio track (pass the sound as a separate file with --audio FILE)" in err[0]
    assert not (tmp_path / "none").exists()
    assert main(["segment", str(silent), "--text", "x", "--audio", str(clip), "--out", str(tmp_path / "none")]) == 2
    assert "only --method sam2-love hears" in capsys.readouterr().err
    # --audio gives the sound of a silent video; the same clip's own track gives the same masks
    again = tmp_path / "again"
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    from PIL import Image
    from refseg.io import frames as read_frames
    for i, f in enumerate(read_frames(clip)):
        Image.fromarray(f).save(frames_dir / f"{i:05d}.png")
    assert main(["segment", str(frames_dir), "--method", "sam2-love", "--model", str(folder), "--text",
                 "the object making the high-pitched sound", "--audio", str(clip), "--out", str(again)]) == 0
    for t in (0, 9):
        np.testing.assert_array_equal(read_mask_png(again / "masks" / "1" / f"{t:05d}.png"),
                                      read_mask_png(out / "masks" / "1" / f"{t:05d}.png"))
    # --online: a mask per frame as frames come; a folder's frames are spread over the sound as the video's are
    online, online_dir = tmp_path / "online", tmp_path / "online_dir"
    for source, target, extra in ((clip, online, []), (frames_dir, online_dir, ["--audio", str(clip)])):
        assert main(["segment", str(source), "--method", "sam2-love", "--model", str(folder), "--text",
                     "the object making the high-pitched sound", "--online", "--out", str(target), *extra]) == 0
    for t in range(10):
        np.testing.assert_array_equal(read_mask_png(online / "masks" / "1" / f"{t:05d}.png"),
                                      read_mask_png(online_dir / "masks" / "1" / f"{t:05d}.png"))
    assert main(["segment", str(clip), "--method", "glus", "--text", "x", "--online",
                 "--out", str(tmp_path / "none")]) == 2
    assert "--online: only --method sam2-love" in capsys.readouterr().err
    # predict in the Ref-AVS layout and score it; silence is a flag away
    data, pred, mute = tmp_path / "avs", tmp_path / "pred", tmp_path / "mute"
    assert main(["synth", "--out", str(data), "--split", "test", "--count", "2", "--size", "128",
                 "--format", "refavs", "--seed", "3"]) == 0
    for target, extra in ((pred, []), (mute, ["--no-audio"])):
        assert main(["predict", "--data", str(data), "--format", "refavs", "--method", "sam2-love", "--model",
                     str(folder), "--out", str(target), *extra]) == 0
    assert main(["eval", "--protocol", "refavs", "--gt", str(data), "--pred", str(pred),
                 "--out", str(tmp_path / "r.json")]) == 0
    import json
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert "seen J&F" in summary and 0 <= summary["seen J&F"] <= 1
    written = sorted(p.relative_to(pred) for p in pred.rglob("*.png"))
    assert written and written == sorted(p.relative_to(mute) for p in mute.rglob("*.png"))


@pytest.mark.parametrize("threshold,expected", [(-1.0, [0]), (1.1, [0, 3, 6, 9])])
def test_online_stream_steps_every_stride_and_reprompts_when_the_token_turns(text, threshold, expected):
    model = tiny(text)
    sample = next(synth.split_samples("train", 0, 1, 128, 128, scenario="sound_sync", audio_visual=True))
    sound = Audio(sample.audio, sample.sample_rate)
    stream = model.online_stream(["the object making the high-pitched sound"], sound, fps=8.0, stride=3,
                                 threshold=threshold)
    prompted = spy_prompted(stream.hooks)
    results = [r for f in list(sample.frames())[:14] for r in stream.push(f)]
    assert [r.index for r in results] == list(range(14))  # one result per frame, as it comes
    assert prompted == expected and stream.reprompts == len(expected) - 1
    assert len(stream.audio_tokens) == 4  # the chain stops at max_frames steps (frames 0, 3, 6, 9)
    # the first step is the offline chain over frame 0 alone, with the window heard at frame 0
    frame0 = sample.load_frames()[:1]
    cls, patches = model.encode_frames(frame0)
    audio = model.audio_encoder.embed(sound.samples, np.array([0.0]))
    states, padding = model.encode_texts(["the object making the high-pitched sound"])
    with torch.no_grad():
        seg = model.seg_chain(ClipFeatures(audio, cls, patches), states, padding).final
        first, _ = model.tokens.step(model.fusion, model.tokens.initial(1), model.audio_proj(audio[None]),
                                  model.text_proj(states), padding, model.visual_proj(cls[None]),
                                  model.visual_proj(patches), 0)
    torch.testing.assert_close(first, seg)


def test_click_tokens_are_sam2s_embedding_of_a_positive_click_at_the_centroid():
    from refseg.sam.prompt_encoder import POSITIVE, PointPrompt, embed_prompts
    from refseg.train.sam2_love import click_tokens

    sam = Sam2(tiny_test_config())
    targets = torch.zeros(2, 64, 64)
    targets[0, 10:20, 30:40] = 1  # centroid (34.5, 14.5) in a 64 px frame
    tokens, present = click_tokens(sam, targets)
    assert present.tolist() == [True, False] and tokens[1].abs().sum() == 0
    scale = sam.image_size / 64
    click = PointPrompt(torch.tensor([[[34.5 * scale, 14.5 * scale]]]), torch.tensor([[POSITIVE]]))
    sparse, _ = embed_prompts(sam.prompt_encoder, 1, points=click)
    torch.testing.assert_close(tokens[0], sparse[0, 0, 0])


def test_place_and_ground_losses_are_finite_with_an_empty_target(tmp_path):
    from refseg.train.config import load_config
    from refseg.train.loop import build_task, load_samples

    config = load_config({"task": "sam2_love", "model": {"sam2": "tiny-test"}, "loss": {"place": 1.0, "ground": 1.0},
                          "data": {"count": 4, "audio_visual": True}, "sam2_love": TINY})
    task = build_task(config)
    samples = load_samples(config)
    sampler = task.sampler(samples, 0)
    nulls = [(v, e) for v, s in enumerate(samples) for e, x in enumerate(s.expressions) if not x.target_ids]
    full = [(v, e) for v, s in enumerate(samples) for e, x in enumerate(s.expressions) if x.target_ids]
    assert nulls and full and sampler
    from refseg.train.sam2_love import LoveSample

    terms = task([LoveSample(*nulls[0], 1), LoveSample(*full[0], 2)])
    terms["loss"].backward()
    assert torch.isfinite(terms["place"]) and terms["place"] > 0
    assert torch.isfinite(terms["ground_place"]) and terms["ground_place"] > 0
    assert torch.isfinite(terms["ground_patch"]) and terms["ground_patch"] > 0
    assert all(p.grad is not None for p in task.pointer.parameters())
    grads = [p.grad for p in task.model.trainable_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_training_keeps_features_and_frame0_targets_of_each_video_not_its_frames():
    from refseg.train.config import load_config
    from refseg.train.loop import build_task, load_samples

    config = load_config({"task": "sam2_love", "model": {"sam2": "tiny-test"},
                          "data": {"count": 3, "audio_visual": True}, "sam2_love": TINY})
    task = build_task(config)
    lazy = load_samples(config, lazy=True)
    assert iter(lazy) is lazy  # made one by one, not held
    task.sampler(lazy, 0)
    for video, sample in zip(task.videos, load_samples(config), strict=True):
        assert [e.text for e in video.expressions] == [e.text for e in sample.expressions]
        for e, expression in enumerate(sample.expressions):
            assert np.array_equal(video.target(e), sample.target_mask(expression)[0])
        assert video.clip.patches.dtype == torch.float16 and video.first[-1].dtype == torch.float16


def test_ground_loss_is_cross_entropy_of_a_place_pointer_toward_the_targets_share_of_each_patch(text):
    from refseg.train.config import load_config
    from refseg.train.sam2_love import LoveTask

    config = load_config({"task": "sam2_love", "model": {"sam2": "tiny-test"}, "loss": {"ground": 1.0},
                          "sam2_love": TINY})
    model = tiny(text)
    task = LoveTask(model, config)
    grid, size = model.frame_encoder.grid, 8 * model.frame_encoder.grid  # 8 x 8 pixels a patch
    g = torch.Generator().manual_seed(5)
    first, final = torch.randn(3, 1, 32, generator=g), torch.randn(3, 1, 32, generator=g)
    targets = torch.zeros(3, size, size)
    targets[0, 4:12, 0:8] = 1  # half in patch (0, 0), half in patch (1, 0)
    targets[1, 8:16, 8:14] = 1  # all in patch (1, 1)
    loss, hits = task.ground(first, final, targets)  # row 2: no target, left out
    expected, best = [], []
    with torch.no_grad():
        for token in (first, final):
            for row in range(2):
                share = torch.tensor([float(targets[row, 8 * r:8 * r + 8, 8 * c:8 * c + 8].sum())
                                      for r in range(grid) for c in range(grid)])
                share = share / share.sum()
                places = model.tokens.space_proj(model.tokens.places)  # SAM 2's encoding of each patch centre
                keys = task.pointer["key"](places)
                query = task.pointer["query"](token[row, 0])
                logits = torch.stack([query.dot(k) for k in keys]) / 32 ** 0.5
                expected.append(-(share * torch.log_softmax(logits, 0)).sum())
                if token is final:
                    best.append(float(share[int(logits.argmax())] > 0))
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    assert float(hits) == sum(best) / 2
    zero, none = task.ground(first[:1], final[:1], targets[2:])
    assert float(zero) == 0 and float(none) == 0
    outputs = torch.randn(3, grid * grid, 32, generator=g)
    cover = torch.tensor([[float(targets[row, 8 * r:8 * r + 8, 8 * c:8 * c + 8].mean()) for r in range(grid)
                           for c in range(grid)] for row in range(3)])
    assert cover[0, 0] == cover[0, grid] == 0.5 and cover[1, grid + 1] == 0.75 and cover[2].sum() == 0
    with torch.no_grad():
        p = torch.sigmoid(task.pointer["patch"](outputs)[..., 0])
        expected = -(cover * p.log() + (1 - cover) * (1 - p).log()).mean()
        torch.testing.assert_close(task.ground_patch(outputs, targets), expected)


def test_ground_loss_needs_space_embeddings(text):
    from refseg.train.config import load_config
    from refseg.train.sam2_love import LoveTask

    config = load_config({"task": "sam2_love", "model": {"sam2": "tiny-test"}, "loss": {"ground": 1.0},
                          "sam2_love": {**TINY, "space": "off"}})
    with pytest.raises(ValueError, match="loss.ground: .*space is off"):
        LoveTask(tiny(text, space="off"), config)


def test_grounding_stage_runs_one_chain_step_and_no_sam_decode(monkeypatch):
    from refseg.train import sam2_love as love_train

    task, batch = task_and_batch(loss={"bce": 0, "dice": 0, "object": 0, "place": 0, "ground": 1.0},
                                 data={"chain_frames": 1})
    assert task.videos[0].clip.patches.shape[0] == TINY["max_frames"]  # all kept, one read
    clip = task.clip(0)
    assert clip.patches.shape[0] == clip.cls.shape[0] == 1 and clip.audio.shape[0] == TINY["max_frames"]

    def no_decode(*args, **kwargs):
        raise AssertionError("SAM 2 decoded in the grounding stage")

    monkeypatch.setattr(love_train, "decode_masks", no_decode)
    calls = []
    task.model.fusion.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    terms = task(batch)
    assert len(calls) == 1  # one fusion pass: frame 0's step
    # the sequence heard every audio window: [seg] + N audio + [aud] + text + [vis] + hw patches + [his]^0
    hw = task.model.frame_encoder.grid ** 2
    words = max(len(task.text(task.videos[s.video].expressions[s.expression].text)) for s in batch)
    assert calls[0][1] == 1 + TINY["max_frames"] + 1 + words + 1 + hw + 1
    assert float(terms["bce"]) == float(terms["place"]) == 0
    with torch.no_grad():  # the loss is `ground` of frame 0's [seg] (leaving frame 0 is also the final one)
        texts, padding = love_train.pad_texts([task.text(task.videos[s.video].expressions[s.expression].text)
                                               for s in batch])
        chain = task.model.seg_chain([task.clip(s.video) for s in batch], texts, padding)
        targets = torch.from_numpy(np.stack([task.videos[s.video].target(s.expression) for s in batch])).float()
        place, _ = task.ground(chain.final[:, :1], chain.final[:, :1], targets)
        expected = place + task.ground_patch(chain.first_patches, targets)
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert task.model.text_hidden_fcs[0][0].weight.grad is None  # the prompt projection is not reached


def test_love_training_config_errors():
    from refseg.train.config import load_config
    from refseg.train.loop import build_task

    base = {"task": "sam2_love", "model": {"sam2": "tiny-test"}, "sam2_love": TINY}
    with pytest.raises(ValueError, match="data.chain_frames: need at least 1"):
        build_task(load_config({**base, "data": {"chain_frames": 0}}))
    with pytest.raises(ValueError, match="every loss weight .* is 0"):
        build_task(load_config({**base, "loss": {"bce": 0, "dice": 0, "object": 0, "place": 0, "ground": 0}}))


def test_full_recipe_starts_from_the_grounding_stage_with_its_pointer(tmp_path):
    from refseg.train.config import load_config
    from refseg.train.loop import load_init, build_task, train

    ground = {"task": "sam2_love", "out": str(tmp_path / "ground"), "steps": 2, "batch_size": 2, "log_every": 1,
              "checkpoint_every": 2, "model": {"sam2": "tiny-test"},
              "loss": {"bce": 0, "dice": 0, "object": 0, "place": 0, "ground": 1.0},
              "data": {"count": 2, "audio_visual": True, "chain_frames": 1}, "sam2_love": TINY}
    run = train(load_config(ground), progress=False)
    checkpoint = run / "checkpoints" / "step_0000002"
    saved = torch.load(checkpoint / "state.pt", weights_only=False)["task"]
    trained = Sam2Love.from_pretrained(run / "final").state_dict()

    def started(init):
        config = load_config({**ground, "out": str(tmp_path / "full"), "loss": {"ground": 1.0},
                              "data": {"count": 2, "audio_visual": True}, "model": {"sam2": "tiny-test", "init": init}})
        torch.manual_seed(1)
        task = build_task(config)
        fresh = {k: v.clone() for k, v in task.state_dict().items() if k.startswith("pointer.")}
        load_init(task, config)
        for name, value in task.model.state_dict().items():
            assert name.startswith("text.") or torch.equal(value, trained[name]), name
        return task, fresh

    task, fresh = started(str(checkpoint))  # a checkpoint: the pointer comes back too
    assert saved and all(torch.equal(task.state_dict()[k], v) and not torch.equal(fresh[k], v) for k, v in saved.items())
    task, fresh = started(str(run / "final"))  # final/ holds the model only: the pointer starts afresh
    assert all(torch.equal(task.state_dict()[k], v) for k, v in fresh.items())


def test_grounding_stage_is_the_same_with_sam2_frozen(tmp_path):
    """The grounding stage never decodes, so freezing SAM 2's prompt encoder and mask decoder
    (Tab. 6's row) trains the same weights step for step: the ablation shares that stage."""
    from refseg.train.config import load_config
    from refseg.train.loop import build_task, train

    def stage(name, **flags):
        raw = {"task": "sam2_love", "out": str(tmp_path / name), "steps": 3, "batch_size": 2, "log_every": 1,
               "checkpoint_every": 3, "model": {"sam2": "tiny-test"},
               "loss": {"bce": 0, "dice": 0, "object": 0, "place": 0, "ground": 1.0},
               "data": {"count": 2, "audio_visual": True, "chain_frames": 1}, "sam2_love": {**TINY, **flags}}
        return Sam2Love.from_pretrained(train(load_config(raw), progress=False) / "final").state_dict()

    full = stage("full")
    frozen = stage("frozen", train_prompt_encoder=False, train_mask_decoder=False)
    torch.manual_seed(0)  # the loop's seed: the weights both runs started from
    start = build_task(load_config({"task": "sam2_love", "model": {"sam2": "tiny-test"}, "sam2_love": TINY}))
    start = start.model.state_dict()
    moved = [k for k in full if not torch.equal(full[k], start[k])]
    assert moved and all(k.startswith(("fusion.", "tokens.", "audio_proj", "text_proj", "visual_proj")) for k in moved)
    assert full.keys() == frozen.keys() and all(torch.equal(full[k], frozen[k]) for k in full)


def test_feature_store_keeps_the_frozen_features_for_later_runs_over_the_same_videos_and_encoders(tmp_path):
    from refseg.train.config import load_config
    from refseg.train.loop import build_task, load_samples

    raw = {"task": "sam2_love", "model": {"sam2": "tiny-test"}, "sam2_love": TINY,
           "data": {"count": 2, "audio_visual": True, "feature_store": str(tmp_path / "store")}}
    config = load_config(raw)
    torch.manual_seed(0)
    first = build_task(config)
    first.sampler(load_samples(config, lazy=True), 0)
    stored = list((tmp_path / "store").iterdir())
    assert [p.name for p in stored] == [f"sam2_love-{first.feature_key()}.pt"]

    torch.manual_seed(0)  # the same encoders: read back, nothing summarised
    again = build_task(config)
    again.summarise = lambda sample: pytest.fail("summarised a video the store holds")
    again.sampler(load_samples(config, lazy=True), 0)
    for a, b in zip(first.videos, again.videos, strict=True):
        assert [e.text for e in a.expressions] == [e.text for e in b.expressions] and np.array_equal(a.targets, b.targets)
        assert all(torch.equal(x, y) for x, y in zip((a.clip.audio, a.clip.cls, a.clip.patches, *a.first),
                                                      (b.clip.audio, b.clip.cls, b.clip.patches, *b.first), strict=True))
    torch.manual_seed(1)  # other frozen encoders, or other videos: another file
    assert build_task(config).feature_key() != first.feature_key()
    torch.manual_seed(0)
    assert build_task(load_config({**raw, "data": {**raw["data"], "seed": 3}})).feature_key() != first.feature_key()
    torch.manual_seed(0)
    assert build_task(load_config({**raw, "data": {**raw["data"], "scenario": "sound_sync"}})).feature_key() != \
        first.feature_key()
    torch.manual_seed(0)  # what only training reads (loss, chain length in training) keeps the file
    same = load_config({**raw, "loss": {"ground": 1.0}, "data": {**raw["data"], "chain_frames": 1}})
    assert build_task(same).feature_key() == first.feature_key()



def test_feature_store_key_changes_with_the_files_or_the_generator_behind_the_videos(tmp_path, monkeypatch):
    """A store read for videos that changed since it was kept would train on stale features:
    the key follows each file of a dataset on disk, and SynthRef's generator code."""
    import os

    from refseg.train.sam2_love import data_fingerprint

    root = tmp_path / "refavs"
    (root / "media" / "v0").mkdir(parents=True)
    (root / "metadata.csv").write_text("uid,vid\n")
    frame = root / "media" / "v0" / "00000.png"
    frame.write_bytes(b"a")
    first = data_fingerprint("refavs", str(root))
    assert data_fingerprint("refavs", str(root)) == first  # nothing changed: the same store
    frame.write_bytes(b"ab")  # edited (another size)
    edited = data_fingerprint("refavs", str(root))
    assert edited != first
    os.utime(frame, ns=(0, 0))  # same size, touched
    assert data_fingerprint("refavs", str(root)) != edited
    touched = data_fingerprint("refavs", str(root))
    (root / "media" / "v1").mkdir()
    (root / "media" / "v1" / "00000.png").write_bytes(b"c")  # a video added
    assert data_fingerprint("refavs", str(root)) != touched

    generator = tmp_path / "synth.py"
    generator.write_bytes(Path(synth.__file__).read_bytes())
    monkeypatch.setattr(synth, "__file__", str(generator))
    before = data_fingerprint("synthref", None)
    generator.write_bytes(generator.read_bytes() + b"\n# scenes drawn another way\n")
    assert data_fingerprint("synthref", None) != before

def test_every_trainable_part_that_the_prompt_reaches_gets_a_gradient():
    """The decoder's high-resolution projections are part of the frozen, kept image features, so
    they are frozen; what the one sparse [seg] prompt and LOVE's losses never reach (mask and point
    embeddings, and the IoU head, on which no LOVE loss is) is all that trains without a gradient."""
    task, batch = task_and_batch()
    decoder = task.model.sam.mask_decoder
    assert not any(p.requires_grad for m in (decoder.conv_s0, decoder.conv_s1) for p in m.parameters())
    assert decoder.upscale_conv1.weight.requires_grad
    task(batch)["loss"].backward()
    unreached = {n.split(".")[3] for n, p in task.named_parameters() if p.requires_grad and p.grad is None}
    assert unreached == {"mask_embed", "point_embed", "not_a_point_embed", "iou_prediction_head"}


def test_motion_cue_starts_at_zero_and_reads_the_change_since_the_previous_chain_frame(text):
    plain, moving = tiny(text), tiny(text, motion=True)
    shared = plain.state_dict()
    assert all(torch.equal(shared[k], v) for k, v in moving.state_dict().items() if k in shared)  # nothing else moved
    assert set(moving.state_dict()) - set(shared) == {"motion_proj.weight"}
    states, padding = plain.encode_texts(["the red circle", "the loudest one"])
    clip = random_clip(plain, frames=4)
    with torch.no_grad():
        torch.testing.assert_close(moving.seg_chain(clip, states, padding).steps, plain.seg_chain(clip, states, padding).steps)
        moving.motion_proj.weight.normal_(generator=torch.Generator().manual_seed(1))
        with_cue, without = moving.seg_chain(clip, states, padding).steps, plain.seg_chain(clip, states, padding).steps
        torch.testing.assert_close(with_cue[:, 0], without[:, 0])  # frame 0: nothing before it, no change
        assert (with_cue[:, 1:] - without[:, 1:]).abs().amax() > 1e-3
        still = dataclasses.replace(clip, patches=clip.patches[:1].expand_as(clip.patches).clone())
        torch.testing.assert_close(moving.seg_chain(still, states, padding).steps,
                                   plain.seg_chain(still, states, padding).steps)  # a still clip: no change, no cue
        # the change is p_i - p_{i-1}: adding one offset to every frame's patches changes nothing but frame 0's view
        shifted = dataclasses.replace(clip, patches=clip.patches + torch.randn(clip.patches.shape[1:]))
        later = moving.visual_tokens(shifted.patches[None], None) - moving.visual_proj(shifted.patches[None])
        torch.testing.assert_close(later, moving.visual_tokens(clip.patches[None], None) - moving.visual_proj(clip.patches[None]))


def test_online_stream_gives_each_chain_step_the_change_since_the_last_step(text):
    model = tiny(text, motion=True)
    with torch.no_grad():
        model.motion_proj.weight.normal_(generator=torch.Generator().manual_seed(2))
    sample = next(synth.split_samples("train", 0, 1, 128, 128, scenario="sound_sync", audio_visual=True))
    sound = Audio(sample.audio, sample.sample_rate)
    expression = "the object making the high-pitched sound"
    stream = model.online_stream([expression], sound, fps=8.0, stride=3)
    frames = sample.load_frames()[:9]
    for frame in frames:
        stream.push(frame)
    steps = [0, 3, 6]
    cls, patches = model.encode_frames(frames[steps])
    audio = model.audio_encoder.embed(sound.samples, np.array(steps) / 8.0)
    states, padding = model.encode_texts([expression])
    with torch.no_grad():  # each step hears the windows so far; its patches' cue is the change since the last step
        visual = model.visual_tokens(patches[None], None)[0]
        seg, words = model.tokens.initial(1), model.text_proj(states)
        for i in range(len(steps)):
            seg, _ = model.tokens.step(model.fusion, seg, model.audio_proj(audio[None, : i + 1]), words, padding,
                                       model.visual_proj(cls[None, : i + 1]), visual[None, i], i)
    torch.testing.assert_close(stream.seg, seg)


def test_a_model_with_the_motion_cue_starts_from_a_checkpoint_without_it(tmp_path):
    from refseg.train.config import load_config
    from refseg.train.loop import build_task, load_init, train

    config = {"task": "sam2_love", "out": str(tmp_path / "plain"), "steps": 1, "batch_size": 2, "log_every": 1,
              "data": {"count": 2, "audio_visual": True}, "model": {"sam2": "tiny-test"}, "sam2_love": TINY}
    run = train(load_config(config), progress=False)
    plain = Sam2Love.from_pretrained(run / "final")
    moving = dict(config, sam2_love={**TINY, "motion": True}, model={"sam2": "tiny-test", "init": str(run / "final")})
    task = build_task(load_config(moving))
    load_init(task, load_config(moving))
    assert not task.model.motion_proj.weight.any()
    loaded = task.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in plain.state_dict().items() if not k.startswith("text."))
    learnt = train(load_config(dict(moving, out=str(tmp_path / "moving"))), progress=False)
    back = load_config(dict(config, model={"sam2": "tiny-test", "init": str(learnt / "final")}))
    with pytest.raises(ValueError, match="motion_proj"):  # the other way round, a learnt cue would be dropped
        load_init(build_task(back), back)


def test_training_on_the_scenes_of_one_scenario():
    from refseg.train.config import load_config
    from refseg.train.loop import load_samples

    raw = {"task": "sam2_love", "model": {"sam2": "tiny-test"}, "sam2_love": TINY,
           "data": {"count": 3, "audio_visual": True, "scenario": "sound_sync"}}
    samples = load_samples(load_config(raw))
    assert len(samples) == 3 and all(any("sound_sync" in e.phenomena for e in s.expressions) for s in samples)
    with pytest.raises(ValueError, match="data.scenario: 'late_entry' is not a scenario of these SynthRef scenes"):
        load_samples(load_config({**raw, "data": {**raw["data"], "scenario": "late_entry"}}))
    with pytest.raises(ValueError, match="data.scenario: only SynthRef"):
        load_samples(load_config({**raw, "data": {"source": "refavs", "root": "x", "scenario": "sound_sync"}}))
