"""Training clips: random clips of T frames with augmentations that keep masks and expressions
consistent (a horizontal flip swaps the words "left" and "right")."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from refseg.data.sample import Expression, VideoSample

_SIDES = re.compile(r"\b(left|right)\b")


def flip_text(text: str) -> str:
    """Swap "left" and "right" (whole words) in an expression."""
    return _SIDES.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


@dataclass
class Clip:
    """frames [T, S, S, 3] uint8, mask [T, S, S] bool (union of the targets), the expression."""

    video_id: str
    start: int
    frames: np.ndarray
    mask: np.ndarray
    expression: Expression
    flipped: bool
    objects: dict[int, np.ndarray] = field(default_factory=dict)  # with `objects=True`: every object's [T, S, S]
    context: int = 0  # the first `context` frames (and masks) are context frames drawn over the video (`ClipSampler`)
    attributes: dict[int, dict[str, str]] = field(default_factory=dict)  # the video's `VideoSample.attributes`
    zoom: float = 1.0  # how many times larger objects look than in the whole frame: shorter side / crop side


class ClipSampler:
    """Random (video, expression, clip) triples with augmentations.

    Args:
        samples: videos with expressions (loaded on demand each time one is drawn).
        clip_len: T; shorter videos give all their frames, padded by repeating the last.
        size: output side S.
        flip_p: probability of a horizontal flip.
        crop_scale: the crop side is this fraction range of the shorter frame side.
        brightness, contrast: ranges of a global jitter, the same on all frames of a clip
            (no hue change: colour words stay true).
        seed: seeds the generator; the same seed gives the same clips.
        by: "expression" draws referring expressions; "object" draws single objects (for
            promptable segmentation), as an expression without text targeting that object, with
            a clip that starts on a frame where the object is visible.
        objects: also give every object's mask, augmented alike (`Clip.objects`), for training
            several prompts per image.
        weights: phenomenon -> how many times more often an expression exercising it is drawn
            (`Expression.phenomena`; one with several takes the largest of their weights, one
            with none or unlisted ones weighs 1), to train on what a split holds little of.
        context: (number of frames N, generator) -> frame indices; when given, each clip starts
            with these frames of its video (a method's global context, e.g. GLUS's one frame per
            segment), then its `clip_len` consecutive frames (`Clip.context` says how many).
        stride: (lo, hi) frames between a clip's frames, drawn per clip from lo..hi (inclusive):
            a clip of T frames at stride s covers (T - 1) s + 1 frames of its video, so it can hold
            memory from before an event (a look-alike that starts moving late) and after it.
    """

    def __init__(self, samples: Sequence[VideoSample], clip_len: int = 8, size: int = 256, flip_p: float = 0.5,
                 crop_scale: tuple[float, float] = (0.7, 1.0), brightness: float = 0.15, contrast: float = 0.15,
                 seed: int = 0, by: str = "expression", objects: bool = False,
                 weights: Mapping[str, float] | None = None,
                 context: Callable[[int, np.random.Generator], list[int]] | None = None,
                 stride: tuple[int, int] = (1, 1)) -> None:
        if by == "expression":
            self.items = [(i, e) for i, s in enumerate(samples) for e in s.expressions]
        elif by == "object":
            self.items = [(i, Expression(f"object {o}", "", (o,))) for i, s in enumerate(samples)
                          for o, m in sorted(s.masks.items()) if m.any()]
        else:
            raise ValueError(f"ClipSampler: by must be 'expression' or 'object', got {by!r}")
        self.by = by
        self.objects = objects
        if not self.items:
            raise ValueError(f"ClipSampler: the samples have no {by}")
        self.samples = samples
        self.probs = self._probabilities(weights or {})
        self.clip_len, self.size, self.flip_p = clip_len, size, flip_p
        self.crop_scale, self.brightness, self.contrast = crop_scale, brightness, contrast
        self.rng = np.random.default_rng(seed)
        self.context = context
        if not 1 <= stride[0] <= stride[1]:
            raise ValueError(f"ClipSampler: stride must be (lo, hi) with 1 <= lo <= hi, got {stride}")
        self.stride = stride

    def _probabilities(self, weights: Mapping[str, float]) -> np.ndarray | None:
        """Draw probability of each item under `weights` (None: uniform)."""
        if not weights:
            return None
        bad = {p: w for p, w in weights.items() if not w > 0}
        if bad:
            raise ValueError(f"ClipSampler: phenomenon weights must be positive, got {bad}")
        if self.by != "expression":
            raise ValueError("ClipSampler: phenomenon weights need by='expression'")
        w = np.array([max((weights.get(p, 1.0) for p in e.phenomena), default=1.0) for _, e in self.items])
        return w / w.sum()

    def __iter__(self) -> Iterator[Clip]:
        while True:
            yield self.sample()

    def sample(self) -> Clip:
        return self.sample_group(1)[0]

    def sample_group(self, size: int) -> list[Clip]:
        """Up to `size` clips of one video that share the frames and the augmentation, each with
        a different expression text: the first drawn as `sample` draws it, the others at random
        among the video's other texts (fewer when the video has fewer). On the same image, a
        prompt that ignores the text cannot fit them all."""
        pick = self.rng.integers(len(self.items)) if self.probs is None else self.rng.choice(len(self.items), p=self.probs)
        index, expression = self.items[int(pick)]
        video = self.samples[index]
        lo, hi = self.stride
        stride = lo if lo == hi else int(self.rng.integers(lo, hi + 1))
        if self.clip_len > 1:  # a short video: the widest stride that fits
            stride = max(1, min(stride, (len(video) - 1) // (self.clip_len - 1)))
        starts = np.arange(max(len(video) - (self.clip_len - 1) * stride - 1, 0) + 1)
        if self.by == "object":
            visible = video.masks[expression.target_ids[0]].any(axis=(1, 2))
            starts = starts[visible[starts]] if visible[starts].any() else np.flatnonzero(visible)[:1]
        start = int(starts[int(self.rng.integers(len(starts)))])
        ts = [min(start + k * stride, len(video) - 1) for k in range(self.clip_len)]
        context = self.context(len(video), self.rng) if self.context is not None else []
        ts = context + ts
        expressions = [expression]
        if size > 1:
            if self.by != "expression":
                raise ValueError("ClipSampler.sample_group: several expressions per clip need by='expression'")
            others = list({e.text: e for e in video.expressions if e.text != expression.text}.values())
            picked = self.rng.permutation(len(others))[: size - 1]
            expressions += [others[int(i)] for i in picked]
        frames = np.stack([video.load_frame(t) for t in ts])
        masks = [video.target_mask(e)[ts] for e in expressions]
        objects = {o: m[ts] for o, m in sorted(video.masks.items())} if self.objects else None
        clips = self.augment(video.video_id, start, frames, masks, expressions, objects, len(context))
        for clip in clips:
            clip.attributes = video.attributes
        return clips

    def augment(self, video_id: str, start: int, frames: np.ndarray, masks: list[np.ndarray],
                expressions: list[Expression], objects: dict[int, np.ndarray] | None = None,
                context: int = 0) -> list[Clip]:
        """One random crop, jitter and flip for the frames, every target mask `masks[k]` (of
        `expressions[k]`) and `objects`; one clip per expression."""
        rng = self.rng
        h, w = frames.shape[1:3]
        side = int(min(h, w) * rng.uniform(*self.crop_scale))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        frames = frames[:, top : top + side, left : left + side]
        frames = np.stack([np.asarray(Image.fromarray(f).resize((self.size, self.size), Image.BILINEAR)) for f in frames])

        def geometry(m: np.ndarray) -> np.ndarray:
            m = m[:, top : top + side, left : left + side]
            return np.stack([np.asarray(Image.fromarray(x).resize((self.size, self.size), Image.NEAREST)) for x in m])

        masks = [geometry(m) for m in masks]
        objects = {o: geometry(m) for o, m in (objects or {}).items()}
        gain = 1 + rng.uniform(-self.contrast, self.contrast)
        shift = 255 * rng.uniform(-self.brightness, self.brightness)
        frames = np.clip((frames.astype(np.float32) - 128) * gain + 128 + shift, 0, 255).astype(np.uint8)
        flipped = bool(rng.random() < self.flip_p)
        if flipped:
            frames = frames[:, :, ::-1].copy()
            masks = [m[:, :, ::-1].copy() for m in masks]
            objects = {o: m[:, :, ::-1].copy() for o, m in objects.items()}
            expressions = [Expression(e.exp_id, flip_text(e.text), e.target_ids, e.phenomena) for e in expressions]
        objects = {o: m.astype(bool) for o, m in objects.items()}
        zoom = min(h, w) / side
        return [Clip(video_id, start, frames, m.astype(bool), e, flipped, objects, context, zoom=zoom)
                for m, e in zip(masks, expressions)]
