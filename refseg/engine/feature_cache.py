"""Image features of frames a model has already encoded, shared by the sessions that replay them.

Interactive evaluation segments one video many times (SAM 2 paper, Sec. 6.1: a pass per
interacted frame in each direction, a trial per click, a replay per N_frame), and every replay
encodes the same frames again: the image encoder (and SAM-I2V's TFI) is about three quarters of a
frame's cost. A `FeatureCache` given to those sessions (`Session(feature_cache=...)`) encodes each
frame once: it maps a frame's content, and that of the frames in its pixel window when the method
reads one (`MethodHooks.pixel_window`), to the features the session would compute, so every
session computes the same masks with and without it.

The cache belongs to one model and one method's encoding (it refuses another) and is bounded: past
`max_bytes` the least recently used frames are dropped. A session uses it at inference only, and
not for methods whose encoder reads more than pixels (a stage hook: SAMWISE's adapters read text).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict

from torch import Tensor

from refseg.engine.hooks import MethodHooks
from refseg.sam.image_encoder import ImageFeatures


def frame_key(frame: Tensor) -> bytes:
    """A 16-byte digest of a uint8 frame [H, W, 3] (its shape and every pixel)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(tuple(frame.shape)).encode())
    digest.update(frame.contiguous().cpu().numpy().tobytes())
    return digest.digest()


def features_bytes(features: ImageFeatures) -> int:
    tensors = [*features.high_res, features.embed, features.pos, *features.trunk]
    return sum(t.numel() * t.element_size() for t in tensors)


class FeatureCache:
    """Least-recently-used store of one frame's `ImageFeatures` (T = 1) per key, at most
    `max_bytes` in all (default 1 GiB: about 1000 frames at 256 px, 60 at 1024 px)."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes: expected a positive size, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._owner: tuple[object, ...] | None = None
        self._entries: OrderedDict[bytes, tuple[ImageFeatures, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, model: object, hooks: MethodHooks, dtype: object = None) -> None:
        """Tie the cache to the first model, method encoding (the hooks' type, preprocessing
        and pixel window) and compute dtype that use it; refuse any other."""
        owner = (id(model), type(hooks), repr(hooks.preprocess), hooks.pixel_window, hooks.has_output_hook(), dtype)
        if self._owner is None:
            self._owner = owner
        elif owner != self._owner:
            raise ValueError("feature_cache: this cache holds another model's (or another method's) features; "
                             "give each model and hooks its own cache")

    def get(self, key: bytes) -> ImageFeatures | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, features: ImageFeatures) -> None:
        """Keep `features` (its `trunk` maps dropped: they only feed the encoder's output hook,
        which has run) and evict the least recently used entries beyond `max_bytes`."""
        kept = dataclasses.replace(features, trunk=[])
        size = features_bytes(kept)
        if key in self._entries:
            self.nbytes -= self._entries.pop(key)[1]
        self._entries[key] = (kept, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes and len(self._entries) > 1:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.nbytes -= dropped
