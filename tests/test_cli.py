"""The `refseg` command end to end on real files and a tiny model directory."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_sam2

from refseg.cli import main
from refseg.demo import iou, moving_shapes
from refseg.engine import Session
from refseg.io import frames, read_mask_png
from refseg.prompts import Points


def test_segment_writes_masks_and_overlay_matching_the_engine(model_dir, video, tmp_path):
    out = tmp_path / "out"
    code = main(["segment", str(video), "--sam2", str(model_dir), "--points", "20,48 60,80:0",
                 "--box", "90,10,120,40", "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["1", "2"]
    assert len(list((out / "masks" / "1").glob("*.png"))) == 8
    assert len(list(frames(out / "overlay.mp4"))) == 8
    # the PNGs are exactly what a Python session produces on the decoded frames
    session = Session(random_sam2(0))
    session.add_prompt(1, Points([[20, 48], [60, 80]], labels=[1, 0]))
    decoded = list(frames(video))
    first = session.push(decoded[0])
    assert np.array_equal(read_mask_png(out / "masks" / "1" / "00000.png"), first.objects[1].mask)


def test_bad_input_exits_2_with_one_line_and_writes_nothing(model_dir, video, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    code = main(["segment", str(bad), "--sam2", str(model_dir), "--points", "1,1", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.mp4" in err[0]
    assert not out.exists()
    code = main(["segment", str(bad), "--sam2", str(model_dir), "--points", "1", "--out", str(out)])
    assert code == 2 and "--points" in capsys.readouterr().err
    code = main(["segment", str(video), "--sam2", str(tmp_path / "none"), "--points", "1,1", "--out", str(out)])
    assert code == 2 and "no such SAM 2 model folder or .pt file" in capsys.readouterr().err
    assert not out.exists()


def test_demo_scene_ground_truth():
    scene = moving_shapes(5)
    disk = scene.masks[1][0]
    assert disk.sum() > 100 and iou(disk, disk) == 1.0 and iou(disk, ~disk) == 0.0
    # the disk is drawn where its mask says
    assert (scene.frames[0][disk] == (230, 60, 40)).all()


def test_eval_command_writes_reports_and_rejects_bad_input(tmp_path, capsys):
    from refseg.data.formats.davis import write_index_png

    mask = np.zeros((20, 30), np.uint8)
    mask[4:12, 5:15] = 1
    for t in range(3):
        write_index_png(tmp_path / "gt" / "Annotations" / "480p" / "s" / f"{t:05d}.png", mask)
        write_index_png(tmp_path / "pred" / "s" / f"{t:05d}.png", mask)
    out = tmp_path / "report" / "davis.json"
    code = main(["eval", "--protocol", "davis", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--split", "none", "--out", str(out)])
    assert code == 0
    assert "J&F-Mean" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["davis.csv", "davis.json", "davis.md", "davis.png"]
    code = main(["eval", "--protocol", "davis", "--gt", str(tmp_path / "nope"), "--pred", str(tmp_path / "pred")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope" in err[0]


@pytest.fixture(scope="module")
def samwise_dir(tmp_path_factory):
    from test_samwise import tiny_samwise

    model = tiny_samwise(cme=False)
    text_dir = tmp_path_factory.mktemp("text")
    model.text.model.save_pretrained(text_dir)
    model.text.tokenizer.save_pretrained(text_dir)
    model.config.text_encoder = str(text_dir)
    path = tmp_path_factory.mktemp("samwise") / "model"
    model.save_pretrained(path)
    return path


def test_segment_text_writes_pngs_rle_and_overlay_matching_the_stream(samwise_dir, video, tmp_path):
    import json

    from refseg import load
    from refseg.io.rle import decode_rle

    out = tmp_path / "out"
    code = main(["segment", str(video), "--text", "the disk", "--text", "the square moving right",
                 "--model", str(samwise_dir), "--out", str(out)])
    assert code == 0
    document = json.loads((out / "masks.json").read_text())
    assert document["objects"] == {"1": "the disk", "2": "the square moving right"}
    assert [f["index"] for f in document["frames"]] == list(range(8))
    assert len(list(frames(out / "overlay.mp4"))) == 8
    stream = load(samwise_dir).stream(["the disk", "the square moving right"])
    decoded = list(frames(video))
    expected = [r for f in decoded for r in stream.push(f)] + stream.flush()
    for result, entry in zip(expected, document["frames"]):
        for obj_id in (1, 2):
            png = read_mask_png(out / "masks" / str(obj_id) / f"{result.index:05d}.png")
            assert np.array_equal(png, result.objects[obj_id].mask)
            assert np.array_equal(decode_rle(entry["masks"][str(obj_id)]), png)


def test_demo_segments_the_scene_expressions_and_scores_them(samwise_dir, tmp_path, caplog):
    import json

    from refseg import load
    from refseg.data import synth
    from refseg.demo import DEMO_SCENE, DEMO_SEED, DEMO_SPLIT, demo_scene, run_text_demo
    from refseg.eval.metrics import boundary_f, jaccard

    caplog.set_level("INFO")
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(samwise_dir), "--out", str(out), "--frames", "10"]) == 0
    sample = synth.generate(synth.make_scene(DEMO_SPLIT, DEMO_SEED, DEMO_SCENE))
    texts = [e.text for e in sample.expressions]
    assert json.loads((out / "masks.json").read_text())["objects"] == {str(i + 1): t for i, t in enumerate(texts)}
    assert len(list((out / "masks" / str(len(texts))).glob("*.png"))) == 10
    assert len(list(frames(out / "overlay.mp4"))) == 10
    assert "mean J&F" in caplog.text and "memory banks" in caplog.text
    # the reported J&F is that of the written masks against the scene's ground truth
    report = run_text_demo(tmp_path / "again", load(samwise_dir), demo_scene(10))
    for obj_id, expression in enumerate(sample.expressions, start=1):
        gt = sample.target_mask(expression)[:10]
        pred = [read_mask_png(out / "masks" / str(obj_id) / f"{t:05d}.png") for t in range(10)]
        expected = np.mean([(jaccard(g, p) + boundary_f(g, p)) / 2 for g, p in zip(gt, pred)])
        assert report.jf[obj_id - 1] == pytest.approx(expected)


def test_demo_runs_an_evf_sam_text_model_too(tmp_path):
    from test_evf import tiny_evf

    from refseg.demo import demo_scene, run_text_demo

    sample = demo_scene(3)
    report = run_text_demo(tmp_path / "demo", tiny_evf(), sample)
    assert report.prompts == [e.text for e in sample.expressions] and len(report.jf) == len(report.prompts)
    assert all(0.0 <= jf <= 1.0 for jf in report.jf) and report.bank_kib > 0  # SAM 2 memory behind EVF-SAM
    assert len(list((tmp_path / "demo" / "masks" / "1").glob("*.png"))) == 3


def test_demo_tracks_the_objects_from_one_click_with_a_sam2(model_dir, tmp_path, caplog):
    from refseg.demo import demo_scene

    caplog.set_level("INFO")
    out = tmp_path / "demo"
    assert main(["demo", "--sam2", str(model_dir), "--out", str(out), "--frames", "3"]) == 0
    visible = [o for o, m in sorted(demo_scene(3).masks.items()) if m[0].any()]
    assert sorted(int(p.name) for p in (out / "masks").iterdir()) == visible
    assert "one click at" in caplog.text and "mean J&F" in caplog.text


def test_demo_with_a_bad_model_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "no such model folder" in capsys.readouterr().err
    assert not out.exists()


def test_segment_text_bad_model_or_mixed_prompts_fail_cleanly(video, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(video), "--text", "the disk", "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such model folder" in err[0]
    assert main(["segment", str(video), "--text", "the disk", "--points", "3,4", "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["segment", "cam://x", "--text", "the disk", "--out", str(out)]) == 2
    assert "cam://N" in capsys.readouterr().err
    assert not out.exists()


def test_predict_writes_the_submission_layout_that_eval_scores(samwise_dir, tmp_path, capsys):
    from refseg import load
    from refseg.data import formats

    data = tmp_path / "mevis"
    assert main(["synth", "--out", str(data), "--split", "valid", "--count", "1", "--size", "128",
                 "--frame-ext", ".png"]) == 0
    pred = tmp_path / "pred"
    assert main(["predict", "--data", str(data), "--model", str(samwise_dir), "--out", str(pred)]) == 0
    samples = list(formats.reader("mevis")(data))
    video = samples[0]
    expression = video.expressions[-1]
    stream = load(samwise_dir).stream([expression.text])
    results = [r for f in video.frames() for r in stream.push(f)] + stream.flush()
    for name, result in zip(video.frame_names, results):
        png = read_mask_png(pred / video.video_id / expression.exp_id / f"{name}.png")
        assert np.array_equal(png, result.objects[1].mask)
    written = sorted(p.relative_to(pred).parts[:2] for p in pred.glob("*/*"))
    assert written == sorted((s.video_id, e.exp_id) for s in samples for e in s.expressions)
    capsys.readouterr()
    assert main(["eval", "--protocol", "mevis", "--gt", str(data), "--pred", str(pred),
                 "--out", str(tmp_path / "r.json")]) == 0
    assert "J&F" in capsys.readouterr().out


@pytest.fixture(scope="module")
def sam_i2v_dir(tmp_path_factory):
    from refseg.methods.sam_i2v import SamI2VConfig, upgrade

    path = tmp_path_factory.mktemp("sam_i2v")
    upgrade(random_sam2(0), SamI2VConfig(tapped_dims=(64, 128, 256), temporal_dim=16), memory_layers=1).save_pretrained(path)
    return path


def test_segment_and_eval_with_sam_i2v(sam_i2v_dir, video, tmp_path, capsys):
    from PIL import Image

    from refseg.data.formats.davis import write_index_png
    from refseg.models import load

    out = tmp_path / "out"
    code = main(["segment", str(video), "--method", "sam-i2v", "--model", str(sam_i2v_dir), "--points", "20,48",
                 "--out", str(out)])
    assert code == 0
    pngs = sorted((out / "masks" / "1").glob("*.png"))
    assert len(pngs) == 8
    session = load("sam-i2v", sam_i2v_dir).session()
    session.add_prompt(1, Points([[20, 48]]))
    for t, frame in enumerate(frames(video)):
        assert np.array_equal(read_mask_png(pngs[t]), session.push(frame).objects[1].mask), t
    # pvs through the same model, and the errors of a missing model
    scene = moving_shapes(5)
    gt = tmp_path / "davis"
    for t in range(5):
        folder = gt / "JPEGImages" / "480p" / "shapes"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.frames[t]).save(folder / f"{t:05d}.jpg", quality=95)
        write_index_png(gt / "Annotations" / "480p" / "shapes" / f"{t:05d}.png", scene.masks[1][t] * 1)
    report = tmp_path / "pvs.json"
    code = main(["eval", "--protocol", "pvs", "--gt", str(gt), "--split", "all", "--method", "sam-i2v", "--model",
                 str(sam_i2v_dir), "--mode", "online", "--clicks", "1", "--max-frames", "2", "--out", str(report)])
    assert code == 0 and report.is_file()
    code = main(["segment", str(video), "--method", "sam-i2v", "--points", "20,48", "--out", str(tmp_path / "x")])
    assert code == 2 and "--method sam-i2v needs --model" in capsys.readouterr().err
    code = main(["segment", str(video), "--method", "sam-i2v", "--model", str(tmp_path / "none"), "--points", "1,1",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "no such model folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
