"""What `refseg serve` costs over `refseg segment`, and how fast it answers while a run works.

On the demo's SynthRef scene (`--frames` frames, 256 px) with the embedded SAMWISE (one sentence)
and SynthRef SAM 2 (one click), side by side in one process:
  - `refseg segment` twice (the text object, then the clicked object), wall time, each loading
    its model;
  - the same two objects through a real server (uvicorn on loopback, models loaded before):
    upload, two objects, run until it ends, download masks.zip; wall time and the ratio to the CLI's;
  - while that run works, GET /api/jobs/<id> every 0.1 s: median and largest answer time.

    python bench/serve_overhead.py --frames 48
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import uvicorn

from refseg.cli import main as cli
from refseg.data.clicks import next_click
from refseg.demo import demo_scene
from refseg.io import VideoWriter
from refseg.models import load
from refseg.sam.checkpoint import load_sam2
from refseg.serve import Methods, ServeConfig, create_app


def request(url: str, data: bytes | None = None, kind: str = "application/json") -> dict:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": kind} if data is not None else {})
    with urllib.request.urlopen(req, timeout=60) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else {"bytes": len(body)}


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = "refsegbench"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    sample = demo_scene(args.frames)
    clip = work / "scene.mp4"
    with VideoWriter(clip, fps=10, crf=0) as writer:
        for frame in sample.load_frames():
            writer.write(frame)
    text = next(e for e in sample.expressions if "appearance" in e.phenomena).text
    target = sample.masks[max(sample.masks)][0]
    x, y, _ = next_click(target, np.zeros_like(target))

    began = time.perf_counter()
    assert cli(["segment", str(clip), "--text", text, "--out", str(work / "cli_text")]) == 0
    assert cli(["segment", str(clip), "--sam2", "synth", "--points", f"{x},{y}", "--out", str(work / "cli_click")]) == 0
    cli_s = time.perf_counter() - began

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Methods.of([load("default"), load_sam2("synth")]), ServeConfig(jobs_dir=work / "jobs"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}/api/jobs"
    began = time.perf_counter()
    job = request(base, *multipart(clip))["id"]
    request(f"{base}/{job}/objects", json.dumps({"text": text}).encode())
    request(f"{base}/{job}/objects", json.dumps({"points": [[x, y, 1]]}).encode())
    request(f"{base}/{job}/run", b"{}")
    waits = []
    while True:
        t0 = time.perf_counter()
        state = request(f"{base}/{job}")["state"]
        if state not in ("queued", "running"):
            break
        waits.append(time.perf_counter() - t0)
        time.sleep(0.1)
    assert state == "done", state
    request(f"{base}/{job}/download/masks.zip")
    serve_s = time.perf_counter() - began
    server.should_exit = True

    count = len(sample.load_frames())
    print(f"| frames | refseg segment x 2, models loaded each time (s) | refseg serve, upload to download (s) | ratio | "
          f"answer time during the run: median / max (ms) over {len(waits)} requests |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {count} | {cli_s:.1f} | {serve_s:.1f} | {serve_s / cli_s:.2f} | "
          f"{1000 * statistics.median(waits):.0f} / {1000 * max(waits):.0f} |")


if __name__ == "__main__":
    main()
