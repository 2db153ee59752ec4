"""GLUS's object contrastive loss (paper Sec. 4.3, Eq. 6; official `utils/contrastive_loss.py`).

Projected [SEG] tokens of the same objects should agree whatever expression names them, and
differ from other objects'. A bank keeps the last 512 tokens (detached) with their tags. For a
token z of (video v, expression e, frame f, target set O):

- positives: bank tokens of v at frame f from another expression e' whose target set is O;
- negatives: every other bank token except those of (v, e) itself; 128 are drawn with
  replacement;
- with one positive p drawn at random,
      L(z) = -log( exp(cos(z, p) / tau) / (exp(cos(z, p) / tau) + sum_n exp(cos(z, n) / tau)) ),
  tau = 0.07. A token without a positive or with fewer than 128 negatives has no loss.

As in the official training, the batch's tokens enter the bank before the losses are computed,
and the loss is the mean over the tokens that have one, or nothing when fewer than two do. The
caller weighs it (0.1 in the paper).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass(frozen=True)
class TokenTag:
    """What a [SEG] token answered: its video, expression, frame and target object set."""

    video: str
    expression: str
    frame: int
    objects: frozenset[int]


class TokenBank:
    """FIFO of the last `size` tagged tokens [D] (detached)."""

    def __init__(self, size: int = 512) -> None:
        self.entries: deque[tuple[TokenTag, Tensor]] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, tags: Sequence[TokenTag], tokens: Tensor) -> None:
        """tokens [B, D], one tag each."""
        for tag, token in zip(tags, tokens, strict=True):
            self.entries.append((tag, token.detach().clone()))

    def state(self) -> dict:
        """What a training checkpoint stores, so that a resumed run contrasts with the same bank."""
        return {"tags": [(t.video, t.expression, t.frame, sorted(t.objects)) for t, _ in self.entries],
                "tokens": torch.stack([x for _, x in self.entries]) if self.entries else torch.zeros(0)}

    def load(self, state: dict) -> None:
        """Replace the entries by those of `state()`."""
        self.entries.clear()
        for (video, expression, frame, objects), token in zip(state["tags"], state["tokens"], strict=True):
            self.entries.append((TokenTag(video, expression, frame, frozenset(objects)), token.clone()))


def eligible(tag: TokenTag, bank: TokenBank) -> tuple[list[int], list[int]]:
    """Bank indices of the positives and the negatives of a token tagged `tag`."""
    positives, negatives = [], []
    for index, (other, _) in enumerate(bank.entries):
        if (other.video == tag.video and other.expression != tag.expression and other.objects == tag.objects
                and other.frame == tag.frame):
            positives.append(index)
        elif other.video != tag.video or other.expression != tag.expression:
            negatives.append(index)
    return positives, negatives


def contrastive_term(token: Tensor, positive: Tensor, negatives: Tensor, tau: float = 0.07) -> Tensor:
    """L(z) of the module docstring: token [D], positive [D], negatives [N, D] -> scalar."""
    pos = torch.exp(F.cosine_similarity(positive[None], token[None]) / tau)[0]
    neg = torch.exp(F.cosine_similarity(negatives, token[None]) / tau).sum()
    return -torch.log(pos / (neg + pos))


def object_contrastive_loss(tokens: Tensor, tags: Sequence[TokenTag], bank: TokenBank, generator: torch.Generator,
                            negatives: int = 128, tau: float = 0.07) -> Tensor | None:
    """Push the batch (tokens [B, D]) into `bank`, then the mean L over the tokens that have one
    (None when fewer than two do). `generator` draws the positive and the negatives."""
    bank.push(tags, tokens)
    stored = [token for _, token in bank.entries]
    losses = []
    for token, tag in zip(tokens, tags, strict=True):
        positive_ids, negative_ids = eligible(tag, bank)
        if not positive_ids or len(negative_ids) < negatives:
            continue
        pick = positive_ids[int(torch.randint(len(positive_ids), (1,), generator=generator))]
        drawn = torch.randint(len(negative_ids), (negatives,), generator=generator).tolist()
        others = torch.stack([stored[negative_ids[i]] for i in drawn]).to(token.dtype)
        losses.append(contrastive_term(token, stored[pick].to(token.dtype), others, tau))
    if len(losses) < 2:
        return None
    return torch.stack(losses).mean()
