"""Protocol runners on small datasets written in the official layouts, with hand-worked numbers."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from refseg.data.formats.davis import write_index_png
from refseg.eval.metrics import boundary_f
from refseg.eval.protocols import (
    evaluate_davis,
    evaluate_expressions,
    evaluate_refdavis,
    evaluate_ris,
    evaluate_sav,
)
from refseg.eval.reports import summary_table, write_reports
from refseg.io.masks import write_mask_png
from refseg.io.rle import encode_rle

H, W = 24, 32


def rect(top, left, h, w):
    m = np.zeros((H, W), dtype=bool)
    m[top : top + h, left : left + w] = True
    return m


def ids_frame(*objects):
    out = np.zeros((H, W), dtype=np.uint8)
    for k, m in enumerate(objects, start=1):
        out[m] = k
    return out


def test_davis_semi_supervised(tmp_path):
    gt, pred = tmp_path / "gt" / "Annotations" / "480p" / "s", tmp_path / "pred" / "s"
    a, b = rect(2, 2, 6, 6), rect(12, 16, 8, 10)
    for t in range(5):
        truth = ids_frame(a, b)
        write_index_png(gt / f"{t:05d}.png", truth)
        guess = ids_frame(a, b) if t != 2 else ids_frame(a)
        write_index_png(pred / f"{t:05d}.png", guess)
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt", split=None)
    # frames 1..3 are scored; object 2 is missed on frame 2: J = F = [1, 0, 1]
    assert result.summary["J-Mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert result.summary["J&F-Mean"] == pytest.approx((1 + 2 / 3) / 2)
    row = result.rows[1]
    assert row["sequence"] == "s_2" and row["J-Recall"] == pytest.approx(2 / 3)
    # decay bins for 3 frames: v[0:2] and v[2:3] -> 0.5 - 1
    assert row["J-Decay"] == pytest.approx(-0.5)


def test_davis_void_counts_as_background(tmp_path):
    gt, pred = tmp_path / "gt" / "Annotations" / "480p" / "s", tmp_path / "pred" / "s"
    a = rect(2, 2, 6, 6)
    for t in range(3):
        truth = ids_frame(a)
        truth[2:8, 8:12] = 255  # void beside the object
        write_index_png(gt / f"{t:05d}.png", truth)
        write_index_png(pred / f"{t:05d}.png", ids_frame(rect(2, 2, 6, 10)))
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt", split=None)
    assert result.summary["J-Mean"] == pytest.approx(36 / 60)


def test_davis_rejects_extra_objects(tmp_path):
    gt, pred = tmp_path / "gt" / "Annotations" / "480p" / "s", tmp_path / "pred" / "s"
    for t in range(3):
        write_index_png(gt / f"{t:05d}.png", ids_frame(rect(2, 2, 6, 6)))
        write_index_png(pred / f"{t:05d}.png", ids_frame(rect(2, 2, 6, 6), rect(12, 12, 3, 3)))
    with pytest.raises(ValueError, match="object 2"):
        evaluate_davis(tmp_path / "pred", tmp_path / "gt", split=None)


def test_mevis_expressions(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    a, b = rect(2, 2, 6, 6), rect(12, 16, 8, 10)
    frames = ["00000", "00001", "00002"]
    meta = {"videos": {"v": {"frames": frames, "expressions": {
        "0": {"exp": "the small one", "obj_id": [0], "anno_id": [10]},
        "1": {"exp": "both", "obj_id": [0, 1], "anno_id": [10, 11]},
        "2": {"exp": "nothing predicted", "obj_id": [1], "anno_id": [11]}}}}}
    masks = {"10": [encode_rle(a)] * 3, "11": [None, encode_rle(b), encode_rle(b)]}
    gt.mkdir()
    (gt / "meta_expressions.json").write_text(json.dumps(meta))
    (gt / "mask_dict.json").write_text(json.dumps(masks))
    for t, name in enumerate(frames):
        write_mask_png(pred / "v" / "0" / f"{name}.png", a)
        write_mask_png(pred / "v" / "1" / f"{name}.png", a)  # misses b on frames 1 and 2
    result = evaluate_expressions(pred, gt, "mevis")
    rows = {r["expression"]: r for r in result.rows}
    assert rows["0"]["J"] == 1.0 and rows["0"]["F"] == 1.0
    assert rows["1"]["J"] == pytest.approx((1 + 36 / 116 + 36 / 116) / 3)
    assert rows["1"]["F"] == pytest.approx((1 + 2 * boundary_f(a | b, a)) / 3)
    assert rows["2"]["J"] == 0.0 and rows["2"]["F"] == 0.0  # no prediction folder
    assert result.summary["J"] == pytest.approx(np.mean([r["J"] for r in result.rows]))
    assert result.summary["J&F"] == pytest.approx((result.summary["J"] + result.summary["F"]) / 2)


def test_ytvos_expressions_use_annotated_frames(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    a, b = rect(2, 2, 6, 6), rect(12, 16, 8, 10)
    meta = {"videos": {"v": {"frames": ["00000", "00005", "00010"],
                             "expressions": {"0": {"exp": "the box on the right", "obj_id": "2"}}}}}
    gt.mkdir()
    (gt / "meta_expressions.json").write_text(json.dumps(meta))
    for name in ("00000", "00010"):  # frame 00005 has no annotation
        write_index_png(gt / "Annotations" / "v" / f"{name}.png", ids_frame(a, b))
    write_mask_png(pred / "v" / "0" / "00000.png", b)
    write_mask_png(pred / "v" / "0" / "00010.png", np.zeros((H, W), bool))
    result = evaluate_expressions(pred, gt, "ytvos")
    assert result.rows[0]["J"] == pytest.approx(0.5)


def test_refdavis_matches_objects_per_annotator(tmp_path):
    gt = tmp_path / "gt" / "Annotations_unsupervised" / "480p" / "s"
    a, b = rect(2, 2, 6, 6), rect(12, 16, 8, 10)
    for t in range(4):
        write_index_png(gt / f"{t:05d}.png", ids_frame(a, b))
        write_index_png(tmp_path / "pred" / "anno_0" / "s" / f"{t:05d}.png", ids_frame(b, a))  # ids swapped
        write_index_png(tmp_path / "pred" / "anno_1" / "s" / f"{t:05d}.png", ids_frame(np.zeros_like(a), b))
    result = evaluate_refdavis(tmp_path / "pred", tmp_path / "gt", split=None)
    assert result.summary["J&F anno_0"] == 1.0
    assert result.summary["J&F anno_1"] == pytest.approx(0.5)  # object 1 unmatched -> empty
    assert result.summary["J&F-Mean"] == pytest.approx(0.75)


def test_sav_skips_frames_before_first_appearance(tmp_path):
    a = rect(2, 2, 6, 6)
    empty = np.zeros((H, W), bool)
    for t in range(6):
        truth = a if t >= 3 else empty
        write_mask_png(tmp_path / "gt" / "v" / "001" / f"{t:05d}.png", truth)
        write_mask_png(tmp_path / "pred" / "v" / "001" / f"{t:05d}.png", truth if t != 4 else empty)
    result = evaluate_sav(tmp_path / "pred", tmp_path / "gt")
    # scored frames 1..4, object first seen on frame 3: frames 3 (J 1) and 4 (J 0)
    assert result.summary["J"] == pytest.approx(0.5)


def test_ris_refcoco_layout(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    a, b = rect(2, 2, 6, 6), rect(12, 16, 8, 10)
    instances = {"images": [{"id": 1, "height": H, "width": W, "file_name": "1.jpg"}],
                 "annotations": [{"id": 5, "image_id": 1, "segmentation": encode_rle(a)},
                                 {"id": 6, "image_id": 1, "segmentation": encode_rle(b)}]}
    refs = [{"ref_id": 0, "ann_id": 5, "image_id": 1, "split": "val",
             "sentences": [{"sent_id": 100, "sent": "left"}, {"sent_id": 101, "sent": "top left"}]},
            {"ref_id": 1, "ann_id": 6, "image_id": 1, "split": "val", "sentences": [{"sent_id": 102, "sent": "right"}]},
            {"ref_id": 2, "ann_id": 6, "image_id": 1, "split": "train", "sentences": [{"sent_id": 103, "sent": "x"}]}]
    (gt / "instances.json").write_text(json.dumps(instances))
    with (gt / "refs(unc).p").open("wb") as fh:
        pickle.dump(refs, fh)
    write_mask_png(pred / "100.png", a)
    write_mask_png(pred / "101.png", rect(2, 2, 6, 3))  # half of a
    # 102 missing: empty prediction
    result = evaluate_ris(pred, gt, split="val")
    assert result.summary["samples"] == 3
    assert result.summary["cIoU"] == pytest.approx((36 + 18) / (36 + 36 + 80))
    assert result.summary["gIoU"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_reports_are_written(tmp_path):
    a = rect(2, 2, 6, 6)
    for t in range(3):
        write_index_png(tmp_path / "gt" / "Annotations" / "480p" / "s" / f"{t:05d}.png", ids_frame(a))
        write_index_png(tmp_path / "pred" / "s" / f"{t:05d}.png", ids_frame(a))
    result = evaluate_davis(tmp_path / "pred", tmp_path / "gt", split=None)
    files = write_reports(result, tmp_path / "out" / "results.json")
    assert sorted(p.suffix for p in files) == [".csv", ".json", ".md", ".png"]
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["summary"]["J&F-Mean"] == 1.0 and payload["rows"][0]["sequence"] == "s_1"
    assert (tmp_path / "out" / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "J&F-Mean" in summary_table(result)


def test_refavs_layout(tmp_path):
    from PIL import Image

    from refseg.eval.protocols import evaluate_refavs

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    (gt / "metadata.csv").write_text(
        "vid,uid,split,fid,exp\n"
        "abc_1000_2000,abc_1000_2000_dog_0,test_s,1,the barking dog\n"
        "xyz_0_10000,xyz_0_10000_car_1,test_u,0,the loud car\n"
        "xyz_0_10000,null_c-xyz_0_10000_null_0,test_n,0,the silent cat\n"
        "qqq_0_10000,qqq_0_10000_cat_0,train,0,unused\n")
    a = rect(2, 2, 6, 6)
    for t in range(2):
        write_mask_png(gt / "gt_mask" / "abc_1000_2000" / "fid_1" / f"0000{t}.png", a)
        write_mask_png(gt / "gt_mask" / "xyz_0_10000" / "fid_0" / f"0000{t}.png", a if t else np.zeros_like(a))
        write_mask_png(gt / "gt_mask" / "null_c-xyz_0_10000" / "fid_0" / f"0000{t}.png", np.zeros_like(a))
        write_mask_png(pred / "abc_1000_2000_dog_0" / f"0000{t}.png", a)  # perfect
        probs = np.zeros((H, W), np.uint8)
        probs[:12, :] = 153  # 0.6: foreground for J (> 0.4) and S (> 0.5) on 12 of 24 rows
        for uid in ("xyz_0_10000_car_1", "null_c-xyz_0_10000_null_0"):
            (pred / uid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(probs).save(pred / uid / f"0000{t}.png")
    result = evaluate_refavs(pred, gt)
    s = result.summary
    assert s["seen J"] == pytest.approx(1.0, abs=1e-6) and s["seen F"] == pytest.approx(1.0)
    # unseen: frame 0 has no target (both background on the lower half: 1/2); frame 1: I = 36, U = 12*32
    assert s["unseen J"] == pytest.approx((0.5 + 36 / 384) / 2, abs=1e-6)
    assert s["null S"] == pytest.approx(np.sqrt(0.5))
    assert s["mix J"] == pytest.approx((s["seen J"] + s["unseen J"]) / 2)
    assert len(result.rows) == 3
