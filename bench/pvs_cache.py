"""What the feature cache saves in interactive evaluation: `evaluate_pvs` with and without it.

Runs the same protocol on the same sequences twice, once with every session encoding its frames
itself and once with the sessions sharing a `FeatureCache` (what `refseg eval --protocol pvs`
does), one after the other in one process. Prints the seconds of each, their ratio, the cache's
hit rate and whether every per-object score is equal.

    python bench/pvs_cache.py --gt DAVIS_LAYOUT --split SPLIT --method sam-i2v --model DIR --mode online --clicks 3
    python bench/pvs_cache.py --gt DAVIS_LAYOUT --method sam2 --sam2 DIR --mode offline
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from refseg.engine import FeatureCache, Session
from refseg.eval.interactive import evaluate_pvs
from refseg.methods.sam_i2v import SamI2V
from refseg.sam.checkpoint import load_sam2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True)
    parser.add_argument("--split", default=None)
    parser.add_argument("--method", choices=("sam2", "sam-i2v"), default="sam2")
    parser.add_argument("--sam2", help="SAM 2 model folder or .pt (--method sam2)")
    parser.add_argument("--model", help="SAM-I2V folder (--method sam-i2v)")
    parser.add_argument("--mode", default="online", choices=("online", "offline", "mask"))
    parser.add_argument("--clicks", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.method == "sam-i2v":
        i2v = SamI2V.from_pretrained(args.model)
        model, hooks = i2v.sam, i2v.hooks()
    else:
        model, hooks = load_sam2(args.sam2).eval(), None
    clicks = args.clicks if args.mode != "mask" else None
    gt = Path(args.gt)
    seconds, rows, cache = {}, {}, FeatureCache()
    for variant in ("plain", "cached"):
        shared = cache if variant == "cached" else None
        start = time.perf_counter()
        result = evaluate_pvs(gt, lambda: Session(model, hooks, seed=0, feature_cache=shared), mode=args.mode,
                              split=args.split, clicks=clicks)
        seconds[variant], rows[variant] = time.perf_counter() - start, result.rows
        print(f"{variant}: {seconds[variant]:.0f} s, {result.summary}")
    print("| protocol | objects | plain s | cached s | plain / cached | cache hits | scores equal |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.method} {args.mode} {clicks or ''} | {len(rows['plain'])} | {seconds['plain']:.0f} | "
          f"{seconds['cached']:.0f} | {seconds['plain'] / seconds['cached']:.2f} | "
          f"{cache.hits / max(cache.hits + cache.misses, 1):.0%} | {rows['plain'] == rows['cached']} |")

if __name__ == "__main__":
    main()
