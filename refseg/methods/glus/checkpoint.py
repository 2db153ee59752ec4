"""The official GLUS checkpoint layout (a merged-LoRA `GLUSForCausalLM` state dict) split into
refseg's parts.

| official prefix | refseg part |
| --- | --- |
| `model.embed_tokens.*`, `model.layers.*`, `model.norm.*`, `lm_head.*` | `llm` (a `LlamaForCausalLM` state dict; the old per-layer `rotary_emb.inv_freq` buffers dropped) |
| `model.mm_projector.*` | `mm_projector` (`VisionTokens.mm_projector`) |
| `model.text_hidden_fcs.0.{0,2}.*` | `text_hidden_fcs` (`SegProjection.layers`) |
| `model.visual_model.*` (official SAM 2 names) | `sam` (`refseg.sam.checkpoint.convert_official_state_dict`) |
| `model.vision_tower.vision_tower.vision_model.*` (when present; the published checkpoints load CLIP from its own folder) | `vision_tower` (`CLIPVisionModel` names) |

Every key must land in a part: anything else is reported by name. `load_official_glus` builds the
model from a published folder and its CLIP folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor
import transformers
from transformers import (AutoTokenizer, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase,
                          Sam2VideoConfig)

from refseg.methods.glus.mllm import GlusLlm
from refseg.methods.glus.model import Glus, GlusConfig
from refseg.methods.glus.vision import ClipTower, VisionTokens
from refseg.sam.checkpoint import (CheckpointError, config_for_official, convert_official_state_dict, load_state,
                                   read_safetensors, read_state_dict)
from refseg.sam.model import Sam2

_LLM = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
_PARTS = {"mm_projector": "model.mm_projector.", "text_hidden_fcs": "model.text_hidden_fcs.0.",
          "sam": "model.visual_model.", "vision_tower": "model.vision_tower.vision_tower.vision_model."}


def official_parts(state: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """{part: its state dict} (see the module docstring)."""
    parts: dict[str, dict[str, Tensor]] = {"llm": {}, **{name: {} for name in _PARTS}}
    unknown = []
    for key, value in state.items():
        if key.startswith(_LLM):
            if not key.endswith("rotary_emb.inv_freq"):
                parts["llm"][key] = value
            continue
        name = next((n for n, prefix in _PARTS.items() if key.startswith(prefix)), None)
        if name is None:
            unknown.append(key)
        elif not (name == "vision_tower" and key.endswith("position_ids")):
            parts[name][key[len(_PARTS[name]):]] = value
    if unknown:
        raise CheckpointError(f"not a GLUS checkpoint key: {unknown[:5]}")
    parts["sam"] = convert_official_state_dict(parts["sam"])
    return parts


FUSER_GAMMAS = ("memory_encoder.memory_fuser.layers.0.scale", "memory_encoder.memory_fuser.layers.1.scale")  # refseg names
OFFICIAL_FUSER_GAMMA = 1e-6  # what official inference runs with (the checkpoint's values are never loaded)
LLAMA_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
                "rms_norm_eps", "vocab_size", "max_position_embeddings", "tie_word_embeddings", "bos_token_id",
                "eos_token_id", "pad_token_id", "rope_theta")


def read_folder_weights(folder: Path) -> dict[str, Tensor]:
    """Every weight of a `save_pretrained` folder (`*.safetensors` or `pytorch_model*.bin`, sharded or not)."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise CheckpointError(f"{folder}: no model weights (*.safetensors or pytorch_model*.bin)")
    state: dict[str, Tensor] = {}
    for file in files:
        state.update(read_safetensors(file) if file.suffix == ".safetensors" else read_state_dict(file))
    return state


def load_official_glus(folder: str | os.PathLike[str], vision_tower: str | os.PathLike[str] | None = None,
                       sam_config: Sam2VideoConfig | None = None, image_size: int = 1024,
                       fuser: str = "official") -> Glus:
    """A published GLUS folder (merged-LoRA `GLUSForCausalLM`: config.json, weights, tokenizer
    holding [SEG], <im_start>, <im_end>) and its CLIP vision tower folder (`vision_tower`, else the
    folder config.json names) as a `Glus`.

    SAM 2's config is recognised from its weights (Hiera-L for the published ones) unless given.
    `fuser`: "official" sets the memory encoder's two fuser layer scales to 1e-6, what the official
    inference computes with (its `from_pretrained` renames `gamma` keys and never loads them);
    "checkpoint" keeps the checkpoint's values (what training saw).
    """
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a GLUS folder (no config.json)")
    if fuser not in ("official", "checkpoint"):
        raise ValueError(f"fuser: 'official' or 'checkpoint', got {fuser!r}")
    meta = json.loads((path / "config.json").read_text())
    tower_path = Path(vision_tower or meta.get("vision_tower") or meta.get("mm_vision_tower") or "")
    if not (tower_path / "config.json").is_file():
        raise CheckpointError(f"{path}: the CLIP vision tower {str(tower_path)!r} is not a local folder; pass vision_tower")
    state = read_folder_weights(path)
    prefix = "model.visual_model."
    official_sam = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    parts = official_parts(state)
    llm = LlamaForCausalLM(LlamaConfig(**{k: meta[k] for k in LLAMA_FIELDS if k in meta}))
    llm.load_state_dict(parts["llm"])
    glus_llm = GlusLlm(llm, prompt_width=int(meta.get("out_dim", 256)))
    glus_llm.text_hidden_fcs.layers.load_state_dict(parts["text_hidden_fcs"])
    tower = CLIPVisionModel.from_pretrained(tower_path)
    if parts["vision_tower"]:
        tower.load_state_dict(parts["vision_tower"])
    vision = VisionTokens(ClipTower(tower, select_layer=int(meta.get("mm_vision_select_layer", -2))),
                          int(meta["hidden_size"]))
    vision.mm_projector.load_state_dict(parts["mm_projector"])
    sam = Sam2(sam_config if sam_config is not None else config_for_official(official_sam, image_size))
    sam_state = parts["sam"]
    if fuser == "official":
        sam_state = {k: torch.full_like(v, OFFICIAL_FUSER_GAMMA) if k in FUSER_GAMMAS else v for k, v in sam_state.items()}
    load_state(sam, sam_state, str(path))
    tokenizer = _tokenizer(path)
    return Glus(vision, glus_llm, sam, tokenizer, GlusConfig()).eval()


def _tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer class tokenizer_config.json names (LLaMA's for GLUS). `AutoTokenizer` would go
    by config.json's model type ("llava"), which `transformers` maps to a generic tokenizer that
    splits the prompt differently."""
    settings = path / "tokenizer_config.json"
    name = json.loads(settings.read_text()).get("tokenizer_class") if settings.is_file() else None
    cls = getattr(transformers, name, None) if name else None
    return (cls or AutoTokenizer).from_pretrained(path)
