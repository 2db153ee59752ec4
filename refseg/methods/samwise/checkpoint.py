"""Load the official SAMWISE checkpoint layout (`.pth`, {"model": state_dict}) into refseg.

Official names (their repository, `models/`): `sam.*` (an official SAM 2, Hiera-B+), with the
prompt MLP inside it as `sam.sam_prompt_encoder.project_text.layers.{0,1,2}` (and
`project_motion_prompts` when trained with the motion prompt); `text_encoder.*` (fairseq
RoBERTa-base); `cmt_adapters.{0,1,2}.*`; `conditional_memory_encoder.*`. The adapters' visual
projections are 1x1 (transposed) convolutions followed by BatchNorm: in inference BatchNorm is
an affine map, so it is folded into refseg's linear layers (weight and bias).
"""

from __future__ import annotations

import copy
import os
import re

import torch
from torch import Tensor
from transformers import AutoTokenizer, RobertaConfig, RobertaModel, Sam2VideoConfig

from refseg.encoders.text import TextEncoder
from refseg.methods.samwise.model import Samwise, SamwiseConfig
from refseg.sam.checkpoint import (CheckpointError, config_for_official, convert_official_state_dict, load_state,
                                   read_state_dict)
from refseg.sam.model import Sam2

# what the released checkpoints were trained with (RoBERTa-base, Hiera-B+, no motion prompt)
OFFICIAL_CONFIG = SamwiseConfig(text_encoder="roberta-base", text_layers=[4, 8, 12], motion=False)

_BN_EPS = 1e-5

# fairseq RoBERTa -> transformers RobertaModel
_TEXT_RULES = [
    (r"^model\.encoder\.sentence_encoder\.embed_tokens\.", "embeddings.word_embeddings."),
    (r"^model\.encoder\.sentence_encoder\.embed_positions\.", "embeddings.position_embeddings."),
    (r"^model\.encoder\.sentence_encoder\.layernorm_embedding\.", "embeddings.LayerNorm."),
    (r"^model\.encoder\.sentence_encoder\.layers\.(\d+)\.self_attn\.q_proj\.", r"encoder.layer.\1.attention.self.query."),
    (r"^model\.encoder\.sentence_encoder\.layers\.(\d+)\.self_attn\.k_proj\.", r"encoder.layer.\1.attention.self.key."),
    (r"^model\.encoder\.sentence_encoder\.layers\.(\d+)\.self_attn\.v_proj\.", r"encoder.layer.\1.attention.self.value."),
    (r"^model\.encoder\.sentence_encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^model\.encoder\.sentence_encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"^model\.encoder\.sentence_encoder\.layers\.(\d+)\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^model\.encoder\.sentence_encoder\.layers\.(\d+)\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^model\.encoder\.sentence_encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layer.\1.output.LayerNorm."),
]
# the hub interface's device marker, the unused LM head, and fairseq's state-dict version buffer
_TEXT_DROPPED = re.compile(r"^(_float_tensor|model\.encoder\.lm_head\.|model\.encoder\.sentence_encoder\.version$)")
_FAIRSEQ_LN_EPS = 1e-5  # fairseq's LayerNorm default, in every RoBERTa LayerNorm (transformers' default: 1e-12)

_ADAPTER_RULES = {
    "proj_text_down.0.weight": "down_t.weight",
    "proj_text_up.0.weight": "up_t.weight",
    "norm_pre_HSA.weight": "hsa.norm.weight",
    "norm_pre_HSA.bias": "hsa.norm.bias",
    "hsa.linear.weight": "hsa.linear.weight",
    "hsa.linear.bias": "hsa.linear.bias",
}
_ATTENTION = {"ca_V2T.multihead_attn.": "vta.attn.", "ca_T2V.multihead_attn.": "tva.attn.", "hsa.self_attn.": "hsa.attn."}

_CME_RULES = {
    "transformerBlock.self_attn.": "attn.",
    "transformerBlock.linear1.": "linear1.",
    "transformerBlock.linear2.": "linear2.",
    "transformerBlock.norm1.": "norm1.",
    "transformerBlock.norm3.": "norm2.",
    "decision_class_head.": "classifier.",
}


def _fold_bn(weight: Tensor, bias: Tensor | None, bn: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Linear (weight [out, in], bias [out] or None) followed by BatchNorm(out) in inference."""
    scale = bn["weight"] / torch.sqrt(bn["running_var"] + _BN_EPS)
    bias = torch.zeros_like(bn["bias"]) if bias is None else bias
    return weight * scale[:, None], (bias - bn["running_mean"]) * scale + bn["bias"]


def _adapter(index: int, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """One `cmt_adapters.<index>.*` block in refseg names (`adapters.<index>.*`)."""
    out: dict[str, Tensor] = {}
    bn = {part: {k.split(".")[-1]: v for k, v in state.items() if k.startswith(f"{part}.1.")}
          for part in ("proj_vis_down", "proj_vis_up")}
    if "proj_vis_down.0.weight" in state:
        w = state["proj_vis_down.0.weight"][:, :, 0, 0]  # Conv2d 1x1: [out, in]
        out["down_v.weight"], out["down_v.bias"] = _fold_bn(w, None, bn["proj_vis_down"])
    if "proj_vis_up.0.weight" in state:
        w = state["proj_vis_up.0.weight"][:, :, 0, 0].t()  # ConvTranspose2d 1x1: [in, out] -> [out, in]
        out["up_v.weight"], out["up_v.bias"] = _fold_bn(w, None, bn["proj_vis_up"])
    for key, value in state.items():
        if key.startswith(("proj_vis_down.", "proj_vis_up.")):
            continue
        if key == "spatial_pos_embed":
            out["hsa.spatial_pos"] = value.reshape(value.shape[-2], value.shape[-1])
        elif key in _ADAPTER_RULES:
            out[_ADAPTER_RULES[key]] = value
        elif prefix := next((p for p in _ATTENTION if key.startswith(p)), None):
            out[_ATTENTION[prefix] + key[len(prefix):]] = value
        else:
            raise CheckpointError(f"cmt_adapters.{index}.{key}: unknown SAMWISE adapter key")
    return {f"adapters.{index}.{k}": v for k, v in out.items()}


def convert_official_samwise(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """Split and rename an official SAMWISE state dict.

    Returns:
        sam: the SAM 2 weights in the official SAM 2 layout (`refseg.sam.checkpoint` converts
            and recognises them),
        text: the text encoder in the `transformers` RobertaModel layout,
        samwise: adapters, prompt MLP and CME in `Samwise` names (`adapters.*`, `prompt.*`, `cme.*`).
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    sam_official: dict[str, Tensor] = {}
    text: dict[str, Tensor] = {}
    samwise: dict[str, Tensor] = {}
    adapters: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        if m := re.match(r"sam\.sam_prompt_encoder\.project_text\.layers\.(\d+)\.(weight|bias)$", key):
            samwise[f"prompt.layers.{m.group(1)}.{m.group(2)}"] = value
        elif key.startswith("sam.sam_prompt_encoder.project_motion_prompts."):
            continue  # the released code never trains it (and refseg's motion prompt is one concatenated MLP)
        elif key.startswith("sam."):
            sam_official[key[4:]] = value
        elif key.startswith("text_encoder."):
            name = key[len("text_encoder."):]
            if _TEXT_DROPPED.match(name):
                continue
            new = name
            for pattern, repl in _TEXT_RULES:
                new = re.sub(pattern, repl, new, count=1)
            if new == name:
                raise CheckpointError(f"{key}: unknown SAMWISE text encoder key")
            text[new] = value
        elif m := re.match(r"cmt_adapters\.(\d+)\.(.+)$", key):
            adapters.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif key.startswith("conditional_memory_encoder."):
            name = key[len("conditional_memory_encoder."):]
            if name == "decision_token.weight":
                samwise["cme.decision_token"] = value
            elif name.startswith("transformerBlock.norm2."):
                continue  # created but unused by the official block
            elif prefix := next((p for p in _CME_RULES if name.startswith(p)), None):
                samwise["cme." + _CME_RULES[prefix] + name[len(prefix):]] = value
            else:
                raise CheckpointError(f"{key}: unknown SAMWISE CME key")
        else:
            raise CheckpointError(f"{key}: not a SAMWISE checkpoint key")
    for index, block in sorted(adapters.items()):
        samwise.update(_adapter(index, block))
    if text and "embeddings.word_embeddings.weight" in text:
        text["embeddings.token_type_embeddings.weight"] = torch.zeros_like(text["embeddings.word_embeddings.weight"][:1])
    return sam_official, text, samwise


def roberta_from_state(text: dict[str, Tensor], heads: int | None = None) -> RobertaModel:
    """A RobertaModel sized from converted fairseq weights, holding them, with fairseq's LayerNorm
    eps. The head count leaves no trace in the weights: `heads`, else one per 64 channels (12 for
    RoBERTa-base)."""
    vocab, hidden = text["embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in text if k.startswith("encoder.layer."))
    config = RobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads if heads is not None else max(hidden // 64, 1),
                           intermediate_size=text["encoder.layer.0.intermediate.dense.weight"].shape[0],
                           max_position_embeddings=text["embeddings.position_embeddings.weight"].shape[0],
                           type_vocab_size=1, pad_token_id=1, layer_norm_eps=_FAIRSEQ_LN_EPS)
    model = RobertaModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(text, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"SAMWISE text encoder: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return model.eval()


def load_official_samwise(path: str | os.PathLike[str], tokenizer: str | os.PathLike[str],
                          config: SamwiseConfig = OFFICIAL_CONFIG, sam2_config: Sam2VideoConfig | None = None,
                          text_heads: int | None = None) -> Samwise:
    """Load an official SAMWISE `.pth` file with its RoBERTa tokenizer (`tokenizer`: a local
    folder, or "roberta-base" online); the SAM 2 size is recognised from the weights unless
    `sam2_config` is given; `text_heads` is the RoBERTa head count (default: hidden / 64).
    Missing or unexpected keys are named in the error.

    The official mask decoder never falls back to a multimask output on unstable single masks
    (`dynamic_multimask_via_stability` is off in its SAM 2 build), so it is switched off here."""
    state = read_state_dict(path, weights_only=False)
    names = [k.removeprefix("module.") for k in state]
    if not any(k.startswith("text_encoder.") for k in names):
        sam2 = any(k.startswith("image_encoder.") for k in names)
        raise CheckpointError(f"{path}: {'an official SAM 2 checkpoint' if sam2 else 'not a SAMWISE checkpoint'} "
                              f"(no text_encoder.* weights){'; pass it with --sam2' if sam2 else ''}")
    try:
        words = AutoTokenizer.from_pretrained(tokenizer)
    except OSError as err:
        raise CheckpointError(f"SAMWISE tokenizer {str(tokenizer)!r}: not a tokenizer folder, and the hub cannot be "
                              "reached to fetch it (offline?): pass the folder of a RoBERTa-base tokenizer") from err
    sam_official, text, samwise = convert_official_samwise(state)
    sam_config = copy.deepcopy(sam2_config) if sam2_config is not None else config_for_official(sam_official)
    sam_config.mask_decoder_config.dynamic_multimask_via_stability = False
    sam = load_state(Sam2(sam_config), convert_official_state_dict(sam_official), str(path))
    encoder = TextEncoder(roberta_from_state(text, text_heads), words)
    model = Samwise(sam, encoder, config)
    expected = {k for k in model.state_dict() if not k.startswith(("sam.", "text."))}
    missing, unexpected = sorted(expected - set(samwise)), sorted(set(samwise) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing SAMWISE keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    model.load_state_dict(samwise, strict=False)
    return model.eval()
