"""The official GLUS checkpoint layout (a merged-LoRA `GLUSForCausalLM` state dict) split into
refseg's parts.

| official prefix | refseg part |
| --- | --- |
| `model.embed_tokens.*`, `model.layers.*`, `model.norm.*`, `lm_head.*` | `llm` (a `LlamaForCausalLM` state dict; the old per-layer `rotary_emb.inv_freq` buffers dropped) |
| `model.mm_projector.*` | `mm_projector` (`VisionTokens.mm_projector`) |
| `model.text_hidden_fcs.0.{0,2}.*` | `text_hidden_fcs` (`SegProjection.layers`) |
| `model.visual_model.*` (official SAM 2 names) | `sam` (`refseg.sam.checkpoint.convert_official_state_dict`) |
| `model.vision_tower.vision_tower.vision_model.*` (when present; the published checkpoints load CLIP from its own folder) | `vision_tower` (`CLIPVisionModel` names) |

Every key must land in a part: anything else is reported by name.
"""

from __future__ import annotations

from torch import Tensor

from refseg.sam.checkpoint import CheckpointError, convert_official_state_dict

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
