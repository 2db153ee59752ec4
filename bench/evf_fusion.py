"""EVF-SAM fusion comparison on SynthRef referring images, in the shape of the paper's Table 3.

The same BEiT-3 (configs/evf_synth.yaml) prompts the same frozen SAM 2 in three ways, each
trained with the same budget (the config's `steps`, or `--steps`): text only (the text [CLS]),
late fusion (image [CLS] and text [CLS] encoded apart, concatenated) and early fusion (the
image [CLS] of the joint encoding: EVF-SAM). With `--pretrain CONFIG` (a `beit3` pretraining
config, e.g. configs/beit3_synth.yaml) every row starts from the BEiT-3 that run writes to its
final/ (trained first if it is not there), as the paper starts every row from a pretrained one.
Each is scored with `refseg eval --protocol ris` (cIoU, gIoU) on SynthRef `valid` and `unseen`
(held-out colour, shape and paraphrase words), RefCOCO layout.

    python bench/evf_fusion.py --out runs/evf_fusion
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
    rows = []
    for name, fusion in VARIANTS.items():
        config = {**base, "out": str(out / fusion), "steps": steps, "evf": {**base.get("evf", {}), "fusion": fusion}}
        path = out / f"{fusion}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        if not (out / fusion / "final").is_dir():
            refseg("train", str(path), "--resume")
        scores = []
        for split in SPLITS:
            pred, report = out / fusion / f"pred_{split}", out / fusion / f"{split}.json"
            if not report.is_file():  # a scored row is not scored again
                refseg("predict", "--data", str(out / split), "--format", "refcoco", "--model",
                       str(out / fusion / "final"), "--out", str(pred))
                refseg("eval", "--protocol", "ris", "--gt", str(out / split), "--pred", str(pred), "--split", split,
                       "--out", str(report))
            summary = json.loads(report.read_text())["summary"]
            scores += [summary["cIoU"], summary["gIoU"]]
        rows.append((name, scores))
    print(f"EVF-SAM fusion on SynthRef referring images, {steps} steps x batch {base['batch_size']} each")
    print("| prompt encoder | valid cIoU | valid gIoU | unseen cIoU | unseen gIoU |\n| --- | --- | --- | --- | --- |")
    for name, s in rows:
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in s) + " |")


if __name__ == "__main__":
    main()
