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

    def loss(self, levels: Sequence[Tensor], image_of: Tensor, masks: Tensor,
             labels: Sequence[Mapping[str, str]]) -> Tensor:
        """Mean cross-entropy of the objects' pooled features (module docstring).

        levels: per level [B, C_l, h_l, w_l] features of B images; image_of [N] the image of each
        of N objects; masks [N, 1, S, S] float object masks; labels: each object's attributes
        (an attribute an object lacks is skipped)."""
        if len(levels) != len(self.heads):
            raise ValueError(f"AttributeHeads: {len(self.heads)} levels expected, got {len(levels)}")
        terms = []
        for x, heads in zip(levels, self.heads):
            cover = F.adaptive_avg_pool2d(masks, x.shape[-2:]).flatten(1)  # [N, h*w]
            weight = cover / cover.sum(1, keepdim=True).clamp(min=1e-6)
            features = x[image_of]
            for name, head in heads.items():
                rows = [i for i, lab in enumerate(labels) if name in lab]
                if not rows:
                    continue
                target = torch.tensor([self.vocabulary[name].index(labels[i][name]) for i in rows], device=x.device)
                index = torch.tensor(rows, device=x.device)
                logits = (head(features[index]).flatten(2) * weight[index][:, None]).sum(-1)  # [n, K]
                terms.append(F.cross_entropy(logits, target))
        if not terms:
            return masks.new_zeros(())
        return torch.stack(terms).mean()

    @torch.no_grad()
    def accuracy(self, levels: Sequence[Tensor], image_of: Tensor, masks: Tensor,
                 labels: Sequence[Mapping[str, str]]) -> dict[str, Tensor]:
        """Share of objects whose coverage-weighted mean logits pick the right value, per
        attribute, on the last level (what training logs)."""
        x, heads = levels[-1], self.heads[-1]
        cover = F.adaptive_avg_pool2d(masks, x.shape[-2:]).flatten(1)
        weight = cover / cover.sum(1, keepdim=True).clamp(min=1e-6)
        out = {}
        for name, head in heads.items():
            rows = [i for i, lab in enumerate(labels) if name in lab]
            if rows:
                index = torch.tensor(rows, device=x.device)
                logits = (head(x[image_of][index]).flatten(2) * weight[index][:, None]).sum(-1)
                truth = torch.tensor([self.vocabulary[name].index(labels[i][name]) for i in rows], device=x.device)
                out[name] = (logits.argmax(1) == truth).float().mean()
        return out
