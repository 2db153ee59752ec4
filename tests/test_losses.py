"""Losses against values worked out by hand or by a naive loop."""

from __future__ import annotations

import math

import pytest
import torch

from refseg.train.losses import (
    bce_loss,
    contrastive_loss,
    dice_loss,
    focal_loss,
    iou_prediction_loss,
    multimask_losses,
    object_score_loss,
    weighted_bce_iou_loss,
)


def test_focal_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0]])
    # p = 0.5 everywhere: ce = ln 2, (1 - p_t)^2 = 0.25; alpha_t = 0.25 and 0.75 -> mean
    expected = (0.25 * 0.25 * math.log(2) + 0.75 * 0.25 * math.log(2)) / 2
    assert focal_loss(logits, targets).item() == pytest.approx(expected)
    confident = torch.tensor([[10.0, -10.0]])
    assert focal_loss(confident, targets).item() < 1e-9


def test_dice_and_bce_by_hand():
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    perfect = torch.tensor([[20.0, 20.0, -20.0, -20.0]])
    assert dice_loss(perfect, targets).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.zeros(1, 4)  # p = 0.5: 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert dice_loss(half, targets).item() == pytest.approx(1 - 3 / 5)
    assert bce_loss(half, targets).item() == pytest.approx(math.log(2))


def test_iou_and_object_losses():
    logits = torch.tensor([[5.0, 5.0, -5.0, -5.0], [-5.0, -5.0, -5.0, -5.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # actual IoU: 1/2, and 1 for the empty/empty sample
    assert iou_prediction_loss(torch.tensor([0.5, 0.5]), logits, targets).item() == pytest.approx((0 + 0.5) / 2)
    assert object_score_loss(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))


def test_weighted_bce_iou_equals_plain_terms_on_a_uniform_target():
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.ones(2, 1, 8, 8)
    # a uniform target has no boundary: all weights 1 except where the zero padding of the
    # average pool reaches; with kernel 1 the weights are exactly 1
    p = torch.sigmoid(logits)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((2, 3))
    inter, union = (p * targets).sum((2, 3)), (p + targets).sum((2, 3))
    expected = (bce + 1 - (inter + 1) / (union - inter + 1)).mean()
    assert weighted_bce_iou_loss(logits, targets, kernel=1).item() == pytest.approx(expected.item(), rel=1e-6)


def test_contrastive_loss_equals_a_naive_loop():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    total = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        others = [j for j in range(6) if j != i]
        logits = torch.tensor([float(z[i] @ z[j]) / 0.1 for j in others])
        total += -(logits[others.index(partner)] - torch.logsumexp(logits, 0))
    assert contrastive_loss(a, b, temperature=0.1).item() == pytest.approx(total.item() / 6, rel=1e-5)


def test_multimask_losses_train_the_best_candidate_and_every_iou():
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).view(1, 1, 2, 2)
    good = torch.tensor([20.0, 20.0, -20.0, -20.0]).view(2, 2)
    half = torch.tensor([20.0, -20.0, -20.0, -20.0]).view(2, 2)  # IoU 1/2
    wrong = torch.tensor([-20.0, -20.0, 20.0, 20.0]).view(2, 2)  # IoU 0
    logits = torch.stack([wrong, good, half])[None]  # [1, 3, 2, 2]
    pred_iou = torch.tensor([[0.0, 0.5, 0.5]])
    out = multimask_losses(logits, pred_iou, targets)
    # the best candidate is the good one: its focal and dice are ~0
    assert out["focal"].item() < 1e-6 and out["dice"].item() < 1e-6
    # L1 over all three candidates: |0 - 0| + |0.5 - 1| + |0.5 - 0.5|
    assert out["iou"].item() == pytest.approx(0.5 / 3)
    # gradients reach only the chosen candidate's logits (and the IoU predictions)
    logits.requires_grad_(True)
    multimask_losses(logits, pred_iou, targets)["dice"].backward()
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 2].abs().sum() == 0
    # per-sample choice: a second sample whose best candidate is another index
    two = multimask_losses(torch.stack([logits.detach()[0], logits.detach()[0].roll(1, 0)]),
                           pred_iou.expand(2, -1), targets.expand(2, -1, -1, -1))
    assert two["dice"].item() < 1e-6


def test_structure_weights_and_the_multimask_rule():
    from refseg.train.losses import box_mean, structure_multimask_losses, structure_per_sample

    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(2, 1, 40, 40, generator=gen) > 0.6).float()
    direct = torch.nn.functional.avg_pool2d(y, 31, stride=1, padding=15)
    torch.testing.assert_close(box_mean(y, 31), direct, atol=1e-6, rtol=0)
    # a boundary pixel weighs more than an interior one: 1 + 5 |mean - y|
    square = torch.zeros(1, 1, 40, 40)
    square[..., 10:30, 10:30] = 1
    weight = 1 + 5 * (box_mean(square, 31) - square).abs()
    assert weight[0, 0, 10, 10] > weight[0, 0, 20, 20] > 1
    # the multimask rule trains the candidate with the lowest structure loss; IoU on all
    logits = torch.stack([square[0, 0] * 20 - 10, -10 * torch.ones(40, 40), torch.zeros(40, 40)])[None]
    losses = structure_multimask_losses(logits, torch.tensor([[1.0, 0.0, 0.5]]), square)
    per = structure_per_sample(logits.reshape(3, 1, 40, 40), square.expand(3, 1, 40, 40), smooth=1e-6)
    assert losses["structure"].item() == pytest.approx(per.min().item()) and per.argmin().item() == 0
    assert losses["iou"].item() == pytest.approx((0.0 + 0.0 + abs(0.5 - 0.0)) / 3, abs=1e-6)
