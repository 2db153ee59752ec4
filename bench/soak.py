"""Soak: does memory stay flat over a long stream?

1. 10 000 frames through `Session.push` with a tiny random SAM 2 (128 px): three objects given by
   clicks, the third added late (frame 2 000), every frame's masks read back as a user would.
2. 2 000 frames through the embedded SAMWISE (`refseg.load("default")`, shipped weights), two
   text prompts, results consumed clip by clip.

Resident memory (RSS) is sampled every 500 frames; the growth from frame 1 000 (caches and
allocator pools warmed) to the end is printed, against the 5 % the engine promises. Frames are
the looped SynthRef demo scene, so decoding costs nothing and never changes.

    python bench/soak.py                        # both
    python bench/soak.py --only click --frames 2000
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import psutil
import torch
from tqdm import tqdm

from refseg.demo import demo_scene, moving_shapes
from refseg.engine import Session
from refseg.prompts import Points
from refseg.sam import Sam2, tiny_test_config

EVERY = 500
BASELINE = 1000
LIMIT = 0.05


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def report(name: str, samples: list[tuple[int, float]], seconds: float) -> bool:
    frames = samples[-1][0]
    print(f"\n{name}: {frames} frames in {seconds:.0f} s ({frames / seconds:.1f} frames/s)")
    print("  frame   RSS MiB")
    for frame, mib in samples:
        print(f"  {frame:6d}  {mib:8.1f}")
    base = next(mib for frame, mib in samples if frame >= BASELINE)
    growth = (samples[-1][1] - base) / base
    ok = growth <= LIMIT
    print(f"  growth from frame {BASELINE} to {frames}: {growth:+.2%} (limit +{LIMIT:.0%}): {'ok' if ok else 'FAIL'}")
    return ok


def click_soak(frames: int) -> bool:
    torch.manual_seed(0)
    model = Sam2(tiny_test_config(128)).eval()
    clip = moving_shapes(48, 128, 128).frames
    session = Session(model)
    session.add_prompt(1, Points([[30, 60]]))
    session.add_prompt(2, Points([[100, 60], [90, 70]], labels=[1, 0]))
    samples, start, pixels = [], time.perf_counter(), 0
    with torch.inference_mode():
        for t in tqdm(range(frames), desc="click soak", unit="frame"):
            if t == 2000:
                session.add_prompt(3, Points([[64, 20]]))  # on the next frame pushed
            result = session.push(clip[t % len(clip)])
            pixels += sum(int(o.mask.sum()) for o in result.objects.values())
            if (t + 1) % EVERY == 0:
                samples.append((t + 1, rss_mib()))
    print(f"(mask pixels read back: {pixels})")
    return report("Session.push, tiny SAM 2, 3 objects (one from frame 2000)", samples, time.perf_counter() - start)


def samwise_soak(frames: int) -> bool:
    import refseg

    model = refseg.load("default")
    scene = demo_scene()
    clip = scene.load_frames()
    texts = [e.text for e in scene.expressions[:2]]
    stream = model.stream(texts)
    samples, start, done = [], time.perf_counter(), 0
    with torch.inference_mode():
        for t in tqdm(range(frames), desc="samwise soak", unit="frame"):
            for result in stream.push(clip[t % len(clip)]):
                done += 1
                assert np.asarray(result.objects[1].mask).dtype == bool
            if (t + 1) % EVERY == 0:
                samples.append((t + 1, rss_mib()))
        done += len(stream.flush())
    assert done == frames, (done, frames)
    return report(f"SAMWISE (embedded default), 2 expressions {texts}", samples, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["click", "samwise"])
    parser.add_argument("--frames", type=int, help="frames per soak (default 10 000 clicks, 2 000 SAMWISE)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ok = True
    if args.only in (None, "click"):
        ok &= click_soak(args.frames or 10_000)
    if args.only in (None, "samwise"):
        ok &= samwise_soak(args.frames or 2_000)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
