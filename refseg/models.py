"""`refseg.load`: the models a user loads by name or from a folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from refseg.methods.samwise import Samwise

WEIGHTS = Path(__file__).parent / "weights"
NAMES = {"default": "samwise_synth", "samwise": "samwise_synth"}


def load(name: str | os.PathLike[str] = "default", device: str | torch.device = "cpu") -> Samwise:
    """A text-prompted video model ready to `.stream(texts)`.

    name: "default" (the embedded SAMWISE on the SynthRef SAM 2 and MiniLM, in
        refseg/weights/) or a folder written by `save_pretrained` / `refseg train`'s final/.
    """
    path = WEIGHTS / NAMES[str(name)] if str(name) in NAMES else Path(name)
    if not path.is_dir():
        where = f"{path} (this installation ships no {name!r} weights)" if str(name) in NAMES else str(path)
        raise ValueError(f"model {name!r}: no such model folder: {where}")
    try:
        model = Samwise.from_pretrained(path)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from err
    return model.to(device)
