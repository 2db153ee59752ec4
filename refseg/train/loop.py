"""The training loop: one for every method, single process or `torchrun --nproc_per_node N`.

Run directory (`config.out`):
    config.yaml                   the resolved config
    metrics.jsonl                 one line per logged step (losses, lr, samples/s)
    checkpoints/step_<N>/         config.json + model.safetensors + state.pt (optimizer,
                                  scheduler, RNG states, GLUS's contrastive bank), written to a
                                  temporary folder and renamed;
                                  a SAMWISE or EVF-SAM checkpoint loads as a model (`refseg.load`)
    final/                        `save_pretrained` of the trained model

Data parallelism: every process draws the same global batch of `batch_size` samples from
identically seeded generators and trains on its slice, and DDP averages the gradients; so N
processes produce the weights one process produces with the whole batch. `--resume` continues
from the newest checkpoint and replays the same random numbers, so on CPU a resumed run
reproduces the uninterrupted one step for step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from refseg.data import formats, synth
from refseg.data.sample import VideoSample
from refseg.encoders.text import TextEncoder
from refseg.errors import CheckpointError, ConfigError
from refseg.io.atomic import atomic_dir
from refseg.methods.evf_sam import EvfSam
from refseg.methods.glus import Glus
from refseg.methods.glus.build import build_glus, build_selector, load_stored
from refseg.methods.glus.keyframe import KeyFrameSelector
from refseg.methods.sam_i2v import SamI2V, upgrade
from refseg.methods.sam2_love import Sam2Love
from refseg.methods.samwise import Samwise
from refseg.models import KINDS
from refseg.sam import Sam2, sam2_config, tiny_test_config
from refseg.sam.config import synth_small_config
from refseg.sam.sam1 import load_sam1
from refseg.sam.vit_sam import from_sam1
from refseg.sam.checkpoint import load_sam2
from refseg.train.config import TrainConfig, dump, to_dict
from refseg.train.beit3 import Beit3Pretrainer, Beit3PretrainTask
from refseg.train.evf import EvfTask
from refseg.train.glus import GlusTask
from refseg.train.glus_kfs import GlusKeyFrameTask
from refseg.train.sam2_image import Sam2ImageTask
from refseg.train.sam2_pvs import Sam2PvsTask
from refseg.train.sam_i2v import SamI2VTask
from refseg.train.audio_pretrain import VGGishPretrainer, VGGishPretrainTask
from refseg.train.frame_vit import FrameVitPretrainer, FrameVitPretrainTask
from refseg.train.sam2_love import LoveTask
from refseg.train.samwise import SamwiseTask

log = logging.getLogger(__name__)



RANDOM_SAM2 = ("tiny-test", "synth-small", "tiny", "small", "base_plus", "large")  # `model.sam2` values built at random


def build_sam2(config: TrainConfig) -> Sam2:
    name = config.model.sam2
    if name == "tiny-test":
        model = Sam2(tiny_test_config(image_size=config.model.image_size))
    elif name == "synth-small":
        model = Sam2(synth_small_config(image_size=config.model.image_size))
    elif name in ("tiny", "small", "base_plus", "large"):
        model = Sam2(sam2_config(name, image_size=config.model.image_size))
    else:
        model = load_sam2(name)
        if config.model.local_memory_readout:
            model.init_local_memory_readout()
    if config.model.encoder_from:
        donor = load_sam2(config.model.encoder_from)
        if donor.config.vision_config.to_dict() != model.config.vision_config.to_dict():
            raise ValueError(f"model.encoder_from {config.model.encoder_from}: its image encoder's sizes differ "
                             f"from model.sam2 {name}'s")
        model.vision_encoder.load_state_dict(donor.vision_encoder.state_dict())
    return model


def build_task(config: TrainConfig) -> (Sam2ImageTask | Sam2PvsTask | SamI2VTask | SamwiseTask | EvfTask | GlusTask
                                        | Beit3PretrainTask):
    """The task module of `config.task` around a fresh (or `model.sam2`-initialised) model."""
    if config.data.expressions_per_clip < 1:
        raise ValueError(f"data.expressions_per_clip: expected at least 1, got {config.data.expressions_per_clip}")
    grouped = ("samwise", "evf", "beit3", "glus", "glus_kfs")  # tasks that draw expressions in clip groups
    expression_options = {"expressions_per_clip": (config.data.expressions_per_clip > 1, grouped),
                          "phenomenon_weights": (bool(config.data.phenomenon_weights), (*grouped, "sam2_love"))}
    for name, (used, tasks) in expression_options.items():
        if used and config.task not in tasks:
            raise ValueError(f"data.{name}: taken by the tasks {', '.join(tasks)} only, not {config.task!r}")
    if config.data.cache_features and config.task not in ("evf", "glus"):
        raise ValueError(f"data.cache_features: only the evf and glus tasks keep frozen features; task "
                         f"{config.task!r} does not")
    if config.model.sam1 and config.task not in ("evf", "sam_i2v"):
        raise ValueError(f"model.sam1: only the evf and sam_i2v tasks take a SAM (v1); task {config.task!r} takes model.sam2")
    if config.task == "evf":
        sam = load_sam1(config.model.sam1) if config.model.sam1 else build_sam2(config)
        return EvfTask(EvfSam(sam, config.evf), config)
    if config.task == "beit3":
        return Beit3PretrainTask(Beit3Pretrainer(config.evf), config)
    if config.task == "samwise":
        text = TextEncoder.from_pretrained(config.samwise.text_encoder)
        return SamwiseTask(Samwise(build_sam2(config), text, config.samwise), config)
    if config.task == "sam2_image":
        return Sam2ImageTask(build_sam2(config), config)
    if config.task == "sam2_pvs":
        return Sam2PvsTask(build_sam2(config), config)
    if config.task == "sam_i2v":
        image_sam = from_sam1(load_sam1(config.model.sam1)) if config.model.sam1 else build_sam2(config)
        return SamI2VTask(upgrade(image_sam, config.sam_i2v, config.model.memory_layers), config)
    if config.task in ("glus", "glus_kfs"):
        source = None if config.model.sam2 in RANDOM_SAM2 else config.model.sam2
        if config.task == "glus":
            return GlusTask(build_glus(config.glus, build_sam2(config), source), config)
        selector = build_selector(config.glus, build_sam2(config), source, config.key_frames.context)
        return GlusKeyFrameTask(selector, config)
    if config.task == "sam2_love":
        text = TextEncoder.from_pretrained(config.sam2_love.text)
        return LoveTask(Sam2Love(build_sam2(config), config.sam2_love, text), config)
    if config.task == "vggish":
        return VGGishPretrainTask(VGGishPretrainer(config.sam2_love.audio), config)
    if config.task == "frame_vit":
        return FrameVitPretrainTask(FrameVitPretrainer(config.sam2_love.vit), config)
    raise ValueError(f"task: expected sam2_pvs, sam2_image, sam_i2v, samwise, evf, glus, glus_kfs, sam2_love, beit3, "
                     f"vggish or frame_vit, got {config.task!r}")


def load_samples(config: TrainConfig, lazy: bool = False) -> Iterable[VideoSample]:
    """The training samples: a list, or with `lazy` an iterator that makes (SynthRef: renders) each
    one when it is reached, for a task that keeps only a summary of each (SAM2-LOVE's frozen
    features), so that memory does not hold every video at once."""
    data = config.data
    if config.task in ("vggish", "frame_vit"):
        return []  # they render their own sounds and scenes
    if data.source == "synthref":
        scenarios = synth.scenario_set(data.image, data.audio_visual)
        if data.scenario is not None and data.scenario not in scenarios:
            raise ValueError(f"data.scenario: {data.scenario!r} is not a scenario of these SynthRef scenes "
                             f"({', '.join(scenarios)})")
        samples = synth.split_samples(data.split, data.seed, data.count, image=data.image,
                                      extra_colours=data.extra_colours, scenario=data.scenario,
                                      audio_visual=data.audio_visual)
        return samples if lazy else list(samples)
    for name in ("extra_colours", "scenario"):
        if getattr(data, name):
            raise ValueError(f"data.{name}: only SynthRef (source: synthref) generates scenes; source is {data.source!r}")
    if data.root is None:
        raise ValueError(f"data.source {data.source!r} needs data.root")
    samples = formats.reader(data.source)(Path(data.root))
    return samples if lazy else list(samples)


def lr_factor(config: TrainConfig, step: int) -> float:
    """Warm-up (linear from 0) then the schedule, as a multiple of `optim.lr`."""
    o = config.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(config.steps - o.warmup_steps, 1)
    if o.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if o.schedule == "linear":
        return 1 - progress
    if o.schedule == "constant":
        return 1.0
    raise ValueError(f"optim.schedule: expected cosine, linear or constant, got {o.schedule!r}")


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _latest(run: Path) -> Path | None:
    checkpoints = sorted((run / "checkpoints").glob("step_*")) if (run / "checkpoints").is_dir() else []
    return checkpoints[-1] if checkpoints else None


def _weights(model: Sam2 | Samwise | EvfSam | SamI2V | Glus | KeyFrameSelector | Beit3Pretrainer) -> dict[str, torch.Tensor]:
    """What a checkpoint stores: every tensor but a frozen text encoder's (rebuilt from its source);
    GLUS's (and its key-frame selector's) trained parts only (the language model is rebuilt from its source)."""
    if isinstance(model, (Glus, KeyFrameSelector)):
        return model.stored_state()
    return {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("text.")}


def _load_weights(model: nn.Module, path: Path, absent: tuple[str, ...] = ("text.",)) -> None:
    """Load a checkpoint's tensors (float32) into `model`; every name must match, but those
    under `absent` (the frozen text encoder's, which checkpoints do not store)."""
    if isinstance(model, (Glus, KeyFrameSelector)):
        load_stored(model, path)
        return
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(absent)]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def load_init(task: nn.Module, config: TrainConfig) -> None:
    """Start from `model.init`: a run's final/ or a `save_pretrained` folder that references its
    frozen SAM 2 by name instead of storing it (`sam2_source`, e.g. the shipped SAMWISE), which
    must then be the SAM 2 this config builds (`model.sam2`), or the one `model.init_sam2` names
    (its modules then start on `model.sam2`). A run's checkpoint folder (checkpoints/step_N) also
    starts the task's training-only heads (SAM2-LOVE's `loss.ground` pointer) where it holds the
    same ones; the optimizer and the step start afresh. A SAM2-LOVE model may start from one
    without its motion cue (`Sam2Love.additions_over`)."""
    model = task.model
    folder = Path(config.model.init)
    meta = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    source = meta.get("sam2_source")
    expected = config.model.init_sam2 or config.model.sam2
    if source is not None and source != expected:
        raise ValueError(f"model.init {folder}: its SAM 2 is {source!r} (referenced, not stored), "
                         f"model.sam2 is {config.model.sam2!r}; set model.sam2: {source} (or model.init_sam2: "
                         f"{source} to start its modules on {config.model.sam2!r})")
    absent = ("text.", "sam.") if source is not None else ("text.",)
    if isinstance(model, Sam2Love):  # what this model adds over the checkpoint's starts where it adds nothing
        absent += model.additions_over(meta.get("sam2_love", {}))
    _load_weights(model, folder / "model.safetensors", absent)
    heads = _task_state(task)
    if heads and (folder / "state.pt").is_file():
        held = torch.load(folder / "state.pt", weights_only=False).get("task", {})
        if held.keys() == heads.keys():
            task.load_state_dict({**held, **{f"model.{k}": v for k, v in model.state_dict().items()}})
            log.info("model.init %s: the task's heads (%s) start from it too", folder, ", ".join(sorted(held)))


def _save(run: Path, step: int, task: nn.Module, optimizer: torch.optim.Optimizer, scheduler: object,
          rng: np.random.Generator, sampler_rng: np.random.Generator, config: TrainConfig) -> None:
    """A checkpoint: the model's weights and config, and what resuming needs (optimizer, scheduler,
    random states, GLUS's contrastive token bank)."""
    model = task.model
    if isinstance(model, Beit3Pretrainer):
        meta = {"beit3": dataclasses.asdict(model.encoder.config)}
    elif isinstance(model, (SamI2V, Glus, KeyFrameSelector, Sam2Love, VGGishPretrainer, FrameVitPretrainer)):
        meta = model.meta()
    else:
        sam = model if isinstance(model, Sam2) else model.sam
        meta = {"sam2" if isinstance(sam, Sam2) else "sam": sam.config.to_dict()}
        # a text-prompted model's checkpoint is also a model folder (`refseg.load`, `--model`)
        meta.update({kind: dataclasses.asdict(model.config) for kind, cls in KINDS.items() if isinstance(model, cls)})
    with atomic_dir(run / "checkpoints" / f"step_{step:07d}") as tmp:
        save_file(_weights(model), str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps({**meta, "train": to_dict(config)}))
        extra = {"glus_bank": task.bank.state()} if isinstance(task, GlusTask) else {}
        heads = _task_state(task)
        if heads:
            extra["task"] = heads
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "rng": rng.bit_generator.state,
                    "sampler_rng": sampler_rng.bit_generator.state, **extra}, tmp / "state.pt")


def _task_state(task: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a task holds beside its model (training-only heads), which a checkpoint keeps
    for resuming but a saved model leaves out."""
    return {k: v for k, v in task.state_dict().items() if not k.startswith("model.")}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop logged steps after `step` (a resumed run logs them again)."""
    if path.is_file():
        keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(f"{line}\n" for line in keep))


def freeze(model: nn.Module, prefixes: list[str]) -> None:
    """Hold the parameters whose names start with one of `prefixes` fixed (e.g. SAM 2's image
    encoder while the memory modules learn to track)."""
    named = dict(model.named_parameters())
    for prefix in prefixes:
        hits = [n for n in named if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ValueError(f"freeze: no parameter of {type(model).__name__} is named {prefix!r} or below it")
        for name in hits:
            named[name].requires_grad_(False)


RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "final")


def _prepare_run(run: Path, resume: bool, overwrite: bool, rank: int, world: int) -> None:
    """Refuse a run folder that holds a run unless it is resumed or overwritten (whose files then
    go); a resume with nothing to resume says so."""
    held = [name for name in RUN_FILES if (run / name).exists()]
    if resume:
        if _latest(run) is None:
            log.warning("--resume: no checkpoint in %s, nothing to resume: starting from step 0", run)
        return
    if held and not overwrite:
        raise ConfigError(f"{run}: holds a run already ({', '.join(held)}); pass --resume to continue it or "
                          "--overwrite to start again, or set another out: in the config")
    if held and rank == 0:
        log.warning("--overwrite: removing the run in %s (%s)", run, ", ".join(held))
        for name in held:
            shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    if held and world > 1:
        dist.barrier()


def train(config: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False) -> Path:
    """Train `config.task`; returns the run directory. A folder that holds a run is continued
    (`resume`) or started again (`overwrite`), never mixed with a new run."""
    rank, world = _distributed()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} is not a multiple of the {world} processes")
    run = Path(config.out)
    _prepare_run(run, resume, overwrite, rank, world)
    torch.manual_seed(config.seed)
    task = build_task(config)
    model = task.model.train()
    if config.model.init:
        load_init(task, config)
    freeze(model, config.freeze)
    ddp = nn.parallel.DistributedDataParallel(task, find_unused_parameters=True) if world > 1 else task
    # the model's trainable parameters and any the task holds beside it (training-only heads)
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s))
    sampler = task.sampler(load_samples(config, lazy=isinstance(task, LoveTask)), seed=config.seed)
    rng = np.random.default_rng(config.seed + 1)
    start = 0
    latest = _latest(run) if resume else None
    if latest is not None:
        _load_weights(model, latest / "model.safetensors")
        state = torch.load(latest / "state.pt", weights_only=False)
        held = sum(len(g["params"]) for g in state["optimizer"]["param_groups"])
        if held != len(params):
            raise CheckpointError(f"{latest}: its optimizer state is for {held} trained tensors, this run trains "
                                  f"{len(params)} (written by a refseg version or config that trained another set); "
                                  f"continue it with that version, or start a new run from it (model.init: {latest})")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = state["rng"]
        sampler.rng.bit_generator.state = state["sampler_rng"]
        if isinstance(task, GlusTask) and "glus_bank" in state:
            task.bank.load(state["glus_bank"])
        if _task_state(task):
            task.load_state_dict({**state["task"], **{f"model.{k}": v for k, v in model.state_dict().items()}})
        start = state["step"]
        log.info("resuming %s from %s: step %d of %d", run, latest.relative_to(run), start, config.steps)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        dump(config, run / "config.yaml")
        _truncate_metrics(run / "metrics.jsonl", start)
    micro = config.batch_size // world // config.optim.accumulation
    if micro < 1:
        raise ValueError("batch_size / processes / optim.accumulation must be at least 1")
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train", disable=not progress or rank)
    for step in bar:
        began = time.perf_counter()
        batch = task.draw_batch(sampler, rng, config.batch_size)  # the global batch, same on all ranks
        mine = batch[rank * (config.batch_size // world) : (rank + 1) * (config.batch_size // world)]
        totals: dict[str, float] = {}
        for m in range(config.optim.accumulation):
            chunk = mine[m * micro : (m + 1) * micro]
            last = m == config.optim.accumulation - 1
            context = ddp.no_sync() if world > 1 and not last else contextlib.nullcontext()
            with context:
                losses = ddp(chunk)
                (losses["loss"] / config.optim.accumulation).backward()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / config.optim.accumulation
        if config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if rank == 0:
            rate = config.batch_size / (time.perf_counter() - began)
            bar.set_postfix(loss=f"{totals['loss']:.4f}", clips_per_s=f"{rate:.2f}")
            if done % config.log_every == 0 or done == config.steps:
                record = {"step": done, **totals, "lr": lr, "clips_per_s": rate}
                with (run / "metrics.jsonl").open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
            if done % config.checkpoint_every == 0 or done == config.steps:
                _save(run, done, task, optimizer, scheduler, rng, sampler.rng, config)
    if rank == 0:
        model.save_pretrained(run / "final")
    if world > 1:
        dist.barrier()
    return run
