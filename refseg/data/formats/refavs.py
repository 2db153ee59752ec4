"""Ref-AVS layout for audio-visual referring segmentation.

`media/<vid>/frames/<i>.jpg` (i = 0, 1, ...), `media/<vid>/audio.wav`,
`gt_mask/<vid>/fid_<fid>/<i:05d>.png` (binary, one folder per referred object) and
`metadata.csv` with columns vid, uid, split, fid, exp. A sample's folder is
uid.rsplit("_", 2)[0]; no-target samples have uid `null_c-<vid>_null_<k>` and their own
`media/null_c-<vid>` and all-empty `gt_mask/null_c-<vid>/fid_0`. One expression refers to one
object here: multi-target expressions cannot be written and are skipped (with a warning).
The official videos have 10 frames at 1 fps; refseg writes every frame it is given.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from refseg.data.formats.common import frame_loader, frame_stems, read_wav, write_frames, write_wav
from refseg.data.sample import Expression, VideoSample
from refseg.io.masks import read_mask_png, write_mask_png

log = logging.getLogger(__name__)
SPLIT_NAMES = {"train": "train", "valid": "val", "valid_u": "val", "test": "test_s", "unseen": "test_u"}


def _write_media(root: Path, folder: str, sample: VideoSample, frame_ext: str) -> None:
    names = [str(t) for t in range(len(sample))]
    write_frames(root / "media" / folder / "frames", names, list(sample.frames()), frame_ext)
    if sample.audio is not None:
        write_wav(root / "media" / folder / "audio.wav", sample.audio, sample.sample_rate)


def write_refavs(samples: Iterable[VideoSample], root: Path, split: str = "test", frame_ext: str = ".jpg") -> None:
    rows = []
    csv_split = SPLIT_NAMES.get(split, split)
    for sample in samples:
        vid = sample.video_id.replace("_", "-") + "_0_1"  # the vid pattern <name>_<start>_<end>
        _write_media(root, vid, sample, frame_ext)
        nulls = 0
        for exp in sample.expressions:
            if len(exp.target_ids) > 1:
                log.warning("%s: expression %r has %d targets; Ref-AVS holds one per sample, skipped",
                            sample.video_id, exp.text, len(exp.target_ids))
                continue
            if not exp.target_ids:
                folder, fid, uid = f"null_c-{vid}", 0, f"null_c-{vid}_null_{nulls}"
                nulls += 1
                if nulls == 1:
                    _write_media(root, folder, sample, frame_ext)
                    empty = np.zeros(next(iter(sample.masks.values())).shape, bool)
                    _write_masks(root / "gt_mask" / folder / "fid_0", empty)
                row_split = "test_n" if csv_split.startswith("test") else csv_split
            else:
                fid, folder = exp.target_ids[0], vid
                uid, row_split = f"{vid}_obj{fid}_{exp.exp_id}", csv_split
                _write_masks(root / "gt_mask" / folder / f"fid_{fid}", sample.masks[fid])
            rows.append({"vid": vid, "uid": uid, "split": row_split, "fid": fid, "exp": exp.text})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["vid", "uid", "split", "fid", "exp"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text(buffer.getvalue())


def _write_masks(folder: Path, masks: np.ndarray) -> None:
    for t, mask in enumerate(masks):
        write_mask_png(folder / f"{t:05d}.png", mask)


def read_refavs(root: Path, splits: tuple[str, ...] | None = None) -> Iterator[VideoSample]:
    """One sample per media folder (a video, or the null copy of one), with its expressions."""
    with (root / "metadata.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if splits is None or r["split"] in splits]
    by_folder: dict[str, list[dict]] = {}
    for row in rows:
        by_folder.setdefault(row["uid"].rsplit("_", 2)[0], []).append(row)
    for folder, members in by_folder.items():
        frames_dir = root / "media" / folder / "frames"
        names = frame_stems(frames_dir)
        masks = {}
        for fid in sorted({int(r["fid"]) for r in members if not r["uid"].startswith("null_")}):
            mask_dir = root / "gt_mask" / folder / f"fid_{fid}"
            masks[fid] = np.stack([read_mask_png(mask_dir / f"{t:05d}.png") for t in range(len(names))])
        expressions = [Expression(r["uid"], r["exp"], () if r["uid"].startswith("null_") else (int(r["fid"]),))
                       for r in members]
        wav = root / "media" / folder / "audio.wav"
        audio, rate = read_wav(wav) if wav.is_file() else (None, None)
        yield VideoSample(folder, names, frame_loader(frames_dir, names), masks, expressions, audio, rate)
