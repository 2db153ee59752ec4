"""The `refseg` command.

    refseg demo [--out DIR] [--model default|DIR | --sam2 SOURCE] [--frames N] [--device cpu|cuda]
    refseg eval --protocol P --gt DIR [--pred DIR] [--out results.json]
    refseg train CONFIG.yaml [--resume]
    refseg predict --data DIR --format mevis|ytvos|refcoco|refavs [--method glus|sam2-love] --model default|evf-sam|DIR
                   --out PRED [--no-audio]
    refseg synth --out DIR --split S --seed N [--format mevis|ytvos|refdavis|sav|refcoco|refavs] [--count N]
                 [--scenario PHENOMENON] [--stats]
    refseg segment INPUT --text "..." [--text "..."]... [--model default|evf-sam|DIR] [--frame N] [--semantic]
                   [--method glus] [--out DIR] [--device cpu|cuda]
    refseg segment VIDEO --method sam2-love --model DIR --text "..." [--audio FILE] [--online] [--out DIR]
    refseg segment INPUT --sam2 SOURCE (--points "X,Y[:L] ..." | --box X0,Y0,X1,Y1 | --mask PNG)...
                   [--frame N] [--out DIR] [--device cpu|cuda]

INPUT is a video file, a folder of images, an image, or a live source (cam://N, rtsp://...).
Each `--text`, `--points`, `--box` or `--mask` starts a new object (ids 1, 2, ... in the order
given); clicks, boxes and masks are given on `--frame`, text prompts hold on every frame. Bad input prints one line `refseg: error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from refseg.errors import InputError, Interrupted, clear_stop, on_stop_signal, reading
from refseg.shipped import SAM2 as SHIPPED_SAM2

if TYPE_CHECKING:  # the heavy imports (torch, transformers, the models) wait until the input is checked
    import torch

    from refseg.engine import Session
    from refseg.eval.protocols import EvalResult
    from refseg.io.video import FrameStream
    from refseg.models import Model
    from refseg.prompts import Box, Points, Prompt

log = logging.getLogger("refseg")


def _number(text: str, flag: str, item: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{flag}: {text!r} in {item!r} is not a number") from None


def parse_points(text: str) -> Points:
    """'X,Y[:L] X,Y[:L] ...' -> Points (label 1 unless ':0')."""
    from refseg.prompts import Points

    xy, labels = [], []
    for item in text.replace(";", " ").split():
        coords, _, label = item.partition(":")
        parts = coords.split(",")
        if len(parts) != 2:
            raise InputError(f"--points: expected X,Y[:LABEL], got {item!r}")
        if label not in ("", "0", "1"):
            raise InputError(f"--points: the label after ':' is 1 (positive) or 0 (negative), got {item!r}")
        xy.append([_number(p, "--points", item) for p in parts])
        labels.append(int(label) if label else 1)
    if not xy:
        raise InputError("--points: no click given; expected \"X,Y[:LABEL] ...\"")
    return Points(xy, labels)


def parse_box(text: str) -> Box:
    from refseg.prompts import Box

    parts = text.split(",")
    if len(parts) != 4:
        raise InputError(f"--box: expected X0,Y0,X1,Y1, got {text!r}")
    return Box(*(_number(p, "--box", text) for p in parts))


class _AddPrompt(argparse.Action):
    """Appends (kind, value) in command-line order, so each flag is one object."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        prompts = getattr(namespace, "prompts", None) or []
        prompts.append((self.dest, values))
        namespace.prompts = prompts


def build_prompt(kind: str, value: str) -> Prompt:
    from refseg.io import read_mask_png
    from refseg.prompts import Mask

    if kind == "points":
        return parse_points(value)
    if kind == "box":
        return parse_box(value)
    if not Path(value).is_file():
        raise InputError(f"--mask {value}: no such mask file")
    return Mask(read_mask_png(value))


def check_out(out: str | os.PathLike[str], flag: str = "--out", folder: bool = True) -> Path:
    """Refuse an output place that cannot be written, before anything loads: a file where a folder
    is meant (or the reverse), a place inside a file, or a folder without write permission."""
    path = Path(out)
    if path.exists() and path.is_dir() != folder:
        what = "a file" if folder else "a folder"
        raise InputError(f"{flag} {path}: is {what}; give {'a folder' if folder else 'a file path'} to write to")
    place = path if path.exists() else path.parent
    while not place.exists():
        place = place.parent
    if not place.is_dir():
        raise InputError(f"{flag} {path}: {place} is a file, so nothing can be written under it")
    if not os.access(place, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: no permission to write in {place}")
    return path


def open_input(args: argparse.Namespace) -> tuple[FrameStream, object]:
    """The input's frame stream (`--strict`, `--max-side`) and its first frame (decoded now: an
    unreadable input fails here, before any model loads)."""
    from refseg.io import frames

    stream = frames(args.input, strict=args.strict, max_side=args.max_side)
    return stream, next(stream)


def cmd_segment(args: argparse.Namespace) -> int:
    if args.text and args.prompts:
        raise InputError("segment: give --text prompts or --points/--box/--mask prompts, not both")
    if args.text:
        return _segment_text(args)
    prompts = [build_prompt(kind, value) for kind, value in args.prompts]
    if not prompts:
        raise InputError("segment: give at least one --text, --points, --box or --mask")
    if args.method == "sam2" and args.sam2 is None:
        raise InputError("segment: clicks, boxes and masks need --sam2 (a SAM 2 model directory or .pt file)")
    if args.method == "sam-i2v" and args.model == "default":
        raise InputError("segment: --method sam-i2v needs --model (a SAM-I2V folder or a published SAM-I2V .pt file)")
    if args.method in ("glus", "sam2-love"):
        raise InputError(f"segment: --method {args.method} is prompted by --text, not clicks, boxes or masks")
    if args.audio:
        raise InputError("--audio: only --method sam2-love hears; it takes --text prompts")
    if args.method == "sam-i2v":
        _check_model_path(args.model)
    else:
        _check_sam2_path(args.sam2)
    out = check_out(args.out)
    stream, first = open_input(args)
    for kind, prompt in zip((kind for kind, _ in args.prompts), prompts):
        try:
            prompt.check_inside(*first.shape[:2])
        except ValueError as err:
            raise InputError(f"--{kind}: {err}") from None
    _check_device(args.device)
    session = _click_session(args.method, args.sam2, args.model, args.device, _dtype(args))
    for obj_id, prompt in enumerate(prompts, start=1):
        session.add_prompt(obj_id, prompt, frame=args.frame)
    return _write_run(out, args, stream, first, lambda frame: [session.push(frame)], list, labels={})


def _write_run(out: Path, args: argparse.Namespace, stream: FrameStream, first: object,
               push: Callable[[object], list], flush: Callable[[], list], labels: dict[int, str]) -> int:
    """Stream the input through a session into `out` (masks, masks.json, overlay.mp4), all or
    nothing. `push` gives the results a frame completes (none while a clip model fills its clip),
    `flush` the rest at the end."""
    import torch
    from tqdm import tqdm

    from refseg.io import video_fps
    from refseg.io.outputs import OutputWriter

    with OutputWriter(out, fps=video_fps(args.input), labels=labels) as writer, torch.inference_mode():
        pending: list = []  # frames waiting for their clip to complete
        for frame in tqdm(itertools.chain([first], stream), desc="segment", unit="frame"):
            pending.append(frame)
            for result in push(frame):
                writer.write(pending.pop(0), result)
        for result in flush():
            writer.write(pending.pop(0), result)
        writer.input = {**stream.report.as_dict(), "max_side": args.max_side}
    if writer.frames_written <= args.frame:
        log.warning("the input has %d frames: the prompts on frame %d were never used", writer.frames_written,
                    args.frame)
    log.info("wrote %d frames: masks in %s (PNG) and %s (COCO RLE), overlay %s", writer.frames_written,
             out / "masks", out / "masks.json", out / "overlay.mp4")
    return 0


def _click_session(method: str, sam2: str | None, model: str, device: str,
                   dtype: torch.dtype | None = None) -> Session:
    """A session for clicks, boxes and masks: plain SAM 2 (`sam2`) or SAM-I2V (`model`), computing
    in `dtype` (default float32)."""
    import torch

    from refseg.engine import Session
    from refseg.sam.checkpoint import load_sam2

    if method == "sam-i2v":
        from refseg.models import load

        return load("sam-i2v", model, device=device, dtype=dtype or torch.float32).session()  # type: ignore[union-attr]
    if sam2 in SHIPPED_SAM2:
        _synthetic_notice(f"--sam2 {sam2}")
    return Session(load_sam2(sam2).to(device), dtype=dtype)


def _check_sam2_path(sam2: str) -> None:
    """A `--sam2` given as a path (not `synth`, not a hub id `owner/name`) must be there."""
    path = Path(sam2).expanduser()
    looks_local = sam2.startswith(("/", ".", "~")) or path.suffix in (".pt", ".pth")
    if sam2 not in SHIPPED_SAM2 and looks_local and not path.exists():
        raise InputError(f"--sam2 {sam2}: no such SAM 2 model folder or .pt file")


def _synthetic_notice(what: str) -> None:
    log.warning("%s knows SynthRef's synthetic scenes only (coloured shapes); on real footage give real weights: "
                "--sam2 an official SAM 2 .pt file or model folder, --model a published checkpoint", what)


def _dtype(args: argparse.Namespace) -> torch.dtype:
    """`--dtype` as a torch dtype."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]


def _check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")


def _segment_text(args: argparse.Namespace) -> int:
    """Text prompts: one object per --text, tracked by the text model (SAMWISE in clips, EVF-SAM
    from the prompted frame, GLUS, or SAM2-LOVE from the whole clip and its sound)."""
    from refseg.io.video import VIDEO_SUFFIXES, is_live

    texts = [t.strip() for t in args.text]
    if any(not t for t in texts):
        raise InputError("--text: a text prompt is empty")
    if args.method == "sam-i2v":
        raise InputError("--method sam-i2v: SAM-I2V is prompted by clicks, boxes and masks, not --text")
    if args.audio and args.method != "sam2-love":
        raise InputError("--audio: only --method sam2-love hears the sound")
    if args.online and args.method != "sam2-love":
        raise InputError("--online: only --method sam2-love has an offline and an online form; the others stream already")
    if args.method == "glus" and is_live(args.input):
        raise InputError(f"{args.input}: GLUS reads the whole video (its context frames are spread over it); "
                         "give a video file, a folder of frames or an image, not a live source")
    if args.frame and args.method in ("glus", "sam2-love"):
        raise InputError(f"--frame: {args.method} reads the text over the whole video; --frame is for clicks, boxes, "
                         "masks and EVF-SAM")
    _check_model_path(args.model)
    out = check_out(args.out)
    sound = _love_audio(args) if args.method == "sam2-love" else None  # a missing sound fails before the model loads
    stream, first = open_input(args)
    _check_device(args.device)
    from refseg.methods.evf_sam import EvfSam, semantic
    from refseg.methods.sam2_love import Sam2Love
    from refseg.methods.sam_i2v import SamI2V

    model = _text_model(args)
    if isinstance(model, SamI2V):
        raise InputError(f"--model {args.model}: SAM-I2V is prompted by clicks, boxes and masks, not --text")
    if isinstance(model, Sam2Love) != (args.method == "sam2-love"):
        raise InputError(f"--model {args.model}: a SAM2-LOVE folder goes with --method sam2-love, and only there")
    if args.semantic:
        if not isinstance(model, EvfSam):
            raise InputError("--semantic: only EVF-SAM models take semantic / part-level prompts")
        texts = [semantic(t) for t in texts]
    if isinstance(model, Sam2Love):
        # a video file's own rate aligns its sound; frames in a folder are spread over the --audio file
        from refseg.io import video_fps
        from refseg.io.video import folder_images
        from refseg.methods.sam2_love.model import clip_fps

        fps = video_fps(args.input) if Path(args.input).suffix.lower() in VIDEO_SUFFIXES else None
        if args.online:  # a result per frame; frames in a folder are spread over the sound
            if fps is None:
                fps = clip_fps(len(folder_images(Path(args.input))) if Path(args.input).is_dir() else 1, sound)
            session = model.online_stream(texts, sound, fps)
        else:
            session = model.stream(texts, sound, fps)  # reads the whole clip, then segments
    elif isinstance(model, EvfSam):
        session = model.stream(texts, frame=args.frame)  # the text prompts that frame; tracked after it
    elif args.frame:
        raise InputError("--frame: SAMWISE reads the text on every frame; --frame is for clicks, boxes, masks and "
                         "EVF-SAM")
    else:
        session = model.stream(texts)
    return _write_run(out, args, stream, first, session.push, session.flush, labels=dict(enumerate(texts, start=1)))


def _check_model_path(model: str) -> None:
    """A `--model` given as a path must be there, as a folder or an official .pth / .pt file
    (names such as `default` are checked when the model loads)."""
    path = Path(model)
    if path.is_file() and path.suffix not in (".pth", ".pt"):
        raise InputError(f"--model {model}: is a file; give a model folder (config.json + model.safetensors) "
                         "or an official .pth / .pt checkpoint")
    if not path.exists() and (os.sep in model or model.startswith(".")):
        raise InputError(f"--model {model}: no such model folder or file")


def _love_audio(args: argparse.Namespace):
    """The sound SAM2-LOVE hears: `--audio FILE`, or the input video's own track."""
    from refseg.io.audio import read_audio
    from refseg.io.video import IMAGE_SUFFIXES, is_live

    if is_live(args.input):
        raise InputError(f"{args.input}: SAM2-LOVE reads the whole clip (sound and frames) before its first mask; "
                         "give a video file or a folder of frames, not a live source")
    path = Path(args.input)
    if args.audio:
        return read_audio(args.audio)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{path}: frames carry no sound; pass the audio with --audio FILE")
    return read_audio(path)


def _text_model(args: argparse.Namespace) -> Model:
    """The text model of `segment --text` and `predict`: `--method glus` (with `--selector`) or `--model`."""
    from refseg.methods.glus import Glus
    from refseg.methods.glus.build import load_selector
    from refseg.models import load

    if args.selector and args.method != "glus":
        raise InputError("--selector: a GLUS key-frame selector folder, taken with --method glus")
    if args.selector and not Path(args.selector).is_dir():
        raise InputError(f"--selector {args.selector}: no such key-frame selector folder")
    if args.model == "default" and args.method != "sam2-love":
        _synthetic_notice("the embedded GLUS" if args.method == "glus" else "the embedded default model")
    if args.method == "glus":
        model = load("glus", None if args.model == "default" else args.model, device=args.device, dtype=_dtype(args))
    elif args.method == "sam2-love":
        model = load("sam2-love", None if args.model == "default" else args.model, device=args.device,
                     dtype=_dtype(args))
    else:
        model = load(args.model, device=args.device, tokenizer=args.tokenizer, dtype=_dtype(args))
    if args.selector and isinstance(model, Glus):
        model.selector = load_selector(args.selector).to(args.device)
    return model


def cmd_demo(args: argparse.Namespace) -> int:
    check_out(args.out)
    _check_model_path(args.model)
    from refseg.demo import demo_scene, run_click_demo, run_text_demo
    from refseg.models import load, ships
    from refseg.sam.checkpoint import load_sam2

    _check_device(args.device)
    if args.sam2 is None and args.model == "default" and not ships("default"):
        log.info("the embedded text model does not ship with this installation: the demo tracks the scene's "
                 "objects from one click each with the shipped SAM 2 (`--sam2 synth`)")
        args.sam2 = "synth"
    sample = demo_scene(args.frames)
    if args.sam2 is not None:
        log.info("refseg demo: SAM 2 %s from one click per object on a generated SynthRef scene, offline", args.sam2)
        report = run_click_demo(Path(args.out), load_sam2(args.sam2).to(args.device), sample)
    else:
        log.info("refseg demo: text model %s on a generated SynthRef scene, offline", args.model)
        report = run_text_demo(Path(args.out), load(args.model, device=args.device), sample)
    log.info("scene %s: %d frames, %.1f ms/frame; memory banks %.0f KiB after the last frame (bounded)",
             report.video_id, report.frames, report.ms_per_frame, report.bank_kib)
    for obj_id, prompt, jf in zip(report.ids, report.prompts, report.jf):
        log.info("  object %d  J&F %.3f  %s", obj_id, jf, prompt)
    log.info("mean J&F against the scene's ground truth: %.3f", report.mean_jf)
    log.info("outputs: %s/masks/<object>/<frame>.png, %s/masks.json (COCO RLE), %s/overlay.mp4", args.out, args.out,
             args.out)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the models once, then serve the page and the API until stopped."""
    import shutil
    import tempfile

    names = args.model or ["default"]
    for name in names:
        _check_model_path(name)
    if args.sam2 != "none":
        _check_sam2_path(args.sam2)
    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port}: give a port between 1 and 65535")
    for folder in args.allow_paths:
        if not Path(folder).is_dir():
            raise InputError(f"--allow-paths {folder}: no such folder")
    if args.max_frames < 1 or args.max_upload_mb <= 0 or args.ttl <= 0:
        raise InputError("--max-frames, --max-upload-mb and --ttl must be positive")
    if args.jobs_dir:
        check_out(args.jobs_dir, "--jobs-dir")
    _check_device(args.device)
    import uvicorn

    from refseg.models import load
    from refseg.sam.checkpoint import load_sam2
    from refseg.serve import Methods, ServeConfig, create_app

    models: list[object] = []
    for name in names:
        log.info("loading %s", name)
        models.append(load(name, device=args.device, dtype=_dtype(args)))
    if args.sam2 != "none":
        log.info("loading SAM 2 %s", args.sam2)
        sam = load_sam2(args.sam2).to(args.device)
        sam.inference_dtype = _dtype(args)
        models.append(sam)
    if "default" in names or args.sam2 in SHIPPED_SAM2:
        _synthetic_notice("each embedded model")
    methods = Methods.of(models)
    jobs_dir = Path(args.jobs_dir) if args.jobs_dir else Path(tempfile.mkdtemp(prefix="refseg-serve-"))
    config = ServeConfig(jobs_dir=jobs_dir, max_upload_mb=args.max_upload_mb, max_frames=args.max_frames,
                         max_side=args.max_side or None, ttl_s=args.ttl,
                         allow_paths=tuple(Path(p) for p in args.allow_paths))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("--host %s: the page and API are open to other machines on that network, without a password",
                    args.host)
    log.info("serving %s on http://%s:%d (API documented at /docs); jobs in %s",
             ", ".join(m["name"] for m in methods.describe()), args.host, args.port, jobs_dir)
    app = create_app(methods, config)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:  # however the server stops: no job folder stays behind
        app.state.store.close()
        if not args.jobs_dir:
            shutil.rmtree(jobs_dir, ignore_errors=True)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from refseg.data import formats, synth
    from refseg.io.atomic import atomic_dir

    if args.split not in synth.SPLITS:
        raise InputError(f"--split: expected one of {', '.join(synth.SPLITS)}, got {args.split!r}")
    image = args.format == "refcoco"
    audio_visual = args.format == "refavs"  # Ref-AVS's scenes: referred to by sound and by sight
    count = len(synth.scene_indices(args.split, args.count, args.scenario, image, audio_visual))
    what = f"{args.split}, {args.scenario} scenes" if args.scenario else args.split
    if args.stats:
        shares = synth.phenomenon_shares(args.split, args.seed, count, args.scenario, audio_visual)
        print(f"SynthRef {what} (seed {args.seed}, {count} scenes): share of expressions per phenomenon")
        for name, share in shares.items():
            print(f"  {name:<17} {share:6.1%}")
    if args.out is None:
        if not args.stats:
            raise InputError("synth: give --out DIR (or --stats)")
        return 0
    out = check_out(args.out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: exists and is not empty; remove it or choose another --out")
    samples = tqdm(synth.split_samples(args.split, args.seed, count, args.size, args.size, image=image,
                                       scenario=args.scenario, audio_visual=audio_visual),
                   total=count, desc=f"synth {what}", unit="image" if image else "video")
    options = {"split": args.split} if args.format in ("refdavis", "refcoco", "refavs") else {}
    with atomic_dir(out) as stage:
        formats.write(args.format, samples, stage, frame_ext=args.frame_ext, **options)
    log.info("wrote %d %s of SynthRef %s (seed %d) in the %s layout to %s", count, "images" if image else "videos",
             what, args.seed, args.format, out)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from refseg.train.config_file import read_config_file

    settings = read_config_file(args.config)  # a damaged file fails here, before the models' imports
    from refseg.train.config import load_config
    from refseg.train.loop import train

    if args.resume and args.overwrite:
        raise InputError("train: --resume continues the run in the config's out folder, --overwrite starts it again; "
                         "give one")
    try:
        config = load_config(settings)
    except ValueError as err:
        raise InputError(f"{args.config}: {err}") from None
    run = train(config, resume=args.resume, overwrite=args.overwrite)
    log.info("run directory: %s (metrics.jsonl, checkpoints/, final/)", run)
    return 0


PROTOCOLS = ("mevis", "ytvos", "davis", "refdavis", "sav", "ris", "refavs", "pvs")


def cmd_eval(args: argparse.Namespace) -> int:
    """Score predictions (or, `--protocol pvs`, run the model and score it); under `torchrun` each
    process scores a share of the videos and rank 0 merges the shares and writes the reports."""
    gt = Path(args.gt)
    if not gt.is_dir():
        raise InputError(f"--gt {gt}: no such ground-truth folder")
    check_out(args.out, folder=False)
    if args.protocol == "pvs":
        if args.method == "sam2" and not args.sam2:
            raise InputError("--protocol pvs runs the model: give --sam2 (or --method sam-i2v --model ...)")
        if args.method == "sam-i2v" and not args.model:
            raise InputError("--method sam-i2v: give --model (a SAM-I2V folder or a published SAM-I2V .pt file)")
    else:
        if not args.pred or not Path(args.pred).is_dir():
            raise InputError(f"--pred {args.pred}: no such prediction folder")
        if Path(args.pred).resolve() == gt.resolve():
            raise InputError(f"--pred {args.pred}: is the ground-truth folder itself; give the folder of predictions")
    from refseg.eval import protocols
    from refseg.eval.reports import summary_table, write_reports

    if args.protocol == "pvs":
        _check_device(args.device)
    rank, world = _processes(args)
    shard = (rank, world)
    part = _run_pvs(args, gt, shard) if args.protocol == "pvs" else _score(args, gt, Path(args.pred), shard)
    if world > 1:
        import torch.distributed as dist

        parts: list[protocols.EvalResult] | None = [part] * world if rank == 0 else None
        dist.gather_object(part, parts, dst=0)
        dist.destroy_process_group()
        if rank != 0:
            return 0
        result = protocols.merge(parts, args.convention)
    else:
        result = part
    print(summary_table(result))
    if result.missing:
        shown = ", ".join(result.missing[:5]) + (f" and {len(result.missing) - 5} more" if len(result.missing) > 5 else "")
        log.warning("%d predictions are missing and were scored as empty masks: %s (all listed in %s)",
                    len(result.missing), shown, Path(args.out).with_suffix(".json"))
    files = write_reports(result, args.out)
    log.info("wrote %s", ", ".join(str(f) for f in files))
    return 0


def _run_pvs(args: argparse.Namespace, gt: Path, shard: tuple[int, int]) -> EvalResult:
    """The promptable video segmentation protocol: the model is run on `gt`'s videos (this
    process's share of them)."""
    from refseg.engine import FeatureCache, Session
    from refseg.eval import interactive

    template = _click_session(args.method, args.sam2, args.model, args.device)
    cache = FeatureCache()  # each frame encoded once over the protocol's many replays
    return interactive.evaluate_pvs(gt, lambda: Session(template.model, template.hooks, seed=args.seed,
                                                          feature_cache=cache),
                                      mode=args.mode, split=args.split, max_frames=args.max_frames, clicks=args.clicks,
                                      shard=shard)


def _score(args: argparse.Namespace, gt: Path, pred: Path, shard: tuple[int, int]) -> EvalResult:
    """Predictions `pred` against ground truth `gt` by `args.protocol` (this process's share of
    the items); ground truth that does not parse (damaged, or another benchmark's) is an
    `InputError` naming it."""
    from refseg.eval import protocols

    with reading(f"--gt {gt}: not readable as {args.protocol} ground truth"):
        if args.protocol in ("mevis", "ytvos"):
            return protocols.evaluate_expressions(pred, gt, args.protocol, shard=shard)
        if args.protocol == "davis":
            return protocols.evaluate_davis(pred, gt, args.split, shard=shard)
        if args.protocol == "refdavis":
            return protocols.evaluate_refdavis(pred, gt, args.split, shard=shard)
        if args.protocol == "sav":
            return protocols.evaluate_sav(pred, gt, shard=shard)
        if args.protocol == "ris":
            return protocols.evaluate_ris(pred, gt, args.split, args.convention, shard=shard)
        return protocols.evaluate_refavs(pred, gt, shard=shard)


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict every expression of a dataset; under `torchrun` the videos are split across the
    processes (see `refseg.predict.predict_expressions`), and a rerun continues a stopped run."""
    data = Path(args.data)
    if not data.is_dir():
        raise InputError(f"--data {data}: no such dataset folder")
    if args.no_audio and args.method != "sam2-love":
        raise InputError("--no-audio: only --method sam2-love hears")
    check_out(args.out)
    _check_model_path(args.model)
    _check_device(args.device)
    from refseg.data import formats
    from refseg.methods.sam_i2v import SamI2V
    from refseg.predict import predict_expressions

    samples = list(formats.reader(args.format)(data))
    if not samples:
        raise InputError(f"{data}: no {'image' if args.format == 'refcoco' else 'video'} in the {args.format} layout")
    rank, world = _processes(args)
    model = _text_model(args)
    if isinstance(model, SamI2V):
        raise InputError(f"--model {args.model}: SAM-I2V is prompted by clicks, boxes and masks; predict runs text models")
    layout = {"refcoco": "images", "refavs": "refavs"}.get(args.format, "videos")
    signature = json.dumps({k: getattr(args, k) for k in ("model", "method", "selector", "tokenizer", "dtype")})
    predict_expressions(model, samples, args.out, layout=layout, audio=not args.no_audio, rank=rank, world=world,
                        signature=signature)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _processes(args: argparse.Namespace) -> tuple[int, int]:
    """(rank, world size) under `torchrun` (the process group is started here, gloo on CPU, nccl
    on CUDA with one GPU per local rank), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    return dist.get_rank(), world


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (and status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    parser = _Parser(prog="refseg", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    seg = command("segment", "segment and track prompted objects in a video, folder or image")
    seg.add_argument("input", help="video file, folder of images, or image")
    seg.add_argument("--text", action="append", help='referring expression of one object (repeat for more)')
    seg.add_argument("--semantic", action="store_true",
                     help="EVF-SAM: each --text is a category; ask for its semantic / part-level mask")
    seg.add_argument("--model", default="default",
                     help="text model: default (embedded), a model folder (refseg's, or a published EVF-SAM checkpoint) "
                          "or an official SAMWISE .pth file; with --method sam-i2v: a SAM-I2V folder or published .pt file")
    seg.add_argument("--tokenizer", default="roberta-base",
                     help="RoBERTa tokenizer folder of an official SAMWISE .pth (default: the hub's roberta-base)")
    seg.add_argument("--method", default="sam2", choices=["sam2", "sam-i2v", "glus", "sam2-love"],
                     help="for clicks, boxes and masks: plain SAM 2 (--sam2) or SAM-I2V (--model); for --text: glus "
                          "(the shipped SynthRef GLUS, or --model: a GLUS folder, refseg's or published) or sam2-love "
                          "(--model: a SAM2-LOVE folder; hears the video's sound or --audio)")
    seg.add_argument("--audio", help="--method sam2-love: the sound (wav, flac, mp3, ...) instead of the video's own track")
    seg.add_argument("--online", action="store_true",
                     help="--method sam2-love: a mask per frame as frames arrive, from what was seen and heard so far "
                          "(refseg's streaming form, not the paper's; docs/RESULTS.md measures it against the offline one)")
    seg.add_argument("--selector", help="--method glus: a key-frame selector folder (passes start at its key frame)")
    seg.add_argument("--sam2", help="for clicks, boxes and masks: SAM 2 model directory, official .pt file, hub id, "
                                    f"or a shipped SynthRef SAM 2 ({', '.join(SHIPPED_SAM2)})")
    seg.add_argument("--points", action=_AddPrompt, help='clicks of one object: "X,Y[:L] ..." (L=0 negative)')
    seg.add_argument("--box", action=_AddPrompt, help="box of one object: X0,Y0,X1,Y1")
    seg.add_argument("--mask", action=_AddPrompt, help="PNG mask of one object")
    seg.add_argument("--frame", type=int, default=0, help="frame the prompts are given on (default 0)")
    seg.add_argument("--out", default="out", help="output folder (default ./out)")
    seg.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    seg.add_argument("--dtype", default="float32", choices=DTYPES, help=DTYPE_HELP)
    seg.add_argument("--strict", action="store_true",
                     help="fail on a damaged input (frames missing, undecodable packets) instead of warning")
    seg.add_argument("--max-side", type=int,
                     help="read larger frames scaled to fit N px on their longer side (JPEGs decoded smaller); "
                          "clicks, boxes and masks are given, and masks and overlay written, at that size")
    seg.set_defaults(func=cmd_segment, prompts=[])
    ev = command("eval", "score predictions with a benchmark's official protocol")
    ev.add_argument("--protocol", required=True, choices=PROTOCOLS)
    ev.add_argument("--gt", required=True, help="ground-truth folder in the benchmark's layout")
    ev.add_argument("--pred", help="prediction folder in the benchmark's layout (all protocols but pvs)")
    ev.add_argument("--out", default="results.json", help="report path; .csv, .md and .png are written beside it")
    ev.add_argument("--split", default="val", help="split (davis, refdavis, ris, pvs; default val)")
    ev.add_argument("--convention", default="lavt", choices=["lavt", "lisa", "grefcoco"], help="ris IoU convention")
    ev.add_argument("--mode", default="offline", help="pvs: offline, online, 1click, 3click, 5click, box, mask")
    ev.add_argument("--max-frames", type=int, default=8, help="pvs: interacted frames N_frame = 1 .. this")
    ev.add_argument("--clicks", type=int, choices=(1, 3, 5),
                    help="pvs offline/online: clicks per interacted frame (default 3)")
    ev.add_argument("--sam2", help="pvs: SAM 2 model directory, .pt file, hub id, or a shipped SynthRef "
                                          f"SAM 2 ({', '.join(SHIPPED_SAM2)})")
    ev.add_argument("--method", default="sam2", choices=["sam2", "sam-i2v"], help="pvs: the model's method")
    ev.add_argument("--model", help="pvs with --method sam-i2v: a SAM-I2V folder or published .pt file")
    ev.add_argument("--seed", type=int, default=0, help="pvs: seed of a method's memory sampling (SAM-I2V)")
    ev.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ev.set_defaults(func=cmd_eval)
    pr = command("predict", "run a text model over a dataset's expressions (submission layout)")
    pr.add_argument("--data", required=True, help="dataset folder in the --format layout")
    pr.add_argument("--format", default="mevis", choices=["mevis", "ytvos", "refcoco", "refavs"],
                    help="dataset layout (refcoco: images, predictions as PRED/<sent_id>.png; refavs: PRED/<uid>/<frame>.png)")
    pr.add_argument("--model", default="default",
                    help="text model: default, evf-sam, a model folder or an official SAMWISE .pth file")
    pr.add_argument("--method", choices=["glus", "sam2-love"],
                    help="glus: the shipped SynthRef GLUS, or --model a GLUS folder (refseg's or published); "
                         "sam2-love: --model a SAM2-LOVE folder (hears each video's audio)")
    pr.add_argument("--no-audio", action="store_true",
                    help="--method sam2-love: give the model silence instead of each video's sound")
    pr.add_argument("--selector", help="--method glus: a key-frame selector folder (passes start at its key frame)")
    pr.add_argument("--tokenizer", default="roberta-base", help="RoBERTa tokenizer folder of an official SAMWISE .pth")
    pr.add_argument("--out", required=True, help="prediction folder to write")
    pr.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    pr.add_argument("--dtype", default="float32", choices=DTYPES, help=DTYPE_HELP)
    pr.set_defaults(func=cmd_predict)
    tr = command("train", "train from a YAML config (runs under torchrun too)")
    tr.add_argument("config", help="YAML config (see configs/)")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of the run")
    tr.add_argument("--overwrite", action="store_true", help="start again in a run folder that holds a run")
    tr.set_defaults(func=cmd_train)
    syn = command("synth", "generate a SynthRef split in a benchmark's layout")
    syn.add_argument("--out", help="dataset folder to create")
    syn.add_argument("--split", default="valid", help="train, valid, valid_u, test or unseen")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--format", default="mevis", choices=["mevis", "ytvos", "refdavis", "sav", "refcoco", "refavs"],
                     help="on-disk layout (refcoco: single-frame images)")
    syn.add_argument("--count", type=int, help="number of videos/images (default: the split's size)")
    syn.add_argument("--scenario", help="only the scenes built around this phenomenon (e.g. tracking_bias); "
                                        "--count then counts those scenes")
    syn.add_argument("--size", type=int, default=256, help="frame side in pixels")
    syn.add_argument("--frame-ext", default=".jpg", choices=[".jpg", ".png"], help=".png: lossless frames")
    syn.add_argument("--stats", action="store_true", help="print the share of each phenomenon")
    syn.set_defaults(func=cmd_synth)
    demo = command("demo", "offline demo on a generated scene")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--model", default="default", help="text model: default or a model folder")
    demo.add_argument("--sam2", help="track the objects from one click each with this SAM 2 instead (e.g. synth)")
    demo.add_argument("--frames", type=int, default=None, help="cut the scene to its first N frames")
    demo.add_argument("--device", default="cpu", help="cpu or cuda")
    demo.set_defaults(func=cmd_demo)
    srv = command("serve", "a local web page and HTTP API: segment by text and clicks, watch masks stream in")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: this machine only)")
    srv.add_argument("--port", type=int, default=7860)
    srv.add_argument("--model", action="append",
                     help="a text model to offer (repeat for more): default (embedded), evf-sam, a model folder "
                          "(SAMWISE, EVF-SAM, GLUS, SAM2-LOVE, SAM-I2V) or an official SAMWISE .pth; default: default")
    srv.add_argument("--sam2", default="synth",
                     help="the SAM 2 for clicks and boxes: synth (embedded), a model folder, .pt file or hub id; none: no clicks")
    srv.add_argument("--allow-paths", action="append", default=[], metavar="DIR",
                     help="let the page open files under DIR on this machine (repeat for more)")
    srv.add_argument("--jobs-dir", help="where jobs keep their files (default: a new temporary folder)")
    srv.add_argument("--max-upload-mb", type=float, default=200.0)
    srv.add_argument("--max-frames", type=int, default=1000, help="longest video accepted, in frames")
    srv.add_argument("--max-side", type=int, default=1024, help="frames are read scaled to fit N px (0: as they are)")
    srv.add_argument("--ttl", type=float, default=3600.0, help="seconds a job is kept after its last use")
    srv.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    srv.add_argument("--dtype", default="float32", choices=DTYPES, help=DTYPE_HELP)
    srv.set_defaults(func=cmd_serve)
    return parser


DTYPES = ("float32", "bfloat16")
DTYPE_HELP = ("bfloat16: SAM 2's image encoder, memory attention, decoders and memory encoder compute in bfloat16 "
              "(faster where the CPU or GPU has bfloat16 units; masks agree with float32 to IoU >= 0.99)")

_VALUE_FLAGS = ("--points", "--box")
_NEGATIVE = re.compile(r"^-\d|^-\.\d")


def attach_negative_values(argv: list[str]) -> list[str]:
    """`--points -5,10` as `--points=-5,10`: argparse would take a value that starts with '-' and
    is not a plain number for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _VALUE_FLAGS and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. Expected failures (bad input, model, config, output place) print one line
    `refseg: error: ...` and return 2; a stop by SIGINT / SIGTERM prints one line and returns
    130 / 143 with nothing of the run left staged; anything else is a bug: one line that points
    to `--debug` (which shows the traceback), status 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
    handler = threading.current_thread() is threading.main_thread()
    clear_stop()
    previous = {s: signal.signal(s, on_stop_signal) for s in (signal.SIGINT, signal.SIGTERM)} if handler else {}
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("refseg: stopped by SIGINT (Ctrl-C)", file=sys.stderr)
        return 130
    except Interrupted:
        print("refseg: stopped by SIGTERM", file=sys.stderr)
        return 143
    except (ValueError, OSError) as err:  # refseg's own errors are ValueErrors; OSError: the file system said no
        if args.debug:
            raise
        print(f"refseg: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:
        if args.debug:
            raise
        print(f"refseg: unexpected {type(err).__name__}: {_one_line(err)} (a bug: run with --debug for the "
              "traceback and report it)", file=sys.stderr)
        return 1
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
        clear_stop()


if __name__ == "__main__":
    sys.exit(main())
