"""Runs of `refseg serve`: a job's objects streamed through the methods the server loaded.

A run splits a job's objects into parts, one stream each:
  - the **text part**: every object with a text, segmented by the chosen text method (SAMWISE,
    EVF-SAM, GLUS or SAM2-LOVE); under EVF-SAM an object's clicks and box on its text's frame
    join the text (the text prompts that frame; SAM 2 tracks the rest);
  - the **click part**: every object with clicks or boxes only, tracked by the chosen click
    method (SAM 2 or SAM-I2V) in one engine `Session`.
Each part's results are the ones `refseg segment` gives for the same objects: parts never see
each other's objects.

Reruns redo only what changed. A part asked exactly what it answered before keeps its masks. A
click part whose prompts only grew (a correction click, a new clicked object) restarts from a
snapshot of its session taken before the earliest frame the new prompts touch (snapshots are
`Session.fork`s kept every `snapshot_every` frames, at most `max_snapshots`, thinned evenly as a
video grows; their memory banks are bounded, so they cost at most `max_snapshots` banks); frames
before it keep their masks. A stopped run continues the same way. Text methods read the text on
every frame (or the whole clip), so a text part that changed reruns from frame 0.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from refseg.engine import Session
from refseg.engine.session import FrameResult
from refseg.errors import InputError
from refseg.io.atomic import atomic_file
from refseg.io.masks import overlay
from refseg.io.outputs import OutputWriter
from refseg.io.rle import decode_rle, encode_rle
from refseg.io.video import frames
from refseg.methods.evf_sam import EvfSam
from refseg.methods.glus import Glus
from refseg.methods.sam2_love import Sam2Love
from refseg.methods.sam_i2v import SamI2V
from refseg.methods.samwise import Samwise
from refseg.prompts import Box, Points
from refseg.sam import Sam2
from refseg.serve.jobs import Job, ObjectSpec, save_jpeg

log = logging.getLogger(__name__)

TEXT_METHODS = {Samwise: "samwise", EvfSam: "evf-sam", Glus: "glus", Sam2Love: "sam2-love"}
CLICK_METHODS = {Sam2: "sam2", SamI2V: "sam-i2v"}
ALPHA, CONTOUR = 0.45, 2  # the overlay of `refseg segment` (refseg.io.outputs)


@dataclass
class Methods:
    """The models a server loaded: text methods and click methods, by method name."""

    text: dict[str, object] = field(default_factory=dict)
    click: dict[str, Sam2 | SamI2V] = field(default_factory=dict)

    @classmethod
    def of(cls, models: list[object]) -> Methods:
        methods = cls()
        for model in models:
            name = next((n for k, n in TEXT_METHODS.items() if isinstance(model, k)), None)
            if name is not None:
                methods.text[name] = model
                continue
            name = next((n for k, n in CLICK_METHODS.items() if isinstance(model, k)), None)
            if name is None:
                raise TypeError(f"refseg serve cannot run a {type(model).__name__}")
            methods.click[name] = model
        return methods

    def describe(self) -> list[dict]:
        rows = [{"name": n, "kind": "text", "clicks": n == "evf-sam"} for n in self.text]
        return rows + [{"name": n, "kind": "click", "clicks": True} for n in self.click]


@dataclass
class PartState:
    """What a part last answered: its `signature` (what it was asked), `done` (frames 0..done-1
    answered under it) and, for a click part, session snapshots by the frame they precede."""

    signature: object
    done: int = 0
    snapshots: dict[int, Session] = field(default_factory=dict)


@dataclass
class Part:
    """One stream of a run. `ids` maps the stream's object ids to the job's; the stream starts at
    frame `start` (frames before it keep their masks)."""

    key: str
    state: PartState
    start: int
    open: Callable[[], object]  # -> a stream with push(frame) -> list[FrameResult] and flush()
    ids: dict[int, int]
    results: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # frame -> job id -> mask
    delivered: int = 0


def _prompt_key(frame: int, order: int, prompt: object) -> tuple:
    if isinstance(prompt, Box):
        return (frame, order, "box", prompt.x0, prompt.y0, prompt.x1, prompt.y1)
    assert isinstance(prompt, Points)
    return (frame, order, "points", tuple(prompt.xy.ravel().tolist()), tuple(prompt.labels.tolist()))


def _click_signature(objects: list[ObjectSpec]) -> frozenset:
    return frozenset((o.id, *_prompt_key(t, k, p)) for o in objects for t, ps in o.prompts.items()
                     for k, p in enumerate(ps))


def plan(job: Job, methods: Methods, text_method: str | None, click_method: str | None,
         snapshot_every: int = 8, max_snapshots: int = 16) -> list[Part]:
    """The parts a run of `job` must (re)run; `InputError` (one line) when the objects cannot be
    run with the methods chosen. Parts whose answers stand are left out."""
    objects = sorted(job.objects.values(), key=lambda o: o.id)
    if not objects:
        raise InputError("nothing to segment: add an object (a text, a click or a box) first")
    texts = [o for o in objects if o.text]
    clicked = [o for o in objects if not o.text]
    parts = []
    if texts:
        parts.append(_text_part(job, methods, text_method, texts))
    if clicked:
        parts.append(_click_part(job, methods, click_method, clicked, snapshot_every, max_snapshots))
    return [p for p in parts if p is not None]


def _chosen(kind: str, table: dict, name: str | None, first: ObjectSpec) -> str:
    """The method of `kind` ("text" or "click") a run uses: `name`, or the first loaded."""
    name = name or next(iter(table), None)
    if name is None:
        what, flag = ("a text", "--model") if kind == "text" else ("clicks or a box only", "--sam2")
        raise InputError(f"object {first.id} has {what}, and this server loaded no {kind} method (start it with {flag})")
    if name not in table:
        raise InputError(f"{kind} method {name!r}: not loaded; this server has {', '.join(table) or 'none'}")
    return name


def _text_part(job: Job, methods: Methods, name: str | None, objects: list[ObjectSpec]) -> Part | None:
    name = _chosen("text", methods.text, name, objects[0])
    model = methods.text[name]
    prompted = [o for o in objects if o.prompts]
    if prompted and name != "evf-sam":
        raise InputError(f"object {prompted[0].id}: {name} reads its text alone; clicks and boxes correct a text "
                         "object under evf-sam, or make a new clicked object")
    frame = objects[0].frame if name == "evf-sam" else 0
    for o in objects:
        if name == "evf-sam" and o.frame != frame:
            raise InputError(f"object {o.id}: EVF-SAM reads every text on one frame; object {objects[0].id}'s is "
                             f"on frame {frame}, this one's on frame {o.frame}")
        wrong = [t for t in o.prompts if t != frame]
        if wrong:
            raise InputError(f"object {o.id}: EVF-SAM takes clicks with the text on the text's frame {frame}, "
                             f"not on frame {wrong[0]}")
    texts = [o.text or "" for o in objects]
    signature = (name, tuple((o.id, o.text, o.frame) for o in objects), _click_signature(objects))
    key = f"text:{name}"
    state = job.parts.get(key)
    if isinstance(state, PartState) and state.signature == signature and state.done == job.num_frames:
        return None
    state = PartState(signature)

    def open_stream() -> object:
        if isinstance(model, EvfSam):
            stream = model.stream(texts, frame=frame)
            for k, o in enumerate(objects, start=1):
                for prompt in (p for ps in o.prompts.values() for p in ps):
                    stream.add_prompt(k, prompt)
            return stream
        if isinstance(model, Sam2Love):
            return model.stream(texts, sound, job.fps)
        return model.stream(texts)

    sound = None
    if isinstance(model, Sam2Love):
        from refseg.io.audio import read_audio

        try:
            sound = read_audio(job.input)
        except InputError as err:
            raise InputError(f"{job.name}: sam2-love hears the input's sound: {str(err).split(': ', 1)[-1]}") from None
    return Part(key, state, 0, open_stream, {k: o.id for k, o in enumerate(objects, start=1)})


def _click_part(job: Job, methods: Methods, name: str | None, objects: list[ObjectSpec],
                every: int, limit: int) -> Part | None:
    name = _chosen("click", methods.click, name, objects[0])
    model = methods.click[name]
    signature = _click_signature(objects)
    key = f"click:{name}"
    old = job.parts.get(key)
    if isinstance(old, PartState) and old.signature == signature and old.done == job.num_frames:
        return None
    start, snapshots = 0, {}
    if isinstance(old, PartState) and old.signature <= signature:  # prompts only added: continue
        new_frames = [item[1] for item in signature - old.signature]
        needed = min([old.done, *new_frames])
        start = max(t for t in [0, *old.snapshots] if t <= needed)
        snapshots = {t: s for t, s in old.snapshots.items() if t <= start}
    state = PartState(signature, start, snapshots)
    old_keys = old.signature if isinstance(old, PartState) and start else frozenset()

    def open_stream() -> _SessionStream:
        if start in state.snapshots:
            session = state.snapshots[start].fork()
        else:
            session = model.session() if isinstance(model, SamI2V) else Session(model)
        for o in objects:
            for t, prompts in sorted(o.prompts.items()):
                for k, prompt in enumerate(prompts):
                    if start == 0 or (o.id, *_prompt_key(t, k, prompt)) not in old_keys:
                        session.add_prompt(o.id, prompt, frame=t)
        return _SessionStream(session, state, every, limit)

    return Part(key, state, start, open_stream, {o.id: o.id for o in objects})


class _SessionStream:
    """An engine `Session` as a stream (one result per frame), snapshotting itself before frames."""

    def __init__(self, session: Session, state: PartState, every: int, limit: int) -> None:
        self.session, self.state, self.every, self.limit = session, state, every, limit

    def push(self, frame: np.ndarray) -> list[FrameResult]:
        t = self.session.frame_index
        if t % self.every == 0 and t not in self.state.snapshots:
            self.state.snapshots[t] = self.session.fork()
            if len(self.state.snapshots) > self.limit:  # keep every other one: even spacing, bounded count
                kept = sorted(self.state.snapshots)
                for drop in kept[1::2]:
                    del self.state.snapshots[drop]
                self.every *= 2
        return [self.session.push(frame)]

    def flush(self) -> list[FrameResult]:
        return []


def execute(job: Job, parts: list[Part], run_lock: threading.Lock) -> None:
    """Run `parts` over the job's frames (in a thread of its own): masks into `job.masks`, an
    overlay per frame, an event per frame; when every object has a mask on every frame, the
    outputs of `refseg segment` under `out/`. Never raises: a failure ends the run as "failed"."""
    try:
        with job.lock:
            job.state, job.message = "queued", ""
        with run_lock, torch.inference_mode():
            if job.stop.is_set():
                return end_run(job, "stopped", "stopped before it started")
            with job.lock:
                job.state = "running"
            _stream(job, parts)
            if job.stop.is_set():
                return end_run(job, "stopped", f"stopped at frame {job.progress[0]}")
            _write_outputs(job)
            end_run(job, "done", f"{job.num_frames} frames")
    except Exception as err:  # one job's failure never stops the server
        log.exception("job %s: run failed", job.id)
        end_run(job, "failed", f"{type(err).__name__}: {' '.join(str(err).split())}")
    finally:
        with job.lock:
            removed = job.removed
        if removed:  # deleted while it ran
            shutil.rmtree(job.folder, ignore_errors=True)


def end_run(job: Job, state: str, message: str) -> None:
    with job.lock:
        job.state, job.message = state, message
    job.emit({"type": "end", "state": state, "message": message})


def _stream(job: Job, parts: list[Part]) -> None:
    total = job.num_frames
    first = min((p.start for p in parts), default=0)  # no parts: objects were removed, redraw every frame
    with job.lock:
        for part in parts:
            job.parts[part.key] = part.state
            for t in range(part.start, total):
                for obj_id in part.ids.values():
                    job.masks.get(t, {}).pop(obj_id, None)
        live = set(job.objects)
        for t in list(job.masks):
            job.masks[t] = {o: r for o, r in job.masks[t].items() if o in live}
        job.progress = (first, total)
    job.emit({"type": "start", "from": first, "total": total})
    streams = [p.open() for p in parts]
    began, emitted = time.perf_counter(), first
    source = frames(job.input, max_side=job.max_side)
    kept: dict[int, np.ndarray] = {}  # frames waiting for every part's result
    for t, frame in enumerate(source):
        if job.stop.is_set():
            break
        if t < first:
            continue
        kept[t] = frame
        for part, stream in zip(parts, streams):
            if t >= part.start:
                _collect(part, stream.push(frame))  # type: ignore[attr-defined]
        emitted = _emit_ready(job, parts, kept, emitted, began, first)
    if not job.stop.is_set():
        for part, stream in zip(parts, streams):
            _collect(part, stream.flush())  # type: ignore[attr-defined]
        _emit_ready(job, parts, kept, emitted, began, first)
    for part in parts:
        part.state.done = part.start + part.delivered


def _collect(part: Part, results: list[FrameResult]) -> None:
    for result in results:
        part.results[result.index] = {part.ids[o]: m for o, m in result.masks().items()}


def _emit_ready(job: Job, parts: list[Part], kept: dict[int, np.ndarray], t: int, began: float, first: int) -> int:
    """Store and announce frames t, t+1, ... once every part running there has answered them."""
    while t in kept and all(t < p.start or t in p.results for p in parts):
        with job.lock:
            fresh: dict[int, np.ndarray] = {}
            for part in parts:
                if t >= part.start:
                    fresh.update(part.results.pop(t))
                    part.delivered += 1
            masks = job.masks.setdefault(t, {})
            masks.update({o: encode_rle(m) for o, m in fresh.items()})
            # the frame's masks: this run's as computed, the kept parts' decoded from their RLE
            decoded = {o: fresh[o] if o in fresh else decode_rle(r) for o, r in sorted(masks.items())}
            labels = {o.id: o.label() for o in job.objects.values()}
        save_jpeg(job.overlay_path(t), overlay(kept.pop(t), decoded, alpha=ALPHA, labels=labels, contour=CONTOUR))
        done = t + 1 - first
        fps = done / max(time.perf_counter() - began, 1e-6)
        with job.lock:
            job.progress = (t + 1, job.num_frames)
        job.emit({"type": "frame", "index": t, "done": t + 1, "total": job.num_frames, "fps": round(fps, 2),
                  "objects": {str(o): bool(m.any()) for o, m in decoded.items()}})
        t += 1
    return t


def _write_outputs(job: Job) -> None:
    """`out/` as `refseg segment` writes it (masks/, masks.json, overlay.mp4) plus masks.zip."""
    with job.lock:
        labels = {o.id: o.text for o in job.objects.values() if o.text}
        masks = {t: dict(m) for t, m in job.masks.items()}
        objects = frozenset(job.objects)
    out = job.folder / "out"
    source = frames(job.input, max_side=job.max_side)
    with OutputWriter(out, fps=job.fps, labels=labels) as writer:
        for t, frame in enumerate(source):
            writer.write_masks(frame, t, {o: decode_rle(r) for o, r in sorted(masks.get(t, {}).items())})
        writer.input = {**source.report.as_dict(), "max_side": job.max_side}
    with atomic_file(out / "masks.zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for png in sorted((out / "masks").rglob("*.png")):
            archive.write(png, png.relative_to(out).as_posix())
    with job.lock:
        job.written = objects
