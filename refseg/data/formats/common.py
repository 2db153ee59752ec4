"""Pieces every format shares: frame folders, WAV audio, JSON files, object-id PNG stacks."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from refseg.data.formats.davis import read_index_png, write_index_png
from refseg.errors import InputError
from refseg.io.atomic import atomic_file
from refseg.io.video import read_image

FRAME_EXTS = (".jpg", ".jpeg", ".png")


def write_frames(folder: Path, names: list[str], frames: list[np.ndarray] | np.ndarray, ext: str = ".jpg") -> None:
    """Frames as `<folder>/<name><ext>` (JPEG at quality 95, or lossless PNG)."""
    if ext not in FRAME_EXTS:
        raise ValueError(f"frame extension must be one of {FRAME_EXTS}, got {ext!r}")
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(names, frames):
        with atomic_file(folder / f"{name}{ext}") as tmp:
            Image.fromarray(frame).save(tmp, format="PNG" if ext == ".png" else "JPEG", quality=95)


def frame_path(folder: Path, name: str) -> Path:
    """The frame file `<folder>/<name>.jpg` (or .jpeg / .png, whichever exists)."""
    for ext in FRAME_EXTS:
        path = folder / f"{name}{ext}"
        if path.is_file():
            return path
    raise InputError(f"{folder}/{name}: no frame ({', '.join(FRAME_EXTS)})")


def frame_loader(folder: Path, names: list[str]):
    """A `load_frame` reading `<folder>/<names[t]>.<ext>` on demand."""
    return lambda t: read_image(frame_path(folder, names[t]))


def frame_stems(folder: Path) -> list[str]:
    """Sorted stems of the frames in a folder (numeric stems sorted as numbers)."""
    stems = {p.stem for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTS}
    return sorted(stems, key=lambda s: (int(s) if s.isdigit() else float("inf"), s))


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Mono 16-bit PCM WAV."""
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
    with atomic_file(path) as tmp, wave.open(str(tmp), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(sample_rate)
        fh.writeframes(pcm.tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as mono float32 in [-1, 1] (channels averaged) and its sample rate."""
    with wave.open(str(path), "rb") as fh:
        if fh.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is read, got {8 * fh.getsampwidth()}-bit")
        channels, rate = fh.getnchannels(), fh.getframerate()
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").reshape(-1, channels)
    return (pcm.astype(np.float32) / 32767).mean(axis=1).astype(np.float32), rate


def write_json(path: Path, payload: object) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload))


def write_id_pngs(folder: Path, names: list[str], masks: dict[int, np.ndarray]) -> None:
    """Per-frame indexed PNGs with pixel value = object id (objects do not overlap)."""
    shape = next(iter(masks.values())).shape
    for t, name in enumerate(names):
        ids = np.zeros(shape[1:], dtype=np.uint8)
        for obj_id, mask in masks.items():
            ids[mask[t]] = obj_id
        write_index_png(folder / f"{name}.png", ids)


def read_id_pngs(folder: Path, names: list[str], obj_ids: list[int] | None = None) -> dict[int, np.ndarray]:
    """{object id: [T, H, W] bool} from per-frame indexed PNGs (ids: those given, else all present)."""
    ids = np.stack([read_index_png(folder / f"{n}.png") for n in names])
    present = obj_ids if obj_ids is not None else [int(k) for k in np.unique(ids) if k not in (0, 255)]
    return {k: ids == k for k in present}
