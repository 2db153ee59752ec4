"""Prompts derived from ground truth: simulated clicks and boxes.

Clicks follow SAM 2's "center" sampling: on the error between a ground-truth mask and a
prediction, the pixel farthest from the boundary of its region (Euclidean distance transform,
the image border counting as boundary) among the false negatives or the false positives,
whichever is farther; positive on a false negative, negative on a false positive (ties:
negative). With an empty prediction the first click is the centre of the ground-truth mask.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from refseg.prompts import Box


def next_click(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, int]:
    """(x, y, label) of the next simulated click on a frame: label 1 positive, 0 negative."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    fn_dt = distance_transform_edt(np.pad(gt & ~pred, 1))[1:-1, 1:-1]
    fp_dt = distance_transform_edt(np.pad(~gt & pred, 1))[1:-1, 1:-1]
    positive = fn_dt.max() > fp_dt.max()
    y, x = np.unravel_index(np.argmax(fn_dt if positive else fp_dt), gt.shape)
    return float(x), float(y), int(positive)


def mask_box(mask: np.ndarray) -> Box:
    """The tight box of a non-empty mask, inclusive pixel corners as SAM 2 builds it."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("mask_box: the mask is empty")
    return Box(float(xs.min()), float(ys.min()), float(xs.max()) + 1e-3, float(ys.max()) + 1e-3)
