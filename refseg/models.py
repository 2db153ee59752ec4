"""`refseg.load`: the models a user loads by name or from a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from refseg.errors import CheckpointError
from refseg.methods.evf_sam import EvfSam
from refseg.methods.glus import Glus
from refseg.methods.glus.build import load_glus
from refseg.methods.glus.checkpoint import load_official_glus
from refseg.methods.sam2_love import Sam2Love
from refseg.methods.sam_i2v import SamI2V
from refseg.methods.sam_i2v.checkpoint import load_official_sam_i2v
from refseg.methods.samwise import Samwise
from refseg.methods.samwise.checkpoint import load_official_samwise
from refseg.sam import Sam2

WEIGHTS = Path(__file__).parent / "weights"
NAMES = {"default": "samwise_synth", "samwise": "samwise_synth", "evf-sam": "evf_synth", "glus": "glus_synth"}
TRAINED_BY = {"samwise_synth": "configs/samwise_synth.yaml", "evf_synth": "configs/evf_synth.yaml",
              "glus_synth": "configs/glus_synth_readout.yaml`, `refseg train configs/glus_synth_image.yaml` "
                            "and then `refseg train configs/glus_synth.yaml"}
KINDS = {"samwise": Samwise, "evf": EvfSam, "sam_i2v": SamI2V, "sam2_love": Sam2Love}  # config.json key -> class
Model = Samwise | EvfSam | SamI2V | Glus | Sam2Love


def ships(name: str) -> bool:
    """Whether this installation ships the weights of model `name` (a key of `NAMES`)."""
    return (WEIGHTS / NAMES[name]).is_dir()


def _weight_names(file: Path) -> list[str]:
    """The tensor names in a safetensors file's header (the tensors are not read); a damaged
    file raises `CheckpointError` naming it."""
    try:
        with safe_open(str(file), "pt") as f:
            return list(f.keys())
    except Exception as err:  # safetensors raises its own error type for a damaged header
        raise CheckpointError(f"{file}: cannot read the weights, the file is damaged or truncated "
                              f"({' '.join(str(err).split())})") from err


def _official_evf(path: Path) -> bool:
    """Whether folder `path` holds a published EVF-SAM / EVF-SAM2 checkpoint: safetensors weights
    with `mm_extractor.*` names (only their headers are read), or `pytorch_model*.bin` files."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return any(path.glob("pytorch_model*.bin"))
    return any(k.startswith("mm_extractor.") for file in files for k in _weight_names(file))


def _official_glus(path: Path) -> bool:
    """Whether folder `path` holds a published GLUS checkpoint (a merged-LoRA `GLUSForCausalLM`:
    `model.visual_model.*` and `model.text_hidden_fcs.*` weights; only safetensors headers are read)."""
    return any(k.startswith("model.text_hidden_fcs.") for file in sorted(path.glob("*.safetensors"))
               for k in _weight_names(file))


def load(name: str | os.PathLike[str] = "default", source: str | os.PathLike[str] | None = None,
         device: str | torch.device = "cpu", tokenizer: str | os.PathLike[str] = "roberta-base",
         dtype: torch.dtype = torch.float32) -> Model:
    """A text-prompted model ready to `.stream(texts)` (push frames, get `FrameResult`s), or
    SAM-I2V, click-prompted (`.session()`, then `add_prompt` and `push`).

    name: "default" / "samwise" (SAMWISE on the SynthRef SAM 2 and MiniLM) or "evf-sam", from
        refseg/weights/ when this installation ships them; or a folder written by
        `save_pretrained` / `refseg train`'s final/ or checkpoints/step_N/ (the kind is read
        from its config.json), or a published EVF-SAM / EVF-SAM2 checkpoint folder (told by
        its weight names).
        An official SAMWISE checkpoint file (`.pth`) loads with its RoBERTa `tokenizer` (a
        local folder; "roberta-base" needs the hub).
    source: with "evf-sam", a folder to load instead: a refseg EVF-SAM folder or a published
        EVF-SAM / EVF-SAM2 checkpoint folder (`EvfSam.from_official`). With "sam-i2v" (which
        ships no weights), required: a refseg SAM-I2V folder or a published SAM-I2V `.pt` file
        (`load_official_sam_i2v`). With "glus", a folder to load instead of the shipped SynthRef
        GLUS: a refseg GLUS folder (`refseg train`'s final/) or a published GLUS folder, whose CLIP
        vision tower is the local folder its config.json names (`load_official_glus`).
    dtype: what the model's SAM 2 sessions compute in: torch.float32, or torch.bfloat16 (image
        encoder, memory attention, decoders and memory encoder; `refseg.engine.Session`'s `dtype`).
    """
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype: torch.float32 or torch.bfloat16, not {dtype}")
    model = _load(name, source, device, tokenizer)
    if isinstance(getattr(model, "sam", None), Sam2):
        model.sam.inference_dtype = dtype
    return model


def _load(name: str | os.PathLike[str], source: str | os.PathLike[str] | None, device: str | torch.device,
          tokenizer: str | os.PathLike[str]) -> Model:
    if str(name) == "sam-i2v":
        return _load_sam_i2v(source).to(device)
    if str(name) == "sam2-love" and source is None:
        raise ValueError("sam2-love: this installation ships no SAM2-LOVE weights; train them with "
                         "`refseg train configs/sam2_love_synth.yaml` and pass the run's final/ folder as --model")
    if source is not None:
        kinds = {"evf-sam": (EvfSam, "EVF-SAM"), "glus": (Glus, "GLUS"), "sam2-love": (Sam2Love, "SAM2-LOVE")}
        if str(name) not in kinds:
            raise ValueError(f"model {name!r}: a source folder is taken with 'evf-sam', 'glus', 'sam2-love' and "
                             "'sam-i2v' only; pass the folder as the name")
        path = Path(source)
        if not path.is_dir():
            raise ValueError(f"{name}: no such model folder: {path}")
        return _folder_of(str(name), path, *kinds[str(name)]).to(device)
    known = str(name) in NAMES
    path = WEIGHTS / NAMES[str(name)] if known else Path(name)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return load_official_samwise(path, tokenizer).to(device)
    if not path.is_dir():
        if known:
            hint = f"train it with `refseg train {TRAINED_BY[NAMES[str(name)]]}` and pass the run's final/ folder"
            raise ValueError(f"model {name!r}: this installation ships no weights at {path}; {hint}")
        raise ValueError(f"model {name!r}: no such model folder: {path}")
    return _load_folder(path).to(device)


def _load_sam_i2v(source: str | os.PathLike[str] | None) -> SamI2V:
    if source is None:
        raise ValueError("sam-i2v: give the model: a SAM-I2V folder or a published SAM-I2V .pt file")
    path = Path(source)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return load_official_sam_i2v(path)
    if not path.is_dir():
        raise ValueError(f"sam-i2v: no such model folder or .pt file: {path}")
    return _folder_of("sam-i2v", path, SamI2V, "SAM-I2V")


def _folder_of(name: str, path: Path, cls: type, title: str) -> Model:
    """The model in folder `path`, which must be a `cls` (method `name`, called `title`)."""
    model = _load_folder(path)
    if not isinstance(model, cls):
        raise ValueError(f"{name}: {path} holds a {type(model).__name__} model, not {title}")
    return model


def _load_folder(path: Path) -> Model:
    """The model in folder `path`: a refseg folder (its kind read from config.json) or a
    published EVF-SAM / EVF-SAM2 or GLUS checkpoint."""
    meta_file = path / "config.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if "glus" in meta:
        return load_glus(path)
    kind = next((k for k in KINDS if k in meta), None)
    if kind is None:
        if _official_glus(path):
            return load_official_glus(path)
        if _official_evf(path):
            return EvfSam.from_official(path)
        if not meta_file.is_file():
            raise ValueError(f"{path}: not a model folder (no config.json)")
        raise ValueError(f"{path}: config.json describes none of {', '.join([*KINDS, 'glus'])} (a SAM 2 folder? use --sam2)")
    try:
        return KINDS[kind].from_pretrained(path)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from err
