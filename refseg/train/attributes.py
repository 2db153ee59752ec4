"""An auxiliary objective that makes an image encoder's features say what each object looks like.

SAM 2 trained for class-agnostic masks keeps an object's colour linearly readable from its
features but hardly its shape (`bench/feature_probe.py`): delineating a SynthRef object never
needs to know whether it is a circle or a square. A text-prompted method on that frozen encoder
then cannot ground shape words. This objective (refseg's, not a paper's) asks a linear read-out
of each feature level to classify every prompted object's attributes (SynthRef's colour, shape,
size, texture) from the object's mask-weighted mean feature, so that the encoder learns to write
them there: what `bench/feature_probe.py` then reads with a fresh linear probe. The read-outs are
training scaffolding: they are not part of the model a run saves.

Loss of one level l, attribute a, object o with mask coverage c_p of position p (the mask
area-pooled to the level's grid):

    L = CE(W_{l,a} (sum_p c_p f_l(p)) / sum_p c_p + b_{l,a}, y_{o,a})

averaged over objects, attributes and levels. (Asking every position to classify on its own,
a stricter objective, learned shape no faster over 300 steps: docs/RESULTS.md.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class AttributeHeads(nn.Module):
    """Per-position linear classifiers of object attributes on several feature levels.

    Args:
        channels: channels of each tapped level (e.g. the last Hiera stages and the image embedding).
        vocabulary: attribute -> its possible values (e.g. `synth.ATTRIBUTES`).
    """

    def __init__(self, channels: Sequence[int], vocabulary: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.vocabulary = {name: tuple(values) for name, values in vocabulary.items()}
        self.heads = nn.ModuleList(
            nn.ModuleDict({name: nn.Conv2d(c, len(values), 1) for name, values in self.vocabulary.items()})
            for c in channels)

    def pooled_logits(self, levels: Sequence[Tensor], image_of: Tensor, masks: Tensor,
                      labels: Sequence[Mapping[str, str]]) -> list[dict[str, tuple[Tensor, Tensor]]]:
        """Per level, attribute -> (logits [n, K] of the n objects that have it, their targets [n]).

        levels: per level [B, C_l, h_l, w_l] features of B images; image_of [N] the image of each
        of N objects; masks [N, 1, S, S] float object masks; labels: each object's attributes
        (an attribute an object lacks is skipped)."""
        if len(levels) != len(self.heads):
            raise ValueError(f"AttributeHeads: {len(self.heads)} levels expected, got {len(levels)}")
        out = []
        for x, heads in zip(levels, self.heads):
            cover = F.adaptive_avg_pool2d(masks, x.shape[-2:]).flatten(1)  # [N, h*w]
            weight = cover / cover.sum(1, keepdim=True).clamp(min=1e-6)
            features = x[image_of]
            scored = {}
            for name, head in heads.items():
                rows = [i for i, lab in enumerate(labels) if name in lab]
                if rows:
                    target = torch.tensor([self.vocabulary[name].index(labels[i][name]) for i in rows], device=x.device)
                    index = torch.tensor(rows, device=x.device)
                    scored[name] = ((head(features[index]).flatten(2) * weight[index][:, None]).sum(-1), target)
            out.append(scored)
        return out

    def loss(self, levels: Sequence[Tensor], image_of: Tensor, masks: Tensor,
             labels: Sequence[Mapping[str, str]]) -> Tensor:
        """Mean cross-entropy of the objects' pooled features (module docstring); arguments as
        `pooled_logits`."""
        return scored_loss(self.pooled_logits(levels, image_of, masks, labels), masks)


def scored_loss(scored: list[dict[str, tuple[Tensor, Tensor]]], like: Tensor) -> Tensor:
    """Mean cross-entropy over levels and attributes of `AttributeHeads.pooled_logits`' output."""
    terms = [F.cross_entropy(logits, target) for level in scored for logits, target in level.values()]
    return torch.stack(terms).mean() if terms else like.new_zeros(())


def scored_accuracy(scored: list[dict[str, tuple[Tensor, Tensor]]]) -> dict[str, Tensor]:
    """Per attribute, the share of objects whose pooled logits on the last level pick the right
    value (what training logs)."""
    return {name: (logits.detach().argmax(1) == target).float().mean() for name, (logits, target) in scored[-1].items()}
