"""Video and mask I/O round trips through real files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_video
from PIL import Image

from refseg.io import InputError, VideoWriter, frames, overlay, read_mask_png, video_fps, write_mask_png


def smooth_video(num_frames: int = 30, height: int = 96, width: int = 128) -> np.ndarray:
    """Smooth gradients and blobs: what a lossy codec keeps well."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        out[t, ..., 0] = 128 + 100 * np.sin(xx / 20 + t / 5)
        out[t, ..., 1] = 128 + 100 * np.cos(yy / 15 - t / 7)
        out[t, ..., 2] = 255 * (xx + yy) / (height + width)
    return out


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi", ".webm"])
def test_video_round_trip(tmp_path, suffix):
    video = smooth_video()
    path = tmp_path / f"clip{suffix}"
    with VideoWriter(path, fps=12, crf=10) as writer:
        for frame in video:
            writer.write(frame)
    back = np.stack(list(frames(path)))
    assert back.shape == video.shape
    error = np.abs(back.astype(np.int16) - video.astype(np.int16)).mean()
    assert error < 3.0, f"mean absolute error {error:.2f} grey levels"
    assert video_fps(path) == pytest.approx(12, rel=1e-3)
    assert not list(tmp_path.glob(".*partial"))


def test_truncated_video_gives_one_clear_error(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path) as writer:
        for frame in smooth_video(10):
            writer.write(frame)
    data = path.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="broken.mp4"):
        list(frames(broken))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.mp4"):
        list(frames(empty))


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path) as writer:
            writer.write(smooth_video(1)[0])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_image_folder_and_single_image(tmp_path):
    video = synthetic_video(4)
    for t, frame in enumerate(video):
        Image.fromarray(frame).save(tmp_path / f"{t:05d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    back = list(frames(tmp_path))
    assert len(back) == 4 and all(np.array_equal(a, b) for a, b in zip(back, video))
    single = list(frames(tmp_path / "00002.png"))
    assert len(single) == 1 and np.array_equal(single[0], video[2])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no image"):
        list(frames(tmp_path / "empty_dir"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(InputError, match="bad.jpg"):
        list(frames(bad))
    with pytest.raises(InputError, match="no such file"):
        list(frames(tmp_path / "missing.mp4"))


def test_mask_png_round_trip_and_overlay(tmp_path):
    mask = np.zeros((7, 9), dtype=bool)
    mask[2:5, 3:8] = True
    write_mask_png(tmp_path / "m" / "00000.png", mask)
    assert np.array_equal(read_mask_png(tmp_path / "m" / "00000.png"), mask)
    frame = np.full((7, 9, 3), 100, dtype=np.uint8)
    blended = overlay(frame, {1: mask})
    assert np.array_equal(blended[~mask], frame[~mask])
    assert tuple(blended[3, 4]) == (165, 62, 88)  # halfway between grey 100 and (230, 25, 75); 62.5 -> 62


def test_atomic_writes_replace_on_success_and_leave_the_old_on_failure(tmp_path):
    from refseg.io.atomic import atomic_dir, atomic_file

    target = tmp_path / "sub" / "a.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("one")
        assert not target.exists()  # nothing at the name until the block ends
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]

    folder = tmp_path / "model"
    for content in ("first", "second"):
        with atomic_dir(folder) as tmp:
            (tmp / content).write_text(content)
    assert [p.name for p in folder.iterdir()] == ["second"]  # replaced whole, not merged
    with pytest.raises(RuntimeError), atomic_dir(folder) as tmp:
        (tmp / "third").write_text("third")
        raise RuntimeError("killed")
    assert [p.name for p in folder.iterdir()] == ["second"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "sub"]


def test_atomic_dir_gives_files_the_umask_permissions(tmp_path):
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    from refseg.io.atomic import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # 0600 on its own
            (tmp / "sub").mkdir()
            (tmp / "sub" / "config.json").write_text("{}")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "sub/config.json"):
        assert stat.S_IMODE((tmp_path / "model" / name).stat().st_mode) == 0o644, name


def test_overlay_outlines_and_labels_each_object():
    from refseg.io.masks import object_colour, outline

    frame = np.full((120, 160, 3), 100, dtype=np.uint8)
    a = np.zeros((120, 160), dtype=bool)
    a[60:100, 20:70] = True
    b = np.zeros((120, 160), dtype=bool)
    b[50:90, 100:150] = True
    border = outline(a, 2)
    assert border.sum() == 2 * (40 + 50) * 2 - 16 and not border[62:98, 22:68].any()  # a 2-px ring
    plain = overlay(frame, {1: a, 2: b}, alpha=0.45, contour=2)
    assert (plain[border] == object_colour(1)).all() and (plain[outline(b, 2)] == object_colour(2)).all()
    inside = np.round(0.55 * 100 + 0.45 * object_colour(1).astype(np.float32)).astype(np.uint8)
    assert (plain[70, 40] == inside).all() and (plain[5, 5] == 100).all()
    labelled = overlay(frame, {1: a, 2: b, 3: np.zeros_like(a)}, alpha=0.45, contour=2,
                       labels={1: "the red disk", 2: "the blue square", 3: "nothing"})
    changed = (labelled != plain).any(-1)
    assert changed[:60, :80].any() and changed[:50, 90:].any()  # a label above each object
    assert not changed[100:].any()  # and nowhere else (the empty object 3 gets none)
    assert (labelled[changed] > 200).all(-1).any()  # white (anti-aliased) text on its box
