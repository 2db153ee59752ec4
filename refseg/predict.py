"""Run a text model over every referring expression of a dataset and write the predictions in
the benchmarks' submission layout: `OUT/<video>/<expression id>/<frame>.png` for videos (MeViS,
Ref-YouTube-VOS; what `refseg eval --protocol mevis|ytvos --pred OUT` scores) and
`OUT/<sentence id>.png` for images (RefCOCO; `refseg eval --protocol ris`)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from refseg.data.sample import VideoSample
from refseg.io.masks import write_mask_png
from refseg.methods.evf_sam import EvfSam
from refseg.methods.samwise import Samwise

log = logging.getLogger(__name__)


def predict_expressions(model: Samwise | EvfSam, samples: Sequence[VideoSample], out: str | os.PathLike[str]) -> int:
    """Segment each video once per expression (all expressions of a video stream together);
    returns the number of expressions written. The folder appears only when all are done."""
    final = Path(out)
    stage = final.with_name(f".{final.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    count = 0
    with torch.inference_mode():
        for sample in tqdm(samples, desc="predict", unit="video"):
            if not sample.expressions:
                continue
            stream = model.stream([e.text for e in sample.expressions])
            results = [r for frame in sample.frames() for r in stream.push(frame)] + stream.flush()
            for obj_id, expression in enumerate(sample.expressions, start=1):
                folder = stage / sample.video_id / expression.exp_id
                for name, result in zip(sample.frame_names, results):
                    write_mask_png(folder / f"{name}.png", result.objects[obj_id].mask)
                count += 1
    if final.exists():
        shutil.rmtree(final)
    stage.mkdir(parents=True, exist_ok=True)
    os.replace(stage, final)
    log.info("wrote %d expressions to %s", count, final)
    return count


def predict_images(model: Samwise | EvfSam, samples: Sequence[VideoSample], out: str | os.PathLike[str]) -> int:
    """Segment each image for all its expressions in one pass; writes `OUT/<expression id>.png`
    and returns the number written. The folder appears only when all are done."""
    final = Path(out)
    stage = final.with_name(f".{final.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    count = 0
    with torch.inference_mode():
        for sample in tqdm(samples, desc="predict", unit="image"):
            if not sample.expressions:
                continue
            stream = model.stream([e.text for e in sample.expressions])
            (result,) = stream.push(sample.load_frame(0)) + stream.flush()
            for obj_id, expression in enumerate(sample.expressions, start=1):
                write_mask_png(stage / f"{expression.exp_id}.png", result.objects[obj_id].mask)
                count += 1
    if final.exists():
        shutil.rmtree(final)
    os.replace(stage, final)
    log.info("wrote %d expressions to %s", count, final)
    return count
