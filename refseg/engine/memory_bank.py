"""MemoryBank: exactly what SAM 2 attends to, and nothing else.

For an object on frame t, SAM 2 reads (SAM 2 paper, Sec. 4 and App. D):
  * the spatial memories of its prompted frames (all, or the `max_cond_frame_num` closest),
  * the spatial memories of the N - 1 frames t-1 ... t-N+1 (N = `num_maskmem`),
  * the object pointers of its prompted frames and of the M - 1 frames t-1 ... t-M+1
    (M = `max_object_pointers_in_encoder`).
The bank keeps those and drops everything else as the stream advances, so its size does not
depend on the stream length: per object at most `max_prompted` prompted entries, N - 1 recent
spatial memories and M - 1 recent pointers. Prompted frames beyond `max_prompted` are dropped
oldest first (the cap only matters for objects prompted on more than `max_prompted` frames).

A method that reads further back (SAM-I2V samples from the last 20 unprompted frames) sets
`keep_recent = K`: the last K unprompted entries are then kept whole, and memory is bounded by K
instead of N - 1. Entries can carry what such a method compares frames by (`MemoryEntry.key`,
`MemoryEntry.mask`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

from refseg.sam.memory import MemoryKV, MemoryReadout


@dataclass
class MemoryEntry:
    """One frame's memory of one object.

    features: [h*w, D] spatial memory (None once too old to be read).
    pointer:  [C] object pointer.
    kv:       the spatial memory's cached attention keys and values, or None.
    mask:     [4h, 4w] float32 mask logits the frame was segmented with (after presence gating
              and hole filling), kept when the method reads them (`MethodHooks.store_masks`).
    key:      [C, h, w] the frame's image embedding, kept when the method compares frames by it
              (`MethodHooks.store_keys`; one tensor shared by all objects of the frame).
    """

    frame: int
    features: Tensor | None
    pointer: Tensor
    kv: MemoryKV | None = None
    mask: Tensor | None = None
    key: Tensor | None = None

    @property
    def nbytes(self) -> int:
        tensors = [self.pointer, self.features, self.mask, self.key]
        size = sum(t.numel() * t.element_size() for t in tensors if t is not None)
        if self.kv is not None:
            size += self.kv.nbytes
        return size

    def forget_features(self) -> None:
        """Drop what only a spatial memory read needs (the pointer stays)."""
        self.features = self.kv = self.mask = self.key = None


class ObjectMemory:
    """The memory of one object."""

    def __init__(self, num_maskmem: int, max_pointers: int, max_prompted: int, max_selected_prompted: int,
                 keep_recent: int = 0) -> None:
        if max_prompted < 1:
            raise ValueError(f"max_prompted must be >= 1, got {max_prompted}")
        if keep_recent < 0:
            raise ValueError(f"keep_recent must be >= 0, got {keep_recent}")
        self.num_maskmem = num_maskmem
        self.max_pointers = max_pointers
        self.max_prompted = max_prompted
        self.max_selected_prompted = max_selected_prompted
        self.keep_recent = keep_recent
        self.prompted: dict[int, MemoryEntry] = {}
        self.recent: dict[int, MemoryEntry] = {}

    def __len__(self) -> int:
        return len(self.prompted) + len(self.recent)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.prompted.values()) + sum(e.nbytes for e in self.recent.values())

    def add(self, entry: MemoryEntry, prompted: bool) -> None:
        """Store the memory of frame `entry.frame` and forget what no later frame can read."""
        if prompted:
            self.recent.pop(entry.frame, None)
            self.prompted[entry.frame] = entry
            while len(self.prompted) > self.max_prompted:
                del self.prompted[min(self.prompted)]
        else:
            self.recent[entry.frame] = entry
        self._forget(entry.frame)

    def _forget(self, latest: int) -> None:
        # The next frame is latest + 1: it reads features back to offset N - 1 (or K) and
        # pointers to M - 1 (or K).
        keep_features_from = latest + 1 - max(self.num_maskmem - 1, self.keep_recent)
        keep_pointers_from = latest + 1 - max(self.max_pointers - 1, self.keep_recent)
        for frame in list(self.recent):
            entry = self.recent[frame]
            if frame < keep_pointers_from:
                del self.recent[frame]
            elif frame < keep_features_from and entry.features is not None:
                entry.forget_features()

    def copy(self) -> ObjectMemory:
        """An independent copy (tensors are shared: stored memories are never modified)."""
        other = ObjectMemory(self.num_maskmem, self.max_pointers, self.max_prompted, self.max_selected_prompted,
                             self.keep_recent)
        other.prompted = {t: dataclasses.replace(e) for t, e in self.prompted.items()}
        other.recent = {t: dataclasses.replace(e) for t, e in self.recent.items()}
        return other

    def readout(self, frame: int) -> MemoryReadout:
        """The memories and pointers SAM 2 attends to on `frame`, in its order."""
        selected, unselected = self.select_prompted(frame)
        out = MemoryReadout()
        for entry in selected.values():
            out.add_memory(_features(entry), -1, entry.kv, entry.mask)
        for offset in range(self.num_maskmem - 1, 0, -1):
            entry = self.recent.get(frame - offset) or unselected.get(frame - offset)
            if entry is not None and entry.features is not None:
                out.add_memory(entry.features, offset - 1, entry.kv, entry.mask)
        for entry in self.prompted.values():
            if entry.frame <= frame:
                out.add_pointer(entry.pointer, frame - entry.frame)
        for offset in range(1, self.max_pointers):
            if frame - offset < 0:
                break
            entry = self.recent.get(frame - offset)
            if entry is not None:
                out.add_pointer(entry.pointer, offset)
        return out

    def recent_before(self, frame: int, since: int) -> list[MemoryEntry]:
        """Unprompted entries of frames in [since, frame) that still hold a spatial memory, oldest
        first (the candidates a method may select from; at most `keep_recent` of them exist)."""
        return [self.recent[t] for t in sorted(self.recent)
                if since <= t < frame and self.recent[t].features is not None]

    def select_prompted(self, frame: int) -> tuple[dict[int, MemoryEntry], dict[int, MemoryEntry]]:
        """SAM 2's choice of prompted frames: the closest before and after, then the closest."""
        limit = self.max_selected_prompted
        if limit == -1 or len(self.prompted) <= limit:
            return dict(self.prompted), {}
        selected: dict[int, MemoryEntry] = {}
        before = max((t for t in self.prompted if t < frame), default=None)
        after = min((t for t in self.prompted if t >= frame), default=None)
        for t in (before, after):
            if t is not None:
                selected[t] = self.prompted[t]
        rest = sorted((t for t in self.prompted if t not in selected), key=lambda t: abs(t - frame))
        for t in rest[: limit - len(selected)]:
            selected[t] = self.prompted[t]
        return selected, {t: e for t, e in self.prompted.items() if t not in selected}


def _features(entry: MemoryEntry) -> Tensor:
    if entry.features is None:
        raise RuntimeError(f"prompted memory of frame {entry.frame} has no features")
    return entry.features


class MemoryBank:
    """Per-object memories of a stream (see the module docstring for what is kept).

    Args:
        num_maskmem: N, spatial memories attended to (prompted + N - 1 recent).
        max_pointers: M, object pointers attended to (prompted + M - 1 recent).
        max_prompted: prompted frames kept per object.
        max_selected_prompted: prompted frames attended to per frame (-1: all kept).
        keep_recent: K, unprompted entries kept whole per object when a method reads further
            back than N - 1 frames (0: only what SAM 2 reads).
    """

    def __init__(self, num_maskmem: int, max_pointers: int, max_prompted: int = 16,
                 max_selected_prompted: int = -1, keep_recent: int = 0) -> None:
        self.num_maskmem = num_maskmem
        self.max_pointers = max_pointers
        self.max_prompted = max_prompted
        self.max_selected_prompted = max_selected_prompted
        self.keep_recent = keep_recent
        self.objects: dict[int, ObjectMemory] = {}

    def object(self, obj_id: int) -> ObjectMemory:
        """The memory of `obj_id`, created empty on first use."""
        if obj_id not in self.objects:
            self.objects[obj_id] = ObjectMemory(self.num_maskmem, self.max_pointers, self.max_prompted,
                                                self.max_selected_prompted, self.keep_recent)
        return self.objects[obj_id]

    def has_memory(self, obj_id: int) -> bool:
        """Whether `obj_id` has a memory to track from (prompted, or recent for an object started
        without a prompted frame)."""
        return obj_id in self.objects and len(self.objects[obj_id]) > 0

    def copy(self) -> MemoryBank:
        """An independent copy of the bank (see `ObjectMemory.copy`)."""
        other = MemoryBank(self.num_maskmem, self.max_pointers, self.max_prompted, self.max_selected_prompted,
                           self.keep_recent)
        other.objects = {o: m.copy() for o, m in self.objects.items()}
        return other

    def remove(self, obj_id: int) -> None:
        self.objects.pop(obj_id, None)

    @property
    def num_entries(self) -> int:
        """Stored frame memories over all objects."""
        return sum(len(o) for o in self.objects.values())

    @property
    def nbytes(self) -> int:
        """Bytes of all stored tensors."""
        return sum(o.nbytes for o in self.objects.values())
