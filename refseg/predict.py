"""Run a text model over every referring expression of a dataset and write the predictions in
the benchmarks' submission layout: `OUT/<video>/<expression id>/<frame>.png` for videos (MeViS,
Ref-YouTube-VOS; what `refseg eval --protocol mevis|ytvos --pred OUT` scores) and
`OUT/<sentence id>.png` for images (RefCOCO; `refseg eval --protocol ris`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from tqdm import tqdm

from refseg.data.sample import VideoSample
from refseg.io.atomic import atomic_dir
from refseg.io.masks import write_mask_png
from refseg.methods.evf_sam import EvfSam
from refseg.methods.glus import Glus
from refseg.methods.samwise import Samwise

log = logging.getLogger(__name__)


def predict_expressions(model: Samwise | EvfSam | Glus, samples: Sequence[VideoSample], out: str | os.PathLike[str],
                        images: bool = False) -> int:
    """Segment each video (or image) once for all its expressions, streamed together; writes
    `OUT/<video>/<expression id>/<frame>.png`, or `OUT/<expression id>.png` with `images`, and
    returns the number of expressions written. The folder appears only when all are done."""
    count = 0
    with atomic_dir(out) as stage, torch.inference_mode():
        for sample in tqdm(samples, desc="predict", unit="image" if images else "video"):
            if not sample.expressions:
                continue
            stream = model.stream([e.text for e in sample.expressions])
            results = [r for frame in sample.frames() for r in stream.push(frame)] + stream.flush()
            for obj_id, expression in enumerate(sample.expressions, start=1):
                if images:
                    write_mask_png(stage / f"{expression.exp_id}.png", results[0].objects[obj_id].mask)
                else:
                    for name, result in zip(sample.frame_names, results):
                        write_mask_png(stage / sample.video_id / expression.exp_id / f"{name}.png",
                                       result.objects[obj_id].mask)
                count += 1
    log.info("wrote %d expressions to %s", count, out)
    return count
