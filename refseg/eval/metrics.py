"""Segmentation metrics exactly as the benchmarks' official code computes them (numpy).

* J (region similarity) and F (boundary accuracy) as `davis2017-evaluation` (`db_eval_iou`,
  `db_eval_boundary`), also used unchanged by MeViS, Ref-DAVIS17 and SA-V.
* DAVIS per-object statistics Mean / Recall / Decay (`db_statistics`).
* cIoU / gIoU / Pr@X for referring image segmentation, in the three conventions users meet:
  LAVT, LISA and gRefCOCO (ReLA).
* Ref-AVS J, F and S.

Masks are boolean (anything non-zero is foreground) and 2-D [H, W] unless a name ends in
`_frames`, which take stacks [T, H, W].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

BOUND_TH = 0.008  # DAVIS boundary tolerance: a fraction of the image diagonal (>= 1: pixels)
PR_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


# -- J -------------------------------------------------------------------------------------------
def jaccard_frames(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Per-frame J of [T, H, W] stacks: |gt & pred| / |gt | pred| over non-void pixels; an empty
    union scores 1. Returns [T] float64."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    _check_shapes(gt, pred, void)
    keep = ~np.asarray(void, dtype=bool) if void is not None else np.ones_like(gt)
    inter = np.count_nonzero(gt & pred & keep, axis=(-2, -1))
    union = np.count_nonzero((gt | pred) & keep, axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """J of two [H, W] masks (DAVIS `db_eval_iou`)."""
    return float(jaccard_frames(np.asarray(gt)[None], np.asarray(pred)[None],
                                None if void is None else np.asarray(void)[None])[0])


# -- F -------------------------------------------------------------------------------------------
def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a [H, W] mask, as DAVIS `seg2bmap`.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour;
    in the last row only the east neighbour counts, in the last column only the south one, and
    the bottom-right pixel never is. So the image border itself is not a boundary.
    """
    seg = np.asarray(mask, dtype=bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    out = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    out[-1, :] = seg[-1, :] ^ east[-1, :]
    out[:, -1] = seg[:, -1] ^ south[:, -1]
    out[-1, -1] = False
    return out


def boundary_radius(shape: tuple[int, int], bound_th: float = BOUND_TH) -> float:
    """Matching tolerance in pixels: ceil(bound_th * diagonal), or bound_th itself when >= 1."""
    return float(bound_th) if bound_th >= 1 else float(math.ceil(bound_th * math.hypot(*shape)))


def _within(points: np.ndarray, targets: np.ndarray, radius: float) -> int:
    """How many `points` pixels have a `targets` pixel within Euclidean distance `radius`.

    This is the DAVIS dilation of `targets` by the disk {x^2 + y^2 <= r^2}, read at `points`,
    computed with an exact distance transform on the crop that holds both (plus the radius).
    """
    rows = np.flatnonzero(points.any(axis=1) | targets.any(axis=1))
    cols = np.flatnonzero(points.any(axis=0) | targets.any(axis=0))
    pad = int(math.ceil(radius)) + 1
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, points.shape[0])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, points.shape[1])
    distance = distance_transform_edt(~targets[r0:r1, c0:c1])
    return int(np.count_nonzero(distance[points[r0:r1, c0:c1]] <= radius))


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
               bound_th: float = BOUND_TH) -> float:
    """F of two [H, W] masks (DAVIS `f_measure`).

    Boundaries of the masks with void pixels removed are matched within `boundary_radius`;
    precision = matched predicted boundary / predicted boundary, recall likewise for the ground
    truth, F = 2PR / (P + R). Both boundaries empty: 1; exactly one empty: 0.
    """
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    _check_shapes(gt, pred, void)
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        gt, pred = gt & keep, pred & keep
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    n_gt, n_pred = np.count_nonzero(gt_b), np.count_nonzero(pred_b)
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    radius = boundary_radius(gt.shape, bound_th)
    precision = _within(pred_b, gt_b, radius) / n_pred
    recall = _within(gt_b, pred_b, radius) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def boundary_f_frames(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
                      bound_th: float = BOUND_TH) -> np.ndarray:
    """Per-frame F of [T, H, W] stacks. Returns [T] float64."""
    return np.array([boundary_f(g, p, None if void is None else void[t], bound_th)
                     for t, (g, p) in enumerate(zip(gt, pred))], dtype=np.float64)


# -- DAVIS statistics ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DavisStatistics:
    """Mean, Recall (fraction of frames > 0.5) and Decay (first quarter minus last quarter)."""

    mean: float
    recall: float
    decay: float


def davis_statistics(values: np.ndarray, uint8_bins: bool = False) -> DavisStatistics:
    """DAVIS `db_statistics` of per-frame J or F values of one object.

    Decay splits the frames into 4 bins at round(linspace(1, n, 5)) - 1 (neighbouring bins share
    their edge frame) and subtracts the mean of the last bin from the mean of the first.

    The official code stores the bin edges as uint8. For sequences of more than 255 frames the
    edges wrap modulo 256 (and with numpy >= 2 an edge of 255 plus one wraps to 0, so n = 256
    breaks too): bins come out empty, their mean is NaN and so are the sequence's Decay and the
    dataset's mean Decay. refseg computes the intended definition; `uint8_bins=True` reproduces
    the official arithmetic (under numpy >= 2) for comparing with numbers it printed.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("davis_statistics: no values")
    with np.errstate(invalid="ignore"):
        mean = float(np.nanmean(v)) if not np.isnan(v).all() else math.nan
        recall = float(np.mean(v > 0.5))
        edges = np.round(np.linspace(1, v.size, 5) + 1e-10) - 1
        if uint8_bins:
            e = edges.astype(np.uint8)
            bins = [v[e[i] : np.uint8(e[i + 1] + np.uint8(1))] for i in range(4)]
        else:
            e = edges.astype(np.int64)
            bins = [v[e[i] : e[i + 1] + 1] for i in range(4)]
        first, last = (float(np.nanmean(b)) if b.size and not np.isnan(b).all() else math.nan
                       for b in (bins[0], bins[3]))
    return DavisStatistics(mean=mean, recall=recall, decay=first - last)


# -- referring image segmentation ----------------------------------------------------------------
def refer_iou(preds: list[np.ndarray], gts: list[np.ndarray], convention: str = "lavt") -> dict[str, float]:
    """cIoU, gIoU and Pr@0.5 ... Pr@0.9 over samples (one mask per referring expression).

    Conventions (fractions in [0, 1]; the official scripts print them x 100):
      lavt:     per-sample IoU = I / U, 0 when U = 0; gIoU (LAVT's "mean IoU") = mean IoU;
                cIoU = sum I / sum U; Pr@X = fraction of samples with IoU >= X.
      lisa:     per-sample IoU = I / (U + 1e-5), 1 when U = 0 (empty/empty); cIoU =
                sum I / (sum U + 1e-10); Pr@X as LAVT (LISA itself reports none).
      grefcoco: samples with an empty ground truth are no-target samples. A prediction is
                "no target" when its mask is empty (ReLA decides with a classifier head; a
                method here says no target by predicting an empty mask). No-target sample
                predicted empty: IoU 1, adds nothing to I and U; predicted non-empty: IoU 0,
                adds its area to U. Targeted sample: IoU = I / U as LAVT. gIoU = mean IoU over
                all samples, cIoU = sum I / sum U, N-acc = no-target samples predicted empty /
                no-target samples, T-acc = targeted samples predicted non-empty / targeted
                samples; Pr@X over targeted samples only.
    """
    if len(preds) != len(gts):
        raise ValueError(f"refer_iou: {len(preds)} predictions for {len(gts)} ground truths")
    inter = np.empty(len(preds))
    union = np.empty(len(preds))
    gt_area = np.empty(len(preds))
    pred_area = np.empty(len(preds))
    for i, (p, g) in enumerate(zip(preds, gts)):
        p, g = np.asarray(p, dtype=bool), np.asarray(g, dtype=bool)
        _check_shapes(g, p, None)
        inter[i], union[i] = np.count_nonzero(p & g), np.count_nonzero(p | g)
        gt_area[i], pred_area[i] = np.count_nonzero(g), np.count_nonzero(p)
    return refer_iou_counts(inter, union, gt_area, pred_area, convention)


def refer_iou_counts(inter: np.ndarray, union: np.ndarray, gt_area: np.ndarray, pred_area: np.ndarray,
                     convention: str = "lavt") -> dict[str, float]:
    """`refer_iou` from each sample's pixel counts [N]: intersection, union, ground-truth area
    and predicted area (what a sample's masks contribute; the masks need not be kept)."""
    if not len(inter):
        raise ValueError("refer_iou: no samples")
    if convention not in ("lavt", "lisa", "grefcoco"):
        raise ValueError(f"refer_iou: unknown convention {convention!r} (lavt, lisa, grefcoco)")
    safe = np.maximum(union, 1)
    scored = np.ones(len(inter), dtype=bool)
    out: dict[str, float] = {}
    if convention == "lavt":
        iou = np.where(union == 0, 0.0, inter / safe)
        c_iou = inter.sum() / max(union.sum(), 1)
    elif convention == "lisa":
        iou = inter / (union + 1e-5) + (union == 0)
        c_iou = inter.sum() / (union.sum() + 1e-10)
    else:
        no_target = gt_area == 0
        predicted_empty = pred_area == 0
        iou = np.where(no_target, predicted_empty.astype(np.float64), inter / safe)
        counted_union = np.where(no_target & predicted_empty, 0, union)
        c_iou = inter.sum() / max(counted_union.sum(), 1)
        scored = ~no_target
        out["N-acc"] = float(np.mean(predicted_empty[no_target])) if no_target.any() else math.nan
        out["T-acc"] = float(np.mean(~predicted_empty[~no_target])) if (~no_target).any() else math.nan
    out["cIoU"] = float(c_iou)
    out["gIoU"] = float(np.mean(iou))
    for threshold in PR_THRESHOLDS:
        out[f"Pr@{threshold}"] = float(np.mean(iou[scored] >= threshold)) if scored.any() else math.nan
    return out


# -- Ref-AVS -------------------------------------------------------------------------------------
REFAVS_J_THRESHOLD = 0.4  # J binarises probabilities with > 0.4
REFAVS_S_THRESHOLD = 0.5  # S binarises probabilities with > 0.5
REFAVS_BETA2 = 0.3


def refavs_j(probs: np.ndarray, gts: np.ndarray) -> float:
    """Ref-AVS J of a video: mean over frames [T, H, W] of the frame's IoU with prediction =
    probability > 0.4; on frames whose ground truth is empty, the fraction of pixels that both
    call background."""
    pred = np.asarray(probs) > REFAVS_J_THRESHOLD
    gt = np.asarray(gts, dtype=bool)
    _check_shapes(gt, pred, None)
    pixels = gt.shape[-1] * gt.shape[-2]
    empty = ~gt.any(axis=(-2, -1))
    inter = np.where(empty, np.count_nonzero(~gt & ~pred, axis=(-2, -1)), np.count_nonzero(gt & pred, axis=(-2, -1)))
    union = np.where(empty, pixels, np.count_nonzero(gt | pred, axis=(-2, -1)))
    return float(np.mean(inter / (union + 1e-7)))


def refavs_f(probs: np.ndarray, gts: np.ndarray, num_thresholds: int = 255) -> float:
    """Ref-AVS F of a video: F_beta (beta^2 = 0.3) of the mean precision-recall curve over its
    frames with a non-empty ground truth, at 255 thresholds linspace(0, 1 - 1e-10) (a pixel is
    positive when prob >= threshold), maximised over thresholds. 0 if no frame has a target."""
    probs = np.asarray(probs, dtype=np.float64)
    gt = np.asarray(gts, dtype=bool)
    _check_shapes(gt, probs, None)
    keep = gt.any(axis=(-2, -1))
    if not keep.any():
        return 0.0
    probs, gt = probs[keep].reshape(int(keep.sum()), -1), gt[keep].reshape(int(keep.sum()), -1)
    thresholds = np.linspace(0, 1 - 1e-10, num_thresholds)
    curves = np.empty((len(probs), num_thresholds))
    for i, (p, g) in enumerate(zip(probs, gt)):
        # counts of positives at every threshold from the sorted probabilities
        order = np.sort(p)
        positives = len(p) - np.searchsorted(order, thresholds, side="left")
        true_pos = np.count_nonzero(g) - np.searchsorted(np.sort(p[g]), thresholds, side="left")
        precision = true_pos / (positives + 1e-20)
        recall = true_pos / (np.count_nonzero(g) + 1e-20)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = (1 + REFAVS_BETA2) * precision * recall / (REFAVS_BETA2 * precision + recall)
        curves[i] = np.nan_to_num(f, nan=0.0)
    return float(curves.mean(axis=0).max())


def refavs_s(probs: np.ndarray) -> float:
    """Ref-AVS S of a null-split video (lower is better): sqrt(foreground pixels / all pixels)
    with foreground = probability > 0.5."""
    pred = np.asarray(probs) > REFAVS_S_THRESHOLD
    return float(math.sqrt(np.count_nonzero(pred) / pred.size))


def _check_shapes(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth shape {gt.shape} differs from prediction shape {pred.shape}")
    if void is not None and np.shape(void) != gt.shape:
        raise ValueError(f"void shape {np.shape(void)} differs from mask shape {gt.shape}")
