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
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (AutoTokenizer, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel,
                          PreTrainedTokenizerBase, Sam2VideoConfig)

from refseg.encoders.llm import load_llm
from refseg.methods.glus.conversation import NEW_TOKENS
from refseg.methods.glus.mllm import GlusLlm
from refseg.methods.glus.model import Glus, GlusConfig, GlusSpec
from refseg.methods.glus.vision import ClipTower, Sam2Tower, VisionTokens
from refseg.sam.checkpoint import load_sam2
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


def build_glus(spec: GlusSpec, sam: Sam2, sam2_source: str | None) -> Glus:
    """A fresh GLUS around `sam` (whose source `sam2_source` a saved folder references; None: the
    folder stores it): LLM with
    added tokens and LoRA, tower, new projector and [SEG] projection; everything but
    `Glus.trained_prefixes` and the adapters held fixed."""
    llm, tokenizer = language_model(spec)
    vocab = int(llm.get_input_embeddings().weight.shape[0])
    tokenizer.add_tokens([t for t in NEW_TOKENS if t not in tokenizer.get_vocab()], special_tokens=True)
    ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in NEW_TOKENS]
    if ids != list(range(vocab, vocab + len(NEW_TOKENS))):
        raise ValueError(f"GLUS's added tokens {NEW_TOKENS} got ids {ids}; expected {vocab}.. right after the "
                         f"language model's {vocab}-token vocabulary (is the tokenizer the model's own?)")
    glus_llm = GlusLlm(llm, spec.prompt_width, added=len(NEW_TOKENS))
    glus_llm.add_lora(spec.lora_r, spec.lora_alpha, spec.lora_dropout, spec.lora_targets)
    tower = Sam2Tower(sam) if spec.tower == "sam2" else ClipTower(CLIPVisionModel.from_pretrained(spec.tower))
    model = Glus(VisionTokens(tower, glus_llm.width, spec.pool), glus_llm, sam, tokenizer, spec.inference, spec,
                 sam2_source)
    trained = model.trained_prefixes()
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(trained) or ".lora_" in name)
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


def load_glus(folder: str | os.PathLike[str], merge: bool = True) -> Glus:
    """A refseg GLUS folder (`Glus.save_pretrained`, a training run's final/ or checkpoint) in eval
    mode; `merge` folds the LoRA adapters into the LLM (the same outputs, faster)."""
    path = Path(folder)
    meta = json.loads((path / "config.json").read_text())
    if "glus" not in meta:
        raise ValueError(f"{path}: not a GLUS folder (config.json has no 'glus')")
    spec = spec_from_dict(meta["glus"])
    source = meta.get("sam2_source")
    sam = load_sam2(source) if source else Sam2(Sam2VideoConfig(**meta["sam2"]))
    model = build_glus(spec, sam, source)
    load_stored(model, path / "model.safetensors")
    if merge:
        model.llm.merge_lora()
    return model.eval()


def load_stored(model: Glus, file: Path) -> None:
    """Load a stored state (`Glus.stored_state`) into `model`; every stored name must exist and
    every tensor the model stores must be there."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such GLUS weights file")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(file)).items()}
    expected = set(model.stored_state())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{file}: does not match this GLUS (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.load_state_dict(state, strict=False)
