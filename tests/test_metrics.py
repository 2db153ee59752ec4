"""Metrics against hand-worked values, a brute-force reference and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refseg.eval.metrics import (
    boundary_f,
    boundary_map,
    boundary_radius,
    davis_statistics,
    jaccard,
    jaccard_frames,
    refavs_f,
    refavs_j,
    refavs_s,
    refer_iou,
)


def naive_boundary(mask: np.ndarray) -> np.ndarray:
    """The DAVIS boundary definition, pixel by pixel."""
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    for i in range(h):
        for j in range(w):
            if i == h - 1 and j == w - 1:
                continue
            east = mask[i, j + 1] if j + 1 < w else False
            south = mask[i + 1, j] if i + 1 < h else False
            south_east = mask[i + 1, j + 1] if i + 1 < h and j + 1 < w else False
            if i == h - 1:
                out[i, j] = mask[i, j] != east
            elif j == w - 1:
                out[i, j] = mask[i, j] != south
            else:
                out[i, j] = mask[i, j] != east or mask[i, j] != south or mask[i, j] != south_east
    return out


def naive_f(gt: np.ndarray, pred: np.ndarray, radius: float) -> float:
    """Boundary F by brute force: all pairwise distances between boundary pixels."""
    gb, pb = np.argwhere(naive_boundary(gt)), np.argwhere(naive_boundary(pred))
    if len(gb) == 0 and len(pb) == 0:
        return 1.0
    if len(gb) == 0 or len(pb) == 0:
        return 0.0
    d2 = ((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1)
    precision = np.mean(d2.min(axis=1) <= radius**2)
    recall = np.mean(d2.min(axis=0) <= radius**2)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def square(h: int, w: int, top: int, left: int, size: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


# -- J ---------------------------------------------------------------------------------------------
def test_j_edge_cases():
    empty, full = np.zeros((4, 5), bool), np.ones((4, 5), bool)
    assert jaccard(empty, empty) == 1.0
    assert jaccard(full, empty) == 0.0 and jaccard(empty, full) == 0.0
    assert jaccard(full, full) == 1.0
    assert jaccard(np.ones((1, 1)), np.ones((1, 1))) == 1.0
    assert jaccard(np.ones((1, 1)), np.zeros((1, 1))) == 0.0
    gt = square(10, 10, 0, 0, 4)  # 16 px
    pred = square(10, 10, 2, 2, 4)  # 16 px, 4 shared
    assert jaccard(gt, pred) == pytest.approx(4 / 28)
    # void pixels leave both intersection and union: predicting the void region costs nothing
    left = np.zeros((4, 6), bool)
    left[:, :3] = True
    assert jaccard(left, np.ones((4, 6), bool), void=~left) == 1.0


def test_j_frames_is_frame_by_frame():
    rng = np.random.default_rng(0)
    gt, pred = rng.random((5, 8, 9)) > 0.5, rng.random((5, 8, 9)) > 0.6
    assert np.allclose(jaccard_frames(gt, pred), [jaccard(g, p) for g, p in zip(gt, pred)])


# -- F ---------------------------------------------------------------------------------------------
def test_boundary_of_a_single_pixel_and_the_image_border():
    dot = np.zeros((5, 5), bool)
    dot[2, 2] = True
    assert sorted(map(tuple, np.argwhere(boundary_map(dot)))) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert not boundary_map(np.ones((6, 7), bool)).any()  # the image border is no boundary
    assert not boundary_map(np.ones((1, 1), bool)).any()


def test_f_edge_cases():
    empty, full = np.zeros((6, 6), bool), np.ones((6, 6), bool)
    assert boundary_f(empty, empty) == 1.0
    obj = square(6, 6, 1, 1, 3)
    assert boundary_f(obj, empty) == 0.0 and boundary_f(empty, obj) == 0.0
    # a full-image mask has no boundary, so against an empty one both boundaries are empty
    assert boundary_f(full, empty) == 1.0 and boundary_f(full, full) == 1.0
    assert boundary_f(np.ones((1, 1)), np.zeros((1, 1))) == 1.0


def test_radius_at_davis_resolution_is_8_pixels():
    assert boundary_radius((480, 854)) == 8.0  # ceil(0.008 * 979.65)
    assert boundary_radius((720, 1280)) == 12.0
    assert boundary_radius((100, 100), bound_th=3) == 3.0
    gt = square(480, 854, 100, 100, 100)
    assert boundary_f(gt, square(480, 854, 100, 108, 100)) == 1.0  # every boundary pixel within 8 px
    shifted = boundary_f(gt, square(480, 854, 100, 109, 100))
    assert shifted < 1.0
    assert shifted == pytest.approx(naive_f(gt[80:220, 80:230], square(480, 854, 100, 109, 100)[80:220, 80:230], 8))


def test_f_with_void_removes_void_from_both_masks():
    gt = square(20, 20, 5, 5, 6)
    pred = square(20, 20, 5, 5, 10)
    void = np.zeros((20, 20), bool)
    void[:, 11:] = True  # hides where the prediction overshoots
    assert boundary_f(gt, pred, bound_th=1) < 1.0
    assert boundary_f(gt, pred, void=void, bound_th=1) == pytest.approx(
        naive_f(gt & ~void, pred & ~void, 1.0))


masks = arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12)))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), radius=st.sampled_from([1, 2, 3, 0.05]))
def test_f_equals_brute_force(data, radius):
    gt = data.draw(masks)
    pred = data.draw(arrays(np.bool_, gt.shape))
    expected = naive_f(gt, pred, boundary_radius(gt.shape, radius))
    assert boundary_f(gt, pred, bound_th=radius) == pytest.approx(expected)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_j_and_f_properties(data):
    gt = data.draw(masks)
    pred = data.draw(arrays(np.bool_, gt.shape))
    j, f = jaccard(gt, pred), boundary_f(gt, pred)
    assert 0.0 <= j <= 1.0 and 0.0 <= f <= 1.0
    assert j == jaccard(pred, gt)
    assert f == pytest.approx(boundary_f(pred, gt))
    if gt.any():
        assert jaccard(gt, gt) == 1.0
    assert boundary_f(gt, gt) == 1.0


@settings(max_examples=100, deadline=None)
@given(data=st.data(), pad=st.integers(1, 5))
def test_padding_with_background(data, pad):
    inner = data.draw(arrays(np.bool_, st.tuples(st.integers(1, 8), st.integers(1, 8))))
    other = data.draw(arrays(np.bool_, inner.shape))
    # keep the masks off the image border, where the boundary definition treats pixels specially
    gt, pred = np.pad(inner, 1), np.pad(other, 1)
    big_gt, big_pred = np.pad(gt, pad), np.pad(pred, pad)
    assert jaccard(big_gt, big_pred) == jaccard(gt, pred)
    # with the tolerance in pixels (>= 1) the boundary F does not depend on the image size
    assert boundary_f(big_gt, big_pred, bound_th=2) == pytest.approx(boundary_f(gt, pred, bound_th=2))


# -- DAVIS statistics ------------------------------------------------------------------------------
def test_davis_statistics_by_hand():
    stats = davis_statistics([1, 1, 1, 1, 0, 0, 0, 0])
    # bin edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]: first bin v[0:3], last v[5:8]
    assert (stats.mean, stats.recall, stats.decay) == (0.5, 0.5, 1.0)
    assert davis_statistics([0.5, 0.51]).recall == 0.5  # strictly greater than 0.5
    assert davis_statistics([0.7]).decay == 0.0


def test_davis_decay_beyond_255_frames():
    v = np.linspace(1.0, 0.0, 300)
    intended = davis_statistics(v)
    # bins [0, 75], [75, 150], [150, 224], [224, 299]: means 0.875..., 0.124...
    first, last = np.mean(v[0:76]), np.mean(v[224:300])
    assert intended.decay == pytest.approx(first - last)
    assert math.isnan(davis_statistics(v, uint8_bins=True).decay)  # the official 8-bit edges
    short = np.linspace(1.0, 0.0, 200)
    assert davis_statistics(short, uint8_bins=True) == davis_statistics(short)


# -- referring image segmentation -------------------------------------------------------------------
def ris_samples():
    def m(*pixels, shape=(3, 3)):
        out = np.zeros(shape, bool)
        for p in pixels:
            out[p] = True
        return out

    four = m((0, 0), (0, 1), (1, 0), (1, 1))
    gts = [four, four, m(), m(), m((2, 2), (2, 1))]
    preds = [four, m((0, 0), (0, 1)), m(), m((2, 0), (2, 1), (2, 2)), m()]
    # I, U: (4, 4), (2, 4), (0, 0), (0, 3), (0, 2)
    return preds, gts


def test_refer_iou_lavt():
    r = refer_iou(*ris_samples(), convention="lavt")
    assert r["gIoU"] == pytest.approx((1 + 0.5 + 0 + 0 + 0) / 5)
    assert r["cIoU"] == pytest.approx(6 / 13)
    assert r["Pr@0.5"] == pytest.approx(2 / 5) and r["Pr@0.6"] == pytest.approx(1 / 5)


def test_refer_iou_lisa():
    r = refer_iou(*ris_samples(), convention="lisa")
    assert r["gIoU"] == pytest.approx((4 / (4 + 1e-5) + 2 / (4 + 1e-5) + 1 + 0 + 0) / 5)
    assert r["cIoU"] == pytest.approx(6 / (13 + 1e-10))


def test_refer_iou_grefcoco():
    r = refer_iou(*ris_samples(), convention="grefcoco")
    # no-target samples 3 (predicted empty: IoU 1) and 4 (predicted 3 px: IoU 0, U += 3);
    # targeted sample 5 predicted empty: IoU 0, U += 2
    assert r["gIoU"] == pytest.approx((1 + 0.5 + 1 + 0 + 0) / 5)
    assert r["cIoU"] == pytest.approx(6 / (4 + 4 + 3 + 2))
    assert r["N-acc"] == 0.5 and r["T-acc"] == pytest.approx(2 / 3)
    assert r["Pr@0.5"] == pytest.approx(2 / 3) and r["Pr@0.9"] == pytest.approx(1 / 3)


def test_refer_iou_rejects_bad_input():
    with pytest.raises(ValueError, match="convention"):
        refer_iou([np.ones((2, 2))], [np.ones((2, 2))], convention="coco")
    with pytest.raises(ValueError, match="shape"):
        refer_iou([np.ones((2, 2))], [np.ones((2, 3))])


# -- Ref-AVS ---------------------------------------------------------------------------------------
def test_refavs_j_by_hand():
    probs = np.array([[[0.3, 0.9], [0.3, 0.3]], [[0.5, 0.1], [0.1, 0.1]]])
    gts = np.array([[[0, 0], [0, 0]], [[1, 1], [0, 0]]], dtype=bool)
    # frame 0 (no target): 3 of 4 pixels both background; frame 1: I = 1, U = 2
    assert refavs_j(probs, gts) == pytest.approx((3 / 4 + 1 / 2) / 2, abs=1e-6)


def test_refavs_f_by_hand():
    probs = np.array([[[0.9, 0.2], [0.6, 0.1]]])
    gts = np.array([[[1, 1], [0, 0]]], dtype=bool)
    # thresholds in (0.6, 0.9]: P = 1, R = 0.5 -> 1.3 * 0.5 / (0.3 + 0.5) = 0.8125 (the best)
    assert refavs_f(probs, gts) == pytest.approx(0.8125)
    assert refavs_f(probs, np.zeros_like(gts)) == 0.0


def test_refavs_s_by_hand():
    probs = np.array([[[0.9, 0.5], [0.2, 0.1]]])  # one pixel > 0.5 of four
    assert refavs_s(probs) == pytest.approx(0.5)
