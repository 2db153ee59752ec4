"""`refseg eval` split across processes: each scores a share of the items, and the shares merged
give exactly what one process gives (rows, summary, missing predictions), per protocol and
through `torchrun` with two processes (gloo, CPU)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_predict_shards import free_port

from refseg.cli import main
from refseg.data import formats
from refseg.data.formats.davis import read_index_png, write_index_png
from refseg.eval import protocols
from refseg.eval.metrics import refer_iou, refer_iou_counts
from refseg.eval.protocols import merge, share
from refseg.io.masks import write_mask_png


def synth(tmp_path_factory, layout: str, split: str = "valid") -> Path:
    path = tmp_path_factory.mktemp(layout) / "gt"
    assert main(["synth", "--out", str(path), "--split", split, "--seed", "5", "--count", "5", "--format", layout,
                 "--size", "128"]) == 0
    return path


def shifted(mask: np.ndarray, k: int) -> np.ndarray:
    """A prediction k pixels off the truth (so every item scores differently)."""
    return np.roll(mask, k, axis=-1)


def copy_shifted(src: Path, dst: Path, offset: int = 0) -> None:
    """Every PNG under `src`, shifted by its folder's index + `offset`, to the same place under `dst`."""
    folders = sorted({p.parent for p in src.rglob("*.png")})
    for k, folder in enumerate(folders):
        for png in sorted(folder.glob("*.png")):
            write_index_png(dst / png.relative_to(src), shifted(read_index_png(png), k + offset))


@pytest.fixture(scope="module")
def mevis(tmp_path_factory):
    gt = synth(tmp_path_factory, "mevis")
    pred = gt.parent / "pred"
    for v, sample in enumerate(formats.reader("mevis")(gt)):
        for e, expression in enumerate(sample.expressions):
            if (v, e) == (1, 0):
                continue  # a missing prediction
            for t, mask in enumerate(sample.target_mask(expression)):
                write_mask_png(pred / sample.video_id / expression.exp_id / f"{t:05d}.png", shifted(mask, v + e))
    return gt, pred


def same(a: protocols.EvalResult, b: protocols.EvalResult) -> None:
    assert a.protocol == b.protocol and a.key == b.key
    assert a.rows == b.rows and a.missing == b.missing and a.curve == b.curve
    assert a.summary == pytest.approx(b.summary, nan_ok=True) and list(a.summary) == list(b.summary)


def test_shares_cover_the_items_in_order():
    items = list(range(7))
    for world in (1, 2, 3, 7, 9):
        shares = [share(items, (r, world)) for r in range(world)]
        assert [x for s in shares for x in s] == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="rank 2 is not among 2"):
        share(items, (2, 2))


@pytest.mark.parametrize("world", [2, 3])
def test_merged_shares_equal_one_process(mevis, tmp_path_factory, world):
    gt, pred = mevis
    whole = protocols.evaluate_expressions(pred, gt, "mevis")
    assert whole.missing and 0.2 < whole.summary["J&F"] < 0.95  # shifted and missing predictions score between
    same(merge([protocols.evaluate_expressions(pred, gt, "mevis", shard=(r, world)) for r in range(world)]), whole)

    refdavis = synth(tmp_path_factory, "refdavis")
    anno = refdavis / "Annotations_unsupervised" / "480p"
    copy_shifted(anno, refdavis.parent / "pred" / "anno_0")
    copy_shifted(anno, refdavis.parent / "pred" / "anno_1", offset=3)
    whole = protocols.evaluate_refdavis(refdavis.parent / "pred", refdavis, split=None)
    assert len({r["annotator"] for r in whole.rows}) == 2
    same(merge([protocols.evaluate_refdavis(refdavis.parent / "pred", refdavis, split=None, shard=(r, world))
                for r in range(world)]), whole)

    sav = synth(tmp_path_factory, "sav")
    truth = sav / "Annotations_6fps"
    copy_shifted(truth, sav.parent / "pred")
    whole = protocols.evaluate_sav(sav.parent / "pred", truth)
    same(merge([protocols.evaluate_sav(sav.parent / "pred", truth, shard=(r, world)) for r in range(world)]), whole)

    refavs = synth(tmp_path_factory, "refavs", split="test")
    with (refavs / "metadata.csv").open(newline="") as fh:
        samples = list(csv.DictReader(fh))
    for k, row in enumerate(samples):
        folder = refavs / "gt_mask" / row["uid"].rsplit("_", 2)[0] / f"fid_{row['fid']}"
        for png in sorted(folder.glob("*.png")):
            write_mask_png(refavs.parent / "pred" / row["uid"] / png.name, shifted(read_index_png(png) > 0, k))
    whole = protocols.evaluate_refavs(refavs.parent / "pred", refavs)
    assert {"seen J&F", "null S"} <= set(whole.summary)
    same(merge([protocols.evaluate_refavs(refavs.parent / "pred", refavs, shard=(r, world)) for r in range(world)]),
         whole)


def test_referring_image_scores_from_counts_equal_scores_from_masks():
    rng = np.random.default_rng(0)
    preds = [rng.random((9, 11)) < p for p in (0.0, 0.2, 0.5, 0.0, 0.8)]
    gts = [rng.random((9, 11)) < p for p in (0.0, 0.3, 0.0, 0.4, 0.6)]  # no-target samples among them
    counts = [np.array([np.count_nonzero(f(p, g)) for p, g in zip(preds, gts)], dtype=np.float64)
              for f in (np.logical_and, np.logical_or, lambda p, g: g, lambda p, g: p)]
    for convention in ("lavt", "lisa", "grefcoco"):
        assert refer_iou_counts(*counts, convention) == pytest.approx(refer_iou(preds, gts, convention), nan_ok=True)


@pytest.mark.slow
def test_two_processes_report_what_one_reports(mevis, tmp_path):
    gt, pred = mevis
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    score = ["-m", "refseg", "eval", "--protocol", "mevis", "--gt", str(gt), "--pred", str(pred), "--out"]
    for command in ([sys.executable, *score, str(tmp_path / "one" / "r.json")],
                    [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                     str(free_port()), *score, str(tmp_path / "two" / "r.json")]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "r.json").read_text()) for d in ("one", "two"))
    assert two == one and len(one["rows"]) > 10 and one["missing_predictions"]
    assert (tmp_path / "two" / "r.csv").read_text() == (tmp_path / "one" / "r.csv").read_text()
