"""Fuzzing the input readers: randomly truncated, bit-flipped and spliced versions of valid files
(video containers, image folders, PNG masks, COCO-RLE JSON, dataset metadata, YAML configs) must
give a valid result or a refseg error (`RefsegError`: one line naming the file), never another
exception, a hang or a crash. Seeded, so a failure names its case and replays."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from refseg.data import formats
from refseg.data.formats.common import write_frames
from refseg.data.formats.davis import read_index_png
from refseg.demo import moving_shapes
from refseg.errors import RefsegError
from refseg.io import VideoWriter, frames, read_mask_png
from refseg.io.masks import write_mask_png
from refseg.train.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Truncate, flip bytes, splice in random bytes, or several of these."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(3))
        if kind == 0 and len(out) > 1:
            del out[int(rng.integers(1, len(out))):]
        elif kind == 1 and out:
            for at in rng.integers(0, len(out), int(rng.integers(1, 9))):
                out[at] ^= 1 << int(rng.integers(8))
        else:
            at = int(rng.integers(0, len(out) + 1))
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    return bytes(out)


def attempt(read: Callable[[], object], case: str) -> None:
    try:
        read()
    except RefsegError:
        pass
    except Exception as err:  # noqa: BLE001 (the point of the test)
        pytest.fail(f"{case}: {type(err).__name__}: {err}")


def consume(stream) -> int:
    return sum(1 for _ in stream)


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, Path]:
    """One valid file (or folder) of each kind."""
    root = tmp_path_factory.mktemp("valid")
    clip = moving_shapes(12).frames
    files = {}
    for name in ("clip.mp4", "clip.avi", "clip.mkv"):
        with VideoWriter(root / name, fps=10) as writer:
            for frame in clip:
                writer.write(frame[::2, ::2].copy())
        files[name] = root / name
    with av.open(str(root / "faststart.mp4"), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame[::2, ::2].copy(), format="rgb24")))
        container.mux(stream.encode())
    files["faststart.mp4"] = root / "faststart.mp4"
    for ext in (".jpg", ".png"):
        folder = root / f"frames{ext}"
        write_frames(folder, ["00000", "00001", "00002"], clip[:3], ext)
        files[f"frames{ext}"] = folder
    mask = np.zeros((64, 64), bool)
    mask[10:30, 20:50] = True
    write_mask_png(root / "mask.png", mask)
    files["mask.png"] = root / "mask.png"
    from refseg.data import synth

    for layout in ("mevis", "refavs"):
        samples = synth.split_samples("valid", 3, 1, 128, 128, audio_visual=layout == "refavs")
        formats.write(layout, samples, root / layout, **({"split": "test"} if layout == "refavs" else {}))
        files[layout] = root / layout
    return files


CONTAINERS = ("clip.mp4", "faststart.mp4", "clip.avi", "clip.mkv")


@pytest.mark.parametrize("name", CONTAINERS)
def test_damaged_video_containers(valid, tmp_path, name):
    rng = np.random.default_rng(CONTAINERS.index(name))
    data = valid[name].read_bytes()
    for case in range(40):
        path = tmp_path / f"{case}{valid[name].suffix}"
        path.write_bytes(mutate(data, rng))
        attempt(lambda: consume(frames(path)), f"{name} case {case}")


@pytest.mark.parametrize("ext", (".jpg", ".png"))
def test_damaged_frames_in_a_folder_and_damaged_masks(valid, tmp_path, ext):
    rng = np.random.default_rng(10 + len(ext))
    for case in range(50):
        folder = tmp_path / f"{case}"
        shutil.copytree(valid[f"frames{ext}"], folder)
        victim = folder / f"0000{case % 3}{ext}"
        victim.write_bytes(mutate(victim.read_bytes(), rng))
        attempt(lambda: consume(frames(folder)), f"frames{ext} case {case}")
    data = valid["mask.png"].read_bytes()
    for case in range(60):
        path = tmp_path / f"mask{case}.png"
        path.write_bytes(mutate(data, rng))
        attempt(lambda: read_mask_png(path), f"mask case {case}")
        attempt(lambda: read_index_png(path), f"index mask case {case}")


def read_dataset(layout: str, root: Path) -> None:
    for sample in formats.reader(layout)(root):
        consume(sample.frames())
        for expression in sample.expressions:
            sample.target_mask(expression)


@pytest.mark.parametrize(("layout", "name", "cases"), [("mevis", "mask_dict.json", 80),
                                                       ("mevis", "meta_expressions.json", 60),
                                                       ("refavs", "metadata.csv", 50)])
def test_damaged_dataset_metadata_and_rle_json(valid, tmp_path, layout, name, cases):
    rng = np.random.default_rng(sum(map(ord, name)))
    for case in range(cases):
        root = tmp_path / f"{case}"
        shutil.copytree(valid[layout], root)
        target = root / name
        target.write_bytes(mutate(target.read_bytes(), rng))
        attempt(lambda: read_dataset(layout, root), f"{layout} {name} case {case}")


def test_rle_values_of_the_wrong_shape(valid, tmp_path):
    """Valid JSON, wrong RLE: a size that disagrees with the counts, negative or huge counts,
    counts of the wrong type (the C decoder must never see them)."""
    rng = np.random.default_rng(7)
    masks = json.loads((valid["mevis"] / "mask_dict.json").read_text())
    bad_values = [[-1, 5], [10**9, 10**9], "64", None, [64], [0, 0], [3.5, 2]]
    for case in range(40):
        root = tmp_path / f"{case}"
        shutil.copytree(valid["mevis"], root)
        changed = json.loads(json.dumps(masks))
        anno = sorted(changed)[case % len(changed)]
        rle = next(r for r in changed[anno] if r is not None)
        field = ("size", "counts")[case % 2]
        rle[field] = bad_values[int(rng.integers(len(bad_values)))] if field == "size" else \
            [[5, -3, 4], "@@@@@@", "!" * 40, 12, [10**12], ""][int(rng.integers(6))]
        (root / "mask_dict.json").write_text(json.dumps(changed))
        attempt(lambda: read_dataset("mevis", root), f"rle case {case} ({field}={rle[field]!r})")


def test_damaged_training_configs(tmp_path):
    rng = np.random.default_rng(3)
    for source in ("samwise_synth.yaml", "sam2_love_synth.yaml"):
        data = (ROOT / "configs" / source).read_bytes()
        for case in range(40):
            path = tmp_path / f"{case}.yaml"
            path.write_bytes(mutate(data, rng))
            attempt(lambda: load_config(path), f"{source} case {case}")
