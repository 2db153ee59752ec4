"""Building GLUS from a `GlusSpec` (a training config's `glus:` section, or a refseg GLUS folder's
config.json) and reading such a folder back.

The language model comes from its source (`refseg.encoders.llm.load_llm`; SmolLM2-135M-Instruct
by default), the tower from the SAM 2 or a CLIP folder, SAM 2 from `sam2_source`; GLUS's added
tokens go into the tokenizer and, as extra rows, into `GlusLlm`; LoRA adapters wrap the LLM's
attention projections. A folder stores only what trains (`Glus.stored_state`: about 5 M numbers
at the default's size), and loading merges the adapters into the LLM's weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoTokenizer, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel,
                          PreTrainedTokenizerBase, Sam2VideoConfig)

from refseg.encoders.llm import load_llm
from refseg.methods.glus.conversation import NEW_TOKENS
from refseg.methods.glus.keyframe import SELECTOR_TOKENS, KeyFrameSelector
from refseg.methods.glus.mllm import GlusLlm
from refseg.methods.glus.model import Glus, GlusConfig, GlusSpec
from refseg.methods.glus.vision import ClipTower, Sam2Tower, VisionTokens
from refseg.sam.checkpoint import load_sam2, read_safetensors
from refseg.sam.model import Sam2

TINY_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True)


def language_model(spec: GlusSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM, tokenizer) of `spec.llm` (see `GlusSpec`)."""
    if spec.llm == "tiny-test":
        if spec.tokenizer is None:
            raise ValueError("glus.llm tiny-test: give glus.tokenizer (a tokenizer folder)")
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer)
        config = LlamaConfig(vocab_size=int(tokenizer.vocab_size), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, **TINY_LLM)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return LlamaForCausalLM(config), tokenizer
    return load_llm(spec.llm)


def adapted_llm(spec: GlusSpec, added: Sequence[str]) -> tuple[GlusLlm, PreTrainedTokenizerBase]:
    """`spec.llm` with the `added` tokens and LoRA. The tokens get ids after the LLM's vocabulary
    (a tokenizer may hold some already), and the extra rows reach the largest of them."""
    llm, tokenizer = language_model(spec)
    vocab = int(llm.get_input_embeddings().weight.shape[0])
    tokenizer.add_tokens([t for t in added if t not in tokenizer.get_vocab()], special_tokens=True)
    ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in added]
    if min(ids) < vocab:
        raise ValueError(f"the added tokens {tuple(added)} got ids {ids}, inside the language model's {vocab}-token "
                         "vocabulary; they must come after it (is the tokenizer the model's own?)")
    glus_llm = GlusLlm(llm, spec.prompt_width, added=max(ids) - vocab + 1)
    glus_llm.add_lora(spec.lora_r, spec.lora_alpha, spec.lora_dropout, spec.lora_targets)
    return glus_llm, tokenizer


def vision_tokens(spec: GlusSpec, sam: Sam2, width: int) -> VisionTokens:
    """`spec.tower` (SAM 2's trunk or a CLIP folder) with 1-D pooling and a new projector to `width`."""
    tower = Sam2Tower(sam) if spec.tower == "sam2" else ClipTower(CLIPVisionModel.from_pretrained(spec.tower))
    return VisionTokens(tower, width, spec.pool)


def train_only(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Parameters under `prefixes` and the LoRA adapters train; everything else is held fixed."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes) or ".lora_" in name)


def build_glus(spec: GlusSpec, sam: Sam2, sam2_source: str | None) -> Glus:
    """A fresh GLUS around `sam` (whose source `sam2_source` a saved folder references; None: the
    folder stores it): LLM with added tokens and LoRA, tower, new projector and [SEG] projection;
    everything but `Glus.trained_prefixes` and the adapters held fixed."""
    glus_llm, tokenizer = adapted_llm(spec, NEW_TOKENS)
    model = Glus(vision_tokens(spec, sam, glus_llm.width), glus_llm, sam, tokenizer, spec.inference, spec, sam2_source)
    train_only(model, model.trained_prefixes())
    return model


def build_selector(spec: GlusSpec, sam: Sam2, sam2_source: str | None, context: int = 8) -> KeyFrameSelector:
    """A fresh key-frame selector of GLUS's kind (`spec`'s LLM, tower and adapters) reading
    `context` context frames; the projector, the added rows, the score head and LoRA train."""
    llm, tokenizer = adapted_llm(spec, SELECTOR_TOKENS)
    model = KeyFrameSelector(vision_tokens(spec, sam, llm.width), llm, sam, tokenizer, spec, sam2_source, context)
    train_only(model, model.trained_prefixes())
    return model


def spec_from_dict(values: dict) -> GlusSpec:
    """The `GlusSpec` of a folder's config.json "glus" entry."""
    values = dict(values)
    values["inference"] = GlusConfig(**values.get("inference", {}))
    values["lora_targets"] = tuple(values.get("lora_targets", GlusSpec.lora_targets))
    names = {f.name for f in dataclasses.fields(GlusSpec)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"glus: unknown setting {unknown[0]!r}")
    return GlusSpec(**values)


def _folder_sam(path: Path, kind: str) -> tuple[dict, Sam2, str | None]:
    """(config.json, its SAM 2, SAM 2's source) of a folder of `kind` ("glus", "glus_key_frames")."""
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: not a model folder (no config.json)")
    meta = json.loads((path / "config.json").read_text())
    if kind not in meta:
        raise ValueError(f"{path}: not a {'GLUS' if kind == 'glus' else 'GLUS key-frame selector'} folder")
    source = meta.get("sam2_source")
    return meta, load_sam2(source) if source else Sam2(Sam2VideoConfig(**meta["sam2"])), source


def load_glus(folder: str | os.PathLike[str], merge: bool = True) -> Glus:
    """A refseg GLUS folder (`Glus.save_pretrained`, a training run's final/ or checkpoint) in eval
    mode; `merge` folds the LoRA adapters into the LLM (the same outputs, faster)."""
    path = Path(folder)
    meta, sam, source = _folder_sam(path, "glus")
    model = build_glus(spec_from_dict(meta["glus"]), sam, source)
    load_stored(model, path / "model.safetensors")
    if merge:
        model.llm.merge_lora()
    return model.eval()


def load_selector(folder: str | os.PathLike[str], merge: bool = True) -> KeyFrameSelector:
    """A key-frame selector folder (`KeyFrameSelector.save_pretrained`, a glus_kfs run's final/)."""
    path = Path(folder)
    meta, sam, source = _folder_sam(path, "glus_key_frames")
    settings = meta["glus_key_frames"]
    model = build_selector(spec_from_dict(settings["spec"]), sam, source, int(settings["context"]))
    load_stored(model, path / "model.safetensors")
    if merge:
        model.llm.merge_lora()
    return model.eval()


def load_stored(model: Glus | KeyFrameSelector, file: Path) -> None:
    """Load a stored state (`stored_state`) into `model`; every stored name must exist and every
    tensor the model stores must be there."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such GLUS weights file")
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_safetensors(file).items()}
    expected = set(model.stored_state())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{file}: does not match this GLUS (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(state, strict=False)
