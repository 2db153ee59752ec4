"""Run a text model over every referring expression of a dataset and write the predictions in
the benchmarks' submission layout: `OUT/<video>/<expression id>/<frame>.png` for videos (MeViS,
Ref-YouTube-VOS; what `refseg eval --protocol mevis|ytvos --pred OUT` scores),
`OUT/<sentence id>.png` for images (RefCOCO; `refseg eval --protocol ris`) and
`OUT/<uid>/<frame:05d>.png` for Ref-AVS (`refseg eval --protocol refavs`). SAM2-LOVE hears each
video's audio (or silence, `audio=False`: what the sound adds is measured against it).

Runs continue where a stopped one stopped, and split across processes under `torchrun`
(`predict_expressions`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from refseg.data.sample import VideoSample
from refseg.io.masks import write_mask_png
from refseg.methods.evf_sam import EvfSam
from refseg.methods.glus import Glus
from refseg.methods.sam2_love import Sam2Love
from refseg.methods.samwise import Samwise
from refseg.prompts import Audio

log = logging.getLogger(__name__)
LAYOUTS = ("videos", "images", "refavs")


def predict_expressions(model: Samwise | EvfSam | Glus | Sam2Love, samples: Sequence[VideoSample],
                        out: str | os.PathLike[str], layout: str = "videos", audio: bool = True,
                        rank: int = 0, world: int = 1, signature: str = "") -> int:
    """Segment each video (or image) once for all its expressions, streamed together; writes the
    `layout`'s files (module docstring) and returns the number of expressions this process wrote.

    Everything is written into `.<out>.predicting` beside `out`, which becomes `out` only when
    every sample is done. A sample's files go in first and its mark (`.done/<n>`) after them, so
    a stopped or killed run, rerun with the same arguments, continues where it stopped: marked
    samples are skipped. With `world` > 1 processes (`torchrun`, `torch.distributed` initialised),
    process `rank` takes samples rank, rank + world, ... into the same folder (a folder every
    process can reach: one machine, or a shared file system), and rank 0 renames it to `out` once
    every process is done. `signature` says what is predicted (model, options): a folder left by a
    run with another signature, or over other samples, is started again, not continued."""
    if layout not in LAYOUTS:
        raise ValueError(f"predict: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    final = Path(out)
    stage = final.with_name(f".{final.name}.predicting")
    marks = stage / ".done"
    what = json.dumps({"signature": signature, "layout": layout, "audio": audio,
                       "samples": [[s.video_id, [e.exp_id for e in s.expressions]] for s in samples]})
    if rank == 0:
        if stage.exists() and not ((marks / "run.json").is_file() and (marks / "run.json").read_text() == what):
            log.info("%s: left by a run of another model, options or data; starting again", stage)
            shutil.rmtree(stage)
        marks.mkdir(parents=True, exist_ok=True)
        (marks / "run.json").write_text(what)
    if world > 1:
        dist.barrier()
    mine = [(n, s) for n, s in enumerate(samples) if n % world == rank and s.expressions]
    todo = [(n, s) for n, s in mine if not (marks / str(n)).is_file()]
    if len(todo) < len(mine):
        log.info("%s: %d of %d %s already written by an earlier run; continuing with the rest", stage,
                 len(mine) - len(todo), len(mine), "images" if layout == "images" else "videos")
    count = 0
    with torch.inference_mode():
        for n, sample in tqdm(todo, desc="predict" if world == 1 else f"predict (rank {rank}/{world})",
                              unit="image" if layout == "images" else "video"):
            count += _predict_sample(model, sample, stage, layout, audio)
            (marks / str(n)).touch()
    if world > 1:
        dist.barrier()
    if rank == 0:
        missing = [n for n, s in enumerate(samples) if s.expressions and not (marks / str(n)).is_file()]
        if missing:
            raise RuntimeError(f"{stage}: samples {missing[:5]} were not written; rerun to continue")
        shutil.rmtree(marks)
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
        log.info("wrote %d expressions to %s", sum(len(s.expressions) for s in samples), out)
    if world > 1:
        dist.barrier()
    return count


def _predict_sample(model: Samwise | EvfSam | Glus | Sam2Love, sample: VideoSample, stage: Path, layout: str,
                    audio: bool) -> int:
    """Write one sample's predictions under `stage`; returns its number of expressions."""
    texts = [e.text for e in sample.expressions]
    if isinstance(model, Sam2Love):
        if sample.audio is None:
            raise ValueError(f"{sample.video_id}: no audio file; SAM2-LOVE hears the video's sound")
        sound = Audio(sample.audio, sample.sample_rate)  # frames spread over it (its own rate)
        stream = model.stream(texts, sound if audio else None, None if audio else len(sample) / sound.seconds)
    else:
        stream = model.stream(texts)
    results = [r for frame in sample.frames() for r in stream.push(frame)] + stream.flush()
    for obj_id, expression in enumerate(sample.expressions, start=1):
        if layout == "images":
            write_mask_png(stage / f"{expression.exp_id}.png", results[0].objects[obj_id].mask)
        elif layout == "refavs":
            for t, result in enumerate(results):
                write_mask_png(stage / expression.exp_id / f"{t:05d}.png", result.objects[obj_id].mask)
        else:
            for name, result in zip(sample.frame_names, results):
                write_mask_png(stage / sample.video_id / expression.exp_id / f"{name}.png", result.objects[obj_id].mask)
    return len(sample.expressions)
