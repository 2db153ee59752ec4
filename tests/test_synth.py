"""SynthRef: determinism, phenomena, held-out vocabulary, format round trips, clip sampling."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from refseg.cli import main
from refseg.data import formats, synth
from refseg.data.sampler import ClipSampler, flip_text
from refseg.data.synth import (
    SCENARIOS,
    UNSEEN_COLOURS,
    UNSEEN_SHAPES,
    UNSEEN_TIMBRES,
    generate,
    make_scene,
    phenomenon_shares,
    render,
    split_samples,
)

# the held-out paraphrase of each template list is its last variant
HELD_OUT_TEMPLATES = [re.compile(re.sub(r"\\\{[a-z0-9]+\\\}", "[a-z-]+", re.escape(variants[-1])) + "$")
                      for variants in (synth.NAME, synth.MOVING, synth.STATIC, synth.STARTS, synth.SOUND,
                                       synth.LOUDEST, synth.SILENT, synth.TIMBRE, synth.ALL, synth.RELATION,
                                       synth.ENTERS)]


def held_out_words(text: str) -> list[str]:
    words = set(re.findall(r"[a-z-]+", text))
    found = [w for w in (*UNSEEN_COLOURS, *UNSEEN_SHAPES, *UNSEEN_TIMBRES) if w in words]
    return found + [t.pattern for t in HELD_OUT_TEMPLATES if t.match(text)]


@pytest.fixture(scope="module")
def videos():
    return [generate(make_scene("valid", 0, i)) for i in (5, 8)]  # audio and relation scenes


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    for run in ("a", "b"):
        assert main(["synth", "--split", "valid", "--seed", "3", "--count", "2", "--out", str(tmp_path / run)]) == 0
    digest = {run: {p.relative_to(tmp_path / run): hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in sorted((tmp_path / run).rglob("*")) if p.is_file()} for run in ("a", "b")}
    assert digest["a"] == digest["b"] and len(digest["a"]) > 50
    other = generate(make_scene("valid", 4, 0))
    same_seed = generate(make_scene("valid", 3, 0))
    assert not np.array_equal(other.load_frame(0), same_seed.load_frame(0))


def test_every_phenomenon_occurs_in_valid():
    shares = phenomenon_shares("valid", 0)
    assert set(shares) == set(SCENARIOS)
    assert all(share > 0 for share in shares.values()), shares


def test_unseen_vocabulary_never_appears_in_train():
    train = [e.text for i in range(200) for e in make_scene("train", 0, i).expressions]
    assert train and not [t for t in train if held_out_words(t)]
    unseen = [e.text for i in range(36) for e in make_scene("unseen", 0, i).expressions]
    assert sum(bool(held_out_words(t)) for t in unseen) > len(unseen) // 2
    assert HELD_OUT_TEMPLATES[0].match("that purple star") and not HELD_OUT_TEMPLATES[0].match("the red circle")


def test_expressions_fit_exactly_their_targets(videos):
    for video in videos:
        for exp in video.expressions:
            assert all(obj in video.masks for obj in exp.target_ids)
    tracking = make_scene("valid", 0, 1)
    exp = next(e for e in tracking.expressions if "tracking_bias" in e.phenomena)
    target = next(o for o in tracking.objects if o.obj_id == exp.target_ids[0])
    lookalike = [o for o in tracking.objects if o.shape == target.shape and o.colour == target.colour]
    assert len(lookalike) >= 2 and target.motion.kind == "starting"


def test_extra_colours_are_drawn_named_and_painted_only_when_asked():
    extra = ["black", "pink"]
    plain = [make_scene("train", 0, i) for i in range(30)]
    widened = [make_scene("train", 0, i, extra_colours=extra) for i in range(30)]
    assert not {o.colour for s in plain for o in s.objects} & set(synth.EXTRA_COLOURS)
    assert {o.colour for s in widened for o in s.objects} >= {*synth.SEEN_COLOURS, *extra}
    assert not set(synth.EXTRA_COLOURS) & set(UNSEEN_COLOURS)
    named = [(s, e) for s in widened for e in s.expressions if "pink" in e.text.split() and e.target_ids]
    assert named
    for scene, exp in named[:3]:  # a pink plain target is painted in pink where it is visible
        frames, masks = render(scene)
        obj = next(o for o in scene.objects if o.obj_id == exp.target_ids[0])
        assert obj.colour == "pink"
        t = int(np.flatnonzero(masks[obj.obj_id].any(axis=(1, 2)))[0])
        painted = frames[t][masks[obj.obj_id][t]]
        assert (np.abs(painted.astype(int).max(axis=0) - synth.EXTRA_COLOURS["pink"]) <= 1).all()
    with pytest.raises(ValueError, match="orange"):
        make_scene("train", 0, 0, extra_colours=["orange"])


def null_kind(scene, exp) -> str:
    """What a null expression gets wrong about the object it is written around (the scene's first)."""
    first = scene.objects[0]
    words = set(exp.text.replace("-", " ").split())
    if "pitched" in words or "tone" in words:
        return "sound"
    if words & set(synth.DIRECTIONS):
        return "motion"
    colour, shape = first.colour in words, first.shape in words
    assert colour != shape, exp.text  # exactly one of its two words is the object's
    return "shape" if colour else "colour"


@pytest.mark.parametrize("image, audio_visual, kinds", [(True, False, {"colour", "shape"}),
                                                        (False, False, {"colour", "shape", "motion"}),
                                                        (False, True, {"colour", "shape", "motion", "sound"})])
def test_null_expressions_get_colour_shape_motion_or_sound_wrong_and_fit_no_object(image, audio_visual, kinds):
    scenarios = synth.scenario_set(image, audio_visual)
    indices = synth.scene_indices("train", 24, "null", image, audio_visual)
    found = []
    for index in indices:
        scene = make_scene("train", 0, index, image=image, audio_visual=audio_visual)
        assert scene.scenario == "null" and scenarios[index % len(scenarios)] == "null"
        first = scene.objects[0]
        for exp in (e for e in scene.expressions if "null" in e.phenomena):
            assert exp.target_ids == ()
            kind = null_kind(scene, exp)
            found.append(kind)
            if kind == "motion":  # the named shape exists, and none of its kind moves the named way
                direction = synth.DIRECTIONS[next(w for w in exp.text.split() if w in synth.DIRECTIONS)]
                assert first.shape in exp.text and first.motion.kind == "moving" and first.motion.direction != direction
                assert not any(o.shape == first.shape and o.motion.kind == "moving" and o.motion.direction == direction
                               for o in scene.objects)
            if kind == "sound":  # every object is silent: the rendered soundtrack is zero
                assert all(o.pitch is None for o in scene.objects)
                assert not synth.render_audio(scene).any()
    assert set(found) == kinds, found
    assert len(found) >= 0.8 * len(indices)  # distractors rarely void a null expression


def test_no_object_of_an_occlusion_scene_is_hidden_all_along():
    # before distractors were kept off the wall, 6 of these 26 scenes held an object the wall hid
    # on every frame, 3 of them named by an appearance expression (valid_u 4, test 22, train 166)
    scenes = [make_scene(split, 0, i) for split in ("train", "valid_u", "test")
              for i in range(4, min(synth.SPLIT_SIZES[split], 180), 9)]
    assert len(scenes) == 26 and all(s.scenario == "occlusion" for s in scenes)
    for scene in scenes:
        _, masks = render(scene)
        hidden = [o.obj_id for o in scene.objects if not masks[o.obj_id].any()]
        assert not hidden, (scene.video_id, hidden)


def test_audio_scene_sounds(videos):
    audio_video = videos[0]
    assert audio_video.sample_rate == 16000 and audio_video.audio.shape[0] == round(len(audio_video) / 8 * 16000)
    spectrum = np.abs(np.fft.rfft(audio_video.audio))
    freqs = np.fft.rfftfreq(audio_video.audio.size, 1 / 16000)
    for pitch in (220.0, 880.0):  # the low and the high source are both in the mix
        assert spectrum[np.argmin(abs(freqs - pitch))] > 10 * np.median(spectrum)


def compare(original, back, keep_phenomena=True, objects=None, audio=True, exact_frames=True, expressions=True):
    assert len(original) == len(back)
    for t in range(len(original)):
        if exact_frames:
            assert np.array_equal(original.load_frame(t), back.load_frame(t))
        else:
            # JPEG at quality 95 on a noisy texture: a few grey levels (another image: ~40)
            assert np.abs(original.load_frame(t).astype(int) - back.load_frame(t)).mean() < 8
    for obj_id in objects if objects is not None else original.masks:
        assert np.array_equal(original.masks[obj_id], back.masks[obj_id]), obj_id
    if expressions:
        texts = {(e.text, e.target_ids) + ((e.phenomena,) if keep_phenomena else ()) for e in original.expressions}
        back_texts = {(e.text, e.target_ids) + ((e.phenomena,) if keep_phenomena else ()) for e in back.expressions}
        assert texts == back_texts
    if audio:
        assert np.array_equal(original.audio, back.audio) and original.sample_rate == back.sample_rate


@pytest.mark.parametrize("name", ["mevis", "ytvos", "refdavis", "sav"])
def test_video_formats_round_trip_exactly(videos, tmp_path, name):
    options = {"split": "val"} if name == "refdavis" else {}
    formats.write(name, videos, tmp_path, frame_ext=".png", **options)
    back = list(formats.reader(name)(tmp_path, **options))
    for original, read in zip(videos, back):
        # SA-V has no expressions and, like DAVIS, no audio
        compare(original, read, audio=name in ("mevis", "ytvos"), expressions=name != "sav")


def test_refavs_round_trip(videos, tmp_path):
    formats.write("refavs", videos, tmp_path, split="test", frame_ext=".png")
    back = {s.video_id: s for s in formats.reader("refavs")(tmp_path)}
    for original in videos:
        vid = original.video_id.replace("_", "-") + "_0_1"
        read = back[vid]
        single = [e for e in original.expressions if len(e.target_ids) == 1]
        assert {(e.text, e.target_ids) for e in read.expressions} == {(e.text, e.target_ids) for e in single}
        for t in range(len(original)):
            assert np.array_equal(original.load_frame(t), read.load_frame(t))
        for obj_id in read.masks:
            assert np.array_equal(original.masks[obj_id], read.masks[obj_id])
        assert np.array_equal(original.audio, read.audio)


def test_refcoco_round_trip_and_jpeg_frames(tmp_path):
    images = list(split_samples("valid", 0, count=4, image=True))
    assert all(len(s) == 1 for s in images)
    formats.write("refcoco", images, tmp_path / "png", split="val", frame_ext=".png")
    for original, read in zip(images, formats.reader("refcoco")(tmp_path / "png", split="val")):
        compare(original, read, audio=False)
    formats.write("refcoco", images, tmp_path / "jpg", split="val")
    for original, read in zip(images, formats.reader("refcoco")(tmp_path / "jpg", split="val")):
        compare(original, read, audio=False, exact_frames=False)


def test_flip_swaps_left_and_right(videos):
    assert flip_text("the circle left of the square, not the right one") == \
        "the circle right of the square, not the left one"
    relation = videos[1]
    sampler = ClipSampler([relation], clip_len=4, size=64, flip_p=1.0, crop_scale=(1.0, 1.0), brightness=0,
                          contrast=0, seed=0)
    for _ in range(6):
        clip = sampler.sample()
        original = next(e for e in relation.expressions if e.exp_id == clip.expression.exp_id)
        assert clip.flipped and clip.expression.text == flip_text(original.text)
        assert clip.frames.shape == (4, 64, 64, 3) and clip.mask.shape == (4, 64, 64)
        truth = relation.target_mask(original)[clip.start : clip.start + 4]
        import PIL.Image as Image

        resized = np.stack([np.asarray(Image.fromarray(m).resize((64, 64), Image.NEAREST)) for m in truth])
        assert np.array_equal(clip.mask, resized[:, :, ::-1])


def test_a_group_shares_one_augmented_clip_across_different_texts(videos):
    import PIL.Image as Image

    sampler = ClipSampler(videos, clip_len=3, size=64, flip_p=1.0, crop_scale=(1.0, 1.0), brightness=0,
                          contrast=0, seed=1)
    for _ in range(6):
        group = sampler.sample_group(3)
        video = next(v for v in videos if v.video_id == group[0].video_id)
        texts = {e.text for e in video.expressions}
        assert len(group) == min(3, len(texts))
        assert len({c.expression.text for c in group}) == len(group)  # different texts
        for clip in group:
            assert clip.video_id == video.video_id and clip.start == group[0].start and clip.flipped
            assert np.array_equal(clip.frames, group[0].frames)
            original = next(e for e in video.expressions if e.exp_id == clip.expression.exp_id)
            assert clip.expression.text == flip_text(original.text)
            truth = video.target_mask(original)[clip.start : clip.start + 3]
            resized = np.stack([np.asarray(Image.fromarray(m).resize((64, 64), Image.NEAREST)) for m in truth])
            assert np.array_equal(clip.mask, resized[:, :, ::-1])  # its own target, flipped like the frames
    objects = ClipSampler(videos, clip_len=2, size=32, by="object")
    with pytest.raises(ValueError, match="need by='expression'"):
        objects.sample_group(2)


def test_phenomenon_weights_draw_expressions_in_proportion():
    from refseg.data.sample import Expression, VideoSample, in_memory

    frames = np.zeros((2, 16, 16, 3), np.uint8)
    masks = {1: np.ones((2, 16, 16), bool)}
    expressions = [Expression("0", "a", (1,), ("appearance",)), Expression("1", "b", (), ("null",)),
                   Expression("2", "c", (1,), ("tracking_bias", "lookalike_motion")), Expression("3", "d", (1,))]
    video = VideoSample("v", ["0", "1"], in_memory(frames), masks, expressions)
    weights = {"null": 4.0, "lookalike_motion": 2.0, "tracking_bias": 3.0}
    sampler = ClipSampler([video], clip_len=1, size=16, seed=0, weights=weights)
    draws = 4000
    counts = {e.exp_id: 0 for e in expressions}
    for _ in range(draws):
        counts[sampler.sample().expression.exp_id] += 1
    # weight 1 (appearance), 4 (null), max(3, 2) (two phenomena), 1 (none): out of 9
    for exp_id, weight in {"0": 1, "1": 4, "2": 3, "3": 1}.items():
        p = weight / 9
        assert abs(counts[exp_id] / draws - p) < 4 * (p * (1 - p) / draws) ** 0.5, (exp_id, counts)
    with pytest.raises(ValueError, match="must be positive"):
        ClipSampler([video], weights={"null": 0.0})
    with pytest.raises(ValueError, match="need by='expression'"):
        ClipSampler([video], by="object", weights={"null": 2.0})


def test_synth_command_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("keep")
    assert main(["synth", "--split", "valid", "--count", "1", "--out", str(tmp_path / "d")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "d" / "x").read_text() == "keep"


def test_synth_to_eval_breaks_results_down_by_phenomenon(videos, tmp_path):
    from refseg.eval.protocols import evaluate_expressions
    from refseg.io.masks import write_mask_png

    formats.write("mevis", videos, tmp_path / "gt", frame_ext=".png")
    for video in videos:
        for exp in video.expressions:
            target = video.target_mask(exp)
            keep = "audio" not in exp.phenomena  # predict audio expressions as empty
            for t, name in enumerate(video.frame_names):
                write_mask_png(tmp_path / "pred" / video.video_id / exp.exp_id / f"{name}.png", target[t] & keep)
    result = evaluate_expressions(tmp_path / "pred", tmp_path / "gt", "mevis")
    assert result.summary["J&F relation"] == 1.0 and result.summary["J&F appearance"] == 1.0
    assert result.summary["J&F audio"] == 0.0


def test_scenario_selects_the_split_scenes_built_around_it():
    k, n = SCENARIOS.index("tracking_bias"), len(SCENARIOS)
    assert list(synth.scene_indices("valid_u", scenario="tracking_bias")) == [k, k + n]  # 18 scenes hold 2
    assert list(synth.scene_indices("valid_u", 4, "tracking_bias")) == [k, k + n, k + 2 * n, k + 3 * n]
    assert list(synth.scene_indices("valid", 3, "relation", image=True)) == [3, 7, 11]
    for index in synth.scene_indices("valid_u", 4, "tracking_bias"):
        scene = make_scene("valid_u", 0, index)
        assert scene.scenario == "tracking_bias"
        assert any("tracking_bias" in e.phenomena for e in scene.expressions)
    with pytest.raises(ValueError, match="unknown scenario 'tracking_bias' for a still image"):
        synth.scene_indices("valid", 2, "tracking_bias", image=True)
    with pytest.raises(ValueError, match="need at least one scene, got 0"):
        synth.scene_indices("valid", 0)


def test_synth_command_writes_only_the_scenario_scenes(tmp_path, capsys):
    out = tmp_path / "bias"
    assert main(["synth", "--split", "valid_u", "--scenario", "late_entry", "--count", "2", "--size", "128",
                 "--out", str(out)]) == 0
    read = list(formats.reader("mevis")(out))
    assert [s.video_id for s in read] == ["valid_u_0_00003", "valid_u_0_00012"]
    for sample in read:  # the same scenes as the whole split has at those indices
        scene = make_scene("valid_u", 0, int(sample.video_id[-5:]), 128, 128)
        assert {(e.text, e.target_ids) for e in sample.expressions} == \
            {(e.text, e.target_ids) for e in scene.expressions}
    assert main(["synth", "--split", "valid_u", "--scenario", "flying", "--out", str(tmp_path / "x")]) == 2
    assert "unknown scenario 'flying'" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_strided_clips_step_evenly_over_the_video_and_narrow_to_fit_a_short_one():
    from refseg.data.sample import Expression, VideoSample

    def video(name: str, n: int) -> VideoSample:  # frame t is filled with the value t
        frames = np.stack([np.full((64, 64, 3), t, dtype=np.uint8) for t in range(n)])
        masks = {1: np.ones((n, 64, 64), dtype=bool)}
        return VideoSample(name, [f"{t:05d}" for t in range(n)], lambda t: frames[t], masks,
                           [Expression("0", "the square", (1,))])

    def steps(sampler: ClipSampler) -> list[int]:
        clip = sampler.sample()
        shown = [int(f[0, 0, 0]) for f in clip.frames]
        return [b - a for a, b in zip(shown, shown[1:])]

    plain = dict(clip_len=8, size=64, flip_p=0.0, crop_scale=(1.0, 1.0), brightness=0, contrast=0)
    fixed = ClipSampler([video("long", 48)], stride=(4, 4), seed=0, **plain)
    assert all(steps(fixed) == [4] * 7 for _ in range(10))
    drawn = ClipSampler([video("long", 48)], stride=(1, 4), seed=0, **plain)
    seen = set()
    for _ in range(40):
        s = steps(drawn)
        assert len(set(s)) == 1 and 1 <= s[0] <= 4
        seen.add(s[0])
    assert seen == {1, 2, 3, 4}
    # 15 frames hold 8 frames at stride 2 at most
    assert all(steps(ClipSampler([video("short", 15)], stride=(4, 4), seed=s, **plain)) == [2] * 7 for s in range(5))
    # the default draws the clips it drew before strides existed: consecutive frames, same starts
    a = ClipSampler([video("long", 48)], seed=3, **plain)
    b = ClipSampler([video("long", 48)], stride=(1, 1), seed=3, **plain)
    for _ in range(5):
        assert np.array_equal(a.sample().frames, b.sample().frames)
    with pytest.raises(ValueError, match=r"stride must be \(lo, hi\) with 1 <= lo <= hi, got \(3, 2\)"):
        ClipSampler([video("long", 48)], stride=(3, 2), **plain)
