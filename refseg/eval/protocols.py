"""Benchmark protocols: which frames and objects are scored, and how scores are averaged.

Each runner reads ground truth and predictions in the benchmark's official on-disk layout and
returns an `EvalResult` (global numbers + one row per sequence / object / expression / sample).
Deviations from the official scripts are deliberate and listed where they occur: refseg scores a
missing prediction as an empty mask instead of aborting the run, and names every one it scored
so (`EvalResult.missing`: the deepest absent folder, or the absent file), so that a partial
prediction folder is never mistaken for a complete one. A prediction that cannot be read (not a
PNG, truncated) raises `InputError` naming it.

Every runner takes a `shard` (rank, world): process `rank` of `world` scores a contiguous share
of the items (`share`) and returns their rows with an empty summary; `merge` joins the shares in
rank order and computes the summary from all rows (`summarise`), which equals what one process
computes (`refseg eval` under `torchrun`).
"""

from __future__ import annotations

import csv
import json
import logging
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from refseg.data.formats.davis import VOID, frame_names, read_index_png, read_sequence
from refseg.eval.metrics import (
    boundary_f_frames,
    davis_statistics,
    jaccard_frames,
    refavs_f,
    refavs_j,
    refavs_s,
    refer_iou_counts,
)
from refseg.errors import InputError
from refseg.io.rle import decode_polygons, decode_rle

log = logging.getLogger(__name__)

Shard = tuple[int, int]  # (rank, world): this process's place among those scoring one dataset
ALONE: Shard = (0, 1)
_T = TypeVar("_T")


@dataclass
class EvalResult:
    """Global numbers, per-item rows (`key` names the item column) and an optional curve."""

    protocol: str
    summary: dict[str, float]
    rows: list[dict[str, object]]
    key: str
    curve: dict[str, list[float]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def share(items: Sequence[_T], shard: Shard) -> list[_T]:
    """Process `rank`'s contiguous share of `items`: [rank * n // world, (rank + 1) * n // world),
    so the shares, joined in rank order, are `items` in order."""
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard: rank {rank} is not among {world} processes")
    n = len(items)
    return list(items[rank * n // world : (rank + 1) * n // world])


def shard_result(protocol: str, rows: list[dict[str, object]], key: str, missing: list[str], shard: Shard,
                 convention: str = "lavt") -> EvalResult:
    """A runner's answer: with one process, summarised; with several, this share's rows only."""
    part = EvalResult(protocol, {}, rows, key, missing=missing)
    return merge([part], convention) if shard[1] == 1 else part


def merge(parts: list[EvalResult], convention: str = "lavt") -> EvalResult:
    """The shares of one evaluation (in rank order) as one `EvalResult`, summarised from all rows.
    `convention`: the referring-image convention of `ris` (`refer_iou_counts`)."""
    first = parts[0]
    if any(p.protocol != first.protocol for p in parts):
        raise ValueError(f"merge: shares of different protocols {sorted({p.protocol for p in parts})}")
    rows = [r for p in parts for r in p.rows]
    missing = [m for p in parts for m in p.missing]
    summary, curve = summarise(first.protocol, rows, convention)
    return EvalResult(first.protocol, summary, rows, first.key, curve=curve, missing=missing)


def _mean(rows: list[dict[str, object]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def summarise(protocol: str, rows: list[dict[str, object]], convention: str = "lavt"
              ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The global numbers (and curve, for interactive PVS) of `protocol` from all its rows."""
    if not rows:
        raise ValueError(f"{protocol}: nothing to score")
    if protocol in ("mevis", "ytvos"):
        j, f = _mean(rows, "J"), _mean(rows, "F")
        summary = {"J&F": (j + f) / 2, "J": j, "F": f, "expressions": float(len(rows))}
        for name in sorted({p for r in rows for p in str(r.get("phenomena", "")).split()}):
            summary[f"J&F {name}"] = _mean([r for r in rows if name in str(r.get("phenomena", "")).split()], "J&F")
        return summary, {}
    if protocol == "davis":
        return _davis_summary(rows), {}
    if protocol == "refdavis":
        per_annotator = {a: _davis_summary([r for r in rows if r["annotator"] == a])
                         for a in dict.fromkeys(str(r["annotator"]) for r in rows)}
        summary = {"J&F-Mean": float(np.mean([s["J&F-Mean"] for s in per_annotator.values()]))}
        for key in ("J-Mean", "F-Mean"):
            summary[key] = float(np.mean([s[key] for s in per_annotator.values()]))
        summary.update({f"J&F {a}": s["J&F-Mean"] for a, s in per_annotator.items()})
        return summary, {}
    if protocol == "sav":
        j, f = _mean(rows, "J"), _mean(rows, "F")
        return {"J&F": (j + f) / 2, "J": j, "F": f, "objects": float(len(rows))}, {}
    if protocol == "ris":
        counts = [np.array([r[k] for r in rows], dtype=np.float64) for k in ("I", "U", "gt_area", "pred_area")]
        return {**refer_iou_counts(*counts, convention), "samples": float(len(rows))}, {}
    if protocol == "refavs":
        return _refavs_summary(rows), {}
    if protocol.startswith("pvs-"):
        n_frames = sum(1 for k in rows[0] if k.startswith("J&F@"))
        per_n = [_mean(rows, f"J&F@{n}") for n in range(1, n_frames + 1)]
        summary = {"J&F (mean over N_frame)": float(np.mean(per_n)), **{f"J&F@{n}": v for n, v in enumerate(per_n, 1)}}
        return summary, {"N_frame": [float(n) for n in range(1, n_frames + 1)], "J&F": per_n}
    if protocol.startswith("vos-"):
        return {"J&F": _mean(rows, "J&F")}, {}
    raise ValueError(f"summarise: unknown protocol {protocol!r}")


class _Absent:
    """Records the predictions under `root` that are not there (each absent folder once)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []

    def __call__(self, path: Path) -> bool:
        """Whether `path` is absent (and then recorded, as its deepest absent folder if it has one)."""
        if path.exists():
            return False
        place = path
        while place.parent != self.root and not place.parent.exists():
            place = place.parent
        name = place.relative_to(self.root).as_posix()
        if not self.names or self.names[-1] != name:
            self.names.append(name)
        return True


def _json(path: Path, layout: str) -> dict:
    """A ground-truth JSON file of `layout`; absent or unreadable: `InputError` naming it."""
    if not path.is_file():
        raise InputError(f"--gt {path.parent}: no {path.name}, so not the {layout} layout (or the wrong --protocol)")
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not readable JSON ({' '.join(str(err).split())})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got a {type(value).__name__}")
    return value


def _jf(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    return jaccard_frames(gt, pred, void), boundary_f_frames(gt, pred, void)


def _binary_png(path: Path, shape: tuple[int, int], absent: _Absent) -> np.ndarray:
    """A prediction mask (any non-zero pixel is foreground); missing: empty."""
    if absent(path):
        return np.zeros(shape, dtype=bool)
    mask = read_index_png(path) > 0
    if mask.shape != shape:
        raise ValueError(f"{path}: prediction is {mask.shape[1]}x{mask.shape[0]}, ground truth {shape[1]}x{shape[0]}")
    return mask


def _progress(items: Iterable, desc: str) -> Iterable:
    return tqdm(items, desc=desc, unit="seq", leave=False)


# -- MeViS / Ref-YouTube-VOS ---------------------------------------------------------------------
def evaluate_expressions(pred: Path, gt: Path, layout: str, shard: Shard = ALONE) -> EvalResult:
    """MeViS (`layout="mevis"`) or Ref-YouTube-VOS (`"ytvos"`): one score per expression.

    Ground truth of an expression is the union of the objects it refers to, on every frame
    (MeViS: `mask_dict.json` RLEs; Ref-YouTube-VOS: `Annotations/<video>/<frame>.png` ids, on the
    frames that have an annotation). J and F are averaged over frames, then over expressions;
    J&F = (J + F) / 2. Predictions: `pred/<video>/<expression id>/<frame>.png`; a missing
    expression folder scores 0 (as the official MeViS script), a missing frame counts as empty.
    Expressions that record their phenomena (SynthRef) also get J&F per phenomenon.
    """
    meta = _json(gt / "meta_expressions.json", layout).get("videos")
    if not isinstance(meta, dict):
        raise InputError(f"{gt / 'meta_expressions.json'}: no \"videos\" mapping (not the {layout} layout)")
    if not any(info.get("expressions") for info in meta.values()):
        raise ValueError(f"{gt}: meta_expressions.json lists no expression")
    masks = _json(gt / "mask_dict.json", layout) if layout == "mevis" else None
    rows = []
    absent = _Absent(pred)
    for video, info in _progress(share(sorted(meta.items()), shard), layout):
        for exp_id, exp in sorted(info["expressions"].items(), key=lambda kv: kv[0]):
            folder = pred / video / exp_id
            frames, truth = _expression_truth(gt, folder, video, info["frames"], exp, masks)
            if absent(folder) or truth is None:
                j = f = 0.0
            else:
                guess = np.stack([_binary_png(folder / f"{n}.png", truth.shape[1:], absent) for n in frames])
                jv, fv = _jf(truth, guess)
                j, f = float(jv.mean()), float(fv.mean())
            row = {"video": video, "expression": exp_id, "text": exp.get("exp", ""), "J": j, "F": f,
                   "J&F": (j + f) / 2}
            if "phenomena" in exp:  # SynthRef records what each expression exercises
                row["phenomena"] = " ".join(exp["phenomena"])
            rows.append(row)
    return shard_result(layout, rows, "expression", absent.names, shard)


def _expression_truth(gt: Path, pred_folder: Path, video: str, frames: list[str], exp: dict,
                      masks: dict | None) -> tuple[list[str], np.ndarray | None]:
    if masks is not None:
        per_frame = []
        size = None
        for t in range(len(frames)):
            rles = [masks[str(a)][t] for a in exp["anno_id"] if masks[str(a)][t] is not None]
            size = size or (tuple(rles[0]["size"]) if rles else None)
            per_frame.append(rles)
        size = size or _video_size(gt, pred_folder, video, frames)
        if size is None:
            return frames, None
        truth = np.zeros((len(frames), *size), dtype=bool)
        for t, rles in enumerate(per_frame):
            for rle in rles:
                truth[t] |= decode_rle(rle)
        return frames, truth
    folder = gt / "Annotations" / video
    annotated = [n for n in frames if (folder / f"{n}.png").is_file()]
    if not annotated:
        return frames, None
    ids = read_sequence(folder, annotated)
    obj_ids = exp["obj_id"] if isinstance(exp["obj_id"], list) else [exp["obj_id"]]
    return annotated, np.isin(ids, [int(o) for o in obj_ids])


def _video_size(gt: Path, pred_folder: Path, video: str, frames: list[str]) -> tuple[int, int] | None:
    """Frame size of a MeViS video whose referred objects are never visible: from its first
    JPEG, else from the prediction (as the official script does)."""
    for image in (gt / "JPEGImages" / video / f"{frames[0]}.jpg", pred_folder / f"{frames[0]}.png"):
        if image.is_file():
            with Image.open(image) as im:
                return im.height, im.width
    return None


# -- DAVIS semi-supervised and SA-V --------------------------------------------------------------
def davis_annotations(gt: Path, unsupervised: bool = False) -> Path:
    name = "Annotations_unsupervised" if unsupervised else "Annotations"
    for candidate in (gt / name / "480p", gt / name, gt):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            return candidate
    raise ValueError(f"{gt}: no {name}/480p/<sequence>/ folders")


def davis_sequence_names(gt: Path, annotations: Path, split: str | None) -> list[str]:
    listing = gt / "ImageSets" / "2017" / f"{split}.txt"
    if split and listing.is_file():
        return [s for s in listing.read_text().split() if s]
    return sorted(p.name for p in annotations.iterdir() if p.is_dir())


def _object_stack(ids: np.ndarray, count: int) -> np.ndarray:
    """[T, H, W] ids -> [count, T, H, W] bool, object k + 1 in slot k."""
    return np.stack([ids == k for k in range(1, count + 1)]) if count else np.zeros((0, *ids.shape), bool)


def _prediction_ids(folder: Path, names: list[str], shape: tuple[int, int], absent: _Absent) -> np.ndarray:
    out = np.zeros((len(names), *shape), dtype=np.uint8)
    for t, name in enumerate(names):
        path = folder / f"{name}.png"
        if not absent(path):
            ids = read_index_png(path)
            if ids.shape != shape:
                raise ValueError(f"{path}: prediction is {ids.shape[1]}x{ids.shape[0]}, ground truth "
                                 f"{shape[1]}x{shape[0]}")
            out[t] = ids
    return out


def _statistics_row(name: str, j: np.ndarray, f: np.ndarray) -> dict[str, object]:
    js, fs = davis_statistics(j), davis_statistics(f)
    return {"sequence": name, "J&F": (js.mean + fs.mean) / 2, "J-Mean": js.mean, "J-Recall": js.recall,
            "J-Decay": js.decay, "F-Mean": fs.mean, "F-Recall": fs.recall, "F-Decay": fs.decay}


def _davis_summary(rows: list[dict[str, object]]) -> dict[str, float]:
    keys = ["J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2, **out, "objects": float(len(rows))}


def evaluate_davis(pred: Path, gt: Path, split: str | None = "val", shard: Shard = ALONE) -> EvalResult:
    """DAVIS 2017 semi-supervised: per object, J and F on all frames but the first and the last
    (void pixels count as background, as the official script does), then DAVIS statistics; the
    global numbers are means over all objects of all sequences. Objects are the ids of the first
    ground-truth frame; predictions are indexed PNGs `pred/<sequence>/<frame>.png`."""
    annotations = davis_annotations(gt)
    rows = []
    absent = _Absent(pred)
    for seq in _progress(share(davis_sequence_names(gt, annotations, split), shard), "davis"):
        names = frame_names(annotations / seq)
        ids = read_sequence(annotations / seq, names)
        ids = np.where(ids == VOID, 0, ids)
        count = int(ids[0].max())
        guess = _prediction_ids(pred / seq, names, ids.shape[1:], absent)
        if int(guess.max()) > count:
            raise ValueError(f"{pred / seq}: prediction has object {int(guess.max())}, ground truth only {count}")
        truth, guess = _object_stack(ids[1:-1], count), _object_stack(guess[1:-1], count)
        for k in range(count):
            rows.append(_statistics_row(f"{seq}_{k + 1}", *_jf(truth[k], guess[k])))
    return shard_result("davis", rows, "sequence", absent.names, shard)


def evaluate_refdavis(pred: Path, gt: Path, split: str | None = "val", max_proposals: int = 20,
                      shard: Shard = ALONE) -> EvalResult:
    """Ref-DAVIS17: DAVIS unsupervised scoring, once per annotator folder `pred/anno_<k>/`.

    Per sequence, every predicted object is scored against every ground-truth object on all
    frames (void pixels excluded), predicted and true objects are matched by the Hungarian method
    on mean (J + F) / 2, and matched pairs give the objects' statistics. Fewer predictions than
    objects are padded with empty masks; more than `max_proposals` is an error. The reported
    number is the mean over annotators (objects are the ids of the first ground-truth frame of
    `Annotations_unsupervised`, as the official code reads them).
    """
    annotations = davis_annotations(gt, unsupervised=True)
    annotators = sorted(p for p in pred.iterdir() if p.is_dir() and p.name.startswith("anno_"))
    if not annotators:
        raise ValueError(f"{pred}: no anno_<k>/ prediction folders")
    rows: list[dict[str, object]] = []
    absent = _Absent(pred)
    units = [(a, seq) for a in annotators for seq in davis_sequence_names(gt, annotations, split)]
    for annotator, seq in _progress(share(units, shard), "refdavis"):
        names = frame_names(annotations / seq)
        ids = read_sequence(annotations / seq, names)
        void = ids == VOID
        ids = np.where(void, 0, ids)
        count = int(ids[0].max())
        guess_ids = _prediction_ids(annotator / seq, names, ids.shape[1:], absent)
        proposals = int(guess_ids.max())
        if proposals > max_proposals:
            raise ValueError(f"{annotator / seq}: {proposals} predicted objects, at most {max_proposals}")
        truth = _object_stack(ids, count)
        guess = _object_stack(guess_ids, max(proposals, count))
        j = np.array([[jaccard_frames(t, g, void) for t in truth] for g in guess])  # [P, O, T]
        f = np.array([[boundary_f_frames(t, g, void) for t in truth] for g in guess])
        pred_idx, true_idx = linear_sum_assignment(-(j.mean(-1) + f.mean(-1)) / 2)
        for p_i, t_i in sorted(zip(pred_idx, true_idx), key=lambda pair: pair[1]):
            row = _statistics_row(f"{seq}_{t_i + 1}", j[p_i, t_i], f[p_i, t_i])
            rows.append({"annotator": annotator.name, **row})
    return shard_result("refdavis", rows, "sequence", absent.names, shard)


def evaluate_sav(pred: Path, gt: Path, skip_first_last: bool = True, shard: Shard = ALONE) -> EvalResult:
    """SA-V (and other per-object PNG layouts): `<video>/<object>/<frame>.png`, binary masks.

    Only annotated frames are scored, without the first and the last; an object is scored from
    the first of those frames where it appears in the ground truth or the prediction (frames
    before its first appearance are not scored); objects that never appear in the ground truth
    are dropped. J, F = means over frames per object; global = mean over all objects.
    """
    rows = []
    absent = _Absent(pred)
    videos = sorted(p for p in gt.iterdir() if p.is_dir())
    if not any(obj.is_dir() and any(obj.glob("*.png")) for video in videos for obj in video.iterdir()):
        raise ValueError(f"{gt}: no <video>/<object>/<frame>.png annotation to score")
    for video in _progress(share(videos, shard), "sav"):
        for obj in sorted(p for p in video.iterdir() if p.is_dir()):
            names = frame_names(obj)
            if skip_first_last:
                names = names[1:-1]
            if not names:
                continue
            truth = np.stack([read_index_png(obj / f"{n}.png") > 0 for n in names])
            guess = np.stack([_binary_png(pred / video.name / obj.name / f"{n}.png", truth.shape[1:], absent)
                              for n in names])
            seen = np.flatnonzero(truth.any(axis=(1, 2)) | guess.any(axis=(1, 2)))
            if not truth.any() or seen.size == 0:
                continue
            truth, guess = truth[seen[0]:], guess[seen[0]:]
            j, f = _jf(truth, guess)
            rows.append({"sequence": f"{video.name}/{obj.name}", "J": float(j.mean()), "F": float(f.mean()),
                         "J&F": float(j.mean() + f.mean()) / 2})
    return shard_result("sav", rows, "sequence", absent.names, shard)


# -- referring image segmentation ----------------------------------------------------------------
def evaluate_ris(pred: Path, gt: Path, split: str = "val", convention: str = "lavt",
                 shard: Shard = ALONE) -> EvalResult:
    """RefCOCO / RefCOCO+ / RefCOCOg (`refs(unc).p`, `refs(umd).p`, ...) or gRefCOCO
    (`grefs(unc).json`) with COCO `instances.json`: one sample per sentence of each ref of
    `split`; ground truth = the union of its annotations (none for gRefCOCO no-target refs).
    Predictions: `pred/<sent_id>.png`; a missing one counts as empty. Scored at the original image
    resolution (LAVT and ReLA resize to 480 x 480 first). Each sample's row keeps its counts
    (intersection I, union U, ground-truth and predicted areas), which is all the summary needs."""
    refs = _load_refs(gt)
    instances = _json(gt / "instances.json", "ris")
    images = {im["id"]: im for im in instances["images"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    chosen = [r for r in refs if r.get("split") == split]
    if not any(r["sentences"] for r in chosen):
        raise ValueError(f"{gt}: no ref of split {split!r}")
    rows = []
    absent = _Absent(pred)
    for ref in _progress(share(chosen, shard), "ris"):
        image = images[ref["image_id"]]
        shape = (image["height"], image["width"])
        ann_ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
        truth = np.zeros(shape, dtype=bool)
        for ann_id in ann_ids:
            if ann_id in anns:
                truth |= _decode_segmentation(anns[ann_id]["segmentation"], *shape)
        for sentence in ref["sentences"]:
            guess = _binary_png(pred / f"{sentence['sent_id']}.png", shape, absent)
            rows.append({"sample": sentence["sent_id"], "text": sentence.get("sent", ""),
                         "I": int(np.count_nonzero(guess & truth)), "U": int(np.count_nonzero(guess | truth)),
                         "gt_area": int(np.count_nonzero(truth)), "pred_area": int(np.count_nonzero(guess))})
    return shard_result("ris", rows, "sample", absent.names, shard, convention)


def _load_refs(gt: Path) -> list[dict]:
    grefs = sorted(gt.glob("grefs*.json"))
    if grefs:
        return json.loads(grefs[0].read_text())
    refs = sorted(gt.glob("refs*.p"))
    if not refs:
        raise ValueError(f"{gt}: no refs(<by>).p or grefs(<by>).json")
    with refs[0].open("rb") as fh:
        return pickle.load(fh)


def _decode_segmentation(segmentation: object, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return decode_polygons(segmentation, height, width)
    return decode_rle(segmentation)  # type: ignore[arg-type]


# -- Ref-AVS ---------------------------------------------------------------------------------------
REFAVS_SPLITS = {"test_s": "seen", "test_u": "unseen", "test_n": "null"}


def evaluate_refavs(pred: Path, gt: Path, splits: tuple[str, ...] = tuple(REFAVS_SPLITS),
                    shard: Shard = ALONE) -> EvalResult:
    """Ref-AVS: `metadata.csv` (vid, uid, split, fid, exp), ground truth
    `gt_mask/<vid>/fid_<fid>/<frame>.png` with vid = uid.rsplit("_", 2)[0], predictions
    `pred/<uid>/<frame>.png` as probabilities (grey value / 255; a 0/255 mask works too).

    Seen (`test_s`) and unseen (`test_u`): J and F per sample (`refavs_j`, `refavs_f`), means over
    samples, and "mix" over both; null (`test_n`): S per sample, mean over samples (lower is
    better). The official script scores at 256 x 256 and averages over batches of 4 videos;
    refseg scores at the ground truth's resolution (a prediction of another size is resized to
    it, nearest) and averages over samples.
    """
    if not (gt / "metadata.csv").is_file():
        raise InputError(f"--gt {gt}: no metadata.csv, so not the refavs layout (Ref-AVS: metadata.csv, gt_mask/)")
    with (gt / "metadata.csv").open(newline="") as fh:
        samples = [r for r in csv.DictReader(fh) if r.get("split") in splits]
    if not samples:
        raise ValueError(f"{gt / 'metadata.csv'}: no sample of split {', '.join(splits)}")
    rows: list[dict[str, object]] = []
    absent = _Absent(pred)
    for sample in _progress(share(samples, shard), "refavs"):
        uid = sample["uid"]
        truth_dir = gt / "gt_mask" / uid.rsplit("_", 2)[0] / f"fid_{sample['fid']}"
        names = frame_names(truth_dir)
        truth = np.stack([read_index_png(truth_dir / f"{n}.png") > 0 for n in names])
        probs = np.stack([_probability_png(pred / uid / f"{n}.png", truth.shape[1:], absent) for n in names])
        group = REFAVS_SPLITS.get(sample["split"], sample["split"])
        row: dict[str, object] = {"sample": uid, "split": group, "text": sample.get("exp", "")}
        if group == "null":
            row["S"] = refavs_s(probs)
        else:
            row["J"], row["F"] = refavs_j(probs, truth), refavs_f(probs, truth)
        rows.append(row)
    return shard_result("refavs", rows, "sample", absent.names, shard)


def _refavs_summary(rows: list[dict[str, object]]) -> dict[str, float]:
    """Ref-AVS means over samples: J, F and J&F of seen, unseen and mix (both); S of null."""
    summary: dict[str, float] = {}
    groups = {g: [r for r in rows if r["split"] == g] for g in ("seen", "unseen")}
    groups["mix"] = groups["seen"] + groups["unseen"]
    for group, members in groups.items():
        if members:
            j, f = float(np.mean([r["J"] for r in members])), float(np.mean([r["F"] for r in members]))
            summary.update({f"{group} J": j, f"{group} F": f, f"{group} J&F": (j + f) / 2})
    null = [r["S"] for r in rows if r["split"] == "null"]
    if null:
        summary["null S"] = float(np.mean(null))
    return summary


def _probability_png(path: Path, shape: tuple[int, int], absent: _Absent) -> np.ndarray:
    """A prediction PNG as probabilities in [0, 1] (missing: all 0), resized to `shape` if needed."""
    if absent(path):
        return np.zeros(shape)
    try:
        with Image.open(path) as image:
            grey = image.convert("L")
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable PNG prediction ({' '.join(str(err).split())})") from err
    if grey.size != (shape[1], shape[0]):
        grey = grey.resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(grey, dtype=np.float64) / 255.0
