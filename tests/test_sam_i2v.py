"""SAM-I2V: TFI shapes, the memory selector's pools, seed and distribution, the MPG's masked
cross-attention, and the method end to end through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic_video

from refseg.engine.memory_bank import MemoryEntry, ObjectMemory
from refseg.methods.sam_i2v import SamI2V, SamI2VConfig, upgrade
from refseg.methods.sam_i2v.mpg import MemoryPromptGenerator
from refseg.methods.sam_i2v.selector import sample_pool, select
from refseg.methods.sam_i2v.tfi import TemporalFeatureIntegrator
from refseg.prompts import Mask, Points
from refseg.sam.single_scale import heads_config
from refseg.sam.tiny_sam import TinySam
from refseg.sam.tiny_vit import TinyViTConfig

C, D, H, W = 16, 4, 2, 2  # key channels, memory width, memory grid


def tiny_tinysam(seed: int = 0) -> TinySam:
    torch.manual_seed(seed)
    trunk = TinyViTConfig(img_size=64, embed_dims=(16, 32, 40, 320), depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 5),
                          window_sizes=(7, 3, 4, 3), mlp_ratio=2.0)
    config = heads_config(64, memory_attention_num_layers=1)
    config.mask_decoder_config.mlp_dim = 64
    config.mask_decoder_config.iou_head_hidden_dim = 32
    return TinySam(config, trunk).eval()


def tiny_i2v(seed: int = 0, **fields) -> SamI2V:
    sam = tiny_tinysam(seed)
    return SamI2V(sam, SamI2VConfig(tapped_dims=(40, 320, 256), temporal_dim=16, **fields)).eval()


# -- TFI ---------------------------------------------------------------------------------------------
def test_tfi_maps_taps_and_window_to_the_embedding_grid():
    torch.manual_seed(0)
    tfi = TemporalFeatureIntegrator(SamI2VConfig(tapped_dims=(8, 12, 32), temporal_dim=6, integration_dim=32)).eval()
    taps = [torch.randn(3, 8, 4, 4), torch.randn(3, 12, 2, 2), torch.randn(3, 32, 4, 4)]  # the stride-32 map resized
    window = torch.randn(3, 5, 3, 64, 64)
    out = tfi(taps, window)
    assert out.shape == (3, 32, 4, 4)
    # each frame is its own: a frame's output depends on its taps and window only
    alone = tfi([t[1:2] for t in taps], window[1:2])
    torch.testing.assert_close(alone, out[1:2], atol=1e-5, rtol=0)
    # the window matters, and so does its order (the temporal convolutions see time)
    assert not torch.allclose(tfi(taps, window.flip(1)), out, atol=1e-4)


# -- selector -----------------------------------------------------------------------------------------
def entry(frame: int, key: torch.Tensor | None = None) -> MemoryEntry:
    gen = torch.Generator().manual_seed(frame)
    key = torch.randn(C, H, W, generator=gen) if key is None else key
    return MemoryEntry(frame, torch.full((H * W, D), float(frame)), torch.full((4 * D,), float(frame)),
                       mask=torch.zeros(4 * H, 4 * W), key=key)


def bank(frames: int, prompted: tuple[int, ...] = (0,), keep: int = 20) -> ObjectMemory:
    memory = ObjectMemory(num_maskmem=7, max_pointers=16, max_prompted=16, max_selected_prompted=-1, keep_recent=keep)
    for t in range(frames):
        memory.add(entry(t), t in prompted)
    return memory


def frames_of(readout) -> list[int]:
    return [int(f[0, 0]) for f in readout.features]


@pytest.mark.parametrize("t", [1, 3, 6, 7, 12, 30, 60])
def test_selector_keeps_prompted_frames_and_samples_inside_its_pools(t):
    config = SamI2VConfig()
    memory = bank(t, prompted=(0, 2) if t > 2 else (0,))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        readout = select(t, memory, torch.randn(C, H, W, generator=gen), config, 7, gen)
        chosen = frames_of(readout)
        prompted = [f for f in (0, 2) if f in memory.prompted]
        length = min(t - 1, 6)
        slots = dict(zip(chosen, readout.tpos_slots))
        picked = [f for f in chosen if f not in prompted]
        assert all(f in chosen for f in prompted)  # prompted frames always
        assert all(slots[f] == 6 for f in prompted)  # slot of t_pos 0
        global_picks = [f for f in picked if f < t - 4]
        local_picks = [f for f in picked if f >= t - 4]
        assert all(t - 20 <= f < t - 4 for f in global_picks) and all(t - 4 <= f < t for f in local_picks)
        assert len(set(picked)) == len(picked)  # without replacement
        pool_g = len([f for f in range(max(0, t - 20), t - 4) if f not in prompted])
        pool_l = len([f for f in range(max(0, t - 4), t) if f not in prompted])
        assert len(global_picks) == min(4, pool_g) and len(local_picks) == min(2, pool_l)
        # rank slots: global picks 5, 4, .. oldest first, local picks 5 - g, ..
        assert [slots[f] for f in global_picks] == list(range(5, 5 - len(global_picks), -1))
        assert [slots[f] for f in local_picks] == list(range(1, 1 - len(local_picks), -1))
        # padding: the first prompted memory repeated in front up to L unprompted ones
        assert len(chosen) == len(prompted) + max(length, len(picked))
        assert readout.pointer_span == length + 1
        assert len(readout.pointers) == max(len(chosen), len(prompted) + len(picked))
        pointer_frames = [int(p[0]) for p in readout.pointers]
        offsets = dict(zip(pointer_frames[::-1], readout.pointer_offsets[::-1]))
        assert all(offsets[f] == length + 1 for f in prompted)
        assert [offsets[f] for f in global_picks] == [length + 1 - i for i in range(1, len(global_picks) + 1)]
        assert [offsets[f] for f in local_picks] == [length + 1 - i for i in range(5, 5 + len(local_picks))]


def test_selector_is_reproducible_from_its_seed_and_varies_without_it():
    memory = bank(40)
    key = torch.randn(C, H, W, generator=torch.Generator().manual_seed(9))

    def draws(seed):
        gen = torch.Generator().manual_seed(seed)
        return [frames_of(select(40, memory, key, SamI2VConfig(), 7, gen)) for _ in range(10)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_sampling_follows_the_softmax_of_cosine_similarity():
    # three candidates with cosine similarity 1, 0 and -1 to the key: one draw each time
    key = torch.zeros(C, H, W)
    key[0] = 1.0
    candidates = [entry(0, key * 3), entry(1, torch.roll(key, 1, 0)), entry(2, -key)]
    expected = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0).numpy()  # 0.665, 0.245, 0.090
    gen = torch.Generator().manual_seed(0)
    n = 4000
    counts = np.zeros(3)
    for _ in range(n):
        (picked,) = sample_pool(candidates, key, 1, False, gen)
        counts[picked.frame] += 1
    # each count within 4 standard deviations of its binomial expectation
    assert np.all(np.abs(counts - n * expected) < 4 * np.sqrt(n * expected * (1 - expected))), counts
    uniform = np.zeros(3)
    for _ in range(n):
        (picked,) = sample_pool(candidates, key, 1, True, gen)
        uniform[picked.frame] += 1
    assert np.all(np.abs(uniform - n / 3) < 4 * np.sqrt(n * 2 / 9)), uniform
    # drawing as many as there are candidates returns them all, oldest first
    assert [e.frame for e in sample_pool(candidates, key, 5, False, gen)] == [0, 1, 2]


# -- MPG -----------------------------------------------------------------------------------------------
def test_mpg_attends_only_to_foreground_memory():
    torch.manual_seed(0)
    mpg = MemoryPromptGenerator(dim=32, memory_dim=D, num_queries=3, grid=(H, W), dropout=0.0).eval()
    memory = torch.randn(2 * H * W + 4, D)  # two spatial memories, then 4 pointer tokens
    pe = torch.randn_like(memory)
    logits = [torch.full((4 * H, 4 * W), -5.0), torch.full((4 * H, 4 * W), -5.0)]
    logits[0][: 2 * H] = 5.0  # the top half of the first memory is foreground
    foreground = mpg.foreground(logits, 4)
    assert foreground.tolist() == [True, True, False, False] + [False] * 4 + [True] * 4
    out = mpg(memory, pe, foreground, 4)
    changed = memory.clone()
    changed[~foreground] += 10 * torch.randn(int((~foreground).sum()), D)
    torch.testing.assert_close(mpg(changed, pe, foreground, 4), out)  # background cannot matter
    visible = memory.clone()
    visible[0] += 10
    assert not torch.allclose(mpg(visible, pe, foreground, 4), out)
    # without the mask (the ablation) the background matters
    mpg.masked = False
    assert not torch.allclose(mpg(changed, pe, foreground, 4), mpg(memory, pe, foreground, 4))


def test_mpg_with_nothing_visible_reads_its_queries_only():
    torch.manual_seed(0)
    mpg = MemoryPromptGenerator(dim=32, memory_dim=D, num_queries=3, grid=(H, W), dropout=0.0).eval()
    memory = torch.randn(H * W, D)
    hidden = torch.zeros(H * W, dtype=torch.bool)
    out = mpg(memory, torch.randn_like(memory), hidden, 0)
    torch.testing.assert_close(mpg(memory * 5 + 1, torch.randn_like(memory), hidden, 0), out)
    assert out.shape == (1, 3, 32)
    assert mpg.no_memory_tokens().shape == (1, 3, 32)


# -- the method through the engine ------------------------------------------------------------------------
def run(model, frames, prompts, seed=0):
    session = model.session(seed=seed)
    results = []
    for t, frame in enumerate(frames):
        for obj_id, prompt in prompts.get(t, {}).items():
            session.add_prompt(obj_id, prompt)
        results.append(session.push(frame))
    return session, results


def test_sam_i2v_tracks_through_the_engine_reproducibly():
    model = tiny_i2v()
    frames = synthetic_video(26, height=64, width=64)
    prompts = {0: {1: Points([[20, 32]])}, 3: {2: Mask(np.pad(np.ones((20, 20), bool), ((5, 39), (30, 14))))}}
    session, first = run(model, frames, prompts, seed=1)
    _, again = run(model, frames, prompts, seed=1)
    _, other = run(model, frames, prompts, seed=2)
    for a, b in zip(first, again):
        for o in a.objects:
            assert torch.equal(a.objects[o].logits, b.objects[o].logits)
    # the selector samples once a pool exceeds its picks (the local pool on frame 4): seeds differ
    # there (compared on the presence score, which random weights do not gate)
    def score(result):
        return result.objects[1].score

    assert all(score(a) == score(b) for a, b in zip(first[:4], other[:4]))
    assert any(score(a) != score(b) for a, b in zip(first, other))
    assert first[-1].objects[1].logits.shape == (64, 64)
    # K = 20 recent memories per object, plus the prompted one
    assert session.bank.num_entries == 2 * 21


@pytest.mark.parametrize("fields", [dict(tfi=False), dict(selection="consecutive"), dict(mpg="none"),
                                    dict(mpg="unmasked")])
def test_ablation_switches_change_the_output_with_the_same_weights(fields):
    frames = synthetic_video(10, height=64, width=64)
    prompts = {0: {1: Points([[20, 32]])}}
    model = tiny_i2v()
    _, full = run(model, frames, prompts)
    variant = tiny_i2v(**fields)
    variant.load_state_dict({k: v for k, v in model.state_dict().items() if k in variant.state_dict()})
    _, out = run(variant, frames, prompts)
    assert any(a.objects[1].score != b.objects[1].score
               for a, b in zip(full, out))


def test_save_and_load_round_trip(tmp_path):
    model = tiny_i2v()
    model.save_pretrained(tmp_path / "m")
    loaded = SamI2V.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config and isinstance(loaded.sam, TinySam)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    frames = synthetic_video(8, height=64, width=64)
    _, a = run(model, frames, {0: {1: Points([[20, 32]])}})
    _, b = run(loaded, frames, {0: {1: Points([[20, 32]])}})
    assert torch.equal(a[-1].objects[1].logits, b[-1].objects[1].logits)


def test_upgrade_keeps_the_image_sam_and_starts_memory_afresh():
    from conftest import random_sam2
    image_sam = random_sam2(0)
    model = upgrade(image_sam, SamI2VConfig(tapped_dims=(64, 128, 256), temporal_dim=16), memory_layers=2)
    old, new = image_sam.state_dict(), model.sam.state_dict()
    for key in new:
        if key.startswith(("vision_encoder.", "prompt_encoder.", "mask_decoder.", "no_memory_embedding")):
            assert torch.equal(new[key], old[key]), key
    assert model.sam.config.memory_attention_num_attention_heads == 1
    assert model.sam.config.memory_attention_feed_forward_hidden_size == 512
    assert not torch.equal(new["memory_encoder.projection.weight"], old["memory_encoder.projection.weight"])
    frames = synthetic_video(7)
    _, results = run(model.eval(), frames, {0: {1: Points([[20, 48]])}})
    assert results[-1].objects[1].logits.shape == (96, 128)
