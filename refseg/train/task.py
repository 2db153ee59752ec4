"""What every training task shares: it wraps a model so that `forward(batch)` returns the losses
(what DistributedDataParallel needs to synchronise gradients), and each sample carries the seed
of its own random numbers (dropout), so a result does not depend on which process trains the
sample or in which order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from refseg.train.config import TrainConfig


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator seeded by `seed`, restoring it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Task(nn.Module):
    """Subclasses give `sampler(samples, seed)`, `draw(sampler, rng)` (one sample with a `seed`)
    and `sample_losses(sample)` (a dict of scalars with "loss"), or override `forward` to batch."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, batch: list) -> dict[str, Tensor]:
        terms = []
        for sample in batch:
            with seeded(sample.seed):
                terms.append(self.sample_losses(sample))
        return {k: torch.stack([t[k] for t in terms]).mean() for k in terms[0]}

    def sample_losses(self, sample: object) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define sample_losses or forward")
