"""GLUS stage 1 (SynthRef referring images): does the weight of the language loss decide whether
the [SEG] token reads the expression? Each row is configs/glus_synth_image.yaml with one change,
started from the bare LLM (not from the read-out stage), trained `--steps` steps with every seed
of `--seeds`, then scored by bench/glus_grounding_probe.py on single images of a split and seed
no row trained on (`--probe-split`, `--probe-seed`).

Rows:
    ce 1.0     the paper's loss weights (CE 1.0, BCE 2.0, Dice 0.5, contrastive 0.1)
    ce 0.1     the language loss weighted 0.1, everything else the same

Runs are kept under `--out`/<row>/seed<s> and resumed when stopped; scores are kept per run
(`score.json` in its folder), so rows and seeds can run in separate processes side by side.
Prints one Markdown row per ablation row once every seed is scored: mean and (max - min) / 2
over seeds; a direction is called only where the means differ by more than both spreads.

    python bench/glus_stage1_ablation.py --steps 300 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from glus_grounding_probe import probe  # noqa: E402
from replicates import cell, compare  # noqa: E402

from refseg.io.atomic import atomic_file  # noqa: E402
from refseg.train.config import load_config  # noqa: E402
from refseg.train.loop import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROWS = {"ce 1.0": {"loss": {"ce": 1.0}}, "ce 0.1": {"loss": {"ce": 0.1}}}
METRICS = ("mIoU", "token_cos", "same_mask")


def run_folder(out: Path, row: str, seed: int) -> Path:
    return out / row.replace(" ", "_") / f"seed{seed}"


def train_row(row: str, seed: int, args: argparse.Namespace) -> Path:
    """Train (or resume) one row at one seed; returns its final/ folder."""
    run = run_folder(Path(args.out), row, seed)
    if (run / "final").is_dir():
        return run / "final"
    config = yaml.safe_load((ROOT / "configs/glus_synth_image.yaml").read_text())
    config["model"].pop("init")  # the rows start from the bare LLM, not from the read-out stage
    config.update(out=str(run), steps=args.steps, seed=seed, checkpoint_every=max(10, args.steps // 6))
    config["optim"]["warmup_steps"] = max(1, args.steps // 20)
    for section, values in ROWS[row].items():
        config[section].update(values)
    train(load_config(config), resume=True, progress=False)
    return run / "final"


def score(final: Path, args: argparse.Namespace) -> dict[str, float]:
    file = final.parent / "score.json"
    if file.is_file():
        return json.loads(file.read_text())
    result = probe(str(final), args.images, args.probe_split, args.probe_seed)
    with atomic_file(file) as tmp:  # read back when the bench resumes
        tmp.write_text(json.dumps(result))
    return result


def report(args: argparse.Namespace) -> None:
    print(f"| row ({args.steps} steps, seeds {' '.join(map(str, args.seeds))}) | "
          + " | ".join(METRICS) + " |")
    print("| --- |" + " --- |" * len(METRICS))
    values: dict[tuple[str, str], list[float]] = {}
    for row in args.rows:
        files = [run_folder(Path(args.out), row, s) / "score.json" for s in args.seeds]
        if not all(f.is_file() for f in files):
            print(f"| {row} | (not every seed scored) |")
            continue
        scores = [json.loads(f.read_text()) for f in files]
        for metric in METRICS:
            values[(row, metric)] = [s[metric] for s in scores]
        print(f"| {row} | " + " | ".join(cell(values[(row, m)]) for m in METRICS) + " |")
    if all((r, "mIoU") in values for r in args.rows) and len(args.rows) == 2:
        a, b = args.rows
        print(compare("mIoU", a, values[(a, "mIoU")], b, values[(b, "mIoU")]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--images", type=int, default=16, help="probe images (3 expressions each)")
    parser.add_argument("--probe-split", default="valid")
    parser.add_argument("--probe-seed", type=int, default=13, help="a seed no row trained or tuned on")
    parser.add_argument("--out", default="runs/glus_stage1_ablation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="print the table from the scores kept, train nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.report:
        for seed in args.seeds:
            for row in args.rows:
                score(train_row(row, seed, args), args)
    report(args)


if __name__ == "__main__":
    main()
