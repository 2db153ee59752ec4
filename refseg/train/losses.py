"""Training losses of the SAM family and the methods built on it.

Masks are logits [B, ...] against binary targets of the same shape; every loss returns a scalar
averaged over the batch (each sample weighs the same, whatever its size).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def _flat(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    return logits.flatten(1).float(), targets.flatten(1).float()


def focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over pixels then over samples:
    -alpha_t (1 - p_t)^gamma log p_t, with alpha_t = alpha on positives, 1 - alpha on negatives
    (alpha < 0 disables the weighting), as SAM and SAM 2 train with."""
    return focal_per_sample(*_flat(logits, targets), alpha, gamma).mean()


def focal_per_sample(x: Tensor, y: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """`focal_loss` of flat logits and targets [B, P], one value per sample [B]."""
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p = torch.sigmoid(x)
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * y + (1 - alpha) * (1 - y))
    return loss.mean(1)


def dice_loss(logits: Tensor, targets: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - (2 |P * Y| + s) / (|P| + |Y| + s) with P = sigmoid(logits), per sample, then mean."""
    return dice_per_sample(*_flat(logits, targets), smooth).mean()


def dice_per_sample(x: Tensor, y: Tensor, smooth: float = 1.0) -> Tensor:
    """`dice_loss` of flat logits and targets [B, P], one value per sample [B]."""
    p = torch.sigmoid(x)
    return 1 - (2 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)


def bce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy with logits, mean over pixels then over samples."""
    x, y = _flat(logits, targets)
    return F.binary_cross_entropy_with_logits(x, y, reduction="none").mean(1).mean()


def iou_prediction_loss(pred_iou: Tensor, logits: Tensor, targets: Tensor, kind: str = "l1") -> Tensor:
    """L1 (or "mse") between the predicted IoU [B] and the IoU of the binarised mask (logits > 0)
    with the target; the actual IoU is a constant (no gradient), 1 when both are empty."""
    x, y = _flat(logits, targets)
    with torch.no_grad():
        pred = (x > 0).float()
        inter, union = (pred * y).sum(1), ((pred + y) > 0).float().sum(1)
        actual = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    pred_iou = pred_iou.reshape(-1).float()
    return F.l1_loss(pred_iou, actual) if kind == "l1" else F.mse_loss(pred_iou, actual)


def multimask_losses(logits: Tensor, pred_iou: Tensor, targets: Tensor, focal_weight: float = 20.0,
                     dice_weight: float = 1.0) -> dict[str, Tensor]:
    """SAM's rule for M candidate masks (M = 3 for an ambiguous prompt, 1 otherwise): per sample,
    only the candidate with the lowest `focal_weight * focal + dice_weight * dice` gets the mask
    losses, so the candidates can specialise (whole, part, sub-part); every candidate's predicted
    IoU is trained (L1) against its actual IoU.

    Args:
        logits: [B, M, S, S] candidate mask logits.
        pred_iou: [B, M] their predicted IoU.
        targets: [B, 1, S, S] binary.
    Returns:
        {"focal", "dice", "iou"}: scalars, means over the batch.
    """
    b, m = logits.shape[:2]
    x = logits.reshape(b * m, -1).float()
    y = targets.float().expand(-1, m, -1, -1).reshape(b * m, -1)
    focal = focal_per_sample(x, y).view(b, m)
    dice = dice_per_sample(x, y).view(b, m)
    best = (focal_weight * focal + dice_weight * dice).argmin(dim=1)
    rows = torch.arange(b, device=logits.device)
    iou = iou_prediction_loss(pred_iou.reshape(-1), logits.reshape(b * m, -1), y)
    return {"focal": focal[rows, best].mean(), "dice": dice[rows, best].mean(), "iou": iou}


def object_score_loss(score_logits: Tensor, present: Tensor) -> Tensor:
    """Cross-entropy of the presence logit [B] against whether the object is visible [B]."""
    return F.binary_cross_entropy_with_logits(score_logits.reshape(-1).float(), present.reshape(-1).float())


def weighted_bce_iou_loss(logits: Tensor, targets: Tensor, kernel: int = 31, gain: float = 5.0,
                          smooth: float = 1.0) -> Tensor:
    """Boundary-weighted BCE + weighted IoU (the "structure loss" SAM-I2V trains its masks with).

    Pixels whose target differs from its local mean (a kernel x kernel average) get weight
    1 + gain * |mean - target|, so boundaries and thin parts count more. Logits and targets are
    [B, 1, H, W]; `smooth` is added to the IoU's numerator and denominator (F3Net: 1; SAM-I2V's
    training code: 1e-6).
    """
    if logits.dim() != 4:
        raise ValueError(f"weighted_bce_iou_loss expects [B, 1, H, W], got {tuple(logits.shape)}")
    return structure_per_sample(logits, targets, kernel, gain, smooth).mean()


def box_mean(x: Tensor, kernel: int) -> Tensor:
    """`F.avg_pool2d(x, kernel, stride=1, padding=kernel // 2)` (zero padding counted) of
    [B, 1, H, W], as two 1-D passes: the same sums, kernel times fewer operations."""
    pad = kernel // 2
    rows = F.avg_pool2d(x, (kernel, 1), stride=1, padding=(pad, 0))
    return F.avg_pool2d(rows, (1, kernel), stride=1, padding=(0, pad))


def structure_per_sample(logits: Tensor, targets: Tensor, kernel: int = 31, gain: float = 5.0,
                         smooth: float = 1.0) -> Tensor:
    """`weighted_bce_iou_loss` of [B, 1, H, W] logits and targets, one value per sample [B]."""
    y = targets.float()
    weight = 1 + gain * (box_mean(y, kernel) - y).abs()
    bce = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")
    wbce = (weight * bce).sum((2, 3)) / weight.sum((2, 3))
    p = torch.sigmoid(logits.float())
    inter = (p * y * weight).sum((2, 3))
    union = ((p + y) * weight).sum((2, 3))
    wiou = 1 - (inter + smooth) / (union - inter + smooth)
    return (wbce + wiou)[:, 0]


def structure_multimask_losses(logits: Tensor, pred_iou: Tensor, targets: Tensor,
                               smooth: float = 1e-6) -> dict[str, Tensor]:
    """SAM-I2V's mask losses for M candidates: per sample only the candidate with the lowest
    structure loss (`structure_per_sample`) is trained; every candidate's IoU prediction is
    (L1). logits [B, M, S, S], pred_iou [B, M], targets [B, 1, S, S] -> {"structure", "iou"}."""
    b, m = logits.shape[:2]
    x = logits.reshape(b * m, 1, *logits.shape[2:])
    y = targets.float().expand(-1, m, -1, -1).reshape(b * m, 1, *logits.shape[2:])
    structure = structure_per_sample(x, y, smooth=smooth).view(b, m)
    best = structure.argmin(dim=1)
    rows = torch.arange(b, device=logits.device)
    iou = iou_prediction_loss(pred_iou.reshape(-1), x.reshape(b * m, -1), y.reshape(b * m, -1))
    return {"structure": structure[rows, best].mean(), "iou": iou}


def contrastive_loss(anchors: Tensor, positives: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR's NT-Xent over N pairs: each of the 2N embeddings [N, D] must pick its partner
    among the other 2N - 1 (cosine similarity / temperature, cross-entropy), mean over 2N."""
    z = F.normalize(torch.cat([anchors, positives]).float(), dim=1)
    n = anchors.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)
