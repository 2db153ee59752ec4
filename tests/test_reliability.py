"""What a user meets when something is wrong: one line naming the input and exit 2 (never a
traceback), `--out` left as it was, damaged videos reported, runs that are stopped or killed
leaving nothing behind, and nothing dropped in silence."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from refseg.cli import main
from refseg.demo import moving_shapes
from refseg.io import VideoWriter, frames

SHIPPED_SAMWISE = Path(__file__).resolve().parent.parent / "refseg" / "weights" / "samwise_synth"


def error_line(capsys) -> str:
    """The one line refseg printed about the failure (progress bars aside); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("refseg")]
    assert len(lines) == 1, err
    return lines[0]


def listing(folder: Path) -> list[str]:
    """Everything under `folder`, and the hidden siblings of it (staging)."""
    inside = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else None
    beside = sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))
    return [str(inside), *beside]


def truncated_copy(folder: Path, into: Path, name: str = "model.safetensors") -> Path:
    copy = into / folder.name
    shutil.copytree(folder, copy)
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) // 2])
    return copy


def test_bad_files_and_places_give_one_line_and_leave_out_untouched(model_dir, video, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "keep.txt").write_text("an earlier run")
    before = listing(out)
    clicks = ["--points", "20,48"]
    cases = [
        (["segment", str(video), "--sam2", str(model_dir), "--mask", str(video)], "clip.mp4: not a readable mask"),
        (["segment", str(video), "--sam2", str(truncated_copy(model_dir, tmp_path)), *clicks],
         "model.safetensors: cannot read the weights, the file is damaged or truncated"),
        (["segment", str(video), "--sam2", str(SHIPPED_SAMWISE), *clicks], "not a SAM 2 model folder"),
        (["segment", str(video), "--sam2", str(model_dir), "--points", "-5,10"], "--points: Points: click"),
        (["segment", str(video), "--sam2", str(model_dir), "--points", "5,x"], "'x' in '5,x' is not a number"),
        (["segment", str(video), "--sam2", str(model_dir), *clicks, "--out", str(video)], "is a file"),
        (["segment", str(video), "--sam2", str(model_dir), *clicks, "--out", str(video / "x")], "is a file"),
        (["segment", str(video), "--text", "the disk", "--model", str(video)], "is a file"),
    ]
    for args, expected in cases:
        if "--out" not in args:
            args = [*args, "--out", str(out)]
        assert main(args) == 2, args
        line = error_line(capsys)
        assert line.startswith("refseg: error: ") and expected in line, (args, line)
        assert listing(out) == before


def test_a_damaged_text_model_folder_is_named(video, tmp_path, capsys):
    broken = truncated_copy(SHIPPED_SAMWISE, tmp_path)
    out = tmp_path / "out"
    assert main(["segment", str(video), "--text", "the disk", "--model", str(broken), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert str(broken / "model.safetensors") in line and "damaged or truncated" in line
    assert not out.exists()


def test_a_sam2_checkpoint_given_as_a_text_model_is_named_for_what_it_is(video, tmp_path, capsys):
    import torch

    from refseg.sam.checkpoint import convert_official_state_dict  # noqa: F401 (official names below)

    pt = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}}, pt)
    assert main(["segment", str(video), "--text", "the disk", "--model", str(pt), "--out", str(tmp_path / "o")]) == 2
    assert "an official SAM 2 checkpoint" in error_line(capsys)


def test_a_wrong_flag_value_or_a_bad_config_fails_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["segment", "x.mp4", "--bogus"])
    assert stop.value.code == 2
    assert error_line(capsys) == "refseg: error: unrecognized arguments: --bogus (see refseg --help)"
    config = tmp_path / "bad.yaml"
    config.write_text("task: samwise\nsteps: [1, 2\nout: x\n")
    assert main(["train", str(config)]) == 2
    line = error_line(capsys)
    assert str(config) in line and "not valid YAML at line" in line
    config.write_text("- a list\n- not settings\n")
    assert main(["train", str(config)]) == 2
    assert "expected a mapping of settings" in error_line(capsys)
    config.write_text("steps: ten\n")
    assert main(["train", str(config)]) == 2
    assert "steps: expected int" in error_line(capsys)


def tiny_train_config(path: Path, out: Path, steps: int = 1) -> Path:
    path.write_text(yaml.safe_dump({"steps": steps, "batch_size": 1, "log_every": 1, "checkpoint_every": 1,
                                    "data": {"count": 1, "clip_len": 2}, "out": str(out),
                                    "model": {"sam2": "tiny-test", "image_size": 64}}))
    return path


def test_a_run_folder_is_resumed_or_overwritten_never_mixed(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    config = tiny_train_config(tmp_path / "c.yaml", out)
    with caplog.at_level(logging.INFO):
        assert main(["train", str(config), "--resume"]) == 0
    assert "nothing to resume: starting from step 0" in caplog.text
    first = (out / "metrics.jsonl").read_text()
    assert main(["train", str(config)]) == 2
    line = error_line(capsys)
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    assert (out / "metrics.jsonl").read_text() == first  # refused: nothing touched
    caplog.clear()
    tiny_train_config(config, out, steps=2)
    with caplog.at_level(logging.INFO):
        assert main(["train", str(config), "--resume"]) == 0
    assert "from checkpoints/step_0000001: step 1 of 2" in caplog.text
    assert main(["train", str(config), "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000001", "step_0000002"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    assert main(["synth", "--out", str(root / "gt"), "--split", "valid", "--seed", "5", "--count", "2",
                 "--size", "128"]) == 0
    return root / "gt"


def test_eval_names_bad_ground_truth_and_bad_predictions(dataset, tmp_path, capsys):
    pred = tmp_path / "pred"
    meta = json.loads((dataset / "meta_expressions.json").read_text())["videos"]
    video, info = sorted(meta.items())[0]
    expression = sorted(info["expressions"])[0]
    folder = pred / video / expression
    folder.mkdir(parents=True)
    (folder / f"{info['frames'][0]}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    report = tmp_path / "results.json"
    assert main(["eval", "--protocol", "mevis", "--gt", str(dataset), "--pred", str(pred), "--out", str(report)]) == 2
    assert f"{folder / info['frames'][0]}.png: not a readable PNG mask" in error_line(capsys)
    assert not report.exists()
    elsewhere = tmp_path / "gt_other"
    shutil.copytree(dataset, elsewhere)
    (elsewhere / "meta_expressions.json").unlink()
    for gt, protocol, expected in [(elsewhere, "mevis", "no meta_expressions.json, so not the mevis layout"),
                                   (dataset, "refavs", "no metadata.csv, so not the refavs layout"),
                                   (dataset, "davis", "no PNG annotation (not a DAVIS-style")]:
        assert main(["eval", "--protocol", protocol, "--gt", str(gt), "--pred", str(pred), "--out", str(report)]) == 2
        assert expected in error_line(capsys), protocol
    assert main(["eval", "--protocol", "mevis", "--gt", str(dataset), "--pred", str(dataset), "--out", str(report)]) == 2
    assert "is the ground-truth folder itself" in error_line(capsys)
    assert not report.exists()


def test_eval_lists_the_predictions_it_scored_as_missing(dataset, tmp_path, caplog):
    meta = json.loads((dataset / "meta_expressions.json").read_text())["videos"]
    videos = sorted(meta)
    pred = tmp_path / "pred"
    first = sorted(meta[videos[0]]["expressions"])
    for expression in first[1:]:  # the first expression and the whole second video are left out
        for name in meta[videos[0]]["frames"][:-1]:  # and each one's last frame
            path = pred / videos[0] / expression / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            from refseg.io.masks import write_mask_png

            write_mask_png(path, np.zeros((128, 128), bool))
    report = tmp_path / "results.json"
    with caplog.at_level(logging.INFO):
        assert main(["eval", "--protocol", "mevis", "--gt", str(dataset), "--pred", str(pred), "--out", str(report)]) == 0
    listed = json.loads(report.read_text())["missing_predictions"]
    last = meta[videos[0]]["frames"][-1]
    expected = [f"{videos[0]}/{first[0]}"] + [f"{videos[0]}/{e}/{last}.png" for e in first[1:]] + [videos[1]]
    assert listed == expected
    assert f"{len(expected)} predictions are missing" in caplog.text
    assert "Missing predictions" in report.with_suffix(".md").read_text()


def cut_video(path: Path, frames_: int = 40, fraction: float = 0.5) -> Path:
    """An mkv cut at `fraction` of its bytes (Matroska states its duration in the header)."""
    whole = path.with_name("whole.mkv")
    with VideoWriter(whole, fps=10) as writer:
        for frame in moving_shapes(frames_).frames:
            writer.write(frame)
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_a_truncated_video_is_reported_and_strict_refuses_it(model_dir, tmp_path, capsys, caplog):
    cut = cut_video(tmp_path / "cut.mkv")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert main(["segment", str(cut), "--sam2", str(model_dir), "--points", "20,48", "--out", str(out)]) == 0
    decoded = len(list((out / "masks" / "1").glob("*.png")))
    assert 0 < decoded < 40
    assert f"announces 40 frames but only {decoded} were read (frames {decoded}-39" in caplog.text
    record = json.loads((out / "masks.json").read_text())["input"]
    assert record["frames_decoded"] == decoded and record["frames_announced"] == 40
    strict = tmp_path / "strict"
    assert main(["segment", str(cut), "--sam2", str(model_dir), "--points", "20,48", "--out", str(strict),
                 "--strict"]) == 2
    assert "--strict" in error_line(capsys)
    assert not strict.exists() and listing(strict) == ["None"]


def test_damaged_packets_are_skipped_and_counted(tmp_path, caplog):
    whole = tmp_path / "v.mp4"
    with VideoWriter(whole, fps=10) as writer:
        rng = np.random.default_rng(0)
        for frame in moving_shapes(60).frames:
            writer.write(np.clip(frame.astype(int) + rng.integers(0, 40, frame.shape), 0, 255).astype(np.uint8))
    data = bytearray(whole.read_bytes())
    for k in np.random.default_rng(1).integers(len(data) // 3, 2 * len(data) // 3, 200):
        data[k] ^= 0xFF
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    stream = frames(damaged)
    with caplog.at_level(logging.WARNING):
        count = sum(1 for _ in stream)
    report = stream.report
    assert count == report.decoded and report.announced == 60
    assert report.skipped_after or report.corrupt
    assert "damaged.mp4" in caplog.text and "--strict makes this an error" in caplog.text
    with pytest.raises(ValueError, match="damaged.mp4: .*--strict"):
        list(frames(damaged, strict=True))


def test_frames_of_other_sizes_keep_their_aspect_in_the_overlay(tmp_path):
    wide = np.full((64, 128, 3), 200, np.uint8)
    tall = np.full((128, 64, 3), 200, np.uint8)
    with VideoWriter(tmp_path / "o.mp4", fps=5, crf=0) as writer:
        writer.write(wide)
        writer.write(tall)
    second = list(frames(tmp_path / "o.mp4"))[1]
    assert second.shape == (64, 128, 3)
    assert second[:, :40].max() < 30 and second[:, -40:].max() < 30  # black bars left and right
    assert abs(int(second[:, 56:72].mean()) - 200) < 10  # the tall frame, 32 px wide, in the middle


def test_long_text_is_truncated_with_a_warning(caplog):
    from test_samwise import tiny_text_encoder

    encoder = tiny_text_encoder()
    with caplog.at_level(logging.WARNING):
        tokens = encoder.tokenize(["the red disk", "the red disk " * 20], max_length=32)
    assert tokens.ids.shape[1] == 32
    # 3 tokens a repeat + [CLS] and [SEP]: 62 tokens, 30 dropped; the short text is not named
    assert "62 tokens, the model reads the first 32; the last 30 are dropped" in caplog.text
    assert caplog.text.count("text prompt") == 1


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    shapes = moving_shapes(40).frames
    with VideoWriter(path, fps=25) as writer:
        for t in range(600):
            writer.write(shapes[t % len(shapes)])
    return path


def test_stopped_and_killed_runs_leave_out_as_it_was(model_dir, long_video, tmp_path):
    """SIGINT and SIGTERM: one line, their exit status, nothing staged left; SIGKILL: `--out` as it
    was (the staging folder is beside it), and the next run into it completes and removes it."""
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "keep.txt").write_text("an earlier run")
    before = listing(out)
    command = [sys.executable, "-m", "refseg", "segment", str(long_video), "--sam2", str(model_dir),
               "--points", "20,48", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    rng = np.random.default_rng(0)
    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 1.0)))  # a random point of the run
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == status, (sig, proc.returncode, err[-2000:])
        assert listing(out)[0] == before[0], sig
        if sig != signal.SIGKILL:
            assert "Traceback" not in err
            assert err.strip().splitlines()[-1] == f"refseg: stopped by {sig.name}" + (" (Ctrl-C)" * (sig == signal.SIGINT))
            assert listing(out) == before, sig
    assert len(listing(out)) == 2  # the killed run's staging folder, beside --out
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert listing(out)[1:] == []  # removed by the next run
    assert len(list((out / "masks" / "1").glob("*.png"))) == 600 and (out / "keep.txt").is_file()


def test_the_synthref_models_say_what_they_know(video, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert main(["segment", str(video), "--sam2", "synth", "--points", "20,48", "--out", str(tmp_path / "o")]) == 0
    assert caplog.text.count("knows SynthRef's synthetic scenes only") == 1
    assert "--sam2 an official SAM 2 .pt file or model folder" in caplog.text


def test_an_output_place_without_write_permission_is_refused_before_anything_runs(video, tmp_path, capsys):
    """A folder the user cannot write in: mode 555, or for root (whom modes do not stop) the
    immutable attribute."""
    place = tmp_path / "ro"
    place.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(place)], capture_output=True).returncode != 0:
            pytest.skip("running as root on a file system without chattr +i: no folder is unwritable")
    else:
        place.chmod(0o555)
    try:
        code = main(["segment", str(video), "--sam2", "synth", "--points", "20,48", "--out", str(place / "out")])
        assert code == 2
        assert error_line(capsys) == f"refseg: error: --out {place / 'out'}: no permission to write in {place}"
        assert list(place.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(place)], check=True)
        place.chmod(0o755)


def test_max_side_reads_large_frames_smaller(model_dir, tmp_path):
    from PIL import Image

    big = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    big[100:300, 200:500] = (230, 30, 30)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    small = next(frames(tmp_path / "big.jpg", max_side=200))
    assert small.shape == (150, 200, 3)
    assert np.abs(small[40:70, 60:120].astype(int) - (230, 30, 30)).max() < 40  # the red block, scaled
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=5) as writer:
        for frame in moving_shapes(3).frames:  # 96 x 128
            writer.write(frame)
    assert [f.shape for f in frames(clip, max_side=64)] == [(48, 64, 3)] * 3
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "big.jpg"), "--sam2", str(model_dir), "--points", "80,40",
                 "--max-side", "200", "--out", str(out)]) == 0
    from refseg.io import read_mask_png

    assert read_mask_png(out / "masks" / "1" / "00000.png").shape == (150, 200)
    assert json.loads((out / "masks.json").read_text())["input"]["max_side"] == 200


def test_a_damaged_weights_file_without_config_is_named(video, tmp_path, capsys):
    """A folder told apart by its weight names (published EVF-SAM, GLUS): a damaged header is named."""
    folder = tmp_path / "published"
    folder.mkdir()
    data = (SHIPPED_SAMWISE / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:100])
    out = tmp_path / "out"
    assert main(["segment", str(video), "--text", "the disk", "--model", str(folder), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert str(folder / "model.safetensors") in line and "damaged or truncated" in line
    assert not out.exists()


def test_a_stop_dropped_where_the_signal_landed_ends_the_run_at_the_next_frame(tmp_path):
    """A library that calls Python from C may drop the KeyboardInterrupt raised inside the call
    (PyAV's logging callback prints and ignores it); the remembered stop is raised again at the
    next frame read, and forgotten once the command has handled it."""
    from refseg.errors import Interrupted, clear_stop, on_stop_signal

    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=25) as writer:
        for frame in moving_shapes(6).frames:
            writer.write(frame)
    stream = frames(path)
    next(stream)
    for signum, stop in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Interrupted)):
        try:
            on_stop_signal(signum, None)
        except stop:
            pass  # dropped, as inside a callback
        with pytest.raises(stop):
            next(stream)
        clear_stop()
    assert len(list(frames(path))) == 6
