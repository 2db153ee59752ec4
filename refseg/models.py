"""`refseg.load`: the models a user loads by name or from a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from refseg.methods.evf_sam import EvfSam
from refseg.methods.samwise import Samwise

WEIGHTS = Path(__file__).parent / "weights"
NAMES = {"default": "samwise_synth", "samwise": "samwise_synth", "evf-sam": "evf_synth"}
TRAINED_BY = {"samwise_synth": "configs/samwise_synth.yaml", "evf_synth": "configs/evf_synth.yaml"}


def load(name: str | os.PathLike[str] = "default", device: str | torch.device = "cpu") -> Samwise | EvfSam:
    """A text-prompted model ready to `.stream(texts)` (push frames, get `FrameResult`s).

    name: "default" / "samwise" (SAMWISE on the SynthRef SAM 2 and MiniLM), "evf-sam" (EVF-SAM
        on the SynthRef SAM 2), both from refseg/weights/, or a folder written by
        `save_pretrained` / `refseg train`'s final/ (the kind is read from its config.json).
    """
    known = str(name) in NAMES
    path = WEIGHTS / NAMES[str(name)] if known else Path(name)
    if not path.is_dir():
        if known:
            hint = f"train it with `refseg train {TRAINED_BY[NAMES[str(name)]]}` and pass the run's final/ folder"
            raise ValueError(f"model {name!r}: this installation ships no weights at {path}; {hint}")
        raise ValueError(f"model {name!r}: no such model folder: {path}")
    meta_file = path / "config.json"
    if not meta_file.is_file():
        raise ValueError(f"{path}: not a model folder (no config.json)")
    meta = json.loads(meta_file.read_text())
    kinds = {"samwise": Samwise, "evf": EvfSam}
    kind = next((k for k in kinds if k in meta), None)
    if kind is None:
        raise ValueError(f"{path}: config.json describes none of {', '.join(kinds)} (a SAM 2 folder? use --sam2)")
    try:
        model = kinds[kind].from_pretrained(path)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from err
    return model.to(device)
