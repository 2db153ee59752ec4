"""GLUS ablation on SynthRef in the shape of the paper's Tab. 4 (cumulative rows), Tab. 6
(propagation from the key frame) and Tab. C (memory stride), each row over several seeds.

Rows (all trained with configs/glus_synth.yaml's recipe from the same stage-1 model, `--steps`
each; scored with the MeViS protocol on `--gt` and, apart, on the `--scenes` splits):

    global            4 context frames + one isolated query frame per call; no memory bank
    local             no context frames, a window of 4 query frames; no memory bank
    + GLU             context frames + the query window (global-local unification); no memory bank
    + MB              + SAM 2's memory bank (7 memories, stride 1 in training, 3 at inference)
    + OC              + the object contrastive loss (0.1): the full training recipe
    + KFS             the + OC model from the key frame of a selector (configs/glus_kfs_synth.yaml's
                      recipe, labelled by the + OC run's step-`--early` checkpoint)
    SAM 2 from KF     Tab. 6: the + KFS key frame's GLUS mask propagated by SAM 2 (the model's
                      own SAM 2, forward and backward), against GLUS's own passes (+ KFS)
    stride 1 / 5      Tab. C: the + OC model at inference memory stride 1 and 5 (3 is + OC)

Seeds change the new modules' initialisation and the sampled clips. Runs are kept under `--out`
and resumed when stopped; scores are kept per seed (`--out`/scores_s<seed>.json), so seeds can
run in separate processes side by side. Prints one Markdown row per ablation row once every seed
is scored: mean and (max - min) / 2 over seeds, per split.

    refseg synth --out /data/glus_valid_u_s11 --split valid_u --seed 11 --format mevis
    python bench/glus_ablation.py --gt /data/glus_valid_u_s11 --scenes /data/tb_s11 /data/late_s11 \\
        --init runs/glus_synth_image/final --steps 100 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import yaml
from replicates import cell

from refseg.io.atomic import atomic_file

ROOT = Path(__file__).resolve().parent.parent
NO_MB = {"num_maskmem": 0}
TRAININGS = {  # training -> (data changes, inference changes, contrastive weight)
    "global": ({"clip_len": 1}, {"context_frames": 4, "query_window": 1, **NO_MB}, 0.0),
    "local": ({"clip_len": 4}, {"context_frames": 0, "query_window": 4, **NO_MB}, 0.0),
    "glu": ({"clip_len": 4}, {"context_frames": 4, "query_window": 4, **NO_MB}, 0.0),
    "mb": ({"clip_len": 4}, {"context_frames": 4, "query_window": 4}, 0.0),
    "oc": ({"clip_len": 4}, {"context_frames": 4, "query_window": 4}, 0.1),
}
ROWS = {  # row -> (training, how it is run)
    "global": ("global", "plain"), "local": ("local", "plain"), "+ GLU": ("glu", "plain"), "+ MB": ("mb", "plain"),
    "+ OC": ("oc", "plain"), "+ KFS": ("oc", "selector"), "SAM 2 from KF": ("oc", "sam2_from_key"),
    "stride 1": ("oc", "stride1"), "stride 5": ("oc", "stride5"),
}


def refseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "refseg", *args], check=True)


def train_row(name: str, seed: int, args: argparse.Namespace) -> Path:
    """Train `name` (a key of TRAININGS) for `seed`; returns its run folder."""
    run = Path(args.out) / f"{name}_s{seed}"
    if (run / "final" / "model.safetensors").is_file():
        return run
    values = yaml.safe_load((ROOT / "configs" / "glus_synth.yaml").read_text())
    data, inference, contrastive = TRAININGS[name]
    values.update(out=str(run), seed=seed, steps=args.steps, checkpoint_every=args.early)
    values["data"].update(data)
    values["glus"]["inference"].update(inference)
    values["loss"]["contrastive"] = contrastive
    values["model"]["init"] = args.init
    values["optim"]["warmup_steps"] = min(values["optim"]["warmup_steps"], args.steps // 10)
    path = run.parent / f"{run.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    refseg("train", str(path), "--resume")
    return run


def train_selector(run: Path, seed: int, args: argparse.Namespace) -> Path:
    """The key-frame selector labelled by `run`'s step-`--early` checkpoint."""
    out = run.parent / f"kfs_s{seed}"
    if not (out / "final" / "model.safetensors").is_file():
        values = yaml.safe_load((ROOT / "configs" / "glus_kfs_synth.yaml").read_text())
        values.update(out=str(out), seed=seed, steps=args.selector_steps)
        values["key_frames"].update(labels=str(run.parent / f"kfs_labels_s{seed}.json"),
                                    early=str(run / "checkpoints" / f"step_{args.early:07d}"))
        path = run.parent / f"kfs_s{seed}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        refseg("train", str(path), "--resume")
    return out


@torch.no_grad()
def sam2_from_key_frame(run: Path, selector: Path, gt: Path, pred: Path) -> None:
    """Tab. 6's baseline: GLUS's mask on the selector's key frame, propagated by SAM 2 alone."""
    from refseg.data import formats
    from refseg.engine.offline import segment_frames
    from refseg.io.atomic import atomic_dir
    from refseg.io.masks import write_mask_png
    from refseg.methods.glus.build import load_glus, load_selector
    from refseg.prompts import Mask

    glus, pick = load_glus(run / "final"), load_selector(selector / "final")
    with atomic_dir(pred) as stage:
        for sample in formats.reader("mevis")(gt):
            frames = list(sample.frames())
            for expression in sample.expressions:
                key = pick.key_frame(frames, expression.text)
                mask = glus.segment(frames, expression.text, key).masks[key]
                masks = [np.zeros(frames[0].shape[:2], bool) for _ in frames]
                if mask.any():
                    prompts = {key: {1: Mask(mask)}}
                    for order in (range(key, len(frames)), range(key, -1, -1)):
                        for result in segment_frames(glus.sam, frames, prompts, progress=False, order=order):
                            masks[result.index] = result.objects[1].mask
                for name, m in zip(sample.frame_names, masks):
                    write_mask_png(stage / sample.video_id / expression.exp_id / f"{name}.png", m)


def score(run: Path, how: str, gt: Path, seed: int, args: argparse.Namespace) -> float:
    """MeViS J&F of `run` run as `how` on split `gt` (predictions and reports kept beside the run)."""
    report = run / f"{how}_{gt.name}.json"
    if not report.is_file():
        pred = run / f"pred_{how}_{gt.name}"
        if not pred.is_dir():
            model = run / "final"
            if how == "sam2_from_key":
                sam2_from_key_frame(run, train_selector(run, seed, args), gt, pred)
            elif how == "selector":
                refseg("predict", "--data", str(gt), "--format", "mevis", "--method", "glus", "--model", str(model),
                       "--selector", str(train_selector(run, seed, args) / "final"), "--out", str(pred))
            elif how.startswith("stride"):
                folder = run / f"final_{how}"
                if not folder.is_dir():
                    from refseg.methods.glus.build import load_glus

                    glus = load_glus(model, merge=False)
                    glus.spec = dataclasses.replace(glus.spec, inference=dataclasses.replace(
                        glus.spec.inference, memory_stride=int(how.removeprefix("stride"))))
                    glus.save_pretrained(folder)
                refseg("predict", "--data", str(gt), "--format", "mevis", "--method", "glus", "--model", str(folder),
                       "--out", str(pred))
            else:
                refseg("predict", "--data", str(gt), "--format", "mevis", "--method", "glus", "--model", str(model),
                       "--out", str(pred))
        refseg("eval", "--protocol", "mevis", "--gt", str(gt), "--pred", str(pred), "--out", str(report))
    return float(json.loads(report.read_text())["summary"]["J&F"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="a SynthRef split in the MeViS layout, from a seed never trained on")
    parser.add_argument("--scenes", nargs="*", default=[], help="scenario splits scored apart")
    parser.add_argument("--init", default="runs/glus_synth_image/final", help="the stage-1 model every row starts from")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--early", type=int, default=50, help="checkpoint interval; its first labels the selector")
    parser.add_argument("--selector-steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--out", default="runs/glus_ablation")
    args = parser.parse_args()
    splits = [Path(args.gt), *map(Path, args.scenes)]
    for seed in args.seeds:
        file = Path(args.out) / f"scores_s{seed}.json"
        scores = json.loads(file.read_text()) if file.is_file() else {}
        for row in args.rows:
            training, how = ROWS[row]
            run = train_row(training, seed, args)
            for gt in splits:
                key = f"{row}|{gt.name}"
                if key not in scores:
                    scores[key] = score(run, how, gt, seed, args)
                    with atomic_file(file) as tmp:  # read back when the bench resumes
                        tmp.write_text(json.dumps(scores, indent=1))
    table = {}
    for seed in args.seeds:
        file = Path(args.out) / f"scores_s{seed}.json"
        for key, value in (json.loads(file.read_text()) if file.is_file() else {}).items():
            table.setdefault(key, []).append(value)
    print("| row | " + " | ".join(g.name for g in splits) + " |")
    print("| --- |" + " --- |" * len(splits))
    for row in args.rows:
        cells = []
        for gt in splits:
            values = table.get(f"{row}|{gt.name}", [])
            cells.append(cell(values))
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
