"""SAM-I2V against the plain SAM 2 engine on the same image SAM, side by side (paper Tab. 8/9).

Latency: SAM-I2V and plain SAM 2 tracking hold the same image SAM (the SAM 2 session runs the
`Sam2` inside the SAM-I2V model with default hooks) and stream the same frames with the same click
on frame 0, advancing in lockstep (the order alternating), so machine noise hits both alike.
Printed: median ms per tracked frame and the ratio, over frames after the selector's 20-frame pool
is full.

Memory: the bytes each session's memory bank holds at two frame counts (SAM-I2V keeps 20 whole
unprompted memories with their keys and masks, SAM 2 six with features), which shows both stay
flat, and the resident set growth of a child process streaming each alone.

FLOPs: one tracked frame at full memory, counted per module with `torch.utils.flop_counter`
(multiply-add = 2 FLOPs): image trunk, TFI, memory selector, memory attention, MPG, mask decoder,
memory encoder.

    python bench/sam_i2v_speed.py                       # every configuration below
    python bench/sam_i2v_speed.py --only synth-256      # one of them
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode

from refseg.demo import moving_shapes
from refseg.engine import Session
from refseg.methods.sam_i2v import SamI2V, SamI2VConfig, upgrade
from refseg.prompts import Points
from refseg.sam import Sam2
from refseg.sam.config import synth_small_config
from refseg.sam.single_scale import heads_config
from refseg.sam.tiny_sam import TinySam
from refseg.sam.tiny_vit import TinyViTConfig

PUBLISHED_TINYVIT = TinyViTConfig(img_size=1024, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                                  num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7))


def synth() -> SamI2V:
    return upgrade(Sam2(synth_small_config(256)), SamI2VConfig(), memory_layers=2)


def published() -> SamI2V:
    return SamI2V(TinySam(heads_config(1024), PUBLISHED_TINYVIT), SamI2VConfig())


# name -> (builder, latency frames, bank / RSS frame counts (from, to))
CONFIGS: dict[str, tuple[Callable[[], SamI2V], int, tuple[int, int]]] = {
    "synth-256": (synth, 40, (30, 120)),
    "tinysam-1024": (published, 26, (24, 40)),
}


def build(name: str) -> SamI2V:
    torch.manual_seed(0)
    return CONFIGS[name][0]().eval()


def frames(count: int, size: int) -> np.ndarray:
    clip = moving_shapes(min(count, 64), height=size * 3 // 4, width=size).frames
    return np.stack([clip[t % len(clip)] for t in range(count)])


def sessions(model: SamI2V, height: int, width: int) -> dict[str, Session]:
    out = {"sam-i2v": model.session(), "sam2": Session(model.sam)}
    for session in out.values():
        session.add_prompt(1, Points([[width / 4, height / 2]]))
    return out


def latency(name: str) -> dict[str, float]:
    model = build(name)
    clip = frames(CONFIGS[name][1], model.sam.image_size)
    runs = sessions(model, *clip.shape[1:3])
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for t, frame in enumerate(clip):
            order = list(runs)[t % 2:] + list(runs)[: t % 2]
            for k in order:
                start = time.perf_counter()
                runs[k].push(frame)
                times[k].append(time.perf_counter() - start)
    skip = min(21, len(clip) - 5)  # frames before the selector's pools are full
    return {**{f"{k}_ms": 1000 * statistics.median(v[skip:]) for k, v in times.items()}, "frames": len(clip) - skip}


def memory_child(name: str, method: str, first: int, last: int) -> dict[str, float]:
    """In a child process: stream `last` frames; bank bytes and RSS (MiB, median over the 5 frames
    ending there) at `first` and `last`."""
    model = build(name)
    clip = frames(64, model.sam.image_size)
    session = sessions(model, *clip.shape[1:3])[method]
    process = psutil.Process()
    rss, banks = [], []
    with torch.inference_mode():
        for t in range(last):
            session.push(clip[t % len(clip)])
            rss.append(process.memory_info().rss / 2**20)
            banks.append(session.bank.nbytes / 2**20)
    return {"bank_first": banks[first - 1], "bank_last": banks[last - 1],
            "rss_first": statistics.median(rss[first - 5 : first]), "rss_last": statistics.median(rss[last - 5 : last])}


def memory(name: str) -> dict[str, dict[str, float]]:
    first, last = CONFIGS[name][2]
    out = {}
    for method in ("sam-i2v", "sam2"):
        cmd = [sys.executable, __file__, "--child", name, method, str(first), str(last)]
        out[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    return out


@contextlib.contextmanager
def counted(owner: object, attr: str, key: str, counts: dict[str, float], counter: FlopCounterMode) -> Iterator[None]:
    """Add the FLOPs of every call of `owner.attr` to counts[key] while inside."""
    original = getattr(owner, attr)

    def run(*args, **kwargs):
        before = counter.get_total_flops()
        try:
            return original(*args, **kwargs)
        finally:
            counts[key] = counts.get(key, 0.0) + counter.get_total_flops() - before

    setattr(owner, attr, run)  # an instance attribute shadows the method
    try:
        yield
    finally:
        delattr(owner, attr)


def flops(name: str) -> dict[str, float]:
    """GFLOPs per module on the last of 25 frames (a tracked frame with full memory; without the
    key/value cache, so that memory attention runs as one module)."""
    model = build(name).requires_grad_(False)  # the counter's module hooks trip on parameters under inference mode
    clip = frames(25, model.sam.image_size)
    session = model.session(kv_cache=False)
    session.add_prompt(1, Points([[clip.shape[2] / 4, clip.shape[1] / 2]]))
    with torch.inference_mode():
        for frame in clip[:-1]:
            session.push(frame)
    sam, hooks = model.sam, session.hooks
    parts = {"image trunk": (sam, "encode_images"), "TFI": (hooks, "encode_output"),
             "memory selector": (hooks, "select_memories"), "memory attention": (sam.memory_attention, "forward"),
             "MPG": (hooks, "prompt_tokens"), "mask decoder": (sam.mask_decoder, "forward"),
             "memory encoder": (sam.memory_encoder, "forward")}
    counts: dict[str, float] = {}
    counter = FlopCounterMode(display=False)
    with contextlib.ExitStack() as stack, torch.inference_mode():
        for key, (owner, attr) in parts.items():
            stack.enter_context(counted(owner, attr, key, counts, counter))
        with counter:
            session.push(clip[-1])
    return {**{k: counts.get(k, 0.0) / 1e9 for k in parts}, "total": counter.get_total_flops() / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        name, method, first, last = args.child
        print(json.dumps(memory_child(name, method, int(first), int(last))))
        return
    for name in [args.only] if args.only else list(CONFIGS):
        lat = latency(name)
        print(f"{name}: latency ms/frame (median of {lat['frames']} tracked frames, {args.threads} threads): "
              f"SAM 2 {lat['sam2_ms']:.1f}; SAM-I2V {lat['sam-i2v_ms']:.1f} (ratio {lat['sam-i2v_ms'] / lat['sam2_ms']:.2f})",
              flush=True)
        mem = memory(name)
        first, last = CONFIGS[name][2]
        for method, m in mem.items():
            print(f"{name}: {method} memory bank {m['bank_first']:.2f} -> {m['bank_last']:.2f} MiB, RSS "
                  f"{m['rss_first']:.0f} -> {m['rss_last']:.0f} MiB (frame {first} -> {last})", flush=True)
        counts = flops(name)
        parts = ", ".join(f"{k} {v:.3f}" for k, v in counts.items() if k != "total")
        print(f"{name}: GFLOPs of one tracked frame: {parts}; total {counts['total']:.3f}", flush=True)


if __name__ == "__main__":
    main()
