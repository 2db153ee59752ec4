"""The HTTP API and page of `refseg serve` (FastAPI; the OpenAPI page is at /docs).

Every request that cannot be served gets one status and one line in `detail`:
    400  bad input: an unreadable or corrupt video, an empty text, a click outside the frame, a
         frame past the video's end, objects the chosen methods cannot run
    403  a path outside the folders given with --allow-paths, or paths not allowed at all
    404  no such job (removed after its time-to-live), frame, overlay or object
    409  the job is running (stop it first), or its outputs are not complete yet
    413  an upload past --max-upload-mb or a video past --max-frames
    415  a file type refseg does not read
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Path as PathParam, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from refseg.errors import InputError
from refseg.prompts import Box, Points, Prompt
from refseg.serve.jobs import JOB_ID, Job, JobStore, ObjectSpec, TooLarge, Unsupported
from refseg.serve.runner import Methods, end_run, execute, plan

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DOWNLOADS = {"masks.zip": "application/zip", "masks.json": "application/json", "overlay.mp4": "video/mp4"}
CHUNK = 1 << 20


@dataclass
class ServeConfig:
    """Limits and places of one server."""

    jobs_dir: Path
    max_upload_mb: float = 200.0
    max_frames: int = 1000
    max_side: int | None = 1024
    ttl_s: float = 3600.0
    allow_paths: tuple[Path, ...] = ()
    snapshot_every: int = 8
    max_snapshots: int = 16


class PathIn(BaseModel):
    path: str = Field(description="a video or image file inside a folder the server was started with --allow-paths")


class ObjectIn(BaseModel):
    text: str | None = Field(None, description="what to segment, in words (text methods)")
    frame: int = Field(0, description="the frame the clicks and box are on (and EVF-SAM's text frame)")
    points: list[tuple[float, float, int]] = Field([], description="clicks [x, y, label]: label 1 positive, 0 negative")
    box: tuple[float, float, float, float] | None = Field(None, description="[x0, y0, x1, y1] in frame pixels")


class PromptIn(BaseModel):
    frame: int
    points: list[tuple[float, float, int]] = []
    box: tuple[float, float, float, float] | None = None


class RunIn(BaseModel):
    text_method: str | None = Field(None, description="for objects with a text; default: the first loaded")
    click_method: str | None = Field(None, description="for objects with clicks or a box only; default: the first loaded")


def _fail(status: int, err: Exception | str) -> HTTPException:
    return HTTPException(status_code=status, detail=" ".join(str(err).split()))


def create_app(methods: Methods, config: ServeConfig) -> FastAPI:
    """The server's app: `methods` are shared by every job; jobs live under `config.jobs_dir`."""
    store = JobStore(config.jobs_dir, config.ttl_s, int(config.max_upload_mb * (1 << 20)), config.max_frames,
                     config.max_side)
    run_lock = threading.Lock()  # one run at a time: they share the models and the CPU

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                await asyncio.sleep(max(1.0, min(60.0, config.ttl_s / 4)))
                await asyncio.to_thread(store.expire)

        task = asyncio.create_task(sweep())
        yield
        task.cancel()
        store.close()

    app = FastAPI(title="refseg", summary="Segment and track what is said, heard and clicked in videos and images.",
                  lifespan=lifespan)
    app.state.store = store
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def job_of(job_id: str) -> Job:
        job = store.get(job_id) if re.match(JOB_ID, job_id) else None
        if job is None:
            raise _fail(404, f"job {job_id}: no such job (jobs are removed {config.ttl_s:.0f} s after their last use)")
        return job

    def idle(job: Job) -> None:
        if job.running:
            raise _fail(409, f"job {job.id}: a run is in progress; stop it first")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (STATIC / "index.html").read_text()

    @app.get("/api/config", summary="What this server offers: methods, limits, whether paths can be opened")
    def server_config() -> dict:
        return {"methods": methods.describe(), "max_upload_mb": config.max_upload_mb, "max_frames": config.max_frames,
                "max_side": config.max_side, "allow_paths": bool(config.allow_paths), "ttl_s": config.ttl_s}

    @app.post("/api/jobs", status_code=201, summary="Upload a video or image: a new job")
    def upload(file: Annotated[UploadFile, File(description="a video or image")]) -> dict:
        name = Path(file.filename or "upload").name
        try:
            suffix = store.check_name(name)
        except Unsupported as err:
            raise _fail(415, err) from None
        job_id, folder = store.new_folder()
        target = folder / f"input{suffix}"
        size = 0
        with target.open("wb") as out:
            while chunk := file.file.read(CHUNK):
                size += len(chunk)
                if size > store.max_upload_bytes:
                    out.close()
                    shutil.rmtree(folder, ignore_errors=True)
                    raise _fail(413, f"{name}: larger than {config.max_upload_mb:g} MB, the server's limit "
                                     "(--max-upload-mb)")
                out.write(chunk)
        return _added(store, job_id, folder, target, name)

    @app.post("/api/jobs/from-path", status_code=201, summary="Open a file on the server (--allow-paths)")
    def from_path(body: PathIn) -> dict:
        if not config.allow_paths:
            raise _fail(403, "opening paths on the server is off; start it with --allow-paths DIR")
        path = Path(body.path).expanduser()
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root.resolve()) for root in config.allow_paths):
            raise _fail(403, f"{body.path}: outside the folders this server may read (--allow-paths)")
        if not resolved.is_file():
            raise _fail(404, f"{body.path}: no such file")
        try:
            suffix = store.check_name(resolved.name)
        except Unsupported as err:
            raise _fail(415, err) from None
        if resolved.stat().st_size > store.max_upload_bytes:
            raise _fail(413, f"{body.path}: larger than {config.max_upload_mb:g} MB, the server's limit")
        job_id, folder = store.new_folder()
        target = folder / f"input{suffix}"
        shutil.copyfile(resolved, target)
        return _added(store, job_id, folder, target, resolved.name)

    @app.get("/api/jobs/{job_id}", summary="A job: its input, objects, state and progress")
    def job_info(job_id: str) -> dict:
        return job_of(job_id).as_dict()

    @app.delete("/api/jobs/{job_id}", summary="Remove a job and its folder")
    def remove_job(job_id: str) -> dict:
        job = job_of(job_id)
        job.stop.set()
        with store.lock:
            store.jobs.pop(job.id, None)
        with job.lock:  # a running job's run removes the folder as it ends (`runner.execute`)
            job.removed = True
            running = job.running
        if not running:
            shutil.rmtree(job.folder, ignore_errors=True)
        return {"removed": job.id}

    @app.get("/api/jobs/{job_id}/frames/{index}", summary="Frame `index` as JPEG")
    def frame(job_id: str, index: Annotated[int, PathParam(ge=0)]) -> FileResponse:
        job = job_of(job_id)
        if index >= job.num_frames:
            raise _fail(404, f"frame {index}: the input has frames 0..{job.num_frames - 1}")
        return FileResponse(job.frame_path(index), media_type="image/jpeg")

    @app.get("/api/jobs/{job_id}/overlays/{index}", summary="Frame `index` with the last run's masks, as JPEG")
    def overlay(job_id: str, index: Annotated[int, PathParam(ge=0)]) -> FileResponse:
        job = job_of(job_id)
        path = job.overlay_path(index)
        if index >= job.num_frames or not path.is_file():
            raise _fail(404, f"frame {index}: no masks yet")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/api/jobs/{job_id}/objects", status_code=201, summary="Add an object: a text, clicks, a box")
    def add_object(job_id: str, body: ObjectIn) -> dict:
        job = job_of(job_id)
        idle(job)
        text = None if body.text is None else body.text.strip()
        if body.text is not None and not text:
            raise _fail(400, "text: the text is empty; say what to segment")
        prompts = _prompts(job, body.frame, body.points, body.box)
        if text is None and not prompts:
            raise _fail(400, "an object needs a text, clicks or a box")
        with job.lock:
            spec = ObjectSpec(job.next_object_id(), text, body.frame, {body.frame: prompts} if prompts else {})
            job.objects[spec.id] = spec
        return spec.as_dict()

    @app.post("/api/jobs/{job_id}/objects/{obj_id}/prompts", summary="Correct an object: clicks or a box on a frame")
    def add_prompts(job_id: str, obj_id: int, body: PromptIn) -> dict:
        job = job_of(job_id)
        idle(job)
        spec = job.objects.get(obj_id)
        if spec is None:
            raise _fail(404, f"object {obj_id}: no such object in job {job.id}")
        prompts = _prompts(job, body.frame, body.points, body.box)
        if not prompts:
            raise _fail(400, "give clicks or a box")
        with job.lock:
            spec.prompts.setdefault(body.frame, []).extend(prompts)
        return spec.as_dict()

    @app.delete("/api/jobs/{job_id}/objects/{obj_id}", summary="Remove an object")
    def remove_object(job_id: str, obj_id: int) -> dict:
        job = job_of(job_id)
        idle(job)
        with job.lock:
            if job.objects.pop(obj_id, None) is None:
                raise _fail(404, f"object {obj_id}: no such object in job {job.id}")
        return job.as_dict()

    @app.post("/api/jobs/{job_id}/run", status_code=202, summary="Segment: masks stream in as /events")
    def run(job_id: str, body: RunIn) -> dict:
        job = job_of(job_id)
        idle(job)
        try:
            with job.lock:
                parts = plan(job, methods, body.text_method, body.click_method, config.snapshot_every,
                             config.max_snapshots)
        except InputError as err:
            raise _fail(400, err) from None
        unchanged = not parts and job.written == frozenset(job.objects) and (job.folder / "out").is_dir()
        with job.lock:
            job.run_number += 1
            job.events = []
            job.stop.clear()
            job.state = "queued"
            if not unchanged:
                shutil.rmtree(job.folder / "out", ignore_errors=True)
        if unchanged:
            job.emit({"type": "start", "from": job.num_frames, "total": job.num_frames})
            end_run(job, "done", "nothing changed since the last run")
        else:  # parts to run, or objects removed: their masks leave the overlays and the outputs
            threading.Thread(target=execute, args=(job, parts, run_lock), daemon=True, name=f"run-{job.id}").start()
        return {"run": job.run_number, "from": min((p.start for p in parts), default=0 if not unchanged else job.num_frames)}

    @app.post("/api/jobs/{job_id}/stop", summary="Stop the run (masks so far are kept; a rerun continues)")
    def stop(job_id: str) -> dict:
        job = job_of(job_id)
        job.stop.set()
        return {"state": job.state}

    @app.get("/api/jobs/{job_id}/events", summary="The current run's progress as server-sent events",
             response_class=StreamingResponse)
    async def events(job_id: str, after: int = -1) -> StreamingResponse:
        job = job_of(job_id)

        async def feed() -> AsyncIterator[str]:
            seq, run_number = after, job.run_number
            while True:
                with job.lock:
                    if job.run_number != run_number:
                        return
                    new = [e for e in job.events if e["seq"] > seq]
                for event in new:
                    seq = event["seq"]
                    yield f"id: {seq}\ndata: {json.dumps(event)}\n\n"
                    if event["type"] == "end":
                        return
                await asyncio.sleep(0.05)

        return StreamingResponse(feed(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.get("/api/jobs/{job_id}/download/{name}", summary="masks.zip (PNG), masks.json (COCO RLE) or overlay.mp4")
    def download(job_id: str, name: str) -> FileResponse:
        job = job_of(job_id)
        if name not in DOWNLOADS:
            raise _fail(404, f"{name}: no such download; there are {', '.join(DOWNLOADS)}")
        path = job.folder / "out" / name
        if job.running or not path.is_file():
            raise _fail(409, f"{name}: not ready; run every object over the whole input first")
        stem = Path(job.name).stem
        return FileResponse(path, media_type=DOWNLOADS[name], filename=f"{stem}.{name}")

    return app


def _added(store: JobStore, job_id: str, folder: Path, target: Path, name: str) -> dict:
    try:
        return store.add(job_id, folder, target, name).as_dict()
    except TooLarge as err:
        raise _fail(413, err) from None
    except InputError as err:
        raise _fail(400, err) from None


def _prompts(job: Job, frame: int, points: list[tuple[float, float, int]],
             box: tuple[float, float, float, float] | None) -> list[Prompt]:
    if not 0 <= frame < job.num_frames:
        raise _fail(400, f"frame {frame}: the input has frames 0..{job.num_frames - 1}")
    prompts: list[Prompt] = []
    try:
        if points:
            prompts.append(Points([p[:2] for p in points], [p[2] for p in points]))
        if box is not None:
            prompts.append(Box(*box))
        for prompt in prompts:
            prompt.check_inside(job.height, job.width)
    except ValueError as err:
        raise _fail(400, err) from None
    return prompts
