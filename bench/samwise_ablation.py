"""SAMWISE component ablation on SynthRef, in the shape of the paper's Table 2.

Every variant trains with the same budget (configs/samwise_synth.yaml, `--steps` overrides the
step count) on the same frozen SAM 2 and text encoder, from freshly initialised modules (the
config's `model.init` is dropped: a stage-1 checkpoint holds the full model's names, which the
reduced variants lack, and would give the full model a head start), then is scored on SynthRef
`valid_u` (MeViS layout): J&F over all expressions and on the tracking-bias subset.

    python bench/samwise_ablation.py --steps 600 --out runs/ablation        # hours on a CPU

A stopped run continues where it stopped when started again with the same arguments (each
variant resumes from its last checkpoint; a scored variant is not run again).

Variants: MLP-only (no adapter), + TVA, + VTA, + TVA + VTA, + HSA (full adapter), + CME.
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

VARIANTS = {
    "MLP only": dict(adapters=False, cme=False),
    "+ TVA": dict(hsa=False, vta=False, tva=True, cme=False),
    "+ VTA": dict(hsa=False, vta=True, tva=False, cme=False),
    "+ TVA + VTA": dict(hsa=False, vta=True, tva=True, cme=False),
    "+ HSA": dict(hsa=True, vta=True, tva=True, cme=False),
    "+ CME": dict(hsa=True, vta=True, tva=True, cme=True),
}


def refseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "refseg", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/samwise_synth.yaml")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="runs/ablation")
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "valid_u"
    if not data.is_dir():
        refseg("synth", "--out", str(data), "--split", "valid_u", "--seed", "0", "--format", "mevis")
    base = yaml.safe_load(Path(args.config).read_text())
    rows = []
    for name, flags in VARIANTS.items():
        slug = name.replace("+", "plus").replace(" ", "_").lower()
        model = {k: v for k, v in base.get("model", {}).items() if k != "init"}
        config = {**base, "out": str(out / slug), "steps": args.steps, "model": model,
                  "samwise": {**base.get("samwise", {}), **flags}}
        path = out / f"{slug}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        report = out / slug / "valid_u.json"
        if not report.is_file():  # a finished variant is not trained or scored again
            if not (out / slug / "final").is_dir():
                refseg("train", str(path), "--resume")
            pred = out / slug / "pred"
            refseg("predict", "--data", str(data), "--model", str(out / slug / "final"), "--out", str(pred))
            refseg("eval", "--protocol", "mevis", "--gt", str(data), "--pred", str(pred), "--out", str(report))
        result = json.loads(report.read_text())
        rows.append((name, result["summary"]["J&F"], result["summary"].get("J&F tracking_bias", float("nan"))))
    print(f"SAMWISE ablation, SynthRef valid_u, {args.steps} steps each")
    print("| variant | J&F | J&F tracking bias |\n| --- | --- | --- |")
    for name, jf, bias in rows:
        print(f"| {name} | {jf:.3f} | {bias:.3f} |")


if __name__ == "__main__":
    main()
