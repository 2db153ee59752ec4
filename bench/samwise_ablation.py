"""SAMWISE component ablation on SynthRef, in the shape of the paper's Table 2.

Every variant trains with the same budget (configs/samwise_synth.yaml, `--steps` overrides the
step count) on the same frozen SAM 2 and text encoder, from freshly initialised modules (the
config's `model.init` is dropped: a stage-1 checkpoint holds the full model's names, which the
reduced variants lack, and would give the full model a head start), then is scored on SynthRef
`valid_u` (MeViS layout): J&F over all expressions and on the tracking-bias subset. `valid_u`
holds two tracking-bias expressions, too few to tell whether a component helps there, so each
variant is also scored on the first `--bias-videos` tracking-bias scenes of `valid_u`'s generator
(`refseg synth --scenario tracking_bias`; the first two are `valid_u`'s own).

Each row trains with every seed of `--seeds` (the config's seed and data seed both take it);
the table gives each row's mean ± spread over seeds (`bench/replicates.py`), and each row is
compared with the one above it (the paper adds one component per row), a direction called only
beyond the spread.

    python bench/samwise_ablation.py --steps 600 --out runs/ablation        # hours on a CPU
    python bench/samwise_ablation.py --variants plus_hsa plus_cme --seeds 0 1 2   # some rows only

A stopped run continues where it stopped when started again with the same arguments (each
variant and seed resumes from its last checkpoint; a scored one is not run again).

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
from replicates import cell, compare

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "MLP only": dict(adapters=False, cme=False),
    "+ TVA": dict(hsa=False, vta=False, tva=True, cme=False),
    "+ VTA": dict(hsa=False, vta=True, tva=False, cme=False),
    "+ TVA + VTA": dict(hsa=False, vta=True, tva=True, cme=False),
    "+ HSA": dict(hsa=True, vta=True, tva=True, cme=False),
    "+ CME": dict(hsa=True, vta=True, tva=True, cme=True),
}
SLUGS = {name: name.replace("+", "plus").replace(" ", "_").lower() for name in VARIANTS}


def refseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "refseg", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/samwise_synth.yaml")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--bias-videos", type=int, default=20, help="tracking-bias scenes to score on")
    parser.add_argument("--variants", nargs="+", choices=list(SLUGS.values()), default=list(SLUGS.values()),
                        help="rows to train and score (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds each row trains with")
    args = parser.parse_args()
    out = Path(args.out)
    data, bias = out / "valid_u", out / f"tracking_bias_{args.bias_videos}"
    if not data.is_dir():
        refseg("synth", "--out", str(data), "--split", "valid_u", "--seed", "0", "--format", "mevis")
    if not bias.is_dir():
        refseg("synth", "--out", str(bias), "--split", "valid_u", "--seed", "0", "--format", "mevis",
               "--scenario", "tracking_bias", "--count", str(args.bias_videos))
    base = yaml.safe_load(Path(args.config).read_text())
    columns = ("J&F", "J&F tracking bias", f"J&F tracking bias, {args.bias_videos} scenes")
    rows: dict[str, dict[str, list[float]]] = {}
    for name, slug in SLUGS.items():
        if slug not in args.variants:
            continue
        flags = VARIANTS[name]
        model = {k: v for k, v in base.get("model", {}).items() if k != "init"}
        rows[name] = {c: [] for c in columns}
        for seed in args.seeds:
            run = out / slug / f"seed{seed}"
            config = {**base, "out": str(run), "steps": args.steps, "model": model, "seed": seed,
                      "data": {**base.get("data", {}), "seed": seed}, "samwise": {**base.get("samwise", {}), **flags}}
            path = run.parent / f"seed{seed}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            if not (run / "final").is_dir():
                refseg("train", str(path), "--resume")
            summaries = [score(run, gt) for gt in (data, bias)]
            for column, value in zip(columns, (summaries[0]["J&F"], summaries[0]["J&F tracking_bias"],
                                               summaries[1]["J&F tracking_bias"])):
                rows[name][column].append(value)
    print(f"SAMWISE ablation, SynthRef valid_u, {args.steps} steps each, seeds {' '.join(map(str, args.seeds))} "
          "(mean ± half range (seeds))")
    print("| variant | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(cell(values[c]) for c in columns) + " |")
    names = list(rows)
    for above, below in zip(names, names[1:]):
        print(compare("J&F", below, rows[below]["J&F"], above, rows[above]["J&F"]))


def score(run: Path, gt: Path) -> dict[str, float]:
    """The MeViS summary of `run/final` on the split `gt`; a split already scored is read back."""
    report = run / f"{gt.name}.json"
    if not report.is_file():
        pred = run / f"pred_{gt.name}"
        refseg("predict", "--data", str(gt), "--model", str(run / "final"), "--out", str(pred))
        refseg("eval", "--protocol", "mevis", "--gt", str(gt), "--pred", str(pred), "--out", str(report))
    return json.loads(report.read_text())["summary"]


if __name__ == "__main__":
    main()
