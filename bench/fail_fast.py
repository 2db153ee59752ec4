"""How long a user waits to hear that an argument or input is wrong: each bad command runs in a
fresh process (as a user starts it) and its wall time is printed beside the 2 s the CLI promises
for a malformed argument, with a good command's time to its first frame for scale.

    python bench/fail_fast.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 2.0


def timed(args: list[str], cwd: Path) -> tuple[float, int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "refseg", *args], capture_output=True, text=True, env=env, cwd=cwd)
    lines = [line for line in done.stderr.splitlines() if line.startswith("refseg")]
    return time.perf_counter() - start, done.returncode, lines[-1] if lines else ""


def main() -> None:
    from refseg.demo import moving_shapes
    from refseg.io import VideoWriter

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with VideoWriter(root / "clip.mp4", fps=10) as writer:
            for frame in moving_shapes(4).frames:
                writer.write(frame)
        (root / "config.yaml").write_text("steps: [1,\n")
        (root / "file").write_text("x")
        cases = {
            "malformed --points": ["segment", "clip.mp4", "--sam2", "synth", "--points", "1,2,3"],
            "click outside the frame": ["segment", "clip.mp4", "--sam2", "synth", "--points", "-5,10"],
            "no such input": ["segment", "none.mp4", "--sam2", "synth", "--points", "5,5"],
            "--out is a file": ["segment", "clip.mp4", "--sam2", "synth", "--points", "5,5", "--out", "file"],
            "--model not there": ["segment", "clip.mp4", "--text", "the disk", "--model", "./none"],
            "config not YAML": ["train", "config.yaml"],
            "eval without ground truth": ["eval", "--protocol", "mevis", "--gt", "none", "--pred", "."],
        }
        print(f"{'bad input':<28} {'seconds':>8}  status  message")
        worst = 0.0
        for name, args in cases.items():
            seconds, status, line = timed(args, root)
            worst = max(worst, seconds)
            print(f"{name:<28} {seconds:8.2f}  {status:6d}  {line[:90]}")
        seconds, status, _ = timed(["segment", "clip.mp4", "--sam2", "synth", "--points", "5,5", "--out", "o"], root)
        print(f"{'a good run (4 frames)':<28} {seconds:8.2f}  {status:6d}")
        print(f"slowest failure {worst:.2f} s against {LIMIT_S:.1f} s: {worst / LIMIT_S:.2f} of the limit")


if __name__ == "__main__":
    main()
