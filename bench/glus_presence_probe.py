"""Does a GLUS model decide from the frames whether its target is there? The answer of a
query turn is [SEG] or, for a model trained with `glus.absent_answer`, `ABSENT_WORD`
("... result is empty."). This probe draws clips as training does (4 context frames, 4 query
frames; null and late-entry expressions drawn `--weight` times as often, so frames without the
target are common), runs each expression's complete conversation with its true answers
(teacher forcing, as in training), and reads p(`ABSENT_WORD`) at each turn's answer token.

Two numbers say what was learned:

- turn 1: the first query frame's answer has no earlier answer to lean on; the AUC of
  p(empty) between frames without and with the target says whether the frames decide it
  (0.5: they do not);
- later turns: p(empty) where the frame before was answered the same way; high values with a
  turn-1 AUC near 0.5 mean the model repeats the earlier answer instead of looking.

    python bench/glus_presence_probe.py runs/glus_absent/final --split valid_u --seed 31 --clips 48
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from refseg.data import synth
from refseg.data.sampler import ClipSampler
from refseg.methods.glus.build import load_glus
from refseg.methods.glus.conversation import ABSENT_WORD, glus_input_ids, glus_prompt, token_rows
from refseg.methods.glus.frames import training_context


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a draw of `positive` > a draw of `negative`), ties counted half."""
    return float((positive[:, None] > negative[None]).mean() + 0.5 * (positive[:, None] == negative[None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a GLUS folder")
    parser.add_argument("--split", default="valid_u")
    parser.add_argument("--seed", type=int, default=31, help="the split's seed (one no run trained on)")
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--weight", type=float, default=20.0, help="draw weight of null and late-entry expressions")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_glus(args.model)
    model.eval()
    tok = model.tokenizer
    empty_id = tok.encode(" " + ABSENT_WORD, add_special_tokens=False)[0]
    context = model.config.context_frames
    samples = list(synth.split_samples(args.split, args.seed, args.videos))
    sampler = ClipSampler(samples, clip_len=model.config.query_window, size=model.sam.image_size, seed=0,
                          by="expression", weights={"null": args.weight, "late_entry": args.weight},
                          context=training_context(context), flip_p=0.0)
    first: dict[bool, list[float]] = {True: [], False: []}
    repeated: dict[bool, list[float]] = {True: [], False: []}
    with torch.no_grad():
        for _ in range(args.clips):
            clip = sampler.sample()
            present = [bool(m.any()) for m in clip.mask[clip.context:]]
            prompt = glus_prompt(clip.expression.text, len(present), clip.context, [not p for p in present],
                                 complete=True, absent=True)
            ids = glus_input_ids(prompt, tok)
            images = model.vision(model.vision.pixels(list(clip.frames)))
            hidden = model.llm.states(ids, images)
            rows = token_rows(ids, images.shape[1])
            answers = [i for i, t in enumerate(ids) if t in (model.seg_id, empty_id)]
            p_empty = model.llm.logits(hidden[[rows[i] - 1 for i in answers]]).float().softmax(-1)[:, empty_id]
            first[present[0]].append(float(p_empty[0]))
            for t in range(1, len(present)):
                if present[t] == present[t - 1]:
                    repeated[present[t]].append(float(p_empty[t]))
    print(f"{args.model}: {args.clips} clips of {args.split} (seed {args.seed})")
    for name, table in (("turn 1", first), ("later turns, same as the turn before", repeated)):
        for present in (False, True):
            values = np.array(table[present])
            print(f"  {name}, target {'there' if present else 'absent'}: {len(values)} frames, "
                  f"p(empty) mean {values.mean():.3f}" if len(values) else f"  {name}: none")
    print(f"  turn 1 AUC of p(empty), absent over there: {auc(np.array(first[False]), np.array(first[True])):.3f}")


if __name__ == "__main__":
    main()
