"""The J&F ideal text-only readers that know only SynthRef `train`'s words can expect on a split.

A reader that reads every word `train` holds perfectly, takes no audio, and meets a word it never
saw: what can it know about each expression? Every expression is parsed back into the slots of
the template it was written from (the templates of `refseg.data.synth`), and its targets are
re-derived from the scene's objects (`make_scene`), which must give the recorded targets (checked
for every expression). Then the slots such a model cannot read are opened up:

  held-out words   a colour or shape word outside `train` (`unseen`'s orange, purple, star,
                   hexagon) may mean any value of its kind ("wildcard"), or, in the kindest
                   reading, only one of the values `train` never named ("exclusion": the model
                   would have had to learn that a new word means a new colour, which nothing in
                   `train` teaches)
  audio            pitch, loudness and timbre are not in the frames: any object consistent with
                   the expression's visual words may be the one

and, for either, a "presupposing" reader keeps only the readings that name some object when any
does (an expression is taken to name something, as 8 of SynthRef's 9 scenarios' expressions do).
The expected score of an expression is the chance that a uniform guess over the readings gives
its exact targets (a wrong object counted 0, no partial overlap), averaged over the split like
`refseg eval --protocol mevis` averages J&F. These are readers, not bounds: a text encoder may
carry some sense of a held-out word (and masks earn partial overlap), so a trained model can
score above the literal readers. Read from scenes only; no rendering, no model.

    python bench/synthref_readers.py --split unseen
    python bench/synthref_readers.py --split valid_u
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections import defaultdict
from collections.abc import Callable

from refseg.data import synth
from refseg.data.synth import SceneObject

Slots = dict[str, str]
Reading = Callable[[SceneObject, list[SceneObject], Slots], bool]

# what an object must be for each template family to name it (as the generator's `say` calls)
FAMILIES: dict[str, tuple[list[str], Reading]] = {
    "name": (synth.NAME, lambda o, objs, s: o.colour == s["colour"] and o.shape == s["shape"]),
    "enters": (synth.ENTERS, lambda o, objs, s: o.colour == s["colour"] and o.shape == s["shape"] and o.enter_frame > 0),
    "all": (synth.ALL, lambda o, objs, s: o.colour == s["colour"]),
    "moving": (synth.MOVING, lambda o, objs, s: o.shape == s["shape"] and o.motion.kind == "moving"
               and o.motion.direction == synth.DIRECTIONS[s["direction"]]),
    "static": (synth.STATIC, lambda o, objs, s: o.shape == s["shape"] and o.motion.kind == "static"),
    "starts": (synth.STARTS, lambda o, objs, s: o.shape == s["shape"] and o.motion.kind == "starting"),
    "relation": (synth.RELATION, lambda o, objs, s: o.shape == s["shape"] and o.motion.kind == "static"
                 and any(a.colour == s["colour2"] and a.shape == s["shape2"] and a is not o
                         and (-1 if s["side"] == "left" else 1) * (o.start[0] - a.start[0]) > 0 for a in objs)),
    "sound": (synth.SOUND, lambda o, objs, s: o.pitch == s["pitch"]),
    "loudest": (synth.LOUDEST, lambda o, objs, s: o.loudness == max(x.loudness for x in objs)),
    "silent": (synth.SILENT, lambda o, objs, s: o.shape == s["shape"] and o.pitch is None),
    "timbre": (synth.TIMBRE, lambda o, objs, s: o.pitch is not None and o.timbre == s["timbre"] and o.shape == s["shape"]),
}
AUDIO_FAMILIES = ("sound", "loudest", "silent", "timbre")
VALUES = {"colour": list(synth.SEEN_COLOURS) + list(synth.UNSEEN_COLOURS),
          "shape": list(synth.SEEN_SHAPES) + list(synth.UNSEEN_SHAPES)}
HELD_OUT = {"colour": set(synth.UNSEEN_COLOURS), "shape": set(synth.UNSEEN_SHAPES)}
KIND = {"colour": "colour", "colour2": "colour", "shape": "shape", "shape2": "shape"}


WORDS = {"colour": VALUES["colour"], "colour2": VALUES["colour"], "shape": VALUES["shape"], "shape2": VALUES["shape"],
         "direction": list(synth.DIRECTIONS), "side": ["left", "right"], "pitch": list(synth.PITCHES),
         "timbre": list(synth.SEEN_TIMBRES) + list(synth.UNSEEN_TIMBRES)}


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)  # text, slot, text, slot, ...
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{'|'.join(map(re.escape, WORDS[p]))})"
                              for i, p in enumerate(parts)) + "$")


PATTERNS = [(family, _pattern(t)) for family, (templates, _) in FAMILIES.items() for t in templates]


def parse(text: str) -> tuple[str, Slots]:
    """(template family, slot values) of an expression; raises if no template writes it."""
    for family, pattern in PATTERNS:
        if (m := pattern.match(text)) is not None:
            return family, m.groupdict()
    raise ValueError(f"no SynthRef template writes {text!r}")


def targets(family: str, slots: Slots, objects: list[SceneObject]) -> tuple[int, ...]:
    reading = FAMILIES[family][1]
    return tuple(o.obj_id for o in objects if reading(o, objects, slots))


def possible(slot: str, value: str, exclusion: bool) -> list[str]:
    """The values a model trained on `train` may take a slot's word for."""
    kind = KIND.get(slot)
    if kind is None or value not in HELD_OUT[kind]:
        return [value]
    return sorted(HELD_OUT[kind]) if exclusion else VALUES[kind]


def expected(family: str, slots: Slots, objects: list[SceneObject], truth: tuple[int, ...], exclusion: bool,
             presuppose: bool) -> float:
    """Chance that a uniform guess over what the expression may mean gives exactly `truth`;
    `presuppose`: only the readings that name some object, if any does."""
    options = {slot: possible(slot, value, exclusion) for slot, value in slots.items()}
    if family in AUDIO_FAMILIES:  # no audio: any object the visual words allow
        shapes = options.get("shape")
        visual = [o.obj_id for o in objects if shapes is None or o.shape in shapes]
        return 1.0 / len(visual) if len(truth) == 1 and truth[0] in visual else 0.0
    readings = [targets(family, dict(zip(options, values)), objects) for values in itertools.product(*options.values())]
    if presuppose and any(readings):
        readings = [r for r in readings if r]
    return sum(r == truth for r in readings) / len(readings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="unseen", choices=synth.SPLITS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    modes = {f"{word}{', presupposing' if presuppose else ''}": (word == "exclusion", presuppose)
             for presuppose in (False, True) for word in ("wildcard", "exclusion")}
    scores: dict[str, list[float]] = {mode: [] for mode in modes}
    by_phenomenon: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in scores}
    for index in range(synth.SPLIT_SIZES[args.split]):
        scene = synth.make_scene(args.split, args.seed, index)
        for exp in scene.expressions:
            family, slots = parse(exp.text)
            if targets(family, slots, scene.objects) != tuple(exp.target_ids):
                raise AssertionError(f"{scene.video_id} {exp.text!r}: parsed reading gives "
                                     f"{targets(family, slots, scene.objects)}, recorded {exp.target_ids}")
            for mode in scores:
                s = expected(family, slots, scene.objects, tuple(exp.target_ids), *modes[mode])
                scores[mode].append(s)
                for p in exp.phenomena:
                    by_phenomenon[mode][p].append(s)
    n = len(scores["wildcard"])
    print(f"{args.split} (seed {args.seed}): {n} expressions, every parsed reading gives the recorded targets")
    print("| reading of a held-out word | expected J&F | " + " | ".join(synth.SCENARIOS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in synth.SCENARIOS) + " |")
    for mode, values in scores.items():
        cells = [f"{sum(v) / len(v):.3f}" if (v := by_phenomenon[mode].get(p)) else "" for p in synth.SCENARIOS]
        print(f"| {mode} | **{sum(values) / n:.3f}** | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
