"""EVF-SAM fusion comparison on SynthRef referring images, in the shape of the paper's Table 3.

The same BEiT-3 (configs/evf_synth.yaml) prompts the same frozen SAM 2 in three ways, each
trained with the same budget (the config's `steps`, or `--steps`): text only (the text [CLS]),
late fusion (image [CLS] and text [CLS] encoded apart, concatenated) and early fusion (the
image [CLS] of the joint encoding: EVF-SAM). With `--pretrain CONFIG` (a `beit3` pretraining
config, e.g. configs/beit3_synth.yaml) every row starts from the BEiT-3 that run writes to its
final/ (trained first if it is not there), as the paper starts every row from a pretrained one.
Each is scored with `refseg eval --protocol ris` (cIoU, gIoU) on SynthRef `valid` and `unseen`
(held-out colour, shape and paraphrase words), RefCOCO layout. Each row trains with every
seed of `--seeds` (config seed and data seed); the table gives mean ± spread over seeds
(`bench/replicates.py`) and early fusion is compared with each other row on valid cIoU, a
direction called only beyond the spread.

    python bench/evf_fusion.py --out runs/evf_fusion --seeds 0 1 2
    python bench/evf_fusion.py --pretrain configs/beit3_synth.yaml --out runs/evf_fusion_pretrained
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from replicates import cell, compare

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {"text only": "text", "late fusion (concat)": "late", "early fusion (EVF)": "early"}
SPLITS = ("valid", "unseen")


def refseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "refseg", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/evf_synth.yaml")
    parser.add_argument("--steps", type=int, help="training steps of each run (default: the config's)")
    parser.add_argument("--pretrain", help="a beit3 pretraining config whose final/ starts every row")
    parser.add_argument("--out", default="runs/evf_fusion")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds each row trains with")
    args = parser.parse_args()
    out = Path(args.out)
    for split in SPLITS:
        if not (out / split).is_dir():
            refseg("synth", "--out", str(out / split), "--split", split, "--seed", "0", "--format", "refcoco")
    base = yaml.safe_load(Path(args.config).read_text())
    if args.pretrain:
        encoder = Path(yaml.safe_load(Path(args.pretrain).read_text())["out"]) / "final"
        if not encoder.is_dir():
            refseg("train", args.pretrain, "--resume")
        base["evf"] = {**base.get("evf", {}), "encoder_weights": str(encoder)}
    steps = args.steps or base["steps"]
    columns = [f"{split} {metric}" for split in SPLITS for metric in ("cIoU", "gIoU")]
    rows: dict[str, dict[str, list[float]]] = {}
    for name, fusion in VARIANTS.items():
        rows[name] = {c: [] for c in columns}
        for seed in args.seeds:
            run = out / fusion / f"seed{seed}"
            config = {**base, "out": str(run), "steps": steps, "seed": seed, "data": {**base.get("data", {}), "seed": seed},
                      "evf": {**base.get("evf", {}), "fusion": fusion}}
            path = out / fusion / f"seed{seed}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            if not (run / "final").is_dir():
                refseg("train", str(path), "--resume")
            for split in SPLITS:
                pred, report = run / f"pred_{split}", run / f"{split}.json"
                if not report.is_file():  # a scored run is not scored again
                    refseg("predict", "--data", str(out / split), "--format", "refcoco", "--model",
                           str(run / "final"), "--out", str(pred))
                    refseg("eval", "--protocol", "ris", "--gt", str(out / split), "--pred", str(pred), "--split", split,
                           "--out", str(report))
                summary = json.loads(report.read_text())["summary"]
                rows[name][f"{split} cIoU"].append(summary["cIoU"])
                rows[name][f"{split} gIoU"].append(summary["gIoU"])
    print(f"EVF-SAM fusion on SynthRef referring images, {steps} steps x batch {base['batch_size']} each, "
          f"seeds {' '.join(map(str, args.seeds))} (mean ± half range (seeds))")
    print("| prompt encoder | " + " | ".join(columns) + " |\n| --- |" + " --- |" * len(columns))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(cell(values[c]) for c in columns) + " |")
    early = "early fusion (EVF)"
    for name in rows:
        if name != early:
            print(compare("valid cIoU", early, rows[early]["valid cIoU"], name, rows[name]["valid cIoU"]))


if __name__ == "__main__":
    main()
