"""`refseg predict` split across processes (`torchrun`, gloo on CPU) writes exactly what one
process writes, and a stopped run continues where it stopped."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import samwise_dir  # noqa: F401  (a fixture: a tiny SAMWISE model folder)

from refseg.cli import main
from refseg.data import formats
from refseg.models import load
from refseg.predict import predict_expressions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "valid"
    assert main(["synth", "--out", str(path), "--split", "valid", "--seed", "3", "--count", "3", "--format", "mevis",
                 "--size", "128"]) == 0
    return path


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_what_one_writes(samwise_dir, dataset, tmp_path):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # one thread each: the same float sums
    predict = ["-m", "refseg", "predict", "--data", str(dataset), "--model", str(samwise_dir), "--out"]
    for command in ([sys.executable, *predict, str(one)],
                    [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                     str(free_port()), *predict, str(two)]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    assert tree(two) == tree(one) and len(tree(one)) > 20
    assert not list(tmp_path.glob(".*predicting"))


def test_a_stopped_run_continues_and_a_changed_run_starts_again(samwise_dir, dataset, tmp_path, caplog):  # noqa: F811
    samples = [dataclasses.replace(s, expressions=s.expressions[:1]) for s in formats.reader("mevis")(dataset)]
    model = load(str(samwise_dir))
    whole = tmp_path / "whole"
    predict_expressions(model, samples, whole)

    class Stops:
        """The model, stopped by Ctrl-C on the third video."""

        def __init__(self) -> None:
            self.videos = 0

        def stream(self, texts):
            self.videos += 1
            if self.videos == 3:
                raise KeyboardInterrupt
            return model.stream(texts)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_expressions(Stops(), samples, out, signature="tiny")
    stage = tmp_path / ".out.predicting"
    assert not out.exists() and sorted(p.name for p in (stage / ".done").iterdir()) == ["0", "1", "run.json"]
    caplog.set_level("INFO", logger="refseg.predict")
    written = predict_expressions(model, samples, out, signature="tiny")
    assert written == sum(len(s.expressions) for s in samples[2:])  # the first two were not redone
    assert "2 of 3 videos already written" in caplog.text
    assert tree(out) == tree(whole) and not stage.exists()

    with pytest.raises(KeyboardInterrupt):
        predict_expressions(Stops(), samples, out, signature="tiny")
    stops = Stops()
    stops.videos = 2  # stops on its first video
    with pytest.raises(KeyboardInterrupt):
        predict_expressions(stops, samples, out, signature="another model")
    assert "starting again" in caplog.text
    assert sorted(p.name for p in (stage / ".done").iterdir()) == ["run.json"]  # nothing of the other run kept
