"""Streaming benchmark: refseg's engine against `transformers` Sam2VideoModel, side by side.

Latency: both implementations hold the same random weights and stream the same frames with the
same click on frame 0; they advance in lockstep (each frame through one, then the other, the
order alternating), so machine noise hits both alike. Printed: median ms/frame and the ratio.

bfloat16: refseg with `Session(dtype=torch.bfloat16)` (autocast) against `transformers` with its
model and inference session in bfloat16, in the same lockstep. Efficiency: the model's FLOPs per
tracked frame (counted by `torch.utils.flop_counter` on one frame with a full memory bank) over
the median time, as a fraction of this machine's peak, measured here with a 4096 x 4096 matmul
in each dtype and the same thread count.

Objects (`--objects 1 4 16`): one session per object count, each object clicked on frame 0 on a
grid over the frame, decoded one by one and in batches (`Session(batch_objects=...)`) in the
same lockstep; printed: median ms per tracked frame (frames after the memory bank is full) and
what each object past the first adds, as a fraction of the one-object frame time.

Resident memory: each implementation streams alone in a fresh child process (memory of one
process cannot be split between two models); RSS is read at two frame counts and both
implementations' growth between them is printed side by side.

    python bench/stream.py                       # every configuration below
    python bench/stream.py --only tiny-128       # one of them
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import psutil
import torch
from tqdm import tqdm
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from refseg.demo import moving_shapes
from refseg.engine import Session
from refseg.prompts import Points
from refseg.sam import Sam2, sam2_config, tiny_test_config
from refseg.sam.image_encoder import normalise_frames

# name -> (config builder, latency frames, RSS frame counts (from, to))
CONFIGS = {
    "tiny-128": (lambda: tiny_test_config(128), 60, (100, 2000)),
    "sam2.1-hiera-tiny-512": (lambda: sam2_config("tiny", 512), 16, (30, 200)),
    "sam2.1-hiera-tiny-1024": (lambda: sam2_config("tiny", 1024), 8, None),
}


def build(name: str) -> Sam2:
    torch.manual_seed(0)
    return Sam2(CONFIGS[name][0]()).eval()


class Ours:
    kv_cache = True
    dtype = torch.float32

    def __init__(self, model: Sam2, height: int, width: int) -> None:
        self.session = Session(model, kv_cache=self.kv_cache, dtype=self.dtype)
        self.session.add_prompt(1, Points([[width / 4, height / 2]]))

    def step(self, frame: np.ndarray) -> None:
        self.session.push(frame)


class OursNoCache(Ours):
    kv_cache = False


class OursBf16(Ours):
    dtype = torch.bfloat16


class Reference:
    dtype = torch.float32

    def __init__(self, model: Sam2, height: int, width: int) -> None:
        self.model = model.to_transformers().eval().to(self.dtype)
        self.size = model.image_size
        self.session = Sam2VideoInferenceSession(video_height=height, video_width=width, dtype=self.dtype)
        idx = self.session.obj_id_to_idx(1)
        xy = torch.tensor([[[[width / 4 * self.size / width, height / 2 * self.size / height]]]])
        self.session.add_point_inputs(idx, 0, {"point_coords": xy, "point_labels": torch.ones(1, 1, 1, dtype=torch.int32)})
        self.session.obj_with_new_inputs.append(1)
        self.t = 0

    def step(self, frame: np.ndarray) -> None:
        # the same preprocessing as the engine (the transformers processors need torchvision)
        pixels = normalise_frames(torch.from_numpy(frame)[None], self.size)[0].to(self.dtype)
        with torch.inference_mode():
            self.model(self.session, frame_idx=self.t, frame=pixels)
        self.t += 1


class ReferenceBf16(Reference):
    dtype = torch.bfloat16


IMPLS = {"ours": Ours, "ours_no_kv_cache": OursNoCache, "transformers": Reference, "ours_bf16": OursBf16,
         "transformers_bf16": ReferenceBf16}


def peak_gflops(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """This machine's matmul rate in `dtype` with the current thread count (best of `repeats`)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(work) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _attention_flops(query: list[int], key: list[int], value: list[int], *args: object, **kwargs: object) -> int:
    """FLOPs of CPU attention ([B, heads, L, d] shapes): Q K^T and the weighted sum of V
    (`torch.utils.flop_counter` counts the CUDA kernels only, and 0 for this one)."""
    *lead, queries, depth = query
    return 2 * int(np.prod(lead)) * queries * key[-2] * (depth + value[-1])


def frame_gflops(model: Sam2, frames: np.ndarray) -> float:
    """FLOPs (G) of one tracked frame once the memory bank is full (7 frames stored)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.requires_grad_(False)  # the counter's module tracker hooks tensors that require grad
    runner = Ours(model, *frames.shape[1:3])
    for t in range(min(7, len(frames) - 1)):
        runner.step(frames[t])
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops})
    with counter:
        runner.step(frames[min(7, len(frames) - 1)])
    return counter.get_total_flops() / 1e9


def scene_frames(count: int, size: int) -> np.ndarray:
    return moving_shapes(min(count, 64), height=size * 3 // 4, width=size).frames


def latency(name: str) -> dict[str, float]:
    model = build(name)
    frames = scene_frames(CONFIGS[name][1], model.image_size)
    h, w = frames.shape[1:3]
    impls = {k: cls(model, h, w) for k, cls in IMPLS.items()}
    times: dict[str, list[float]] = {k: [] for k in impls}
    for t, frame in enumerate(frames):
        order = list(impls)[t % len(impls):] + list(impls)[:t % len(impls)]  # rotate who goes first
        for k in order:
            start = time.perf_counter()
            impls[k].step(frame)
            times[k].append(time.perf_counter() - start)
    # frame 0 (prompted, no memory) is not representative of tracking
    med = {k: 1000 * statistics.median(v[1:]) for k, v in times.items()}
    return {**{f"{k}_ms": v for k, v in med.items()}, "frames": len(frames)}


def object_cost(name: str, counts: list[int], frames_after_full: int = 3) -> dict[tuple[int, bool], float]:
    """Median ms per tracked frame with `count` objects, one by one (False) and batched (True)."""
    model = build(name)
    warm = model.num_maskmem  # frames until the bank is full
    frames = scene_frames(warm + frames_after_full, model.image_size)
    h, w = frames.shape[1:3]
    sessions = {}
    for count in counts:
        side = int(np.ceil(np.sqrt(count)))
        for batch in (False, True):
            session = Session(model, batch_objects=batch)
            for k in range(count):
                session.add_prompt(k + 1, Points([[(k % side + 0.5) * w / side, (k // side + 0.5) * h / side]]))
            sessions[(count, batch)] = session
    times: dict[tuple[int, bool], list[float]] = {k: [] for k in sessions}
    keys = list(sessions)
    for t, frame in enumerate(tqdm(frames, desc=f"{name} objects", unit="frame")):
        for k in keys[t % len(keys):] + keys[:t % len(keys)]:
            start = time.perf_counter()
            sessions[k].push(frame)
            times[k].append(time.perf_counter() - start)
    return {k: 1000 * statistics.median(v[warm:]) for k, v in times.items()}


def rss_child(name: str, impl: str, first: int, last: int) -> dict[str, float]:
    """Run in a child process: stream `last` frames; RSS (MiB) at `first` and at `last`, each the
    median over the 10 frames ending there (the allocator makes single readings jump by ~30 MiB)."""
    model = build(name)
    base = scene_frames(64, model.image_size)
    runner = IMPLS[impl](model, *base.shape[1:3])
    process = psutil.Process()
    samples = []
    for t in range(last):
        runner.step(base[t % len(base)])
        samples.append(process.memory_info().rss / 2**20)
    return {"rss_first_mib": statistics.median(samples[first - 10 : first]),
            "rss_last_mib": statistics.median(samples[last - 10 : last])}


def rss(name: str) -> dict[str, float]:
    first, last = CONFIGS[name][2]
    out: dict[str, float] = {"from_frame": first, "to_frame": last}
    for impl in ("ours", "transformers"):
        cmd = [sys.executable, __file__, "--child", name, impl, str(first), str(last)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        growth = result["rss_last_mib"] - result["rss_first_mib"]
        out[f"{impl}_rss_mib"] = result["rss_last_mib"]
        out[f"{impl}_growth_mib"] = growth
        out[f"{impl}_growth_pct"] = 100 * growth / result["rss_first_mib"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objects", type=int, nargs="+", help="measure the cost of these object counts instead")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        name, impl, first, last = args.child
        print(json.dumps(rss_child(name, impl, int(first), int(last))))
        return
    if args.objects:
        for name in [args.only] if args.only else list(CONFIGS):
            cost = object_cost(name, sorted(set([1, *args.objects])))
            one = cost[(1, False)]
            for count in sorted(set([1, *args.objects])):
                extra = {b: (cost[(count, b)] - one) / max(count - 1, 1) / one for b in (False, True)}
                print(f"{name}: {count:2d} objects: ms/frame one by one {cost[(count, False)]:.0f}, batched "
                      f"{cost[(count, True)]:.0f}; each object past the first adds {extra[False]:.2f} / "
                      f"{extra[True]:.2f} of the one-object frame", flush=True)
        return
    peaks = {d: peak_gflops(d) for d in (torch.float32, torch.bfloat16)}
    print(f"peak matmul GFLOP/s with {args.threads} threads: float32 {peaks[torch.float32]:.0f}, "
          f"bfloat16 {peaks[torch.bfloat16]:.0f}", flush=True)
    for name in [args.only] if args.only else list(CONFIGS):
        lat = latency(name)
        ref = lat["transformers_ms"]
        print(f"{name}: latency ms/frame (median of {lat['frames'] - 1} tracked frames, {args.threads} threads): "
              f"transformers {ref:.1f}; ours {lat['ours_ms']:.1f} (ratio {lat['ours_ms'] / ref:.3f}); "
              f"ours without kv cache {lat['ours_no_kv_cache_ms']:.1f} (ratio {lat['ours_no_kv_cache_ms'] / ref:.3f})",
              flush=True)
        ref16 = lat["transformers_bf16_ms"]
        print(f"{name}: bfloat16 ms/frame: transformers {ref16:.1f}; ours {lat['ours_bf16_ms']:.1f} "
              f"(ratio {lat['ours_bf16_ms'] / ref16:.3f}); ours bfloat16 / ours float32 "
              f"{lat['ours_bf16_ms'] / lat['ours_ms']:.3f}", flush=True)
        model = build(name)
        flops = frame_gflops(model, scene_frames(CONFIGS[name][1], model.image_size))
        for dtype, key in ((torch.float32, "ours_ms"), (torch.bfloat16, "ours_bf16_ms")):
            rate = flops / (lat[key] / 1000)
            print(f"{name}: {flops:.1f} GFLOP per tracked frame; {str(dtype).removeprefix('torch.')}: "
                  f"{rate:.0f} GFLOP/s, {rate / peaks[dtype]:.2f} of the measured peak", flush=True)
        if CONFIGS[name][2] is not None:
            mem = rss(name)
            print(f"{name}: RSS frame {mem['from_frame']:.0f} -> {mem['to_frame']:.0f}: ours "
                  f"{mem['ours_growth_mib']:+.1f} MiB ({mem['ours_growth_pct']:+.1f}%, {mem['ours_rss_mib']:.0f} MiB), "
                  f"transformers {mem['transformers_growth_mib']:+.1f} MiB ({mem['transformers_growth_pct']:+.1f}%, "
                  f"{mem['transformers_rss_mib']:.0f} MiB)", flush=True)


if __name__ == "__main__":
    main()
