"""SAM2-LOVE on SynthRef's audio-visual scenes, and its ablation in the shape of the paper's
Tab. 2-6, each row over several seeds.

Rows (each a training of configs/sam2_love_synth.yaml's recipe, or `--recipe`'s, shortened by `--steps`):

    full        [his] with the current frame, 6 fusion layers, propagated [seg], SAM 2 decoder trained
    no his      Tab. 2: without token accumulation
    1 layer     Tab. 3: one fusion layer
    mean        Tab. 5: the mean of one pass over all frames instead of the propagated token
    sam frozen  Tab. 6: SAM 2's prompt encoder and mask decoder frozen
    + motion    refseg's motion cue on the full row (`LoveConfig.motion`), not a row of the paper

Each trained model is scored with `refseg predict --format refavs` + `refseg eval --protocol refavs`
semantics on SynthRef audio-visual splits from a seed no run trains on (`--data`: a folder holding
`test/`, `unseen/` and `sound_sync/`, each written by `refseg synth --format refavs --seed 11`, the
last with `--scenario sound_sync`): seen J&F (`test`), unseen J&F, null S, and J&F on the
expressions only the sound tells apart (the `sound_sync` scenes' sound expressions), with the
video's sound, with silence (the same model, given no sound) and with another video's sound (the
next `sound_sync` video's: a sound of the same kind that tells nothing about this scene). A run
scored before a column existed gets that column when the bench runs over it again.

Each row and seed first trains its own grounding stage (`--ground`, configs/sam2_love_synth_ground.yaml
by default, with the row's changes applied to it too; refseg.train.sam2_love) and the recipe starts
from that stage's last checkpoint (`--no-ground`: the recipe alone). A row whose changes the stage
never uses ("sam frozen": SAM 2 decodes nothing there; "+ motion": the stage's chain is frame 0
alone, whose motion is zero) starts from the full row's stage of the same seed, which it would
otherwise train again step for step.

Runs live under `--out/<row>/seed<k>` and are skipped when finished (an unfinished run resumes
from its last checkpoint); scores are kept per run (`scores.json`), so seeds and rows can run in
separate processes side by side.

    python bench/sam2_love_ablation.py --data /data/love_s11 --rows full --seeds 0 1 2 --steps 600
    python bench/sam2_love_ablation.py --data /data/love_s11 --report

Prints one Markdown row per ablation row: mean and (max - min) / 2 over seeds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import yaml
from replicates import cell

from refseg.data import formats, synth
from refseg.data.sample import VideoSample
from refseg.eval.protocols import evaluate_refavs
from refseg.io.atomic import atomic_file
from refseg.methods.sam2_love import Sam2Love
from refseg.predict import predict_expressions
from refseg.train.config import load_config
from refseg.train.loop import train

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "sam2_love_synth.yaml"
GROUND = RECIPE.with_name("sam2_love_synth_ground.yaml")
ROWS = {
    "full": {},
    "no his": {"history": "off"},
    "1 layer": {"layers": 1},
    "mean": {"prompt": "mean"},
    "sam frozen": {"train_prompt_encoder": False, "train_mask_decoder": False},
    "+ motion": {"motion": True},
}
SAM2_FLAGS = {"train_prompt_encoder", "train_mask_decoder"}
log = logging.getLogger("sam2_love_ablation")


def run_dir(out: Path, row: str, seed: int) -> Path:
    return out / row.replace(" ", "_") / f"seed{seed}"


def reaches_ground(row: str, stage: dict) -> bool:
    """Whether `row`'s changes alter a grounding stage of config `stage`. A stage in which SAM 2
    decodes nothing (every decode loss 0) never uses its prompt encoder or mask decoder, so rows
    that only freeze those ("sam frozen") would train the full row's stage again, step for step;
    they share it instead. So do rows that only add the motion cue to a stage whose chain is
    frame 0 alone (`data.chain_frames: 1`): frame 0's motion is zero, and the cue's projection
    starts at zero and draws nothing from the random stream, so it adds nothing and learns
    nothing there."""
    loss = stage.get("loss", {})
    decodes = any(loss.get(k, 0) for k in ("bce", "dice", "object", "place"))
    unused = (set() if decodes else SAM2_FLAGS) | ({"motion"} if stage.get("data", {}).get("chain_frames") == 1 else set())
    return bool(set(ROWS[row]) - unused)


def trained(row: str, seed: int, steps: int, out: Path, recipe: Path = RECIPE, ground: Path | None = None,
            ground_steps: int | None = None) -> Path:
    """Train (or finish training) one row and seed of `recipe`, after its own grounding stage
    (`ground`, `ground_steps` or the config's, under <run>/ground) when one is given; the final/
    folder."""
    folder = run_dir(out, row, seed)
    if (folder / "final" / "model.safetensors").is_file():
        return folder / "final"
    raw = yaml.safe_load(recipe.read_text())
    raw.update(out=str(folder), steps=steps, seed=seed, checkpoint_every=min(100, steps))
    raw["sam2_love"] = {**raw["sam2_love"], **ROWS[row]}
    if ground is not None:
        stage = yaml.safe_load(ground.read_text())
        count = ground_steps or stage["steps"]
        stage_row = row if reaches_ground(row, stage) else "full"
        stage_dir = run_dir(out, stage_row, seed) / "ground"
        stage.update(out=str(stage_dir), steps=count, seed=seed)  # its config's checkpoints: resumable
        stage["sam2_love"] = {**stage["sam2_love"], **ROWS[stage_row]}
        last = stage_dir / "checkpoints" / f"step_{count:07d}"
        if not (last / "model.safetensors").is_file():
            train(load_config(stage), resume=True)
        raw["model"] = {**raw["model"], "init": str(last)}
    train(load_config(raw), resume=True)
    return folder / "final"


def sound_only(root: Path) -> set[str]:
    """uids of the expressions that only the sound tells apart, in a refavs folder of SynthRef
    sound_sync scenes (the scene is rebuilt from its video id, `<split>_<seed>_<index>`)."""
    with (root / "metadata.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if not r["uid"].startswith("null_")]
    keep = set()
    for row in rows:
        split, seed, index = row["vid"].rsplit("_", 2)[0].replace("-", "_").rsplit("_", 2)
        scene = synth.make_scene(split, int(seed), int(index), audio_visual=True)
        exp = row["uid"].rsplit("_", 1)[1]
        if any(e.exp_id == exp and "sound_sync" in e.phenomena for e in scene.expressions):
            keep.add(row["uid"])
    return keep


SOUNDS = {"own": "", "silence": " (silence)", "other": " (another video's sound)"}


def with_sound(samples: list[VideoSample], sound: str) -> list[VideoSample]:
    """`samples` as they are ("own", "silence": the model is then given none), or each with the
    sound of the next video of the list ("other": a sound of the same kind that names nothing here)."""
    if sound != "other":
        return samples
    following = samples[1:] + samples[:1]
    return [dataclasses.replace(s, audio=n.audio, sample_rate=n.sample_rate) for s, n in zip(samples, following)]


def score(model_dir: Path, data: Path, splits: tuple[str, ...] = ("test", "unseen", "sound_sync"),
          sounds: tuple[str, ...] = tuple(SOUNDS)) -> dict[str, float]:
    """Scores of the model in `model_dir` on `data`'s `splits`; sound_sync is scored with each of
    `sounds` (`with_sound`)."""
    model = Sam2Love.from_pretrained(model_dir)
    result: dict[str, float] = {}
    for split in splits:
        root = data / split
        samples = list(formats.reader("refavs")(root))
        for sound in sounds if split == "sound_sync" else ("own",):
            with tempfile.TemporaryDirectory() as tmp:
                pred = Path(tmp) / "pred"
                predict_expressions(model, with_sound(samples, sound), pred, layout="refavs", audio=sound != "silence")
                ev = evaluate_refavs(pred, root)
            if split == "sound_sync":
                keep = sound_only(root)
                rows = [r for r in ev.rows if r["sample"] in keep]
                jf = float(np.mean([(r["J"] + r["F"]) / 2 for r in rows]))
                result["sound-only J&F" + SOUNDS[sound]] = jf
            elif split == "test":
                result["seen J&F"] = ev.summary["seen J&F"]
                result["null S"] = ev.summary.get("null S", float("nan"))
            else:
                result["unseen J&F"] = ev.summary["unseen J&F"]
    return result


def write_scores(path: Path, scores: dict[str, float]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(scores, indent=1))


def report(out: Path, seeds: list[int]) -> None:
    columns = ["seen J&F", "unseen J&F", "null S", *("sound-only J&F" + v for v in SOUNDS.values())]
    print("| row | " + " | ".join(columns) + " | seeds |")
    print("| --- |" + " --- |" * (len(columns) + 1))
    for row in ROWS:
        found = [json.loads(p.read_text()) for s in seeds if (p := run_dir(out, row, s) / "scores.json").is_file()]
        if not found:
            continue
        cells = []
        for c in columns:
            values = [f[c] for f in found if c in f]
            cells.append(cell(values))
        print(f"| {row} | " + " | ".join(cells) + f" | {len(found)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with test/, unseen/ and sound_sync/ (refavs layout)")
    parser.add_argument("--out", default="runs/sam2_love_ablation")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the training config every row starts from")
    parser.add_argument("--ground", type=Path, default=GROUND, help="the grounding-stage config each row and seed "
                        "trains first, with the row's changes; the recipe then starts from it")
    parser.add_argument("--no-ground", action="store_true", help="no grounding stage (a recipe without model.init)")
    parser.add_argument("--ground-steps", type=int, help="the grounding stage's steps (default: its config's)")
    parser.add_argument("--report", action="store_true", help="print the table of what is scored so far")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    if args.report:
        report(out, args.seeds)
        return
    for seed in args.seeds:
        for row in args.rows:
            scores = run_dir(out, row, seed) / "scores.json"
            if scores.is_file():  # scored before: only the sounds it lacks
                kept = json.loads(scores.read_text())
                lacking = tuple(k for k, v in SOUNDS.items() if "sound-only J&F" + v not in kept)
                if lacking:
                    kept.update(score(run_dir(out, row, seed) / "final", Path(args.data), ("sound_sync",), lacking))
                    write_scores(scores, kept)
                continue
            final = trained(row, seed, args.steps, out, args.recipe, None if args.no_ground else args.ground,
                            args.ground_steps)
            result = score(final, Path(args.data))
            write_scores(scores, result)
            log.info("%s seed %d: %s", row, seed, result)
    report(out, args.seeds)


if __name__ == "__main__":
    main()
