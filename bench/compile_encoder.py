"""Does `torch.compile` pay for SAM 2's image encoder here? The sam2.1-hiera-tiny sizes at 1024 px
(random weights), eager against compiled, in float32 and in bfloat16 (autocast, as
`Session(dtype=torch.bfloat16)` runs it): best of 3 calls after the first, and the first compiled
call's time (the compilation).

    python bench/compile_encoder.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream import build  # noqa: E402


def best(work: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build("sam2.1-hiera-tiny-1024")
    pixels = torch.randn(1, 3, 1024, 1024)
    compiled = torch.compile(model.encode_images)
    print("| dtype | eager (s) | compiled (s) | ratio | compiling (s) |")
    print("| --- | --- | --- | --- | --- |")
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                eager = best(lambda: model.encode_images(pixels))
                start = time.perf_counter()
                compiled(pixels)
                compiling = time.perf_counter() - start
                fast = best(lambda: compiled(pixels))
            print(f"| {str(dtype).removeprefix('torch.')} | {eager:.3f} | {fast:.3f} | {fast / eager:.3f} | {compiling:.1f} |")


if __name__ == "__main__":
    main()
