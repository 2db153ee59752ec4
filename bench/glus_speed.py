"""GLUS inference and training cost at the shipped size (SmolLM2-135M-Instruct + the SynthRef SAM 2
at 256 px, the SAM 2 trunk as vision tower), the LLM and SAM 2 parts apart.

Inference: one expression over a SynthRef video (`--frames`), one pass from frame 0; every frame
is one LLM call (4 context + up to 4 query frames, 16 tokens each) and, when it answers [SEG],
one SAM 2 step. Printed: seconds per frame in all, in the vision tokens (tower + projector), in
the LLM calls and in the SAM 2 steps, and the process's peak resident memory (after loading, and
after the run) in a child process of its own. The same video is then run again with every LLM
call computed from its first token (no kept prefix of system text and context frames), and its
LLM seconds per frame are printed beside.

Training: `--train-steps` steps of configs/glus_synth.yaml (3 expressions x 4 context + 4 query
frames per step, from a fresh stage-2 model) and the seconds per step after the first.

Weights do not change the cost: `--model DIR` times a trained GLUS folder, else a fresh one of the
shipped layout.

    python bench/glus_speed.py [--model runs/glus_synth/final] [--frames 24] [--threads 2] [--train-steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inference(args: argparse.Namespace) -> dict[str, float]:
    from refseg.data import synth
    from refseg.methods.glus.build import build_glus, load_glus
    from refseg.methods.glus.model import GlusSpec
    from refseg.sam.checkpoint import load_sam2

    if args.model:
        model = load_glus(args.model)  # adapters merged
    else:
        model = build_glus(GlusSpec(), load_sam2("synth"), "synth").eval()
        model.llm.merge_lora()
    loaded = peak_mib()
    video = next(iter(synth.split_samples("valid_u", 11, 1)))
    frames = [np.asarray(video.load_frame(t % len(video))) for t in range(args.frames)]
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, fn):  # noqa: ANN001, ANN202
        def run(*a, **k):  # noqa: ANN002, ANN003, ANN202
            began = time.perf_counter()
            out = fn(*a, **k)
            spent[name] += time.perf_counter() - began
            return out
        return run

    model.vision.forward = timed("vision", model.vision.forward)
    calls = model.llm.forward
    model.llm.forward = timed("llm", calls)
    from refseg.engine import Session

    push, skip = Session.push, Session.skip
    Session.push = timed("sam2", push)  # type: ignore[method-assign]
    Session.skip = timed("sam2", skip)  # type: ignore[method-assign]
    began = time.perf_counter()
    with torch.inference_mode():
        result = model.segment(frames, video.expressions[0].text)
    total = time.perf_counter() - began
    n = len(frames)
    out = {"frames": n, "answered": sum(result.answered), "s_per_frame": total / n,
           "vision_s_per_frame": spent["vision"] / n, "llm_s_per_frame": spent["llm"] / n,
           "sam2_s_per_frame": spent["sam2"] / n, "peak_mib_loaded": loaded, "peak_mib_run": peak_mib()}

    def whole(ids, images, prefix=None):  # noqa: ANN001, ANN202  every call from its first token
        hidden, logits = calls(ids, images)
        return (hidden if prefix is None else hidden[prefix.rows:]), logits

    model.llm.forward = timed("llm_whole", whole)
    with torch.inference_mode():
        again = model.segment(frames, video.expressions[0].text)
    out["llm_s_per_frame_whole_calls"] = spent["llm_whole"] / n
    out["same_answers"] = int(again.answered == result.answered)
    out["mask_logit_gap"] = max(float((a - b).abs().max()) for a, b in zip(result.logits, again.logits))
    return out


def training(args: argparse.Namespace) -> dict[str, float]:
    from refseg.train.config import load_config
    from refseg.train.loop import train

    values = yaml.safe_load((ROOT / "configs" / "glus_synth.yaml").read_text())
    values["model"].pop("init")
    with tempfile.TemporaryDirectory() as tmp:
        values.update(out=tmp, steps=args.train_steps, log_every=1, checkpoint_every=10**6)
        run = train(load_config(values), progress=False)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    per_step = [values["batch_size"] / r["clips_per_s"] for r in records[1:]]
    return {"steps_timed": len(per_step), "s_per_step": float(np.median(per_step)), "peak_mib": peak_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a GLUS folder (default: a fresh model of the shipped layout)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=4, help="0: no training measurement")
    parser.add_argument("--part", choices=["inference", "training"], help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part is not None:
        print(json.dumps(inference(args) if args.part == "inference" else training(args)))
        return
    parts = ["inference"] + (["training"] if args.train_steps > 1 else [])
    for part in parts:  # each in its own process, so peak memory is its own
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--part", part], capture_output=True, text=True)
        if child.returncode:
            sys.exit(child.stderr[-3000:])
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(part, " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
