"""What every training task shares: it wraps a model so that `forward(batch)` returns the losses
(what DistributedDataParallel needs to synchronise gradients), and each sample carries the seed
of its own random numbers (dropout), so a result does not depend on which process trains the
sample or in which order."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from refseg.data.sample import VideoSample
from refseg.data.sampler import Clip, ClipSampler
from refseg.train.config import TrainConfig


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator seeded by `seed`, restoring it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def image_key(image: np.ndarray | Tensor) -> bytes:
    """The digest of an image's pixels [H, W, 3]: the key its frozen features are kept under."""
    pixels = image.cpu().numpy() if isinstance(image, Tensor) else image
    return hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=16).digest()


class FeatureCache:
    """A frozen encoder's outputs per distinct image (`data.cache_features`), float16 on the CPU:
    each image is encoded the first time it is drawn and read back after that."""

    def __init__(self) -> None:
        self.store: dict[bytes, tuple[Tensor, ...]] = {}

    def __len__(self) -> int:
        return len(self.store)

    @torch.no_grad()
    def __call__(self, images: Tensor, encode: Callable[[Tensor], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        """`encode(images)` (each output [B, ...]; images [B, S, S, 3] uint8) as float32 on the
        images' device, encoding only the images not seen before."""
        keys = [image_key(image) for image in images]
        new = [i for i, key in enumerate(keys) if key not in self.store and key not in keys[:i]]
        if new:
            outputs = encode(images[new])
            for j, i in enumerate(new):
                self.store[keys[i]] = tuple(t[j].to("cpu", torch.float16) for t in outputs)
        return tuple(torch.stack([self.store[key][n] for key in keys]).to(images.device, torch.float32)
                     for n in range(len(self.store[keys[0]])))


class Task(nn.Module):
    """Subclasses set `sample_by` (what a sample is: "object" or "expression"), and give
    `draw(sampler, rng)` (one sample with a `seed`) and `sample_losses(sample)` (a dict of
    scalars with "loss"), or override `forward` to batch."""

    sample_by = "object"

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def sampler(self, samples: Sequence[VideoSample], seed: int) -> ClipSampler:
        """Clips of `data.clip_len` frames at the model's input size."""
        return ClipSampler(samples, clip_len=self.config.data.clip_len, size=self.config.model.image_size, seed=seed,
                           by=self.sample_by, weights=self.config.data.phenomenon_weights,
                           stride=self.config.data.frame_stride)

    def draw_batch(self, sampler: ClipSampler, rng: np.random.Generator, size: int) -> list:
        """`size` independent samples."""
        return [self.draw(sampler, rng) for _ in range(size)]  # type: ignore[attr-defined]

    def forward(self, batch: list) -> dict[str, Tensor]:
        terms = []
        for sample in batch:
            with seeded(sample.seed):
                terms.append(self.sample_losses(sample))  # type: ignore[attr-defined]
        return {k: torch.stack([t[k] for t in terms]).mean() for k in terms[0]}


@dataclass
class Referred:
    """A referring-expression sample: its clip (frames, target mask, expression) and its seed."""

    clip: Clip
    seed: int


class ExpressionTask(Task):
    """A task whose samples are referring expressions (SAMWISE, EVF-SAM). With
    `data.expressions_per_clip` K > 1 a batch is drawn in groups of up to K expressions that share
    one clip and its augmentation (the last group cut to fit)."""

    sample_by = "expression"

    def draw(self, sampler: ClipSampler, rng: np.random.Generator) -> Referred:
        return Referred(sampler.sample(), int(rng.integers(2**31)))

    def draw_batch(self, sampler: ClipSampler, rng: np.random.Generator, size: int) -> list[Referred]:
        k = self.config.data.expressions_per_clip  # K = 1: groups of one, drawn as `draw` draws them
        batch: list[Referred] = []
        while len(batch) < size:
            batch += [Referred(clip, int(rng.integers(2**31))) for clip in sampler.sample_group(k)]
        return batch[:size]
