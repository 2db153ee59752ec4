"""SAM-I2V ablation in the shape of the paper's Tab. 3-6, each row over several seeds.

Rows (PVS J&F: `--mode mask` the first-frame-mask protocol, `--mode online` J&F averaged over
N_frame = 1..8 with `--clicks` per interacted frame):

    base           image SAM + SAM 2's consecutive memory (no TFI, no MPG)      trained: plain
    + TFI          the TFI's embedding                                           trained: tfi
    + MSA uniform  the TFI model, memories drawn uniformly from the pools         (tfi's weights)
    + MSA          the TFI model, memories drawn by similarity                    (tfi's weights)
    + MPG no MCA   + memory prompts, cross-attention unmasked                    trained: mpg_unmasked
    + MPG          + memory prompts, cross-attention masked to foreground        trained: mpg

Training always reads consecutive memory (as the official training does), so the selector rows
reuse the TFI model's weights: four trainings per seed. Every training starts from the same
image-only SynthRef SAM 2 (`--image-sam`, the `final/` of configs/sam2_synth_image.yaml) with
configs/sam_i2v_synth.yaml's recipe, shortened by `--steps`; seeds change the new modules'
initialisation and the sampled clips. Runs are kept under `--out` and skipped when finished, so
a killed ablation resumes (an unfinished run resumes from its last checkpoint). Scores are kept per
seed (`--out`/results_s<seed>.json), so seeds can run in separate processes side by side. Evaluation is on a
SynthRef split from a seed no run trains on (`--gt`, e.g. `refseg synth --split test --seed 11
--format refdavis`) and, with `--scenes`, on scenario splits reported apart.

    python bench/sam_i2v_ablation.py --image-sam runs/sam2_synth_image/final --gt /data/pvs_test_s11 \\
        --scenes /data/pvs_occlusion /data/pvs_late_entry --seeds 0 1 2 --steps 300

Prints one Markdown row per ablation row once every seed is scored: mean and (max - min) / 2 over
seeds per split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch
import yaml
from replicates import cell

from refseg.engine import Session
from refseg.eval.interactive import evaluate_pvs
from refseg.io.atomic import atomic_file
from refseg.methods.sam_i2v import SamI2V
from refseg.train.config import load_config
from refseg.train.loop import train

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "sam_i2v_synth.yaml"
TRAININGS = {
    "plain": dict(tfi=False, mpg="none"),
    "tfi": dict(tfi=True, mpg="none"),
    "mpg_unmasked": dict(tfi=True, mpg="unmasked"),
    "mpg": dict(tfi=True, mpg="masked"),
}
ROWS = {  # row -> (training, selection at inference)
    "base": ("plain", "consecutive"),
    "+ TFI": ("tfi", "consecutive"),
    "+ MSA uniform": ("tfi", "uniform"),
    "+ MSA": ("tfi", "similarity"),
    "+ MPG no MCA": ("mpg_unmasked", "similarity"),
    "+ MPG": ("mpg", "similarity"),
}


def run_training(name: str, seed: int, args: argparse.Namespace) -> Path:
    out = Path(args.out) / f"{name}_s{seed}"
    if (out / "final" / "model.safetensors").is_file():
        return out / "final"
    values = yaml.safe_load(RECIPE.read_text())
    values.update(out=str(out), seed=seed, steps=args.steps, checkpoint_every=args.checkpoint_every)
    values["model"]["sam2"] = args.image_sam
    values["optim"]["warmup_steps"] = min(values["optim"]["warmup_steps"], args.steps // 10)
    values["sam_i2v"] = dict(TRAININGS[name])
    train(load_config(values), resume=True)
    return out / "final"


def score(model: SamI2V, selection: str, gt: str, args: argparse.Namespace) -> float:
    model.config = dataclasses.replace(model.config, selection=selection)
    hooks = model.hooks()
    split = args.split if gt == args.gt else None
    result = evaluate_pvs(Path(gt), lambda: Session(model.sam, hooks, seed=args.eval_seed), mode=args.mode,
                          split=split, clicks=args.clicks if args.mode == "online" else None)
    return float(result.summary["J&F" if args.mode == "mask" else "J&F (mean over N_frame)"])


def report(args: argparse.Namespace, splits: list[str]) -> None:
    results: dict[str, float] = {}
    for seed in args.seeds:
        path = Path(args.out) / f"results_s{seed}.json"
        if path.is_file():
            results.update(json.loads(path.read_text()))
    missing = [f"{row}|{s}|{gt}" for row in ROWS for s in args.seeds for gt in splits
               if f"{row}|{s}|{gt}" not in results]
    if missing:
        logging.info("%d scores still missing (e.g. %s); run the other seeds to get the table", len(missing), missing[0])
        return
    print("| row | " + " | ".join(Path(g).name for g in splits) + " |")
    print("| --- |" + " --- |" * len(splits))
    for row in ROWS:
        cells = []
        for gt in splits:
            cells.append(cell([results[f"{row}|{s}|{gt}"] for s in args.seeds]))
        print(f"| {row} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-sam", required=True, help="the image-only SAM 2 every training starts from")
    parser.add_argument("--gt", required=True, help="DAVIS-layout SynthRef split to score on")
    parser.add_argument("--scenes", nargs="*", default=[], help="more DAVIS-layout splits, reported apart")
    parser.add_argument("--split", default=None, help="ImageSets list of --gt to score (default: every sequence)")
    parser.add_argument("--mode", default="mask", choices=("mask", "online"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--clicks", type=int, default=3, choices=(1, 3, 5))
    parser.add_argument("--eval-seed", type=int, default=0, help="the selector's sampling seed at evaluation")
    parser.add_argument("--out", default="runs/sam_i2v_ablation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only print the table from the stored scores")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO)
    splits = [args.gt, *args.scenes]
    for seed in [] if args.report else args.seeds:
        results_file = Path(args.out) / f"results_s{seed}.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        for row, (training, selection) in ROWS.items():
            for gt in splits:
                key = f"{row}|{seed}|{gt}"
                if key in results:
                    continue
                model = SamI2V.from_pretrained(run_training(training, seed, args))
                results[key] = score(model, selection, gt, args)
                with atomic_file(results_file) as tmp:  # read back when the bench resumes
                    tmp.write_text(json.dumps(results, indent=1))
                logging.info("%s seed %d on %s: J&F %.4f", row, seed, gt, results[key])
    report(args, splits)

if __name__ == "__main__":
    main()
