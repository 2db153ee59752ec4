"""The README's Python blocks run as written, in a folder holding the files they name: a video
`clip.mp4` and an image `photo.jpg` (a SynthRef scene), and what a block's `# needs:` line names
(a model folder a user trains; here random tiny weights in the same layout). The shipped models
are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import random_sam2

from refseg.demo import demo_scene
from refseg.io import VideoWriter
from refseg.io.masks import write_png_atomic

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def provide(need: str, folder: Path) -> None:
    """Put what a block's `# needs:` names into `folder`."""
    if need == "runs/evf_synth/final":
        from test_evf import tiny_evf

        tiny_evf().save_pretrained(folder / need)
    elif need == "runs/sam_i2v_synth/final":
        from refseg.methods.sam_i2v import SamI2VConfig, upgrade

        config = SamI2VConfig(tapped_dims=(64, 128, 256), temporal_dim=16)
        upgrade(random_sam2(0), config, memory_layers=1).save_pretrained(folder / need)
    else:
        pytest.fail(f"README block needs {need!r}, which this test does not know how to provide")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    frames = demo_scene(12).load_frames()
    with VideoWriter(root / "clip.mp4", fps=10) as writer:
        for frame in frames:
            writer.write(frame)
    write_png_atomic(root / "photo.jpg.png", frames[0])
    (root / "photo.jpg.png").rename(root / "photo.jpg")  # PIL reads the format from the bytes
    return root


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(index, folder, monkeypatch, capsys):
    block = BLOCKS[index]
    for need in re.findall(r"^# needs: (\S+)", block, flags=re.M):
        if not (folder / need).exists():
            provide(need, folder)
    monkeypatch.chdir(folder)
    exec(compile(block, f"README.md python block {index + 1}", "exec"), {})
    assert capsys.readouterr().out.strip(), "the block printed nothing"
