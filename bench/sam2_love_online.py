"""SAM2-LOVE's offline form (the paper's: the whole clip, then SAM 2) against refseg's streaming
alternative (`LoveOnlineStream`: a result per frame from what was seen and heard so far), on the
same model and SynthRef audio-visual splits: J&F, null S and how often the stream re-prompted.

    python bench/sam2_love_online.py --model runs/sam2_love_ablation/full/seed0/final \\
        --data /data/love_s11 --splits test sound_sync [--threshold 0.9 --stride 4]

`--data` holds refavs folders (`refseg synth --format refavs --seed 11`, one per split).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from refseg.data import formats
from refseg.eval.protocols import evaluate_refavs
from refseg.io.masks import write_mask_png
from refseg.methods.sam2_love import Sam2Love
from refseg.methods.sam2_love.model import clip_fps
from refseg.prompts import Audio


@torch.inference_mode()
def predict(model: Sam2Love, samples: list, out: Path, online: bool, stride: int | None, threshold: float) -> float:
    """Writes PRED/<uid>/<frame>.png; returns the mean number of re-prompted frames per expression."""
    reprompts, count = 0, 0
    for sample in tqdm(samples, desc="online" if online else "offline", unit="video"):
        texts = [e.text for e in sample.expressions]
        sound = Audio(sample.audio, sample.sample_rate)
        fps = clip_fps(len(sample), sound)
        if online:
            stream = model.online_stream(texts, sound, fps, stride, threshold)
        else:
            stream = model.stream(texts, sound, fps)
        results = [r for f in sample.frames() for r in stream.push(f)] + stream.flush()
        reprompts += getattr(stream, "reprompts", 0) * len(texts)
        count += len(texts)
        for obj_id, expression in enumerate(sample.expressions, start=1):
            for t, result in enumerate(results):
                write_mask_png(out / expression.exp_id / f"{t:05d}.png", result.objects[obj_id].mask)
    return reprompts / max(count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--splits", nargs="+", default=["test", "sound_sync"])
    parser.add_argument("--stride", type=int, help="frames between chain steps (default: half a second)")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Sam2Love.from_pretrained(args.model)
    print("| split | form | J&F | null S | re-prompted frames per expression |")
    print("| --- | --- | --- | --- | --- |")
    for split in args.splits:
        root = Path(args.data) / split
        samples = list(formats.reader("refavs")(root))
        for online in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                rate = predict(model, samples, Path(tmp), online, args.stride, args.threshold)
                summary = evaluate_refavs(Path(tmp), root).summary
            jf = summary.get("seen J&F", summary.get("unseen J&F", float("nan")))
            print(f"| {split} | {'online' if online else 'offline'} | {jf:.3f} | "
                  f"{summary.get('null S', float('nan')):.3f} | {rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
