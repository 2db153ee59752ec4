"""The streaming engine: `Session.push(frame) -> FrameResult`, one loop for every method.

Per frame (DESIGN.md, "The engine and the method contract"):
  1. encode the frame (or a clip of T frames) into multi-scale features   [hook: encode_stage]
  2. per object, condition the embedding on its memories                  [hook: select_memories]
  3. prompt tokens: clicks / boxes / masks given for this frame, plus     [hook: prompt_tokens]
  4. the SAM head: masks, IoU, presence, object pointer
  5. choose what goes into memory                                         [hook: memory_mask]
  6. memory encoder (all objects in one batch) -> MemoryBank
The stream's length is never needed and nothing per frame is kept beyond what the bank keeps.

A frame on which an object gets a click, box or mask is a prompted ("conditioning") frame for
that object: it is decoded without memory, as in SAM 2, and its memory is kept among the
prompted memories. Objects can be added on any frame, including late ones; an object is tracked
from the frame of its first prompt on.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from refseg.engine.feature_cache import FeatureCache, frame_key
from refseg.engine.hooks import MethodHooks
from refseg.engine.memory_bank import MemoryBank, MemoryEntry
from refseg.prompts import Box, Mask, Points, Prompt
from refseg.sam.image_encoder import ImageFeatures
from refseg.sam.mask_decoder import DecoderOutput, decode_masks, fill_holes, mask_as_output, with_holes_filled
from refseg.sam.memory import (MemoryReadout, condition_objects, condition_on_memory, encode_memory, memory_kv,
                               memory_position_encoding, memory_rope, readout_layout)
from refseg.sam.model import Sam2
from refseg.sam.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, PointPrompt, embed_prompts

log = logging.getLogger(__name__)


@dataclass
class ObjectResult:
    """One object on one frame.

    mask:   [H, W] bool at the input frame's resolution (logits > 0).
    logits: [H, W] float32 mask logits at the input resolution.
    low_res_logits: [4h, 4w] float32 logits as the model predicts them (h = S/16); in a session
            with `grad=True` this one keeps its autograd graph and device (train on it).
    score:  presence logit; the object is `present` when it is > 0.
    iou:    the model's estimate of the mask's IoU.
    output: in a session with `grad=True`, the SAM head's output with its graph (to train on).
    """

    mask: np.ndarray
    logits: Tensor
    low_res_logits: Tensor
    score: float
    iou: float
    output: DecoderOutput | None = None

    @property
    def present(self) -> bool:
        return self.score > 0


@dataclass
class FrameResult:
    """Results of one frame: `objects` maps each tracked object id to its `ObjectResult`."""

    index: int
    height: int
    width: int
    objects: dict[int, ObjectResult]

    def masks(self) -> dict[int, np.ndarray]:
        """Object id -> [H, W] bool mask."""
        return {obj_id: r.mask for obj_id, r in self.objects.items()}


@dataclass
class _FramePrompt:
    """The prompts of one object on one frame, in model coordinates."""

    points: PointPrompt | None = None
    mask: Tensor | None = None  # [1, 1, S, S] in {0, 1}


class Session:
    """A stream being segmented.

    Args:
        model: the SAM 2 parts (`refseg.sam.Sam2`), on the device to run on.
        hooks: the method's hooks (default: plain SAM 2).
        memory_dtype: storage dtype of spatial memories; default bfloat16 at inference (as SAM 2
            keeps them), float32 with `grad` (training keeps full precision through memory).
        max_prompted_frames: prompted frames kept per object (see `MemoryBank`).
        grad: keep the autograd graph (training through memory); inference mode otherwise.
        kv_cache: keep each spatial memory's attention keys and values (computed once when it is
            stored instead of on every frame that reads it; see `refseg.sam.memory.MemoryKV`).
            Costs 2 x layers x h*w x 256 floats per stored memory (32 MiB at 1024 px, 2 MiB
            at 256 px). Inference only: ignored when `grad` is set.
        num_frames: the video's length when known in advance (a file, not a live stream). The
            official predictor normalises object-pointer distances by min(num_frames, M) - 1
            (M = `max_object_pointers_in_encoder`, 16), so a video shorter than 16 frames is
            tracked differently from a stream; give its length to get the official masks.
            None (a stream): M - 1, what the official code does for 16 frames or more.
        seed: seed of the random numbers a method's memory selection may draw
            (`MethodHooks.select_memories`); the same seed gives the same masks.
        feature_cache: features of frames already encoded by this model and hooks, shared with
            other sessions that push the same frames (`refseg.engine.feature_cache`); the masks
            are the same with and without it. Inference only, and not with a stage hook.
        dtype: torch.float32, or torch.bfloat16 to compute the image encoder, memory attention,
            decoders and memory encoder in bfloat16 (autocast: weights stay float32; norms,
            softmax and the logits returned stay float32); default the model's
            `inference_dtype` (float32 unless `refseg.load(dtype=...)` set it). Masks agree with
            float32 to IoU >= 0.99 on the shipped SynthRef models (tests/test_dtype.py).
        batch_objects: decode the objects tracked from memory on a frame (no click, box or mask
            there) together: memory attention and the SAM head run once for each group of
            objects whose memories have one layout (`refseg.sam.memory.readout_layout`), as SAM 2's
            own predictor batches objects; the masks equal one-by-one decoding to float rounding.
            Inference with the key/value cache only; False decodes one object at a time.
    """

    def __init__(
        self,
        model: Sam2,
        hooks: MethodHooks | None = None,
        *,
        memory_dtype: torch.dtype | None = None,
        max_prompted_frames: int = 16,
        grad: bool = False,
        kv_cache: bool = True,
        num_frames: int | None = None,
        seed: int = 0,
        feature_cache: FeatureCache | None = None,
        dtype: torch.dtype | None = None,
        batch_objects: bool = True,
    ) -> None:
        self.model = model
        self.hooks = hooks if hooks is not None else MethodHooks()
        self.memory_dtype = memory_dtype or (torch.float32 if grad else torch.bfloat16)
        self.dtype = dtype or getattr(model, "inference_dtype", torch.float32)
        if self.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype: a session computes in torch.float32 or torch.bfloat16, not {self.dtype}")
        self.grad = grad
        self.kv_cache = kv_cache and not grad
        self.batch_objects = batch_objects and self.kv_cache
        self.num_frames = num_frames
        self.device = model.no_memory_embedding.device
        self.bank = MemoryBank(model.num_maskmem, model.max_object_pointers, max_prompted_frames,
                               int(model.config.max_cond_frame_num), self.hooks.keep_recent)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._pending: dict[int, dict[int, list[Prompt]]] = {}
        self._next = 0
        self._history: list[Tensor] = []  # model inputs [3, S, S] of the last pixel_window - 1 frames
        self._history_keys: list[bytes] = []  # their `frame_key`s, with a feature cache
        self.feature_cache = None
        if feature_cache is not None and not grad and not self.hooks.has_stage_hook():
            feature_cache.claim(model, self.hooks, self.dtype)
            self.feature_cache = feature_cache
        with torch.inference_mode(not grad):
            self._memory_pos = memory_position_encoding(model)
            self._rope = memory_rope(model)

    # -- prompts ---------------------------------------------------------------------------------
    @property
    def frame_index(self) -> int:
        """Index the next pushed frame will get."""
        return self._next

    @property
    def object_ids(self) -> list[int]:
        """Ids of the objects being tracked (prompted on a past frame)."""
        return [o for o in self.bank.objects if self.bank.has_memory(o)]

    def add_prompt(self, obj_id: int, prompt: Prompt, frame: int | None = None) -> None:
        """Prompt object `obj_id` on `frame` (default: the next pushed frame).

        Clicks and a box on the same frame combine; a mask replaces other prompts of that frame.
        New ids start new objects, on any frame.
        """
        frame = self._next if frame is None else int(frame)
        if frame < self._next:
            raise ValueError(f"frame {frame} was already pushed; prompts apply to frame {self._next} or later")
        if not isinstance(prompt, (Points, Box, Mask)):
            raise TypeError(f"prompt must be Points, Box or Mask, got {type(prompt).__name__}")
        self._pending.setdefault(frame, {}).setdefault(int(obj_id), []).append(prompt)

    def add_object(self, obj_id: int, frame: int | None = None) -> None:
        """Start tracking `obj_id` from `frame` (default: the next pushed frame) without a click,
        box or mask: the method's prompt tokens (text, audio) prompt it on every frame."""
        frame = self._next if frame is None else int(frame)
        if frame < self._next:
            raise ValueError(f"frame {frame} was already pushed; objects start on frame {self._next} or later")
        self._pending.setdefault(frame, {}).setdefault(int(obj_id), [])

    def fork(self) -> Session:
        """A copy of this session at this point of the stream, sharing the model.

        The copy and the original then advance independently; memory is shared until either
        changes it, so a fork costs a few dictionaries. Interactive tools use it to try clicks
        on a frame and keep the result they want.
        """
        other = copy.copy(self)
        other.bank = self.bank.copy()
        other.generator = torch.Generator().set_state(self.generator.get_state())
        other._history = list(self._history)
        other._history_keys = list(self._history_keys)
        other._pending = {t: {o: list(p) for o, p in objs.items()} for t, objs in self._pending.items()}
        return other

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking `obj_id` and free its memory."""
        self.bank.remove(obj_id)
        for prompts in self._pending.values():
            prompts.pop(obj_id, None)

    # -- frames ----------------------------------------------------------------------------------
    def push(self, frame: np.ndarray | Tensor) -> FrameResult:
        """Segment the next frame: an H x W x 3 uint8 RGB array of any size."""
        if self.hooks.clip_len != 1:
            raise RuntimeError(f"this method reads clips of {self.hooks.clip_len} frames: use push_clip")
        return self.push_clip([frame])[0]

    def skip(self, frame: np.ndarray | Tensor) -> FrameResult:
        """Pass over the next frame without segmenting it: no object gets a mask or a memory there
        (a method with nothing to prompt the frame with: GLUS when its LLM gives no [SEG]). The
        frame still counts in the stream's indices and in a method's pixel window; objects that were
        to start on it (`add_object`) start on the next frame."""
        tensor = self._check_frame(frame, self._next)
        starting = self._pending.get(self._next, {})
        given = [o for o, prompts in starting.items() if prompts]
        if given:
            raise ValueError(f"frame {self._next}: object {given[0]} has clicks, a box or a mask there; "
                             "a frame with prompts cannot be skipped")
        n = self.hooks.pixel_window
        if n > 0:
            with torch.inference_mode(not self.grad):
                self._pixel_window(self.hooks.preprocess.pixels(tensor[None], self.model.image_size))
            if self.feature_cache is not None and n > 1:
                self._history_keys = [*self._history_keys, frame_key(tensor)][-(n - 1):]
        for obj_id in self._pending.pop(self._next, {}):
            self._pending.setdefault(self._next + 1, {}).setdefault(obj_id, [])
        self._next += 1
        return FrameResult(self._next - 1, tensor.shape[0], tensor.shape[1], {})

    def push_clip(self, frames: Iterable[np.ndarray | Tensor]) -> list[FrameResult]:
        """Segment the next frames together (the image encoder sees them as one clip)."""
        tensors = self.check_frames(frames)
        if not tensors:
            return []
        with self.computing():
            pixels = torch.cat([self.hooks.preprocess.pixels(t[None], self.model.image_size) for t in tensors])
            windows = self._pixel_window(pixels)
            features = self._encode(pixels, windows) if self.feature_cache is None else self._cached(tensors, pixels, windows)
            return self._track_clip(tensors, features)

    def push_encoded(self, frames: list[Tensor], features: list[ImageFeatures]) -> list[FrameResult]:
        """Segment the next frames (as `check_frames` gives them) from features encoded outside
        the session, `features[i]` being what this session's model and hooks make of `frames[i]`:
        a method that encodes one clip for several sessions at once (SAMWISE's expressions).
        Not for methods with a pixel window (`MethodHooks.pixel_window`), whose history the
        session keeps."""
        if len(features) != len(frames):
            raise ValueError(f"push_encoded: {len(features)} features for {len(frames)} frames")
        if self.hooks.pixel_window > 0:
            raise ValueError("push_encoded: this method reads a window of past frames; use push_clip")
        with self.computing():
            return self._track_clip(frames, features)

    def _track_clip(self, tensors: list[Tensor], features: list[ImageFeatures]) -> list[FrameResult]:
        results = []
        for i, frame in enumerate(tensors):
            results.append(self._track(self._next, features[i], frame.shape[0], frame.shape[1]))
            self._next += 1
        return results

    def check_frames(self, frames: Iterable[np.ndarray | Tensor]) -> list[Tensor]:
        """The next frames as [H, W, 3] uint8 tensors on the session's device; one that is not an
        H x W x 3 uint8 RGB array is a `ValueError` naming its index."""
        return [self._check_frame(f, self._next + i) for i, f in enumerate(frames)]

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        """The session's compute context: inference mode (unless `grad`) and matrix products in
        the session's dtype (inference in bfloat16: image encoder, memory attention, decoders and
        memory encoder; norms, softmax and the returned logits stay float32). Training sessions
        always compute in float32."""
        with torch.inference_mode(not self.grad), torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16 and not self.grad):
            yield

    def _encode(self, pixels: Tensor, windows: Tensor | None) -> list[ImageFeatures]:
        """Per-frame features of the model inputs [T, 3, S, S] (their windows [T, n, 3, S, S])."""
        hook = self.hooks.encode_stage if self.hooks.has_stage_hook() else None
        features = self.model.encode_images(pixels, hook)
        if self.hooks.has_output_hook():
            features = self.hooks.encode_output(windows, features)
        return [features.frame(i) for i in range(len(features))]

    def _cached(self, tensors: list[Tensor], pixels: Tensor, windows: Tensor | None) -> list[ImageFeatures]:
        """`_encode` through the feature cache: frames whose content (and window) it holds are not
        encoded again (without a stage hook every frame's features depend on its pixels alone)."""
        assert self.feature_cache is not None
        n = self.hooks.pixel_window
        keys = []
        for frame in tensors:
            key = frame_key(frame)
            keys.append(b"".join([*self._history_keys, key]) if n > 1 else key)
            self._history_keys = [*self._history_keys, key][-(n - 1):] if n > 1 else []
        found = {i: self.feature_cache.get(key) for i, key in enumerate(keys)}
        missing = [i for i, f in found.items() if f is None]
        if missing:
            index = torch.tensor(missing, device=pixels.device)
            fresh = self._encode(pixels[index], None if windows is None else windows[index])
            for i, features in zip(missing, fresh):
                self.feature_cache.put(keys[i], features)
                found[i] = features
        return [found[i] for i in range(len(tensors))]  # type: ignore[misc]

    def _pixel_window(self, pixels: Tensor) -> Tensor | None:
        """[T, n, 3, S, S] windows of the clip's frames (see `MethodHooks.encode_output`), and the
        history advanced past the clip."""
        n = self.hooks.pixel_window
        if n <= 0:
            return None
        windows = []
        for frame in pixels:
            past = self._history[-(n - 1):] if n > 1 else []
            windows.append(torch.stack([*past, *[frame] * (n - len(past))]))
            self._history = [*past, frame][-(n - 1):] if n > 1 else []
        return torch.stack(windows)

    def _check_frame(self, frame: np.ndarray | Tensor, index: int) -> Tensor:
        shape = tuple(frame.shape)
        dtype = frame.dtype
        if len(shape) != 3 or shape[2] != 3 or shape[0] == 0 or shape[1] == 0 or dtype not in (np.uint8, torch.uint8):
            raise ValueError(f"frame {index}: expected an H x W x 3 uint8 RGB array, got shape {shape} dtype {dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(frame)) if isinstance(frame, np.ndarray) else frame
        return tensor.to(self.device)

    # -- the loop --------------------------------------------------------------------------------
    def _track(self, t: int, features: ImageFeatures, height: int, width: int) -> FrameResult:
        model = self.model
        prompts = {o: self._frame_prompt(p, height, width) if p else _FramePrompt()
                   for o, p in self._pending.pop(t, {}).items()}
        outputs: dict[int, DecoderOutput] = {}
        read: dict[int, Tensor] = {}  # the embedding each object's decoder read [1, C, h, w]
        prompted: dict[int, bool] = {}
        order = list(dict.fromkeys([*self.object_ids, *prompts]))
        unprompted = [o for o in order if self.batch_objects and self.bank.has_memory(o)
                      and prompts.get(o, _FramePrompt()).points is None and prompts.get(o, _FramePrompt()).mask is None]
        batched = self._decode_tracked(t, unprompted, features) if len(unprompted) > 1 else {}
        for obj_id in order:
            prompt = prompts.get(obj_id, _FramePrompt())
            if obj_id in batched:
                outputs[obj_id], read[obj_id] = batched[obj_id]
            elif prompt.mask is not None:
                extra = self.hooks.prompt_tokens(t, obj_id, features, features.embed, None, False)
                outputs[obj_id] = mask_as_output(model, features.high_res, features.embed, prompt.mask, extra)
                read[obj_id] = features.embed
            else:
                outputs[obj_id], read[obj_id] = self._decode(t, obj_id, features, prompt.points)
        given = {o for o, p in prompts.items() if p.points is not None or p.mask is not None}
        for obj_id in outputs:
            starting = obj_id in prompts or not self.bank.has_memory(obj_id)
            prompted[obj_id] = obj_id in given or (starting and self.hooks.prompted_start)
            if prompted[obj_id] and prompts.get(obj_id, _FramePrompt()).mask is None and self.hooks.fill_holes:
                # SAM 2 encodes a prompted frame's memory from its output mask, holes filled
                outputs[obj_id] = with_holes_filled(self.model, outputs[obj_id], self.hooks.fill_holes)
        # the output masks, holes filled once: what the user gets and what a method's memory keeps
        filled = {o: fill_holes(out.low_res.float(), self.hooks.fill_holes) for o, out in outputs.items()}
        if outputs:
            self._write_memory(t, features, outputs, read, filled, prompted, binarize={o: o in given for o in outputs})
        return FrameResult(t, height, width, {o: self._result(out, filled[o], height, width) for o, out in outputs.items()})

    def _decode(self, t: int, obj_id: int, features: ImageFeatures,
                points: PointPrompt | None) -> tuple[DecoderOutput, Tensor]:
        """The decoder's output for `obj_id` and the embedding it read (memory-conditioned, or with
        the no-memory embedding added)."""
        model = self.model
        conditioning = points is not None or not self.bank.has_memory(obj_id)
        readout = None
        if conditioning:
            embed = features.embed + model.no_memory_embedding.view(1, -1, 1, 1)
        else:
            readout = self._readout(t, obj_id, features)
            embed = condition_on_memory(model, features.embed, features.pos, readout, self._memory_pos,
                                        self._rope if self.kv_cache else None)
        extra = self.hooks.prompt_tokens(t, obj_id, features, embed, readout, points is not None)
        sparse, dense = embed_prompts(model.prompt_encoder, 1, points=points, extra=extra)
        multimask = self._multimask(conditioning, points) if self.hooks.multimask is None else self.hooks.multimask
        out = decode_masks(model, features.high_res, embed, sparse, dense, multimask,
                           self.hooks.stability_fallback, self.hooks.presence_gate)
        return out, embed

    def _readout(self, t: int, obj_id: int, features: ImageFeatures) -> MemoryReadout:
        readout = self.hooks.select_memories(t, obj_id, self.bank.object(obj_id), features, self.generator)
        if readout.pointer_span is None and self.num_frames is not None:
            # the official predictor's span for a short video
            readout.pointer_span = min(self.num_frames, self.model.max_object_pointers) - 1
        return readout

    def _decode_tracked(self, t: int, ids: list[int], features: ImageFeatures) -> dict[int, tuple[DecoderOutput, Tensor]]:
        """`_decode` of objects tracked from memory (no prompt on frame `t`), in batches: memory
        attention per group of one readout layout, the SAM head per group of one prompt shape."""
        model = self.model
        readouts = {o: self._readout(t, o, features) for o in ids}  # in order: a method's draws stay the same
        layouts: dict[tuple, list[int]] = {}
        for o in ids:
            layouts.setdefault(readout_layout(readouts[o]), []).append(o)
        embeds: dict[int, Tensor] = {}
        for group in layouts.values():
            cached = all(kv is not None for o in group for kv in readouts[o].kv)
            if len(group) > 1 and cached:
                rows = condition_objects(model, features.embed, features.pos, [readouts[o] for o in group], self._rope)
                embeds.update({o: rows[i : i + 1] for i, o in enumerate(group)})
            else:
                embeds.update({o: condition_on_memory(model, features.embed, features.pos, readouts[o], self._memory_pos,
                                                      self._rope) for o in group})
        prompts = {o: embed_prompts(model.prompt_encoder, 1, extra=self.hooks.prompt_tokens(
            t, o, features, embeds[o], readouts[o], False)) for o in ids}
        multimask = self._multimask(False, None) if self.hooks.multimask is None else self.hooks.multimask
        shapes: dict[tuple, list[int]] = {}
        for o in ids:
            shapes.setdefault(tuple(prompts[o][0].shape), []).append(o)
        out: dict[int, tuple[DecoderOutput, Tensor]] = {}
        for group in shapes.values():
            n = len(group)
            decoded = decode_masks(model, [f.expand(n, -1, -1, -1) for f in features.high_res],
                                   torch.cat([embeds[o] for o in group]), torch.cat([prompts[o][0] for o in group]),
                                   torch.cat([prompts[o][1] for o in group]), multimask, self.hooks.stability_fallback,
                                   self.hooks.presence_gate)
            for i, o in enumerate(group):
                row = DecoderOutput(*(getattr(decoded, f.name)[i : i + 1] for f in dataclasses.fields(DecoderOutput)))
                out[o] = (row, embeds[o])
        return out

    def _multimask(self, conditioning: bool, points: PointPrompt | None) -> bool:
        """SAM 2's rule: several candidate masks when there are 0 or 1 clicks (ambiguous)."""
        c = self.model.config
        num_points = 0 if points is None else points.num_points
        return bool(c.multimask_output_in_sam and (conditioning or c.multimask_output_for_tracking)
                    and c.multimask_min_pt_num <= num_points <= c.multimask_max_pt_num)

    def _write_memory(self, t: int, features: ImageFeatures, outputs: dict[int, DecoderOutput], read: dict[int, Tensor],
                      filled: dict[int, Tensor], prompted: dict[int, bool], binarize: dict[int, bool]) -> None:
        ids = list(outputs)
        masks = torch.cat([self.hooks.memory_mask(t, o, features, outputs[o]) for o in ids])
        scores = torch.cat([outputs[o].object_score for o in ids])
        flags = torch.tensor([binarize[o] and not self.grad for o in ids], device=self.device)
        if self.hooks.memory_reads_decoder_input:
            embed = torch.cat([read[o] for o in ids])
        else:
            embed = features.embed.expand(len(ids), -1, -1, -1)
        memories = encode_memory(self.model, embed, masks, scores, flags, self.memory_dtype)
        key = features.embed[0] if self.hooks.store_keys else None
        for i, obj_id in enumerate(ids):
            kv = memory_kv(self.model, memories[i], self._memory_pos, self._rope) if self.kv_cache else None
            # float32 whatever the memory's dtype: methods threshold these logits near 0
            mask = filled[obj_id][0, 0] if self.hooks.store_masks else None
            entry = MemoryEntry(t, memories[i], outputs[obj_id].pointer[0], kv, mask, key)
            self.bank.object(obj_id).add(entry, prompted[obj_id])

    def _frame_prompt(self, prompts: list[Prompt], height: int, width: int) -> _FramePrompt:
        size, preprocess = self.model.image_size, self.hooks.preprocess
        masks = [p for p in prompts if isinstance(p, Mask)]
        if masks:
            masks[-1].check_inside(height, width)
            mask = torch.from_numpy(masks[-1].mask).to(self.device, torch.float32)[None, None]
            return _FramePrompt(mask=preprocess.mask(mask, size))
        coords: list[list[float]] = []
        labels: list[int] = []
        boxes = [p for p in prompts if isinstance(p, Box)]
        if boxes:
            b = boxes[-1]
            b.check_inside(height, width)
            coords += [[b.x0, b.y0], [b.x1, b.y1]]
            labels += [BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]
        for p in prompts:
            if isinstance(p, Points):
                p.check_inside(height, width)
                coords += p.xy.tolist()
                labels += p.labels.tolist()
        xy = torch.tensor(coords, dtype=torch.float32, device=self.device)
        xy = preprocess.points(xy, height, width, size)
        lab = torch.tensor(labels, dtype=torch.int32, device=self.device)
        return _FramePrompt(points=PointPrompt(xy[None], lab[None]))

    def _result(self, out: DecoderOutput, low: Tensor, height: int, width: int) -> ObjectResult:
        """The user's view of `out`, whose low-res logits with holes filled are `low` [1, 1, 4h, 4w]."""
        logits = self.hooks.preprocess.logits(low.float(), height, width, self.model.image_size)[0, 0]
        logits = logits.detach().float().cpu()
        low_res = low[0, 0] if self.grad else low[0, 0].detach().float().cpu()
        return ObjectResult(mask=(logits > 0).numpy(), logits=logits, low_res_logits=low_res,
                            score=float(out.object_score[0, 0].detach()), iou=float(out.iou[0, 0].detach()),
                            output=out if self.grad else None)
