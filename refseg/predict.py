"""Run a text model over every referring expression of a dataset and write the predictions in
the benchmarks' submission layout: `OUT/<video>/<expression id>/<frame>.png` for videos (MeViS,
Ref-YouTube-VOS; what `refseg eval --protocol mevis|ytvos --pred OUT` scores),
`OUT/<sentence id>.png` for images (RefCOCO; `refseg eval --protocol ris`) and
`OUT/<uid>/<frame:05d>.png` for Ref-AVS (`refseg eval --protocol refavs`). SAM2-LOVE hears each
video's audio (or silence, `audio=False`: what the sound adds is measured against it)."""

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
from refseg.methods.sam2_love import Sam2Love
from refseg.methods.samwise import Samwise
from refseg.prompts import Audio

log = logging.getLogger(__name__)
LAYOUTS = ("videos", "images", "refavs")


def predict_expressions(model: Samwise | EvfSam | Glus | Sam2Love, samples: Sequence[VideoSample],
                        out: str | os.PathLike[str], layout: str = "videos", audio: bool = True) -> int:
    """Segment each video (or image) once for all its expressions, streamed together; writes the
    `layout`'s files (module docstring) and returns the number of expressions written. The
    folder appears only when all are done."""
    if layout not in LAYOUTS:
        raise ValueError(f"predict: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    count = 0
    with atomic_dir(out) as stage, torch.inference_mode():
        for sample in tqdm(samples, desc="predict", unit="image" if layout == "images" else "video"):
            if not sample.expressions:
                continue
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
                        write_mask_png(stage / sample.video_id / expression.exp_id / f"{name}.png",
                                       result.objects[obj_id].mask)
                count += 1
    log.info("wrote %d expressions to %s", count, out)
    return count
