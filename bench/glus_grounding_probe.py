"""Does a GLUS checkpoint ground its expressions? On SynthRef referring images it never trained on
(`--split`, `--seed`), per GLUS folder:

- mIoU: mean IoU of the single-frame mask with each expression's target (1 when both are empty);
- answered: the share of calls that answered [SEG];
- token cos: the mean cosine similarity of the projected [SEG] tokens of different expressions
  on the same image (1.0: one token whatever the text, so one mask per image: no grounding);
- same-mask share: the share of expression pairs on the same image whose masks are identical.

`--colour-reader` asks instead whether the text is in the [SEG] state at all: 60 prompts on one
image (5 colours x 4 shapes x 3 phrasings), and a nearest-centroid reader of the named colour
from the state, fitted on two phrasings and tested on the third (each in turn), on the raw state
and on the state standardised per channel over the 60. `fresh` as a folder: an untrained model of
the shipped layout (no context frames). `--force-seg` scores the mask each call's [SEG] token
gives even where the call answers another token (a model from the read-out stage,
configs/glus_synth_readout.yaml, has not learnt to answer [SEG]).

    python bench/glus_grounding_probe.py runs/glus_synth_image/final [more folders] [--images 12]
    python bench/glus_grounding_probe.py fresh --colour-reader
    python bench/glus_grounding_probe.py runs/glus_synth_readout/final --images 16 --seed 13 --force-seg
"""

from __future__ import annotations

import argparse
import itertools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch.nn import functional as F

from refseg.data import synth
from refseg.methods.glus import Glus
from refseg.methods.glus.build import build_glus, load_glus
from refseg.methods.glus.model import GlusConfig, GlusSpec
from refseg.sam.checkpoint import load_sam2
from refseg.methods.glus.conversation import glus_input_ids, glus_prompt, seg_rows


COLOURS, SHAPES = ("red", "green", "blue", "yellow", "white"), ("circle", "square", "triangle", "diamond")
PHRASINGS = ("the {c} {s}", "the {s} that is {c}", "a {c} {s}")


def load(folder: str) -> Glus:
    if folder != "fresh":
        return load_glus(folder)
    model = build_glus(GlusSpec(inference=GlusConfig(context_frames=0)), load_sam2("synth"), "synth").eval()
    model.llm.merge_lora()
    return model


@torch.no_grad()
def colour_reader(folder: str, split: str, seed: int) -> dict[str, float]:
    """Held-out-phrasing accuracy of a nearest-centroid colour reader on the [SEG] state."""
    model = load(folder)
    frame = np.asarray(next(iter(synth.split_samples(split, seed, 1, image=True))).load_frame(0))
    tokens = model.vision(model.vision.pixels([frame]))
    states, colours, phrasings = [], [], []
    for c, colour in enumerate(COLOURS):
        for shape in SHAPES:
            for k, phrasing in enumerate(PHRASINGS):
                ids = glus_input_ids(glus_prompt(phrasing.format(c=colour, s=shape), 1, 0).rstrip(), model.tokenizer)
                hidden, _ = model.llm(ids, tokens)
                states.append(hidden[seg_rows(ids + [model.seg_id], model.seg_id, tokens.shape[1])[0]])
                colours.append(c)
                phrasings.append(k)
    x, y, k = torch.stack(states), torch.tensor(colours), torch.tensor(phrasings)
    out = {}
    for name, feats in (("raw", x), ("standardised", (x - x.mean(0)) / x.std(0).clamp(min=1e-6))):
        right = 0
        for held in range(len(PHRASINGS)):
            test = k == held
            centroids = torch.stack([feats[~test & (y == c)].mean(0) for c in range(len(COLOURS))])
            right += int((torch.cdist(feats[test], centroids).argmin(1) == y[test]).sum())
        out[f"colour_acc_{name}"] = right / len(y)
    spread = (x - x.mean(0)).norm(dim=1).mean() / x.norm(dim=1).mean()
    return {**out, "spread_over_norm": float(spread)}


def force_seg(model: Glus) -> None:
    """Make every call of `model` answer [SEG] (its states, hence its token, are unchanged)."""
    forward = model.llm.forward

    def answer_seg(input_ids, images, prefix=None):
        hidden, logits = forward(input_ids, images, prefix)
        return hidden, torch.where(torch.arange(len(logits)) == model.seg_id, 1.0, float("-inf"))

    model.llm.forward = answer_seg


@torch.no_grad()
def probe(folder: str, images: int, split: str, seed: int, forced: bool = False) -> dict[str, float]:
    model = load(folder)
    if forced:
        force_seg(model)
    ious, answered, cosines, same = [], [], [], []
    for sample in synth.split_samples(split, seed, images, image=True):
        frame = np.asarray(sample.load_frame(0))
        tokens = model.vision(model.vision.pixels([frame]))
        projected, masks = [], []
        for expression in sample.expressions:
            result = model.segment([frame], expression.text)
            mask, target = result.masks[0], sample.target_mask(expression)[0]
            union = (mask | target).sum()
            ious.append(1.0 if union == 0 else float((mask & target).sum() / union))
            answered.append(result.answered[0])
            masks.append(mask)
            ids = glus_input_ids(glus_prompt(expression.text, 1, 0).rstrip(), model.tokenizer)
            hidden, _ = model.llm(ids, tokens)
            projected.append(model.llm.seg_prompts(hidden, seg_rows(ids + [model.seg_id], model.seg_id, tokens.shape[1]))[0])
        for a, b in itertools.combinations(range(len(projected)), 2):
            cosines.append(float(F.cosine_similarity(projected[a], projected[b], dim=0)))
            same.append(bool(np.array_equal(masks[a], masks[b])))
    return {"mIoU": float(np.mean(ious)), "answered": float(np.mean(answered)), "token_cos": float(np.mean(cosines)),
            "same_mask": float(np.mean(same)), "expressions": len(ious)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--colour-reader", action="store_true", help="read the named colour from the [SEG] state")
    parser.add_argument("--force-seg", action="store_true", help="every call answers [SEG] (a read-out-stage model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for folder in args.folders:
        if args.colour_reader:
            result = colour_reader(folder, args.split, args.seed)
        else:
            result = probe(folder, args.images, args.split, args.seed, args.force_seg)
        print(folder, " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
