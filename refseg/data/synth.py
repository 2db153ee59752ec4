"""SynthRef: procedurally generated referring video / image / audio-visual segmentation.

Deterministic from (split, seed, index). A scene is a short video of 2-6 shapes on a textured
background; each scene is built around one *scenario*, the phenomenon the five papers single out,
and carries several referring expressions with their targets and the phenomena they exercise:

  appearance      targets named by colour, shape, size or texture
  tracking_bias   two look-alikes; the distractor moves from the start, the target starts moving
                  only after frame k (SAMWISE's tracking bias)
  lookalike_motion look-alikes that differ only by how they move
  late_entry      the target enters the frame late
  occlusion       the target passes behind a wall for a while
  audio           objects sound (pitch, timbre, loudness) and are referred to by it (Ref-AVS)
  sound_sync      two look-alikes, one moving in the first part of the video and one in the
                  rest, each sounding only while it moves, at pitches drawn at random: only the
                  sound, heard in step with the motion, tells "the one making the high sound"
  null            an expression that refers to nothing in the video
  multi_target    one expression, several targets ("all blue shapes")
  relation        "the circle left of the red square" (a horizontal flip swaps left and right)

Scenarios cycle with the scene index, so every phenomenon has a known share of a split. Videos
cycle through `SCENARIOS`, still images through `IMAGE_SCENARIOS` and audio-visual scenes (the
Ref-AVS layout's, `audio_visual`) through `AVS_SCENARIOS`. The
`unseen` split uses words held out of every other split (colours, shapes, paraphrases and a
sound timbre), the generalisation test of Ref-AVS "unseen".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from refseg.data.sample import Expression, VideoSample, in_memory

SPLITS = ("train", "valid", "valid_u", "test", "unseen")
SPLIT_SIZES = {"train": 200, "valid": 36, "valid_u": 18, "test": 36, "unseen": 36}
SCENARIOS = ("appearance", "tracking_bias", "lookalike_motion", "late_entry", "occlusion", "audio", "null",
             "multi_target", "relation")
IMAGE_SCENARIOS = ("appearance", "null", "multi_target", "relation")  # what a single frame can show
AVS_SCENARIOS = ("audio", "sound_sync", "appearance", "null")  # what Ref-AVS asks: by sound and by sight
# what a null expression gets wrong about the object it is written around (`null_kinds`)
NULL_KINDS = ("colour", "shape", "motion", "sound")
FPS = 8
MIN_SIDE = 128
SAMPLE_RATE = 16000

SEEN_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
                "white": (240, 240, 240)}
UNSEEN_COLOURS = {"purple": (150, 50, 190), "orange": (245, 140, 20)}
# Basic colour terms no split uses unless asked (`make_scene(extra_colours=...)`, a training run's
# `data.extra_colours`): more colour words to ground in `train`, never the ones `unseen` holds out.
EXTRA_COLOURS = {"black": (30, 30, 30), "brown": (140, 85, 40), "pink": (245, 130, 180)}
COLOURS = {**SEEN_COLOURS, **UNSEEN_COLOURS, **EXTRA_COLOURS}  # every colour a scene may paint
SEEN_SHAPES = ("circle", "square", "triangle", "diamond")
UNSEEN_SHAPES = ("star", "hexagon")
SIZES = {"small": 12, "medium": 18, "large": 26}
TEXTURES = ("plain", "striped", "dotted")


def seen_size(size: str, zoom: float) -> str:
    """The size word an object of `size` looks like when shown `zoom` times larger than in its
    whole frame (a training crop): the word whose radius is nearest to SIZES[size] * zoom in
    ratio. A crop of 0.7 of the frame shows a medium object (18 px) at 26 px, a large one's."""
    seen = SIZES[size] * zoom
    return min(SIZES, key=lambda word: abs(np.log(SIZES[word] / seen)))
# what an object looks like, each attribute with every value a scene may give it
ATTRIBUTES = {"colour": tuple(COLOURS), "shape": SEEN_SHAPES + UNSEEN_SHAPES, "size": tuple(SIZES), "texture": TEXTURES}
PITCHES = {"low-pitched": 220.0, "high-pitched": 880.0}
SEEN_TIMBRES = {"humming": "sine", "beeping": "square"}
UNSEEN_TIMBRES = {"buzzing": "saw"}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

# Paraphrases: {slot} templates; the last variant of each list is held out for `unseen`.
NAME = ["the {colour} {shape}", "the {shape} that is {colour}", "that {colour} {shape}"]
MOVING = ["the {shape} moving {direction}", "the {shape} heading {direction}", "the {shape} travelling {direction}"]
STATIC = ["the {shape} that stays still", "the motionless {shape}", "the {shape} that never moves"]
STARTS = ["the {shape} that starts moving later", "the {shape} which begins to move after a while",
          "the {shape} that sets off late"]
SOUND = ["the object making the {pitch} sound", "the thing that sounds {pitch}", "the source of the {pitch} tone"]
LOUDEST = ["the loudest one", "the object with the loudest sound", "whatever is loudest"]
SILENT = ["the silent {shape}", "the {shape} making no sound", "the quiet {shape}"]
TIMBRE = ["the {timbre} {shape}", "the {shape} that is {timbre}", "the {shape} which keeps {timbre}"]
ALL = ["all {colour} shapes", "every {colour} object", "each of the {colour} shapes"]
RELATION = ["the {shape} {side} of the {colour2} {shape2}", "the {shape} to the {side} of the {colour2} {shape2}",
            "the {shape} on the {side} side of the {colour2} {shape2}"]
ENTERS = ["the {colour} {shape} that enters late", "the {colour} {shape} coming in later",
          "the {colour} {shape} that shows up late"]


@dataclass
class Motion:
    """Per-frame velocity of an object: `velocity(t)` in pixels per frame."""

    kind: str  # static, moving, bouncing, speeding_up, turning, stopping, starting
    direction: tuple[float, float] = (0.0, 0.0)
    speed: float = 2.0
    change_frame: int = 0  # when turning / stopping / starting happens

    def velocity(self, t: int) -> tuple[float, float]:
        dx, dy = self.direction
        if self.kind == "static" or (self.kind == "starting" and t < self.change_frame):
            return 0.0, 0.0
        if self.kind == "stopping" and t >= self.change_frame:
            return 0.0, 0.0
        if self.kind == "speeding_up":
            s = self.speed * (0.3 + 1.4 * t / max(self.change_frame, 1))
            return dx * s, dy * s
        if self.kind == "turning" and t >= self.change_frame:
            return -dy * self.speed, dx * self.speed
        return dx * self.speed, dy * self.speed


@dataclass
class SceneObject:
    """One shape of a scene (object ids start at 1)."""

    obj_id: int
    shape: str
    colour: str
    size: str
    texture: str
    start: tuple[float, float]
    motion: Motion
    enter_frame: int = 0
    pitch: str | None = None  # a key of PITCHES, or None: silent
    timbre: str = "humming"
    loudness: float = 0.0
    sound_span: tuple[int, int] | None = None  # frames [start, end) it sounds; None: from its entry on


@dataclass
class Scene:
    video_id: str
    height: int
    width: int
    num_frames: int
    objects: list[SceneObject]
    expressions: list[Expression]
    wall: tuple[int, int] | None = None  # x range of an occluding wall
    background_seed: int = 0
    scenario: str = "appearance"


class Vocabulary:
    """The words a split may use: seen words everywhere, held-out words only in `unseen`."""

    def __init__(self, unseen: bool, extra_colours: Sequence[str] = ()) -> None:
        self.unseen = unseen
        self.colours = {**SEEN_COLOURS, **(UNSEEN_COLOURS if unseen else {}),
                        **{c: EXTRA_COLOURS[c] for c in extra_colours}}
        self.shapes = SEEN_SHAPES + (UNSEEN_SHAPES if unseen else ())
        self.timbres = {**SEEN_TIMBRES, **(UNSEEN_TIMBRES if unseen else {})}

    def phrase(self, rng: np.random.Generator, variants: list[str], **slots: str) -> str:
        # held-out paraphrase (last variant) only in unseen; there it is used half of the time
        if self.unseen and rng.random() < 0.5:
            template = variants[-1]
        else:
            template = variants[int(rng.integers(len(variants) - 1))]
        return template.format(**slots)

    def pick_colour(self, rng: np.random.Generator, exclude: set[str] = frozenset()) -> str:
        names = [c for c in self.colours if c not in exclude]
        if self.unseen and rng.random() < 0.5:  # make held-out words frequent where allowed
            held = [c for c in UNSEEN_COLOURS if c not in exclude]
            names = held or names
        return names[int(rng.integers(len(names)))]

    def pick_shape(self, rng: np.random.Generator, exclude: set[str] = frozenset()) -> str:
        names = [s for s in self.shapes if s not in exclude]
        if self.unseen and rng.random() < 0.5:
            held = [s for s in UNSEEN_SHAPES if s not in exclude]
            names = held or names
        return names[int(rng.integers(len(names)))]


def scene_rng(split: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def make_scene(split: str, seed: int, index: int, height: int = 256, width: int = 256, image: bool = False,
               extra_colours: Sequence[str] = (), audio_visual: bool = False) -> Scene:
    """The `index`-th scene of `split` (deterministic); `image`: a still single-frame scene for
    referring image segmentation, from `IMAGE_SCENARIOS`; `extra_colours`: names of
    `EXTRA_COLOURS` objects may also take (and expressions name), beside the split's own;
    `audio_visual`: a Ref-AVS-style scene, from `AVS_SCENARIOS` (a stream of scenes of its own,
    apart from the plain video scenes). A null scene's expression gets one of `null_kinds` wrong
    about the object it is written around (`NULL_KINDS`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    unknown = [c for c in extra_colours if c not in EXTRA_COLOURS]
    if unknown:
        raise ValueError(f"unknown extra colour(s) {unknown}; expected some of {sorted(EXTRA_COLOURS)}")
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"SynthRef frames must be at least {MIN_SIDE} px on each side (objects up to "
                         f"{max(SIZES.values())} px radius, placed 40 px from the border), got {height}x{width}")
    if image and audio_visual:
        raise ValueError("make_scene: a scene is a still image or an audio-visual video, not both")
    rng = scene_rng(split, seed + (1 << 20 if image else 2 << 20 if audio_visual else 0), index)
    vocab = Vocabulary(unseen=split == "unseen", extra_colours=extra_colours)
    scenarios = scenario_set(image, audio_visual)
    scenario = scenarios[index % len(scenarios)]
    num_frames = 1 if image else int(rng.integers(24, 49))
    builder = _Builder(rng, vocab, height, width, num_frames, null_kinds(image, audio_visual))
    getattr(builder, scenario)()
    builder.fill(int(rng.integers(2, 7)), still=image)
    builder.appearance_expressions()
    builder.finalize()
    return Scene(video_id=f"{split}_{seed}_{index:05d}", height=height, width=width, num_frames=num_frames,
                 objects=builder.objects, expressions=builder.expressions, wall=builder.wall,
                 background_seed=int(rng.integers(2**31)), scenario=scenario)


class _Builder:
    """Places objects and writes expressions for one scene."""

    def __init__(self, rng: np.random.Generator, vocab: Vocabulary, height: int, width: int, num_frames: int,
                 nulls: tuple[str, ...] = ("colour", "shape")):
        self.rng, self.vocab, self.nulls = rng, vocab, nulls
        self.height, self.width, self.num_frames = height, width, num_frames
        self.objects: list[SceneObject] = []
        self.expressions: list[Expression] = []
        self.said: list[tuple[str, tuple[int, ...], Callable[[SceneObject], bool], tuple[str, ...]]] = []
        self.wall: tuple[int, int] | None = None

    # -- helpers -----------------------------------------------------------------------------
    def add(self, **kw) -> SceneObject:
        rng = self.rng
        attrs = dict(shape=self.vocab.pick_shape(rng), colour=self.vocab.pick_colour(rng),
                     size=list(SIZES)[int(rng.integers(len(SIZES)))], texture=TEXTURES[int(rng.integers(3))],
                     motion=Motion("static"))
        attrs.update(kw)
        if "start" not in attrs:
            attrs["start"] = self.free_spot()
        obj = SceneObject(obj_id=len(self.objects) + 1, **attrs)
        self.objects.append(obj)
        return obj

    def free_spot(self, margin: int = 40) -> tuple[float, float]:
        """A start at least 60 px from every placed object (a random one if 50 draws find none),
        never where the wall could hide a whole object: a static one there would be named by
        expressions yet never seen."""
        def draw() -> tuple[float, float]:
            return (float(self.rng.uniform(margin, self.width - margin)),
                    float(self.rng.uniform(margin, self.height - margin)))

        def behind_wall(x: float) -> bool:
            reach = max(SIZES.values())
            return self.wall is not None and self.wall[0] - reach < x < self.wall[1] + reach

        for _ in range(50):
            x, y = draw()
            if not behind_wall(x) and all(math.hypot(x - o.start[0], y - o.start[1]) > 60 for o in self.objects):
                return x, y
        while behind_wall((spot := draw())[0]):
            pass
        return spot

    def say(self, text: str, targets: list[SceneObject], matches: Callable[[SceneObject], bool],
            *phenomena: str) -> None:
        """Record an expression; `matches` is what it says of an object, so that objects added
        later (distractors) cannot make it ambiguous: see `finalize`."""
        self.said.append((text, tuple(o.obj_id for o in targets), matches, tuple(phenomena)))

    def finalize(self) -> None:
        """Keep the expressions whose description fits exactly their targets, numbered in order."""
        for text, targets, matches, phenomena in self.said:
            if tuple(o.obj_id for o in self.objects if matches(o)) == targets:
                self.expressions.append(Expression(str(len(self.expressions)), text, targets, phenomena))

    def unique(self, obj: SceneObject, *keys: str) -> bool:
        return sum(all(getattr(o, k) == getattr(obj, k) for k in keys) for o in self.objects) == 1

    def moving(self, kind: str = "moving", **kw) -> Motion:
        direction = list(DIRECTIONS)[int(self.rng.integers(4))]
        return Motion(kind, DIRECTIONS[direction], speed=float(self.rng.uniform(1.5, 3.0)), **kw)

    # -- scenarios ---------------------------------------------------------------------------
    def appearance(self) -> None:
        self.add()

    def tracking_bias(self) -> None:
        k = int(self.rng.integers(self.num_frames // 3, self.num_frames // 2))
        looks = dict(shape=self.vocab.pick_shape(self.rng), colour=self.vocab.pick_colour(self.rng), size="medium",
                     texture="plain")
        self.add(**looks, motion=self.moving("moving"))
        target = self.add(**looks, motion=self.moving("starting", change_frame=k))
        self.say(self.vocab.phrase(self.rng, STARTS, shape=target.shape), [target],
                 lambda o: o.shape == target.shape and o.motion.kind == "starting", "tracking_bias", "lookalike_motion")

    def lookalike_motion(self) -> None:
        looks = dict(shape=self.vocab.pick_shape(self.rng), colour=self.vocab.pick_colour(self.rng), size="medium",
                     texture="plain")
        left = self.add(**looks, start=(170.0, 90.0), motion=Motion("moving", DIRECTIONS["left"], 2.0))
        right = self.add(**looks, start=(86.0, 170.0), motion=Motion("moving", DIRECTIONS["right"], 2.0))
        still = self.add(**looks, start=(128.0, 220.0))
        shape = looks["shape"]
        for direction, target in (("left", left), ("right", right)):
            self.say(self.vocab.phrase(self.rng, MOVING, shape=shape, direction=direction), [target],
                     lambda o, d=DIRECTIONS[direction]: o.shape == shape and o.motion.kind == "moving"
                     and o.motion.direction == d, "lookalike_motion")
        self.say(self.vocab.phrase(self.rng, STATIC, shape=shape), [still],
                 lambda o: o.shape == shape and o.motion.kind == "static", "lookalike_motion")

    def late_entry(self) -> None:
        k = int(self.rng.integers(6, self.num_frames // 2))
        y = float(self.rng.uniform(60, self.height - 60))
        target = self.add(start=(-30.0, y), motion=Motion("moving", DIRECTIONS["right"], 4.0), enter_frame=k)
        self.say(self.vocab.phrase(self.rng, ENTERS, colour=target.colour, shape=target.shape), [target],
                 lambda o: o.colour == target.colour and o.shape == target.shape and o.enter_frame > 0, "late_entry")

    def occlusion(self) -> None:
        self.wall = (108, 148)
        target = self.add(start=(40.0, float(self.rng.uniform(60, self.height - 60))),
                          motion=Motion("moving", DIRECTIONS["right"], float(self.rng.uniform(3.0, 4.0))), size="small")
        self.say(self.vocab.phrase(self.rng, NAME, colour=target.colour, shape=target.shape), [target],
                 lambda o: o.colour == target.colour and o.shape == target.shape, "occlusion", "appearance")

    def audio(self) -> None:
        rng = self.rng
        timbres = list(self.vocab.timbres)
        high = self.add(pitch="high-pitched", timbre=timbres[int(rng.integers(len(timbres)))], loudness=0.35,
                        motion=self.moving("bouncing"))
        low = self.add(pitch="low-pitched", timbre=timbres[int(rng.integers(len(timbres)))], loudness=0.8)
        silent = self.add(shape=self.vocab.pick_shape(rng, exclude={high.shape, low.shape}))
        self.say(self.vocab.phrase(rng, SOUND, pitch="high-pitched"), [high], lambda o: o.pitch == "high-pitched",
                 "audio")
        self.say(self.vocab.phrase(rng, LOUDEST), [low], lambda o: o.loudness == max(x.loudness for x in self.objects),
                 "audio")
        self.say(self.vocab.phrase(rng, SILENT, shape=silent.shape), [silent],
                 lambda o: o.shape == silent.shape and o.pitch is None, "audio")
        self.say(self.vocab.phrase(rng, TIMBRE, timbre=high.timbre, shape=high.shape), [high],
                 lambda o: o.pitch is not None and o.timbre == high.timbre and o.shape == high.shape, "audio")

    def sound_sync(self) -> None:
        rng = self.rng
        k = int(rng.integers(self.num_frames // 3, 2 * self.num_frames // 3 + 1))
        looks = dict(shape=self.vocab.pick_shape(rng), colour=self.vocab.pick_colour(rng), size="medium",
                     texture="plain")
        timbres = list(self.vocab.timbres)
        timbre = timbres[int(rng.integers(len(timbres)))]
        pitches = list(PITCHES)
        first_pitch = int(rng.integers(2))
        self.add(**looks, motion=self.moving("stopping", change_frame=k), pitch=pitches[first_pitch],
                         timbre=timbre, loudness=0.6, sound_span=(0, k))
        self.add(**looks, motion=self.moving("starting", change_frame=k), pitch=pitches[1 - first_pitch],
                 timbre=timbre, loudness=0.6, sound_span=(k, self.num_frames))
        for pitch in pitches:
            target = next(o for o in self.objects if o.pitch == pitch)
            self.say(self.vocab.phrase(rng, SOUND, pitch=pitch), [target], lambda o, p=pitch: o.pitch == p,
                     "audio", "sound_sync")

    def null(self) -> None:
        """An expression written around an object that gets one thing wrong about it (a kind of
        `self.nulls`), so that no object fits it (`finalize` drops it if a distractor does)."""
        rng = self.rng
        kind = self.nulls[int(rng.integers(len(self.nulls)))]
        if kind == "motion":  # its shape, moving another way than it does
            obj = self.add(motion=self.moving("moving"))
            direction = str(rng.choice([d for d, v in DIRECTIONS.items() if v != obj.motion.direction]))
            self.say(self.vocab.phrase(rng, MOVING, shape=obj.shape, direction=direction), [],
                     lambda o, d=DIRECTIONS[direction]: o.shape == obj.shape and o.motion.kind == "moving"
                     and o.motion.direction == d, "null")
            return
        if kind == "sound":  # a pitch no object sounds (the scene's objects are all silent)
            self.add()
            pitch = list(PITCHES)[int(rng.integers(len(PITCHES)))]
            self.say(self.vocab.phrase(rng, SOUND, pitch=pitch), [], lambda o: o.pitch == pitch, "null")
            return
        obj = self.add()
        colour, shape = obj.colour, obj.shape
        if kind == "shape":
            shape = self.vocab.pick_shape(rng, exclude={obj.shape})
        else:
            colour = self.vocab.pick_colour(rng, exclude={obj.colour})
        self.say(self.vocab.phrase(rng, NAME, colour=colour, shape=shape), [],
                 lambda o: o.colour == colour and o.shape == shape, "null")

    def multi_target(self) -> None:
        colour = self.vocab.pick_colour(self.rng)
        first = self.add(colour=colour)
        second = self.add(colour=colour, shape=self.vocab.pick_shape(self.rng, exclude={first.shape}))
        self.say(self.vocab.phrase(self.rng, ALL, colour=colour), [first, second], lambda o: o.colour == colour,
                 "multi_target")

    def relation(self) -> None:
        anchor = self.add(start=(128.0, 128.0))
        shape = self.vocab.pick_shape(self.rng, exclude={anchor.shape})
        colour = self.vocab.pick_colour(self.rng)
        left = self.add(shape=shape, colour=colour, start=(60.0, float(self.rng.uniform(70, 190))))
        right = self.add(shape=shape, colour=colour, start=(196.0, float(self.rng.uniform(70, 190))))
        for side, target in (("left", left), ("right", right)):
            sign = -1 if side == "left" else 1
            self.say(self.vocab.phrase(self.rng, RELATION, shape=shape, side=side, colour2=anchor.colour,
                                       shape2=anchor.shape), [target],
                     lambda o, sign=sign: o.shape == shape and o.motion.kind == "static"
                     and sign * (o.start[0] - anchor.start[0]) > 0 and o.obj_id != anchor.obj_id, "relation")

    # -- shared --------------------------------------------------------------------------------
    def fill(self, total: int, still: bool = False) -> None:
        """Add distractors up to `total` objects (at most 6)."""
        while len(self.objects) < min(total, 6):
            kind = "static" if still else str(self.rng.choice(["static", "moving", "bouncing", "turning", "stopping"]))
            self.add(motion=self.moving(kind, change_frame=int(self.rng.integers(8, 20))))

    def appearance_expressions(self) -> None:
        """Name up to two objects that no expression targets yet by colour and shape."""
        named = 0
        for obj in self.objects:
            if named == 2 or obj.enter_frame or any(obj.obj_id in said[1] for said in self.said):
                continue
            if self.unique(obj, "colour", "shape"):
                self.say(self.vocab.phrase(self.rng, NAME, colour=obj.colour, shape=obj.shape), [obj],
                         lambda o, c=obj.colour, sh=obj.shape: o.colour == c and o.shape == sh, "appearance")
                named += 1


# -- rendering -------------------------------------------------------------------------------------
def shape_mask(shape: str, cx: float, cy: float, radius: float, height: int, width: int) -> np.ndarray:
    """[H, W] bool of a shape centred at (cx, cy)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= radius
    if shape == "triangle":
        return (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
    angle = np.arctan2(dy, dx)
    dist = np.hypot(dx, dy)
    if shape == "hexagon":
        sector = np.mod(angle, np.pi / 3) - np.pi / 6
        return dist * np.cos(sector) <= radius * 0.9
    if shape == "star":
        return dist <= radius * (0.55 + 0.45 * np.cos(5 * angle) ** 2)
    raise ValueError(f"unknown shape {shape!r}")


def trajectory(obj: SceneObject, num_frames: int, height: int, width: int) -> list[tuple[float, float]]:
    """Centre of the object on every frame (bouncing objects reflect off the borders)."""
    x, y = obj.start
    r = SIZES[obj.size]
    dx_sign, dy_sign = 1.0, 1.0
    out = []
    for t in range(num_frames):
        out.append((x, y))
        vx, vy = obj.motion.velocity(t)
        x, y = x + vx * dx_sign, y + vy * dy_sign
        if obj.motion.kind in ("bouncing", "moving", "turning", "speeding_up", "stopping", "starting") and t >= obj.enter_frame:
            if obj.enter_frame == 0 or x > r:
                if x < r or x > width - r:
                    dx_sign = -dx_sign
                    x = min(max(x, r), width - r)
            if y < r or y > height - r:
                dy_sign = -dy_sign
                y = min(max(y, r), height - r)
    return out


def render(scene: Scene) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Frames [T, H, W, 3] uint8 and visible masks {object id: [T, H, W] bool}."""
    h, w, n = scene.height, scene.width, scene.num_frames
    rng = np.random.default_rng(scene.background_seed)
    coarse = rng.uniform(70, 150, size=(h // 32 + 2, w // 32 + 2, 3))
    yy, xx = np.mgrid[0:h, 0:w] / 32.0
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[..., None], (xx - x0)[..., None]
    background = ((1 - fy) * (1 - fx) * coarse[y0, x0] + (1 - fy) * fx * coarse[y0, x0 + 1]
                  + fy * (1 - fx) * coarse[y0 + 1, x0] + fy * fx * coarse[y0 + 1, x0 + 1])
    background += rng.normal(0, 6, size=(h, w, 3))
    stripes = (np.mgrid[0:h, 0:w][1] // 4) % 2 == 0
    dots = ((np.mgrid[0:h, 0:w][0] % 6) < 2) & ((np.mgrid[0:h, 0:w][1] % 6) < 2)
    paths = {o.obj_id: trajectory(o, n, h, w) for o in scene.objects}
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    masks = {o.obj_id: np.zeros((n, h, w), dtype=bool) for o in scene.objects}
    wall = np.zeros((h, w), dtype=bool)
    if scene.wall is not None:
        wall[:, scene.wall[0] : scene.wall[1]] = True
    for t in range(n):
        img = background.copy()
        for obj in scene.objects:  # later objects are drawn over earlier ones
            if t < obj.enter_frame:
                continue
            cx, cy = paths[obj.obj_id][t]
            region = shape_mask(obj.shape, cx, cy, SIZES[obj.size], h, w)
            colour = np.array(COLOURS[obj.colour], dtype=np.float64)
            paint = np.broadcast_to(colour, (h, w, 3)).copy()
            if obj.texture == "striped":
                paint[stripes] *= 0.6
            elif obj.texture == "dotted":
                paint[dots] *= 0.5
            img[region] = paint[region]
            for other in masks.values():
                other[t] &= ~region
            masks[obj.obj_id][t] = region
        if scene.wall is not None:
            img[wall] = (90, 90, 95)
            for m in masks.values():
                m[t] &= ~wall
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, masks


WAVEFORMS = ("sine", "square", "saw")


def tone(hz: float, kind: str, t: np.ndarray) -> np.ndarray:
    """A unit-amplitude tone of `hz` at times `t` (seconds): a sine, square or sawtooth wave."""
    phase = 2 * np.pi * hz * t
    if kind == "sine":
        return np.sin(phase)
    if kind == "square":
        return np.sign(np.sin(phase))
    if kind == "saw":
        return 2 * (phase / (2 * np.pi) % 1.0) - 1
    raise ValueError(f"tone: expected one of {', '.join(WAVEFORMS)}, got {kind!r}")


def render_audio(scene: Scene) -> np.ndarray:
    """Mono mix [N] float32 of the objects' sounds, N = frames / FPS * SAMPLE_RATE.

    Each sounding object plays a tone of its pitch and timbre (sine, square or sawtooth) at its
    loudness while it is in the frame.
    """
    n = int(round(scene.num_frames / FPS * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    mix = np.zeros(n)
    for obj in scene.objects:
        if obj.pitch is None:
            continue
        wave = tone(PITCHES[obj.pitch], {**SEEN_TIMBRES, **UNSEEN_TIMBRES}[obj.timbre], t)
        start, end = obj.sound_span or (obj.enter_frame, scene.num_frames)
        wave[(t < start / FPS) | (t >= end / FPS)] = 0.0
        mix += obj.loudness * wave
    peak = np.abs(mix).max()
    # on the 16-bit grid, so that writing a WAV file and reading it back is exact
    return (np.round(mix / max(peak, 1.0) * 32767) / 32767).astype(np.float32)


def generate(scene: Scene) -> VideoSample:
    """Render a scene into the common sample type."""
    frames, masks = render(scene)
    audio = render_audio(scene)
    return VideoSample(video_id=scene.video_id, frame_names=[f"{t:05d}" for t in range(scene.num_frames)],
                       load_frame=in_memory(frames), masks=masks, expressions=list(scene.expressions), audio=audio,
                       sample_rate=SAMPLE_RATE, attributes={o.obj_id: {name: getattr(o, name) for name in ATTRIBUTES}
                                                            for o in scene.objects})


def null_kinds(image: bool = False, audio_visual: bool = False) -> tuple[str, ...]:
    """What a null expression may get wrong: a still image shows colour and shape; a video also
    motion; an audio-visual video also sound (only there is the soundtrack what a model is asked
    to read: a plain video's text-only methods cannot hear that nothing sounds)."""
    return NULL_KINDS[:2] if image else NULL_KINDS if audio_visual else NULL_KINDS[:3]


def scenario_set(image: bool = False, audio_visual: bool = False) -> tuple[str, ...]:
    """The scenarios scenes cycle through: still images', audio-visual videos' or plain videos'."""
    return IMAGE_SCENARIOS if image else AVS_SCENARIOS if audio_visual else SCENARIOS


def scene_indices(split: str, count: int | None = None, scenario: str | None = None,
                  image: bool = False, audio_visual: bool = False) -> range:
    """Indices of the scenes a split is made of: the first `count` (default: the split's size),
    or with `scenario`, the first `count` scenes built around it (default: as many as the split
    holds). Scenarios cycle with the index, so these are the scenes a split of any size has at
    those indices; `count` may ask for more than the split holds, drawn the same way."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if count is not None and count < 1:
        raise ValueError(f"count: need at least one scene, got {count}")
    if scenario is None:
        return range(SPLIT_SIZES[split] if count is None else count)
    scenarios = scenario_set(image, audio_visual)
    if scenario not in scenarios:
        kind = "a still image" if image else "an audio-visual video" if audio_visual else "a video"
        raise ValueError(f"unknown scenario {scenario!r} for {kind}; expected one of {', '.join(scenarios)}")
    first, step = scenarios.index(scenario), len(scenarios)
    if count is None:
        count = len(range(first, SPLIT_SIZES[split], step))
    return range(first, first + step * count, step)


def split_samples(split: str, seed: int, count: int | None = None, height: int = 256, width: int = 256,
                  image: bool = False, extra_colours: Sequence[str] = (),
                  scenario: str | None = None,
                  audio_visual: bool = False) -> Iterator[VideoSample]:
    """The samples of a split (videos, single-frame images, or audio-visual videos), generated
    one by one; with `scenario`, only the scenes built around it (`scene_indices`)."""
    for index in scene_indices(split, count, scenario, image, audio_visual):
        yield generate(make_scene(split, seed, index, height, width, image, extra_colours, audio_visual))


def phenomenon_shares(split: str, seed: int, count: int | None = None, scenario: str | None = None,
                      audio_visual: bool = False) -> dict[str, float]:
    """Fraction of a split's expressions that exercise each phenomenon (from scenes, no rendering)."""
    counts: dict[str, int] = {}
    total = 0
    for index in scene_indices(split, count, scenario, audio_visual=audio_visual):
        for exp in make_scene(split, seed, index, audio_visual=audio_visual).expressions:
            total += 1
            for p in exp.phenomena:
                counts[p] = counts.get(p, 0) + 1
    names = dict.fromkeys(SCENARIOS + AVS_SCENARIOS)  # every phenomenon, in order
    return {p: counts.get(p, 0) / max(total, 1) for p in names if p in counts or p in scenario_set(audio_visual=audio_visual)}
