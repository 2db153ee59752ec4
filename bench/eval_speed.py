"""How long scoring takes: DAVIS-protocol J and F on generated sequences at 480 x 854.

Writes `--sequences` sequences of `--frames` frames (two moving ellipses each; the prediction
is the ground truth shifted and with one object dropped on some frames) in the DAVIS layout
to a temporary folder, then times `refseg.eval.protocols.evaluate_davis` on them: reading the
PNGs, J and F of every object on every frame, statistics.

    python bench/eval_speed.py                      # 50 x 100 frames, the recorded setting
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from refseg.data.formats.davis import write_index_png
from refseg.eval.protocols import evaluate_davis

H, W = 480, 854


def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[:H, :W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def write_dataset(root: Path, sequences: int, frames: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for s in range(sequences):
        speed = rng.uniform(1, 4, size=2)
        for t in range(frames):
            a = ellipse(120 + 40 * np.sin(t / 10), 100 + speed[0] * t, 60, 90)
            b = ellipse(330, 700 - speed[1] * t, 80, 50)
            truth = np.zeros((H, W), np.uint8)
            truth[a], truth[b] = 1, 2
            guess = np.zeros((H, W), np.uint8)
            guess[np.roll(a, 3, axis=1)] = 1
            if t % 7:
                guess[np.roll(b, -5, axis=0)] = 2
            write_index_png(root / "gt" / "Annotations" / "480p" / f"seq{s:03d}" / f"{t:05d}.png", truth)
            write_index_png(root / "pred" / f"seq{s:03d}" / f"{t:05d}.png", guess)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=50)
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_dataset(root, args.sequences, args.frames)
        written = time.perf_counter() - start
        start = time.perf_counter()
        result = evaluate_davis(root / "pred", root / "gt", split=None)
        scored = time.perf_counter() - start
    frames = args.sequences * args.frames
    print(f"wrote {frames} frames of ground truth and predictions in {written:.1f} s")
    print(f"scored {args.sequences} sequences x {args.frames} frames at {H}x{W} (2 objects each) in {scored:.1f} s: "
          f"{frames / scored:.1f} frames/s, {1000 * scored / frames / 2:.2f} ms per object-frame (J&F-Mean "
          f"{result.summary['J&F-Mean']:.4f})")


if __name__ == "__main__":
    main()
