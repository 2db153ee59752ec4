"""Jobs of `refseg serve`: one uploaded video or image each, with its own folder, its objects and
the masks its runs produced.

Layout of a job folder (`<jobs dir>/<32 hex id>/`):
    input<suffix>          the upload (or a link-free copy of a path under --allow-paths)
    frames/<i:05d>.jpg     every decoded frame (scaled to --max-side), shown by the page
    overlays/<i:05d>.jpg   frame i with the masks of the last run drawn on it
    out/                   what `refseg segment` writes (masks/, masks.json, overlay.mp4) and
                           masks.zip, once every object has a mask on every frame

Nothing outside a job's folder is ever served: files are named by the job id (checked against
`JOB_ID`), a frame number and a fixed download name, never by a path a client gives.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from refseg.errors import InputError
from refseg.io.atomic import atomic_file
from refseg.io.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, frames, video_fps
from refseg.prompts import Box, Points, Prompt

log = logging.getLogger(__name__)

JOB_ID = r"^[0-9a-f]{32}$"
SUFFIXES = VIDEO_SUFFIXES + IMAGE_SUFFIXES


class TooLarge(InputError):
    """An input past the server's limits (upload size, video length): HTTP 413."""


class Unsupported(InputError):
    """A file of a type refseg does not read: HTTP 415."""


@dataclass
class ObjectSpec:
    """One object of a job: a text (text methods), clicks and boxes on frames, or both.

    frame: the frame the object was added on (EVF-SAM reads its text there).
    prompts: frame -> the clicks and boxes given on it, in the order given.
    """

    id: int
    text: str | None
    frame: int
    prompts: dict[int, list[Prompt]] = field(default_factory=dict)

    def label(self) -> str:
        return self.text or ""

    def as_dict(self) -> dict:
        def one(p: Prompt) -> dict:
            if isinstance(p, Box):
                return {"box": [p.x0, p.y0, p.x1, p.y1]}
            assert isinstance(p, Points)
            return {"points": [[float(x), float(y), int(label)] for (x, y), label in zip(p.xy, p.labels)]}

        return {"id": self.id, "text": self.text, "frame": self.frame,
                "prompts": {str(t): [one(p) for p in ps] for t, ps in sorted(self.prompts.items())}}


@dataclass
class Job:
    """An input and what was asked and answered about it. `lock` guards every field a request or
    the run thread changes."""

    id: str
    folder: Path
    input: Path
    name: str
    num_frames: int
    height: int
    width: int
    fps: float
    max_side: int | None
    objects: dict[int, ObjectSpec] = field(default_factory=dict)
    masks: dict[int, dict[int, dict]] = field(default_factory=dict)  # frame -> object id -> COCO RLE
    parts: dict[str, object] = field(default_factory=dict)  # part key -> refseg.serve.runner.PartState
    written: frozenset[int] = frozenset()  # the objects out/ was last written with
    state: str = "idle"  # idle | queued | running | done | stopped | failed
    message: str = ""
    events: list[dict] = field(default_factory=list)  # the current run's events, in order
    run_number: int = 0
    progress: tuple[int, int] = (0, 0)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.RLock = field(default_factory=threading.RLock)
    touched: float = field(default_factory=time.monotonic)
    removed: bool = False  # deleted while running: its run removes the folder when it ends

    @property
    def running(self) -> bool:
        return self.state in ("queued", "running")

    def frame_path(self, index: int) -> Path:
        return self.folder / "frames" / f"{index:05d}.jpg"

    def overlay_path(self, index: int) -> Path:
        return self.folder / "overlays" / f"{index:05d}.jpg"

    def next_object_id(self) -> int:
        return max(self.objects, default=0) + 1

    def emit(self, event: dict) -> None:
        with self.lock:
            self.events.append({**event, "seq": len(self.events), "run": self.run_number})

    def as_dict(self) -> dict:
        with self.lock:
            return {"id": self.id, "name": self.name, "frames": self.num_frames, "height": self.height,
                    "width": self.width, "fps": self.fps, "state": self.state, "message": self.message,
                    "run": self.run_number, "progress": {"done": self.progress[0], "total": self.progress[1]},
                    "objects": [o.as_dict() for o in sorted(self.objects.values(), key=lambda o: o.id)],
                    "overlays": sorted(self.masks), "downloads": (self.folder / "out" / "masks.zip").is_file()}


class JobStore:
    """The jobs of one server, in folders under `root`, removed `ttl` seconds after their last
    request (never while they run)."""

    def __init__(self, root: Path, ttl: float, max_upload_bytes: int, max_frames: int, max_side: int | None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl = float(ttl)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_frames = int(max_frames)
        self.max_side = max_side
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is not None:
            job.touched = time.monotonic()
        return job

    def new_folder(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir()
        return job_id, folder

    def check_name(self, name: str) -> str:
        """The suffix of an input's file name, if refseg reads that type; else `Unsupported`."""
        suffix = Path(name).suffix.lower()
        if suffix not in SUFFIXES:
            raise Unsupported(f"{name}: unsupported file type {suffix or '(none)'}; give a video "
                              f"({', '.join(VIDEO_SUFFIXES)}) or an image ({', '.join(IMAGE_SUFFIXES)})")
        return suffix

    def add(self, job_id: str, folder: Path, source: Path, name: str) -> Job:
        """Decode `source` (already inside `folder`) into frames/, within the limits, and keep the job.
        On any failure the folder is removed and the error (an `InputError`) raised."""
        try:
            count, height, width = self._decode(source, folder / "frames", name)
            fps = video_fps(source)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = Job(job_id, folder, source, name, count, height, width, fps, self.max_side)
        with self.lock:
            self.jobs[job_id] = job
        log.info("job %s: %s, %d frames of %d x %d", job_id, name, count, width, height)
        return job

    def _decode(self, source: Path, out: Path, name: str) -> tuple[int, int, int]:
        out.mkdir()
        count, size = 0, (0, 0)
        try:
            for frame in frames(source, max_side=self.max_side):
                if count == self.max_frames:
                    raise TooLarge(f"{name}: longer than {self.max_frames} frames, the server's limit (--max-frames)")
                if count and frame.shape[:2] != size:
                    raise InputError(f"{name}: frame {count} is {frame.shape[1]} x {frame.shape[0]}, the first "
                                     f"{size[1]} x {size[0]}; frames of one video must have one size")
                size = frame.shape[:2]
                save_jpeg(out / f"{count:05d}.jpg", frame)
                count += 1
        except InputError as err:  # named as the user knows it, not by the job folder's path
            raise type(err)(str(err).replace(str(source), name)) from None
        except Exception as err:  # a decoder failing in a way refseg.io does not name
            raise InputError(f"{name}: not a readable video or image ({' '.join(str(err).split())})") from err
        if count == 0:
            raise InputError(f"{name}: holds no decodable frame")
        return count, int(size[0]), int(size[1])

    def expire(self, now: float | None = None) -> list[str]:
        """Remove the jobs idle for longer than the time-to-live (not those running)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            old = [j for j in self.jobs.values() if now - j.touched > self.ttl and not j.running]
            for job in old:
                del self.jobs[job.id]
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)
            log.info("job %s removed after %.0f s unused", job.id, now - job.touched)
        return [j.id for j in old]

    def close(self) -> None:
        """Stop every run and remove every job folder."""
        with self.lock:
            jobs, self.jobs = list(self.jobs.values()), {}
        for job in jobs:
            job.stop.set()
            shutil.rmtree(job.folder, ignore_errors=True)


def save_jpeg(path: Path, image: np.ndarray, quality: int = 90) -> None:
    """An RGB uint8 image as JPEG, via a temporary file and a rename (folders made as needed)."""
    with atomic_file(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=quality)
