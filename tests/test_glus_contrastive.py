"""GLUS's object contrastive loss on hand-made tokens, against a direct computation."""

from __future__ import annotations

import math

import torch

from refseg.methods.glus.contrastive import TokenBank, TokenTag, contrastive_term, eligible, object_contrastive_loss


def tag(video="v", expression="a", frame=0, objects=(1,)):
    return TokenTag(video, expression, frame, frozenset(objects))


def test_positives_and_negatives_follow_the_official_rules():
    bank = TokenBank(size=8)
    entries = [tag(expression="b"),                 # 0 positive: other expression, same objects, same frame
               tag(expression="b", frame=1),        # 1 negative: other frame
               tag(expression="c", objects=(1, 2)),  # 2 negative: other target set
               tag(expression="a"),                 # 3 neither: the token's own expression
               tag(video="w", expression="a"),      # 4 negative: other video
               tag(expression="d")]                 # 5 positive
    bank.push(entries, torch.zeros(6, 4))
    assert eligible(tag(), bank) == ([0, 5], [1, 2, 4])
    bank.push([tag(video="x")] * 4, torch.zeros(4, 4))  # FIFO: the first two leave
    assert len(bank) == 8 and eligible(tag(), bank) == ([3], [0, 2, 4, 5, 6, 7])


def test_the_term_is_infonce_with_cosine_similarity():
    z, p = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    n = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [2.0, 0.0]])
    tau = 0.5
    pos = math.exp(math.cos(math.pi / 4) / tau)
    neg = math.exp(0 / tau) + math.exp(-1 / tau) + math.exp(1 / tau)
    assert math.isclose(float(contrastive_term(z, p, n, tau)), -math.log(pos / (pos + neg)), rel_tol=1e-6)


def test_batch_loss_means_over_tokens_with_a_loss_and_needs_two():
    torch.manual_seed(0)
    bank = TokenBank()
    negative = torch.tensor([0.0, 1.0, 0.0])
    bank.push([tag(video=f"n{i}") for i in range(130)], negative.expand(130, 3))
    z1, z2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.5, 0.0])
    generator = torch.Generator().manual_seed(0)
    # two expressions of the same objects at the same frame: each is the other's positive
    loss = object_contrastive_loss(torch.stack([z1, z2]), [tag(expression="a"), tag(expression="b")], bank, generator)
    expected = [contrastive_term(a, b, negative.expand(128, 3)) for a, b in ((z1, z2), (z2, z1))]
    assert torch.allclose(loss, torch.stack(expected).mean())  # every negative is the same vector: no draw matters
    assert len(bank) == 132
    # one token with a loss is not enough (the official rule); a token without a positive has none
    alone = object_contrastive_loss(z1[None], [tag(expression="c")], bank, generator)
    assert alone is None
    few = TokenBank()
    assert object_contrastive_loss(torch.stack([z1, z2]), [tag(expression="a"), tag(expression="b")], few,
                                   generator) is None  # fewer than 128 negatives
