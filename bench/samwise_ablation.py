"""SAMWISE component ablation on SynthRef, in the shape of the paper's Table 2.

Every variant trains with the same budget (configs/samwise_synth.yaml, `--steps` overrides the
step count) on the same frozen SAM 2 and text encoder, from freshly initialised modules (the
config's `model.init` is dropped: a stage-1 checkpoint holds the full model's names, which the
reduced variants lack, and would give the full model a head start), then is scored on SynthRef
`valid_u` (MeViS layout): J&F over all expressions and on the tracking-bias subset. `valid_u`
holds two tracking-bias expressions, too few to tell whether a component helps there, so each
variant is also scored on the first `--bias-videos` tracking-bias scenes of `valid_u`'s generator
(`refseg synth --scenario tracking_bias`; the first two are `valid_u`'s own).

    python bench/samwise_ablation.py --steps 600 --out runs/ablation        # hours on a CPU
    python bench/samwise_ablation.py --variants plus_hsa plus_cme           # some rows only

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
    args = parser.parse_args()
    out = Path(args.out)
    data, bias = out / "valid_u", out / f"tracking_bias_{args.bias_videos}"
    if not data.is_dir():
        refseg("synth", "--out", str(data), "--split", "valid_u", "--seed", "0", "--format", "mevis")
    if not bias.is_dir():
        refseg("synth", "--out", str(bias), "--split", "valid_u", "--seed", "0", "--format", "mevis",
               "--scenario", "tracking_bias", "--count", str(args.bias_videos))
    base = yaml.safe_load(Path(args.config).read_text())
    rows = []
    for name, slug in SLUGS.items():
        if slug not in args.variants:
            continue
        flags = VARIANTS[name]
        model = {k: v for k, v in base.get("model", {}).items() if k != "init"}
        config = {**base, "out": str(out / slug), "steps": args.steps, "model": model,
                  "samwise": {**base.get("samwise", {}), **flags}}
        path = out / f"{slug}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        if not (out / slug / "final").is_dir():
            refseg("train", str(path), "--resume")
        summaries = [score(out / slug, gt) for gt in (data, bias)]
        rows.append((name, summaries[0]["J&F"], summaries[0]["J&F tracking_bias"], summaries[1]["J&F tracking_bias"]))
    print(f"SAMWISE ablation, SynthRef valid_u, {args.steps} steps each")
    print(f"| variant | J&F | J&F tracking bias | J&F tracking bias, {args.bias_videos} scenes |")
    print("| --- | --- | --- | --- |")
    for name, jf, bias_jf, many in rows:
        print(f"| {name} | {jf:.3f} | {bias_jf:.3f} | {many:.3f} |")


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
