"""GLUS as refseg trains, saves, loads and runs it: the training conversation and its targets,
added token rows, LoRA merge, the SAM 2 tower, the glus task (what trains, resume), folder round
trips and the CLI, on a tiny random model (a 2-layer LLaMA around the fixture's tokenizer)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from refseg.cli import main
from refseg.data import synth
from refseg.data.sampler import ClipSampler
from refseg.engine import Session
from refseg.methods.glus.build import TINY_LLM, load_glus
from refseg.methods.glus.conversation import (ABSENT_WORD, ANSWER, IMAGE_TOKEN, SEG, answer_targets, glus_input_ids,
                                              glus_prompt, token_rows)
from refseg.methods.glus.frames import context_frames
from refseg.methods.glus.mllm import GlusLlm
from refseg.methods.glus.vision import Sam2Tower, VisionTokens
from refseg.train.config import load_config
from refseg.train.loop import train

TOKENIZER = Path(__file__).parent / "fixtures" / "glus_official" / "tokenizer"


def tiny_config(out: Path, steps: int = 3, **changes: object) -> dict:
    values = {"task": "glus", "out": str(out), "steps": steps, "batch_size": 2, "checkpoint_every": 1,
              "log_every": 1, "model": {"sam2": "tiny-test", "image_size": 64},
              "data": {"source": "synthref", "split": "train", "count": 2, "clip_len": 2, "size": 64,
                       "expressions_per_clip": 2},
              "glus": {"llm": "tiny-test", "tokenizer": str(TOKENIZER), "pool": 1, "inference": {"context_frames": 2}},
              "loss": {"bce": 2.0, "dice": 0.5}}
    values.update(changes)
    return values


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("glus") / "run"
    return train(load_config(tiny_config(run)), progress=False)


def tokenizer():
    return AutoTokenizer.from_pretrained(TOKENIZER)


def test_a_training_conversation_answers_every_turn_and_its_targets_are_the_answers():
    tok = tokenizer()
    prompt = glus_prompt("The red circle.", turns=3, context_frames=2, complete=True)
    assert prompt.count(SEG) == 3 and prompt.count("<image>") == 5
    assert prompt.endswith(ANSWER + SEG + ".</s>")
    ids = glus_input_ids(prompt, tok)
    seg, eos = tok.convert_tokens_to_ids(SEG), tok.eos_token_id
    targets = answer_targets(ids, eos, tok)
    # independently: each answer is the text from "Sure" up to its </s>
    spans = []
    for end in [i for i, t in enumerate(ids) if t == eos]:
        start = end
        while "Sure" not in tok.decode(ids[start:end]):
            start -= 1
        spans += list(range(start, end + 1))
    assert targets == spans
    assert [ids[t] for t in targets].count(seg) == 3
    assert tok.decode([ids[t] for t in targets if ids[t] not in (seg, eos)]).replace(" ", "").count("Sure,") == 3
    # no context frames: no context text (the single-frame stage)
    assert "context frames" not in glus_prompt("x", turns=1, context_frames=0)


def test_token_rows_skip_the_rows_of_each_image():
    ids = [5, IMAGE_TOKEN, 6, IMAGE_TOKEN, IMAGE_TOKEN, 7]
    assert token_rows(ids, 4) == [0, 1, 5, 6, 10, 14]


def test_added_tokens_are_extra_rows_of_the_embedding_and_the_head():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=50, **TINY_LLM))
    model = GlusLlm(llm, prompt_width=8, added=3)
    with torch.no_grad():
        model.added_embed.normal_()
    embeds = model.embed([3, 51, 49], torch.zeros(0, 1, 64))[0]
    assert torch.equal(embeds[0], llm.get_input_embeddings().weight[3])
    assert torch.equal(embeds[1], model.added_embed[1])
    assert torch.equal(embeds[2], llm.get_input_embeddings().weight[49])
    hidden = torch.randn(2, 64)
    logits = model.logits(hidden)
    assert logits.shape == (2, 53)
    # tied embeddings: the added rows score as they embed
    assert torch.allclose(logits[:, 50:], hidden @ model.added_embed.T, atol=1e-6)
    with pytest.raises(ValueError, match="beyond the vocabulary"):
        model.embed([53], torch.zeros(0, 1, 64))


def test_lora_merge_computes_what_the_adapters_compute():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = GlusLlm(LlamaForCausalLM(LlamaConfig(vocab_size=50, **TINY_LLM)), prompt_width=8).eval()
    images = torch.randn(1, 3, 64)
    ids = [1, 2, 3, IMAGE_TOKEN, 4]
    before = model.states(ids, images).detach()
    model.add_lora(r=4, alpha=8, dropout=0.0)
    lora = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    assert len(lora) == 2 * 2 * 2 and all(p.requires_grad for p in lora.values())  # A, B on q and v of 2 layers
    assert not any(p.requires_grad for n, p in model.llm.named_parameters() if ".lora_" not in n)
    assert torch.equal(model.states(ids, images), before)  # B starts at zero: the adapters change nothing yet
    with torch.no_grad():
        for name, p in lora.items():
            p.normal_(std=0.3)
    unmerged = model.states(ids, images).detach()
    assert (unmerged - before).abs().max() > 1e-3
    model.merge_lora()
    assert not any(".lora_" in n for n, _ in model.named_parameters())
    merged = model.states(ids, images).detach()
    assert torch.allclose(merged, unmerged, atol=1e-5)


def test_sam2_tower_tokens_are_the_last_trunk_stage_in_raster_order(tmp_path):
    from conftest import random_sam2

    sam = random_sam2(image_size=128)
    tokens = VisionTokens(Sam2Tower(sam), llm_width=16, pool=4)
    frames = [np.random.default_rng(i).integers(0, 255, (90, 120, 3), dtype=np.uint8) for i in range(2)]
    pixels = tokens.pixels(frames)
    trunk = sam.encode_images(pixels).trunk[-1]  # [T, C, 4, 4]
    patches = tokens.patches(pixels)
    assert patches.shape == (2, 16, trunk.shape[1])
    assert torch.allclose(patches[1, 5], trunk[1, :, 1, 1], atol=1e-6)
    out = tokens(pixels)
    assert out.shape == (2, 4, 16)
    expected = tokens.mm_projector(trunk[0, :, 2, :].T.mean(0))  # third row of the 4 x 4 map, pooled
    assert torch.allclose(out[0, 2], expected, atol=1e-5)


def test_the_sampler_puts_one_context_frame_per_segment_ahead_of_the_query_frames():
    samples = list(synth.split_samples("train", 0, 1))
    video = samples[0]
    n = len(video)
    sampler = ClipSampler(samples, clip_len=3, size=64, seed=0, flip_p=0.0, crop_scale=(1.0, 1.0), brightness=0,
                          contrast=0, context=lambda count, rng: context_frames(count, 4, rng))
    clip = sampler.sample()
    assert clip.context == 4 and len(clip.frames) == 7
    bounds = np.linspace(0, n, 5).astype(int)
    full = [np.asarray(video.load_frame(t)) for t in range(n)]
    for j in range(4):  # each context frame is one of its segment's frames
        from PIL import Image
        resized = [np.asarray(Image.fromarray(f).resize((64, 64), Image.BILINEAR)) for f in full[bounds[j]:bounds[j + 1]]]
        assert any(np.array_equal(clip.frames[j], r) for r in resized), j


def test_the_task_trains_only_glus_parts_and_saves_only_them(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert all({"ce", "bce", "dice", "contrastive", "loss"} <= set(r) for r in records)
    first = load_file(str(trained / "checkpoints" / "step_0000001" / "model.safetensors"))
    last = load_file(str(trained / "final" / "model.safetensors"))
    assert set(first) == set(last)
    prefixes = ("vision.mm_projector.", "llm.text_hidden_fcs.", "llm.added_embed", "sam.mask_decoder.")
    for prefix in prefixes:
        assert any(not torch.equal(first[k], last[k]) for k in last if k.startswith(prefix)), prefix
    assert any(".lora_B" in k and not torch.equal(first[k], last[k]) for k in last)
    # no SAM 2 source (a random tiny one): stored whole, but only its mask decoder changed
    assert all(torch.equal(first[k], last[k]) for k in last
               if k.startswith("sam.") and not k.startswith("sam.mask_decoder."))
    assert not any(k.startswith("llm.llm.") and ".lora_" not in k for k in last)  # the LLM is rebuilt, not stored


def test_resume_reproduces_the_uninterrupted_run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    shutil.rmtree(copy / "final")
    shutil.rmtree(copy / "checkpoints" / "step_0000003")
    train(load_config(tiny_config(copy)), resume=True, progress=False)
    a = load_file(str(trained / "final" / "model.safetensors"))
    b = load_file(str(copy / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (copy / "metrics.jsonl").read_text().count("\n") == 3


def frames_of(n: int = 5) -> list[np.ndarray]:
    video = next(iter(synth.split_samples("valid", 3, 1)))
    return [np.asarray(video.load_frame(t)) for t in range(n)]


def test_a_loaded_folder_computes_what_the_trained_model_computes(trained):
    unmerged = load_glus(trained / "final", merge=False)
    merged = load_glus(trained / "final")
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    state = load_file(str(trained / "final" / "model.safetensors"))
    mine = unmerged.stored_state()
    assert all(torch.equal(mine[k], state[k].float()) for k in state)
    with torch.no_grad():  # give the adapters weight, so merging matters
        for name, p in unmerged.named_parameters():
            if ".lora_B" in name:
                p.normal_(std=0.2)
        merged = load_glus(trained / "final", merge=False)
        merged.load_state_dict(unmerged.state_dict())
        merged.llm.merge_lora()
    frames = frames_of()
    ids = glus_input_ids(glus_prompt("the red thing", 2, 2), unmerged.tokenizer)
    images = unmerged.vision(unmerged.vision.pixels(frames[:4]))
    a, b = unmerged.llm(ids, images), merged.llm(ids, images)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-4)


def test_a_frame_without_seg_gets_no_mask_and_keeps_its_place(trained):
    model = load_glus(trained / "final")
    frames = frames_of()
    forward = model.llm.forward
    calls = []

    def answer_on_even_frames(ids, images, prefix=None):  # the real pass, then [SEG] (even calls) or another token
        hidden, logits = forward(ids, images, prefix)
        calls.append(ids)
        forced = torch.full_like(logits, -1e9)
        forced[model.seg_id if len(calls) % 2 == 1 else 7] = 0
        return hidden, forced

    model.llm.forward = answer_on_even_frames
    result = model.segment(frames, "the red thing")
    assert result.answered == [True, False, True, False, True]
    for t, frame in enumerate(result.frames):
        assert frame.mask.shape == frames[0].shape[:2]
        if t % 2:
            assert not frame.mask.any() and float(frame.logits.max()) == -1024.0
        else:
            assert float(frame.logits.max()) > -1024.0 and np.isfinite(frame.score)
    # the third call's window holds frames 0..2 with frame 1's turn failed (the official conversation
    # writes "[SEG] ."; the space next to an added token is dropped when tokenised)
    c = model.config
    prompt = glus_prompt("the red thing", 3, c.context_frames, [False, True]).rstrip()
    assert calls[2] == glus_input_ids(prompt, model.tokenizer)
    # a model refseg trained is asked exactly what it was trained on: the training conversation up to its [SEG]
    trained_on = glus_input_ids(glus_prompt("the red thing", 1, c.context_frames, complete=True), model.tokenizer)
    assert calls[0] == trained_on[:trained_on.index(model.seg_id)]
    assert len(calls) == 5 and calls[4].count(model.seg_id) == c.query_window - 1
    # a model trained to answer "empty" reads its failed turns as it was trained to write them
    model.spec = dataclasses.replace(model.spec, absent_answer=True)
    calls.clear()
    assert model.segment(frames, "the red thing").answered == [True, False, True, False, True]
    assert calls[2] == glus_input_ids(glus_prompt("the red thing", 3, c.context_frames, [False, True], absent=True).rstrip(),
                                      model.tokenizer)


def test_cli_segment_and_predict_with_glus(trained, tmp_path):
    frames = frames_of(4)
    folder = tmp_path / "video"
    folder.mkdir()
    from PIL import Image

    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg")
    out = tmp_path / "out"
    code = main(["segment", str(folder), "--method", "glus", "--model", str(trained / "final"), "--text", "the red one",
                 "--text", "the moving square", "--out", str(out)])
    assert code == 0
    for obj in ("1", "2"):
        assert sorted(p.name for p in (out / "masks" / obj).iterdir()) == [f"{t:05d}.png" for t in range(4)]
    assert (out / "overlay.mp4").is_file()
    assert main(["segment", "cam://0", "--method", "glus", "--model", str(trained / "final"), "--text", "x",
                 "--out", str(tmp_path / "live")]) == 2
    assert main(["segment", str(folder), "--method", "glus", "--points", "1,1", "--out", str(tmp_path / "c")]) == 2
    data = tmp_path / "mevis"
    from refseg.data import formats

    formats.write("mevis", synth.split_samples("valid", 3, 1), data)
    pred = tmp_path / "pred"
    assert main(["predict", "--data", str(data), "--format", "mevis", "--method", "glus", "--model",
                 str(trained / "final"), "--out", str(pred)]) == 0
    written = list(pred.rglob("*.png"))
    sample = next(iter(synth.split_samples("valid", 3, 1)))
    assert len(written) == len(sample.expressions) * len(sample)


def test_standardize_seg_calibrates_once_and_the_folder_keeps_it(tmp_path):
    from refseg.methods.glus.conversation import seg_rows
    from refseg.train.loop import build_task, load_samples

    config = load_config(tiny_config(tmp_path / "std", steps=1, glus={**tiny_config(tmp_path)["glus"],
                                                                       "standardize_seg": True}))
    task = build_task(config)
    model = task.model
    assert not model.llm.calibrated
    samples = load_samples(config)
    clips = [ClipSampler(samples, clip_len=2, size=64, seed=s).sample() for s in range(6)]
    task.calibrate(clips)
    states = []
    with torch.no_grad():
        for clip in clips:  # the standardised [SEG] states of the calibration clips: mean 0, spread 1
            ids = glus_input_ids(glus_prompt(clip.expression.text, 2, 0, complete=True), model.tokenizer)
            images = model.vision(model.vision.pixels(list(clip.frames)))
            hidden = model.llm.states(ids, images)
            states.append((hidden[seg_rows(ids, model.seg_id, images.shape[1])] - model.llm.seg_shift) * model.llm.seg_gain)
    states = torch.cat(states)
    assert torch.allclose(states.mean(0), torch.zeros(64), atol=1e-4)
    assert torch.allclose(states.std(0), torch.ones(64), atol=1e-3)
    shift = model.llm.seg_shift.clone()
    task.sampler(samples, 0)  # already calibrated: kept
    assert torch.equal(model.llm.seg_shift, shift)
    run = train(config, progress=False)
    loaded = load_glus(run / "final")
    assert loaded.llm.calibrated
    assert torch.equal(loaded.llm.seg_gain, load_file(str(run / "final" / "model.safetensors"))["llm.seg_gain"])


def test_without_a_memory_bank_each_frame_is_decoded_as_a_first_frame(trained):
    from refseg.methods.glus.hooks import GlusHooks

    model = load_glus(trained / "final")
    forward, project = model.llm.forward, model.llm.seg_prompts
    model.llm.forward = lambda ids, images, prefix=None: (forward(ids, images, prefix)[0],  # always [SEG]
                                             torch.where(torch.arange(403) == model.seg_id, 0.0, -1e9))
    prompts = []
    model.llm.seg_prompts = lambda hidden, rows: prompts.append(project(hidden, rows)) or prompts[-1]
    frames = frames_of(4)
    model.config = dataclasses.replace(model.config, num_maskmem=0)
    alone = model.segment(frames, "the red thing")
    hooks = GlusHooks(0)
    with torch.no_grad():
        for t, frame in enumerate(frames):  # each frame on its own, prompted by the token its call made
            hooks.prompt = prompts[t][-1:][None]
            assert torch.equal(hooks.session(model.sam).push(frame).objects[1].logits, alone.logits[t]), t
    model.config = dataclasses.replace(model.config, num_maskmem=7)
    remembered = model.segment(frames, "the red thing")
    assert torch.equal(remembered.logits[0], alone.logits[0])
    assert not torch.equal(remembered.logits[3], alone.logits[3])  # memory changes later frames


def test_checkpoints_store_the_contrastive_bank_a_resume_restores(trained):
    from refseg.methods.glus.contrastive import TokenBank

    state = torch.load(trained / "checkpoints" / "step_0000002" / "state.pt", weights_only=False)["glus_bank"]
    assert len(state["tags"]) == len(state["tokens"]) > 0  # the [SEG] tokens of two steps
    bank = TokenBank(512)
    bank.load(state)
    again = bank.state()
    assert again["tags"] == state["tags"] and torch.equal(again["tokens"], state["tokens"])
    later = torch.load(trained / "checkpoints" / "step_0000003" / "state.pt", weights_only=False)["glus_bank"]
    assert later["tags"][: len(state["tags"])] == state["tags"] and len(later["tags"]) > len(state["tags"])


def test_the_readout_stage_holds_the_llm_fixed_and_decodes_what_a_glus_pass_decodes(tmp_path):
    from refseg.methods.glus.hooks import GlusHooks
    from refseg.train.glus import HELD_IN_READOUT
    from refseg.train.loop import build_task, load_samples

    values = tiny_config(tmp_path / "readout", steps=2, batch_size=4,
                         data={**tiny_config(tmp_path)["data"], "image": True, "clip_len": 1, "cache_features": True},
                         glus={**tiny_config(tmp_path)["glus"], "inference": {"context_frames": 0}})
    torch.manual_seed(0)
    cached = build_task(load_config(values))
    with torch.no_grad():  # the tiny SAM 2's no-memory embedding is small; a first frame must add it
        cached.model.sam.no_memory_embedding.normal_(0.0, 1.0)
    plain = build_task(load_config({**values, "data": {**values["data"], "cache_features": False}}))
    plain.model.load_state_dict(cached.model.state_dict())
    for name, param in cached.model.named_parameters():
        assert param.requires_grad == (not name.startswith(HELD_IN_READOUT) and name.startswith(
            ("llm.text_hidden_fcs.", "sam.mask_decoder."))), name
    sampler = cached.sampler(load_samples(cached.config), seed=0)
    batch = cached.draw_batch(sampler, np.random.default_rng(0), 4)
    cached.eval(), plain.eval()  # no adapter dropout: the cached states are eval-mode states
    with torch.no_grad():
        first, reference = cached(batch), plain(batch)
        again = cached(batch)
        out, prompts = cached.readout_decode(batch)
        for i, sample in enumerate(batch):  # each frame as the first frame of a GLUS pass, prompted by its token
            hooks = GlusHooks(7, stride=1)
            hooks.prompt = prompts[i][None, None]
            session = hooks.session(plain.model.sam)
            logits = session.push(sample.clip.frames[0]).objects[1].low_res_logits
            assert (out.low_res[i, 0] - logits).abs().max() < 0.02 * logits.abs().max(), i  # features kept as float16
    assert len(cached.states) == len({(s.clip.frames[0].tobytes(), s.clip.expression.text) for s in batch})
    assert float(first["ce"]) == 0.0
    for name in ("bce", "dice"):
        assert float(first[name]) == float(again[name])
        assert abs(float(first[name]) - float(reference[name])) < 2e-3 * max(1.0, abs(float(reference[name])))
    run = train(load_config(values), progress=False)
    torch.manual_seed(0)
    fresh = build_task(load_config(values)).model
    trained_model = load_glus(run / "final", merge=False)
    held = fresh.stored_state()
    for name, tensor in trained_model.stored_state().items():
        if name.startswith(HELD_IN_READOUT):
            assert torch.equal(tensor, held[name]), name
    assert not torch.equal(trained_model.stored_state()["llm.text_hidden_fcs.layers.0.weight"],
                           held["llm.text_hidden_fcs.layers.0.weight"])
    with pytest.raises(ValueError, match="data.cache_features: GLUS keeps the \\[SEG\\] states of single frames"):
        build_task(load_config({**values, "data": {**values["data"], "clip_len": 2}}))


def test_a_frame_without_its_target_is_answered_empty_and_its_answer_is_a_target():
    tok = tokenizer()
    prompt = glus_prompt("The red circle.", turns=3, context_frames=2, failed=[False, True, False], complete=True,
                         absent=True)
    assert prompt.count(SEG) == 2 and prompt.count(ANSWER + ABSENT_WORD + ".</s>") == 1
    ids = glus_input_ids(prompt, tok)
    eos = tok.eos_token_id
    targets = answer_targets(ids, eos, tok)
    assert len([t for t in targets if ids[t] == eos]) == 3  # every turn's answer, the empty one too
    assert ABSENT_WORD in tok.decode([ids[t] for t in targets])
    # inference asks the trained model exactly what it was trained on, the empty turn included:
    # the third call's prompt (frame 1's turn failed) is the training conversation up to its last [SEG]
    asked = glus_input_ids(glus_prompt("The red circle.", 3, 2, [False, True], absent=True).rstrip(), tok)
    assert asked == ids[:max(i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids(SEG))]
    # and the empty answer's first token follows exactly the prefix that inference forces
    first = glus_input_ids(glus_prompt("The red circle.", 1, 2).rstrip(), tok)
    empty = glus_input_ids(glus_prompt("The red circle.", 1, 2, [True], complete=True, absent=True), tok)
    assert empty[:len(first)] == first and tok.decode(empty[len(first):]).strip().startswith(ABSENT_WORD)
    with pytest.raises(ValueError, match="failed"):
        glus_prompt("x", 2, failed=[True, True])  # the current turn has no answer yet


def task_and_clip(tmp_path: Path, **glus: object):
    """(config, glus task with `glus` settings in eval mode, a 3-frame training clip with its own mask)."""
    from refseg.train.loop import build_task, load_samples

    base = tiny_config(tmp_path)
    config = load_config(tiny_config(tmp_path / "run", steps=2, glus={**base["glus"], **glus},
                                     data={**base["data"], "clip_len": 3}))
    task = build_task(config)
    task.model.eval()  # no adapter dropout: two computations of one clip agree
    clip = ClipSampler(load_samples(config), clip_len=3, size=64, seed=0, by="expression").sample()
    clip.mask = clip.mask.copy()
    return config, task, clip


def test_training_with_absent_answers_skips_the_empty_frames_as_inference_does(tmp_path):
    from refseg.methods.glus.hooks import GlusHooks
    from refseg.train.task import Referred

    config, task, clip = task_and_clip(tmp_path, absent_answer=True)
    model = task.model
    clip.mask[1] = False  # the target leaves on frame 1
    clip.mask[0, 20:40, 20:40] = clip.mask[2, 10:30, 10:30] = True
    losses, prompts, segmented = task.expression_losses(Referred(clip, 0))
    assert segmented == [0, 2] and prompts.shape[0] == 2
    # frame 2 after a skipped frame 1 is what a pass over frames 0 and 2 alone gives (GLUS's memory
    # has no temporal encoding, and frame 1 stored none)
    hooks = GlusHooks(model.config.num_maskmem, stride=1)
    session = hooks.session(model.sam, grad=True)
    logits = []
    for t, prompt in zip(segmented, prompts):
        hooks.prompt = prompt[None, None]
        logits.append(session.push(clip.frames[t]).objects[1].output.high_res)
    masks = torch.from_numpy(clip.mask[segmented]).float()[:, None]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.cat(logits).float(), masks)
    assert torch.allclose(losses["bce"], expected, atol=1e-6)
    # a null expression: no [SEG] at all, no mask loss, only the language loss, which reaches the LLM
    clip.mask[:] = False
    losses, prompts, segmented = task.expression_losses(Referred(clip, 0))
    assert segmented == [] and prompts.shape[0] == 0
    assert losses["bce"].item() == losses["dice"].item() == 0.0 and losses["ce"].item() > 0
    losses["loss"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(".lora_" in n for n in grads) and not any(n.startswith("sam.") for n in grads)
    # the folder keeps the setting, and inference then writes an empty turn as it was trained
    run = train(config, progress=False)
    assert load_glus(run / "final").spec.absent_answer


def test_a_presence_gated_model_empties_the_frames_sam2_calls_absent(trained):
    model = load_glus(trained / "final")
    forward = model.llm.forward
    model.llm.forward = lambda ids, images, prefix=None: (forward(ids, images, prefix)[0],  # always [SEG]
                                                         torch.where(torch.arange(403) == model.seg_id, 0.0, -1e9))
    frames = frames_of(3)
    head = [p for n, p in model.sam.mask_decoder.named_parameters() if "pred_obj_score_head" in n and n.endswith("bias")]
    with torch.no_grad():
        head[-1].fill_(-50.0)  # SAM 2 says "not here" on every frame
    ungated = model.segment(frames, "the red thing")
    assert all(r.score <= 0 for r in ungated.frames)
    assert all(float(r.logits.max()) > -1000 for r in ungated.frames)  # the official rule keeps every mask
    model.spec = dataclasses.replace(model.spec, presence_gate=True)
    gated = model.segment(frames, "the red thing")
    assert gated.answered == [True] * 3
    for r in gated.frames:
        assert not r.mask.any() and float(r.logits.max()) <= -1000


def test_training_with_the_presence_gate_teaches_sam2_whether_the_target_is_there(tmp_path):
    from refseg.train.task import Referred

    config, task, clip = task_and_clip(tmp_path, presence_gate=True)
    model = task.model
    clip.mask[:] = False
    clip.mask[0, 20:40, 20:40] = True  # there on frame 0 only
    scores = []
    push = Session.push

    def recording(self, frame):
        result = push(self, frame)
        scores.append(result.objects[1].output.object_score[0, 0])
        return result

    Session.push = recording
    try:
        losses, _, segmented = task.expression_losses(Referred(clip, 0))
    finally:
        Session.push = push
    assert segmented == [0, 1, 2]  # every frame decoded: SAM 2, not the LLM, says absent
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.stack(scores).float(), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(losses["object"], expected, atol=1e-6)
    losses["object"].backward()
    assert any("pred_obj_score_head" in n and p.grad is not None and p.grad.abs().sum() > 0
               for n, p in model.named_parameters())
    run = train(config, progress=False)
    assert load_glus(run / "final").spec.presence_gate
