"""Engine behaviour: staged encoder, bounded memory, method hooks, prompts and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import disk_mask, synthetic_video

from refseg.engine import MethodHooks, Session
from refseg.engine.offline import segment_frames
from refseg.prompts import Box, Mask, Points
from refseg.sam.image_encoder import normalise_frames


def run(model, frames, prompts, hooks=None, **kwargs):
    session = Session(model, hooks, **kwargs)
    results = []
    for t, frame in enumerate(frames):
        for obj_id, prompt in prompts.get(t, {}).items():
            session.add_prompt(obj_id, prompt)
        results.append(session.push(frame))
    return session, results


def test_staged_encoder_equals_stock_encoder_exactly(tiny_model):
    frames = synthetic_video(3)
    pixels = normalise_frames(torch.from_numpy(frames), tiny_model.image_size)
    hf = tiny_model.to_transformers().eval()
    with torch.no_grad():
        ours = tiny_model.encode_images(pixels)
        stock = hf.get_image_features(pixels)
    ours_levels = [*ours.high_res, ours.embed]
    for level, (a, b) in enumerate(zip(ours_levels, stock.fpn_hidden_states)):
        assert torch.equal(a.flatten(2).permute(2, 0, 1), b), f"level {level}"
    assert torch.equal(ours.pos.flatten(2).permute(2, 0, 1), stock.fpn_position_encoding[-1])


def bank_sizes(session, num_frames):
    """(entries, bytes) of the bank after each frame from frame 30 on, two objects prompted on
    frames 0 and 5 of a 64 x 64 stream."""
    session.add_prompt(1, Points([[20, 32]]))
    session.add_prompt(2, Box(30, 10, 60, 40), frame=5)
    sizes = []
    for t, frame in enumerate(synthetic_video(num_frames, height=64, width=64)):
        session.push(frame)
        if t >= 30:
            sizes.append((session.bank.num_entries, session.bank.nbytes))
    return sizes


@pytest.mark.parametrize("num_frames", [50, 500])
def test_memory_bank_is_bounded(tiny_model, num_frames):
    sizes = bank_sizes(Session(tiny_model), num_frames)
    # per object: 1 prompted entry + 15 recent (pointers); 7 of them still hold bf16 features and
    # their cached float32 keys and values (2 layers x 64 positions x 256 channels each)
    per_object_bytes = 16 * 256 * 4 + 7 * (64 * 64 * 2 + 2 * 2 * 64 * 256 * 4)
    assert sizes[-1] == (32, 2 * per_object_bytes)
    assert len(set(sizes)) == 1


class LongMemory(MethodHooks):
    keep_recent = 20
    store_keys = True
    store_masks = True


def test_memory_bank_is_bounded_with_a_longer_window(tiny_model):
    session = Session(tiny_model, LongMemory())
    sizes = bank_sizes(session, 60)
    # per object: 1 prompted entry + the last K = 20, all whole: pointer (float32), bf16 features,
    # cached float32 keys and values, the float32 32 x 32 low-res mask and the float32 key
    # embedding [256, 8, 8] (one tensor per frame, counted once per object that holds it)
    per_entry = 256 * 4 + 64 * 64 * 2 + 2 * 2 * 64 * 256 * 4 + 32 * 32 * 4 + 256 * 64 * 4
    assert sizes[-1] == (42, 2 * 21 * per_entry)
    assert len(set(sizes)) == 1
    memory = session.bank.object(1)
    candidates = memory.recent_before(60, 0)
    assert [e.frame for e in candidates] == list(range(40, 60))
    assert all(e.mask.shape == (32, 32) and e.key.shape == (256, 8, 8) for e in candidates)
    assert [e.frame for e in memory.recent_before(50, 45)] == list(range(45, 50))


class Window(MethodHooks):
    pixel_window = 5

    def __init__(self) -> None:
        self.windows = []

    def encode_output(self, window, features):
        self.windows.append(window)
        return features


@pytest.mark.parametrize("clip_len", [1, 3])
def test_pixel_window_pads_the_stream_start_with_the_frame(tiny_model, clip_len):
    frames = synthetic_video(7)
    hooks = Window()
    hooks.clip_len = clip_len
    session = Session(tiny_model, hooks)
    session.add_prompt(1, Points([[20, 48]]))
    for i in range(0, 6, clip_len):
        session.push_clip(frames[i : i + clip_len])
    pixels = hooks.preprocess.pixels(torch.from_numpy(frames), tiny_model.image_size)
    windows = torch.cat(hooks.windows)  # [6, 5, 3, S, S]
    assert windows.shape == (6, 5, 3, tiny_model.image_size, tiny_model.image_size)
    expected = [[0, 0, 0, 0, 0], [0, 1, 1, 1, 1], [0, 1, 2, 2, 2], [0, 1, 2, 3, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]
    for t, indices in enumerate(expected):
        assert torch.equal(windows[t], pixels[indices]), f"frame {t}"
    forked = session.fork()
    forked.push_clip(frames[6:7])
    session.push_clip(frames[6:7])
    assert torch.equal(hooks.windows[-1], hooks.windows[-2])
    assert torch.equal(hooks.windows[-1][0], pixels[[2, 3, 4, 5, 6]])


def test_readout_without_temporal_encoding_is_the_same_cached_or_not(tiny_model):
    from refseg.sam.memory import condition_on_memory, memory_position_encoding, memory_rope

    session, _ = run(tiny_model, synthetic_video(5), {0: {1: Points([[20, 48]])}}, memory_dtype=torch.float32)
    features = tiny_model.encode_images(normalise_frames(torch.from_numpy(synthetic_video(6)[5:]), tiny_model.image_size))
    pos = memory_position_encoding(tiny_model)
    outs = {}
    with torch.no_grad():
        for temporal in (True, False):
            for cached in (True, False):
                readout = session.bank.object(1).readout(5)
                readout.temporal = temporal
                if not cached:
                    readout.kv = [None] * len(readout.kv)
                rope = memory_rope(tiny_model) if cached else None
                outs[temporal, cached] = condition_on_memory(tiny_model, features.embed, features.pos, readout, pos, rope)
    torch.testing.assert_close(outs[False, True], outs[False, False], atol=1e-5, rtol=0)
    torch.testing.assert_close(outs[True, True], outs[True, False], atol=1e-5, rtol=0)
    assert not torch.allclose(outs[True, False], outs[False, False], atol=1e-3)


def test_bank_readout_is_what_sam2_attends_to(tiny_model):
    frames = synthetic_video(31)
    session, _ = run(tiny_model, frames[:11], {0: {1: Points([[20, 48]])}})
    at11 = session.bank.object(1).readout(11)
    assert at11.tpos_slots == [-1, 5, 4, 3, 2, 1, 0]  # prompted frame 0, then frames 5 ... 10
    assert at11.pointer_offsets == [11, *range(1, 11)]
    for frame in frames[11:]:
        session.push(frame)
    at31 = session.bank.object(1).readout(31)
    assert at31.pointer_offsets == [31, *range(1, 16)]
    assert len(at31.features) == 7


class Recorder(MethodHooks):
    """Records what the engine hands to each hook; changes nothing."""

    def __init__(self, clip_len: int = 1) -> None:
        self.clip_len = clip_len
        self.stage_shapes: list[tuple[int, ...]] = []
        self.calls: list[str] = []

    def encode_stage(self, stage, features):
        self.stage_shapes.append(tuple(features.shape))
        return features

    def select_memories(self, frame, obj_id, memory, features, generator):
        self.calls.append(f"select {frame}")
        return memory.readout(frame)

    def prompt_tokens(self, frame, obj_id, features, embed, readout, has_points):
        self.calls.append(f"prompt {frame} {readout is not None} {has_points}")
        return None

    def memory_mask(self, frame, obj_id, features, output):
        self.calls.append(f"memory {frame}")
        return output.high_res


def test_identity_hooks_change_nothing_and_see_every_step(tiny_model):
    frames = synthetic_video(6)
    prompts = {0: {1: Points([[20, 48]])}}
    _, plain = run(tiny_model, frames, prompts)
    hooks = Recorder()
    _, hooked = run(tiny_model, frames, prompts, hooks)
    for a, b in zip(plain, hooked):
        assert torch.equal(a.objects[1].logits, b.objects[1].logits)
    assert len(hooks.stage_shapes) == 4 * 6 and hooks.stage_shapes[0][0] == 1
    assert hooks.calls[:4] == ["prompt 0 False True", "memory 0", "select 1", "prompt 1 True False"]


def test_stage_hook_sees_the_whole_clip_and_changes_output(tiny_model):
    frames = synthetic_video(8)
    hooks = Recorder(clip_len=4)
    session = Session(tiny_model, hooks)
    session.add_prompt(1, Points([[20, 48]]))
    clip_results = session.push_clip(frames[:4]) + session.push_clip(frames[4:])
    assert [s[0] for s in hooks.stage_shapes] == [4] * 8
    _, single = run(tiny_model, frames, {0: {1: Points([[20, 48]])}})
    for a, b in zip(clip_results, single):  # batching frames only reorders float sums
        torch.testing.assert_close(a.objects[1].low_res_logits, b.objects[1].low_res_logits, atol=1e-4, rtol=0)

    class Zero(MethodHooks):
        def encode_stage(self, stage, features):
            return features * 0 if stage == 3 else features

    _, zeroed = run(tiny_model, frames, {0: {1: Points([[20, 48]])}}, Zero())
    assert not torch.allclose(zeroed[3].objects[1].logits, single[3].objects[1].logits)


def test_prompt_token_and_memory_hooks_act(tiny_model):
    frames = synthetic_video(6)
    prompts = {0: {1: Points([[20, 48]])}}
    _, plain = run(tiny_model, frames, prompts)
    tokens = torch.randn(1, 2, 256, generator=torch.Generator().manual_seed(0))

    class Extra(MethodHooks):
        def prompt_tokens(self, frame, obj_id, features, embed, readout, has_points):
            return tokens

    _, extra = run(tiny_model, frames, prompts, Extra())
    assert not torch.allclose(extra[0].objects[1].logits, plain[0].objects[1].logits)

    class Forget(MethodHooks):
        def memory_mask(self, frame, obj_id, features, output):
            return torch.full_like(output.high_res, -20.0)

    _, forget = run(tiny_model, frames, prompts, Forget())
    assert torch.equal(forget[0].objects[1].logits, plain[0].objects[1].logits)  # memory only acts later
    assert not torch.allclose(forget[2].objects[1].logits, plain[2].objects[1].logits)

    class OnlyPrompted(MethodHooks):
        def select_memories(self, frame, obj_id, memory, features, generator):
            readout = memory.readout(frame)
            readout.features, readout.tpos_slots = readout.features[:1], readout.tpos_slots[:1]
            readout.kv, readout.masks = readout.kv[:1], readout.masks[:1]
            return readout

    _, selected = run(tiny_model, frames, prompts, OnlyPrompted())
    assert torch.equal(selected[1].objects[1].logits, plain[1].objects[1].logits)  # frame 1 reads 2 memories
    assert not torch.allclose(selected[3].objects[1].logits, plain[3].objects[1].logits)


def test_results_are_at_input_resolution_for_any_frame_size(tiny_model):
    frames = synthetic_video(3, height=75, width=131)
    given = disk_mask(0, height=75, width=131)
    _, results = run(tiny_model, frames, {0: {4: Mask(given)}})
    for r in results:
        assert r.objects[4].mask.shape == (75, 131) and r.objects[4].mask.dtype == bool
        assert r.objects[4].logits.shape == (75, 131)
    # a mask prompt is the frame's output: the result reproduces it (up to resampling at edges)
    agreement = (results[0].objects[4].mask == given).mean()
    assert agreement > 0.98


def test_offline_helper_equals_streaming_a_video_of_known_length(tiny_model):
    frames = synthetic_video(5)
    prompts = {0: {1: Points([[20, 48]])}, 2: {2: Box(85, 8, 110, 32)}}
    _, streamed = run(tiny_model, frames, prompts, num_frames=5)
    offline = segment_frames(tiny_model, frames, prompts, progress=False)
    for a, b in zip(streamed, offline):
        assert a.objects.keys() == b.objects.keys()
        for o in a.objects:
            assert torch.equal(a.objects[o].logits, b.objects[o].logits)
    # a stream of unknown length normalises pointer distances by 15, a 5-frame video by 4
    _, live = run(tiny_model, frames, prompts)
    assert torch.equal(live[0].objects[1].logits, offline[0].objects[1].logits)  # no pointers yet
    assert not torch.equal(live[4].objects[1].logits, offline[4].objects[1].logits)


def test_bad_frames_and_prompts_raise_one_clear_error(tiny_model):
    session = Session(tiny_model)
    with pytest.raises(ValueError, match=r"frame 0: expected an H x W x 3 uint8"):
        session.push(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"frame 0: expected an H x W x 3 uint8"):
        session.push(np.zeros((10, 10, 3), dtype=np.float32))
    session.add_prompt(1, Points([[500, 5]]))
    with pytest.raises(ValueError, match="outside the 128x96 frame"):
        session.push(synthetic_video(1)[0])
    with pytest.raises(ValueError, match="x0 < x1"):
        Box(10, 10, 5, 20)
    with pytest.raises(ValueError, match="labels must be 1"):
        Points([[1, 2]], labels=[3])
    ok = Session(tiny_model)
    ok.push(synthetic_video(1)[0])
    with pytest.raises(ValueError, match="already pushed"):
        ok.add_prompt(1, Points([[1, 2]]), frame=0)


def test_objects_can_be_removed(tiny_model):
    session, _ = run(tiny_model, synthetic_video(3), {0: {1: Points([[20, 48]]), 2: Points([[98, 20]])}})
    session.remove_object(1)
    assert session.object_ids == [2]
    assert list(session.push(synthetic_video(4)[3]).objects) == [2]


def test_fork_continues_independently(tiny_model):
    frames = synthetic_video(6)
    session, plain = run(tiny_model, frames[:3], {0: {1: Points([[20, 48]])}})
    fork = session.fork()
    fork.add_prompt(1, Points([[30, 50]]))
    tried = fork.push(frames[3])
    kept = [session.push(f) for f in frames[3:]]  # the original never saw the fork's click
    _, straight = run(tiny_model, frames, {0: {1: Points([[20, 48]])}})
    for a, b in zip(kept, straight[3:]):
        assert torch.equal(a.objects[1].logits, b.objects[1].logits)
    assert not torch.equal(tried.objects[1].logits, straight[3].objects[1].logits)
    assert fork.frame_index == 4 and session.frame_index == 6


def test_training_flows_through_memory(tiny_model):
    """With grad=True the loss on a tracked frame reaches the memory encoder and attention."""
    frames = synthetic_video(3)
    tiny_model.zero_grad()
    session = Session(tiny_model, grad=True)
    session.add_prompt(1, Mask(disk_mask(0)))
    results = [session.push(f) for f in frames]
    target = torch.from_numpy(disk_mask(2)).float()[None, None]
    logits = results[2].objects[1].low_res_logits[None, None]
    target = torch.nn.functional.interpolate(target, size=logits.shape[-2:], mode="area")
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    loss.backward()
    for module in (tiny_model.memory_encoder, tiny_model.memory_attention, tiny_model.vision_encoder):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), type(module).__name__
    tiny_model.zero_grad()
    assert session.bank.object(1).readout(3).features[0].requires_grad


def test_fill_holes_fills_only_small_background_regions():
    """SAM 2's `fill_hole_area`: 8-connected background regions of <= max_area pixels become 0.1."""
    from refseg.sam.mask_decoder import fill_holes

    logits = torch.full((1, 1, 16, 16), -3.0)
    logits[..., 2:14, 2:14] = 2.0  # foreground square, inside it:
    logits[..., 4:6, 4:6] = -1.0  # a 4-pixel hole
    logits[..., 8:11, 8:11] = -1.0  # a 9-pixel hole
    logits[..., 11, 11] = -1.0  # one pixel, touching the 9-pixel hole diagonally: 10 together
    logits[..., 4, 10] = 0.0  # a 1-pixel hole at exactly 0 (background)
    filled = fill_holes(logits, 8)
    expected = logits.clone()
    expected[..., 4:6, 4:6] = 0.1
    expected[..., 4, 10] = 0.1
    assert torch.equal(filled, expected)
    assert torch.equal(fill_holes(logits, 0), logits)
    assert torch.equal(fill_holes(logits, 10)[..., 8:11, 8:11], torch.full((1, 1, 3, 3), 0.1))


def test_a_skipped_frame_gets_no_mask_and_no_memory_and_delays_a_start(tiny_model):
    frames = synthetic_video(4)
    session = Session(tiny_model)
    session.add_prompt(1, Points([[40, 50]]), frame=1)
    session.add_prompt(2, Points([[40, 50]]))
    with pytest.raises(ValueError, match="frame 0: object 2 has clicks"):
        session.skip(frames[0])
    session = Session(tiny_model)
    session.add_prompt(1, Points([[40, 50]]))
    session.push(frames[0])
    skipped = session.skip(frames[1])
    assert skipped.index == 1 and skipped.objects == {}
    assert session.frame_index == 2
    memory = session.bank.object(1)
    assert sorted(memory.prompted) == [0] and sorted(memory.recent) == []  # frame 1 stored no memory
    assert set(session.push(frames[2]).objects) == {1}
    # an object that was to start on a skipped frame starts on the next one
    fresh = Session(tiny_model)
    fresh.add_object(3)
    fresh.skip(frames[0])
    assert fresh.object_ids == [] and set(fresh.push(frames[1]).objects) == {3}
