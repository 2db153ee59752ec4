"""The feature cache: sessions that replay frames get the masks they get without it, encoding less."""

from __future__ import annotations

import pytest
import torch
from test_sam_i2v import tiny_i2v

from conftest import random_sam2, synthetic_video
from refseg.engine import FeatureCache, Session
from refseg.prompts import Points


def logits(session: Session, frames, order, click=(20, 32)) -> dict[int, torch.Tensor]:
    out = {}
    for i, t in enumerate(order):
        if i == 0:
            session.add_prompt(1, Points([list(click)]))
        out[t] = session.push(frames[t]).objects[1].logits
    return out


def test_cached_sessions_equal_uncached_ones_in_any_order_and_encode_each_window_once():
    model = tiny_i2v()  # a 5-frame pixel window (the TFI): a frame's features depend on its past
    frames = synthetic_video(9, height=64, width=64)
    cache = FeatureCache()
    forward, backward = list(range(9)), list(range(8, -1, -1))
    calls = []
    encode = model.sam.encode_images
    model.sam.encode_images = lambda pixels, hook=None: calls.append(len(pixels)) or encode(pixels, hook)
    for order in (forward, backward, forward, backward):
        cached = logits(model.session(seed=0, feature_cache=cache), frames, order)
        plain = logits(model.session(seed=0), frames, order)
        assert all(torch.equal(cached[t], plain[t]) for t in order)
    # 4 cached passes encode the 9 frames of each order once: 18 of their 36 frames, then hits
    assert sum(calls) == 18 + 36 and cache.hits == 18 and cache.misses == 18 and len(cache) == 18
    # the window matters: frame 4 reached forwards and backwards has other features
    a = model.session(feature_cache=FeatureCache())
    b = model.session(feature_cache=FeatureCache())
    for t in forward[:5]:
        a.push(frames[t])
    for t in backward[:5]:
        b.push(frames[t])
    newest_a, newest_b = (list(s.feature_cache._entries.values())[-1][0] for s in (a, b))
    assert not torch.equal(newest_a.embed, newest_b.embed)


def test_forks_share_the_cache_and_a_bounded_cache_drops_the_oldest_frames():
    model = random_sam2(0)
    frames = synthetic_video(6)
    probe = Session(model, feature_cache=FeatureCache())
    probe.push(frames[0])
    one = probe.feature_cache.nbytes
    cache = FeatureCache(max_bytes=3 * one)
    session = Session(model, feature_cache=cache)
    session.add_prompt(1, Points([[40, 50]]))
    for frame in frames[:4]:
        session.push(frame)
    assert len(cache) == 3 and cache.nbytes <= 3 * one
    trial = session.fork()
    trial.add_prompt(1, Points([[60, 40]]))
    ours = trial.push(frames[3]).objects[1].logits  # frame 3 again: in the cache
    assert cache.hits == 1
    plain = Session(model)
    plain.add_prompt(1, Points([[40, 50]]))
    for frame in frames[:3]:
        plain.push(frame)
    plain.push(frames[3])
    plain.add_prompt(1, Points([[60, 40]]))
    assert torch.equal(ours, plain.push(frames[3]).objects[1].logits)


def test_a_cache_serves_one_model_and_training_never_uses_it():
    cache = FeatureCache()
    Session(random_sam2(0), feature_cache=cache)
    with pytest.raises(ValueError, match="another model's"):
        Session(random_sam2(1), feature_cache=cache)
    assert Session(random_sam2(0), grad=True, feature_cache=FeatureCache()).feature_cache is None
    with pytest.raises(ValueError, match="max_bytes"):
        FeatureCache(max_bytes=0)
