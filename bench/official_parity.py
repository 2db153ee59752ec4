"""Largest difference between refseg and each official implementation, per checkpoint layout.

    python bench/official_parity.py [--only sam2|sam1|evf|samwise|sam-i2v]

The comparisons are the official-parity tests' own (tests/test_official_*.py,
tests/test_evf_official.py, tests/test_samwise_official.py, tests/test_sam_i2v_official.py: the same builders, inputs and
fixtures); this prints the measured maxima that the tests only bound by 1e-4, for
docs/RESULTS.md. One thread, float32, CPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

log = logging.getLogger("official_parity")


def row(layout: str, compared: str, diff: float) -> None:
    print(f"| {layout} | {compared} | {diff:.1e} |", flush=True)


def sam2_rows(tmp: Path) -> None:
    import test_official_sam2 as t

    from PIL import Image

    from refseg.io import frames as read_frames
    from refseg.sam.checkpoint import config_for_official, load_official
    from refseg.sam.image_encoder import normalise_frames

    for config_file, (size, version) in t.CONFIGS.items():
        predictor = t.official_predictor(config_file)
        path = tmp / "sam2.pt"
        torch.save({"model": predictor.state_dict()}, path)
        model = load_official(path, config_for_official(torch.load(path, weights_only=True)["model"], t.SIZE))
        video = t.frames(20 if size == "base_plus" and version == "2.1" else 2)
        pixels = normalise_frames(torch.from_numpy(video[:1]), t.SIZE)
        with torch.inference_mode():
            ours, theirs = model.encode_images(pixels), predictor.forward_image(pixels)
        features = max(float((a - b).abs().max()) for a, b in zip(
            (ours.embed, *ours.high_res), (theirs["backbone_fpn"][2], *theirs["backbone_fpn"][:2])))
        logits = max(float((a - b).abs().max()) for a, b in zip(
            t.refseg_logits(model, video, [110, 120]), t.official_logits(predictor, video, [110, 120])))
        name = f"SAM {version} {size} (`{Path(config_file).name}`)"
        row(name, "image embedding + high-res features", features)
        row(name, f"mask logits, one click, {len(video)} frames (float32 memories)", logits)
        if size == "tiny" and version == "2.1":  # the whole path from JPEG files of another size
            folder = tmp / "jpeg"
            folder.mkdir()
            for i, frame in enumerate(t.frames(6)):
                Image.fromarray(frame).resize((320, 180), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.jpg",
                                                                                          quality=90)
            jpeg = np.stack(list(read_frames(folder)))
            logits = max(float((a - b).abs().max()) for a, b in zip(
                t.refseg_logits(model, jpeg, [160, 80]), t.official_logits(predictor, folder, [160, 80])))
            row(name, "mask logits, JPEG folder of 180 x 320 read and resized by each side, 6 frames", logits)


def sam1_rows(tmp: Path) -> None:
    import test_official_sam1 as t

    from refseg.sam.sam1 import load_sam1, sam1_config

    for name, (width, *_) in t.SIZES.items():
        official = t.official_sam(name)
        path = tmp / "sam1.pth"
        torch.save(official.state_dict(), path)
        model = load_sam1(path, sam1_config(width, image_size=t.SIZE))
        worst = 0.0
        for height, width_px in ((300, 200), (120, 250)):
            frame = t.image(height, width_px)
            theirs, ours = t.official_predictor(official, frame), t.refseg_predictor(model, frame)
            for multimask in (False, True):
                expected, iou = theirs([0.6 * width_px, 0.4 * height], multimask)
                got, _ = ours([0.6 * width_px, 0.4 * height], multimask)
                best = int(iou.argmax()) if multimask else 0
                worst = max(worst, float((got - expected[best]).abs().max()))
        row(f"SAM {name}", "mask logits at the image size, 2 images, single and multimask", worst)
        del official, model


def evf_rows() -> None:
    import test_evf_official as t

    for name in t.NAMES:
        model, expected = t.load(name)
        result = model.segment(expected["image"], t.texts_of(expected))
        worst = max(float(np.abs(result.objects[i + 1].logits.numpy().astype(np.float64)
                                 - expected["mask_logits"][i]).max()) for i in range(len(expected["texts"])))
        row(f"{name} folder (`from_official`)", "mask logits at the image size, 2 expressions", worst)
    model, _ = t.load("evf_sam2")
    expected = dict(np.load(t.VIDEO / "expected.npz"))
    frames = t.video_frames()
    with torch.no_grad(), model.stream([str(expected["expression"])], frame=0) as stream:
        results = [r for frame in frames for r in stream.push(frame)] + stream.flush()
    logits = [r.objects[1].logits.numpy().astype(np.float64) for r in results]
    full = [int(i) for i in expected["full_frames"]]
    worst = max(max(float(np.abs(x[::8, ::8] - expected["mask_logits_sub"][i]).max()) for i, x in enumerate(logits)),
                max(float(np.abs(logits[i] - expected["mask_logits_full"][k]).max()) for k, i in enumerate(full)))
    row("EVF-SAM2 video (`stream`, bfloat16 memories on both sides)",
        f"mask logits at the frame size, {len(frames)} frames (every 8th pixel; {len(full)} frames whole)", worst)


def samwise_rows() -> None:
    import test_samwise_official as t
    from PIL import Image

    from refseg.methods.samwise.checkpoint import load_official_samwise

    outputs = torch.load(t.FIXTURE / "outputs.pt", weights_only=False)
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((t.FIXTURE / "frames").glob("*.png"))])
    model = load_official_samwise(t.FIXTURE / "samwise_tiny.pth", t.FIXTURE / "tokenizer", config=t.SAMWISE_CONFIG,
                                  sam2_config=t.tiny_official_sam2_config(), text_heads=2)
    with torch.inference_mode():
        objects, _ = t.stream(model, frames, outputs["text"])
    logits = torch.stack([o.logits for o in objects])[outputs["logits_frames"]]
    row("SAMWISE `.pth` (`load_official_samwise`)", "mask logits at the frame size, 8 frames of 120 x 215",
        float((logits - outputs["logits"]).abs().max()))


def sam_i2v_rows() -> None:
    import test_sam_i2v_official as t

    from refseg.methods.sam_i2v.checkpoint import load_official_sam_i2v

    data, state = t.read_fixture()
    model = load_official_sam_i2v(state, image_size=64)
    with torch.inference_mode():
        hooks, results = t.run_official_clip(data, model)
    frames = range(len(results))
    tfi = max(float((hooks.embeds[i] - torch.from_numpy(data[f"frame/{i}/tfi"])).abs().max()) for i in frames)
    mpg = max(float((hooks.tokens[i].detach() - torch.from_numpy(data[f"frame/{i}/mpg"])).abs().max()) for i in frames)
    logits = max(float((results[i].objects[1].logits - torch.from_numpy(data[f"frame/{i}/video_res"])[0]).abs().max())
                 for i in frames)
    row("SAM-I2V `.pt` (`load_official_sam_i2v`)", f"TFI embedding, {len(frames)} frames", tfi)
    row("SAM-I2V", "MPG tokens (memory selected by the seeded sampler)", mpg)
    row("SAM-I2V", f"mask logits at the frame size, {len(frames)} frames, clicks on frames 0 and 6", logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["sam2", "sam1", "evf", "samwise", "sam-i2v"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    import tempfile

    print("| layout | compared | max difference |\n| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "sam2"):
            sam2_rows(Path(tmp))
        if args.only in (None, "sam1"):
            sam1_rows(Path(tmp))
    if args.only in (None, "evf"):
        evf_rows()
    if args.only in (None, "samwise"):
        samwise_rows()
    if args.only in (None, "sam-i2v"):
        sam_i2v_rows()


if __name__ == "__main__":
    main()
