"""BEiT-3, the early vision-language fusion encoder of EVF-SAM (EVF-SAM paper Sec. 3.2; BEiT-3:
Wang et al. 2022, a Multiway Transformer).

The image patches (with an image [CLS]) and the text tokens form one sequence; every layer's
self-attention runs over the whole sequence (this is the early fusion), while every projection,
layer norm and feed-forward network has two experts, one for the image positions ("vision") and
one for the text positions ("language"). Layers are pre-LN with sub-LN (a LayerNorm inside the
attention before its output projection and inside the FFN before its second layer), GELU, no
layer scale; a final Multiway LayerNorm ends the encoder. Positions are learned per modality and
counted from 2 (fairseq's convention): image [CLS] at 2, patches from 3; text tokens from 2.

Official checkpoint names (torchscale's `BEiT3`, under `mm_extractor.beit3.` in EVF-SAM, under
`beit3.` in the published BEiT-3 `.pth` files) load through `convert_official_beit3`: the experts
`.A` (vision) and `.B` (language) become `.vision` / `.language`. A pretrained encoder (a refseg
folder from `save_beit3`, or a published `.pth`) starts EVF-SAM through `load_beit3_weights`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn import functional as F

from refseg.io.atomic import atomic_dir
from refseg.sam.checkpoint import read_safetensors

POSITION_OFFSET = 2  # fairseq-style learned positions start at index 2


@dataclass
class Beit3Config:
    hidden_size: int = 1024
    layers: int = 24
    heads: int = 16
    ffn_size: int = 4096
    vocab_size: int = 64010
    image_size: int = 224
    patch_size: int = 16
    max_text_positions: int = 1024
    layer_norm_eps: float = 1e-5

    @classmethod
    def large(cls) -> Beit3Config:
        return cls()

    @classmethod
    def base(cls) -> Beit3Config:
        return cls(hidden_size=768, layers=12, heads=12, ffn_size=3072)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class Multiway(nn.Module):
    """Two experts of the same shape: `vision` for positions < split, `language` for the rest."""

    def __init__(self, make: type[nn.Module], *args: object, **kwargs: object) -> None:
        super().__init__()
        self.vision = make(*args, **kwargs)
        self.language = make(*args, **kwargs)

    def forward(self, x: Tensor, split: int) -> Tensor:
        """x [B, N, C]; split: number of leading image positions (0: text only; N: image only)."""
        if split <= 0:
            return self.language(x)
        if split >= x.shape[1]:
            return self.vision(x)
        return torch.cat([self.vision(x[:, :split]), self.language(x[:, split:])], dim=1)


class Beit3Layer(nn.Module):
    """One pre-LN, sub-LN Multiway layer over the fused sequence."""

    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        d, f, eps = config.hidden_size, config.ffn_size, config.layer_norm_eps
        self.heads = config.heads
        self.self_attn_layer_norm = Multiway(nn.LayerNorm, d, eps=eps)
        self.q_proj = Multiway(nn.Linear, d, d)
        self.k_proj = Multiway(nn.Linear, d, d)
        self.v_proj = Multiway(nn.Linear, d, d)
        self.inner_attn_ln = Multiway(nn.LayerNorm, d, eps=eps)
        self.out_proj = Multiway(nn.Linear, d, d)
        self.final_layer_norm = Multiway(nn.LayerNorm, d, eps=eps)
        self.fc1 = Multiway(nn.Linear, d, f)
        self.ffn_layernorm = Multiway(nn.LayerNorm, f, eps=eps)
        self.fc2 = Multiway(nn.Linear, f, d)

    def forward(self, x: Tensor, split: int, padding: Tensor | None) -> Tensor:
        """x [B, N, C]; padding [B, N] bool (True: ignore as a key) or None."""
        b, n, c = x.shape
        h = self.self_attn_layer_norm(x, split)
        head = c // self.heads

        def heads(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, head).transpose(1, 2)

        q = heads(self.q_proj(h, split)) * head**-0.5
        k, v = heads(self.k_proj(h, split)), heads(self.v_proj(h, split))
        scores = (q @ k.transpose(-1, -2)).float()
        if padding is not None:
            scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
        attn = (scores.softmax(dim=-1).to(v.dtype) @ v).transpose(1, 2).reshape(b, n, c)
        x = x + self.out_proj(self.inner_attn_ln(attn, split), split)
        h = self.final_layer_norm(x, split)
        return x + self.fc2(self.ffn_layernorm(F.gelu(self.fc1(h, split).float()).to(h.dtype), split), split)


class Beit3(nn.Module):
    """BEiT-3 encoder. `forward(pixels, ids, text_padding)` with either or both modalities."""

    def __init__(self, config: Beit3Config) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.patch_embed = nn.Conv2d(3, d, config.patch_size, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.text_embed = nn.Embedding(config.vocab_size, d)
        self.vision_positions = nn.Embedding(config.num_patches + 1 + POSITION_OFFSET, d)
        self.text_positions = nn.Embedding(config.max_text_positions + POSITION_OFFSET, d)
        self.layers = nn.ModuleList([Beit3Layer(config) for _ in range(config.layers)])
        self.layer_norm = Multiway(nn.LayerNorm, d, eps=config.layer_norm_eps)
        self._init_fresh()

    @torch.no_grad()
    def _init_fresh(self) -> None:
        """Initialisation for training from scratch (official weights overwrite it): linear
        weights truncated-normal with std 0.02 and zero biases (BEiT-3's own wrapper), and the
        learned position tables and [CLS] at std 0.02 too, as ViT / BEiT v1 start theirs. With the
        tables' default N(0, 1), a SynthRef patch token started 8x more position than pixels
        (norms 19.7 and 2.4), and an early-fusion encoder so initialised learned to ignore the
        image (docs/RESULTS.md, "EVF-SAM on SynthRef: why the prompt does not ground yet")."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.02, b=0.02)
                nn.init.zeros_(module.bias)
        for table in (self.vision_positions.weight, self.text_positions.weight, self.cls_token):
            nn.init.trunc_normal_(table, std=0.02, a=-0.02, b=0.02)

    def forward(self, pixels: Tensor | None = None, ids: Tensor | None = None,
                text_padding: Tensor | None = None, num_layers: int | None = None) -> tuple[Tensor, int]:
        """pixels [B, 3, S, S] (normalised with mean = std = 0.5), ids [B, L] token ids,
        text_padding [B, L] bool (True = padding). Returns the encoded sequence [B, N, C] (image
        [CLS] first, then patches, then text) and the split (number of image positions).
        `num_layers` stops after that many layers (the paper's L1-L12 setting), still ending with
        the final norm."""
        parts, padding = [], []
        if pixels is not None:
            patches = self.patch_embed(pixels).flatten(2).transpose(1, 2)  # [B, P, C]
            image = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
            pos = torch.arange(image.shape[1], device=image.device) + POSITION_OFFSET
            parts.append(image + self.vision_positions(pos))
            padding.append(torch.zeros(image.shape[:2], dtype=torch.bool, device=image.device))
        if ids is not None:
            pos = torch.arange(ids.shape[1], device=ids.device) + POSITION_OFFSET
            parts.append(self.text_embed(ids) + self.text_positions(pos))
            padding.append(text_padding if text_padding is not None else torch.zeros_like(ids, dtype=torch.bool))
        if not parts:
            raise ValueError("Beit3: give pixels, ids or both")
        x = torch.cat(parts, dim=1)
        mask = torch.cat(padding, dim=1)
        x = x * (~mask)[..., None].to(x.dtype)
        split = parts[0].shape[1] if pixels is not None else 0
        keys = mask if bool(mask.any()) else None
        for layer in self.layers[: num_layers or len(self.layers)]:
            x = layer(x, split, keys)
        return self.layer_norm(x, split), split


_POSITIONS = {"encoder.embed_positions.A.weight": "vision_positions.weight",
              "encoder.embed_positions.B.weight": "text_positions.weight"}


def convert_official_beit3(state: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """torchscale BEiT-3 names (after `prefix`) -> `Beit3` names. The MIM mask token, unused by
    encoders, is dropped; any other unknown key raises ValueError naming it."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name == "vision_embed.mask_token":
            continue
        if name in _POSITIONS:
            out[_POSITIONS[name]] = value
        elif name.startswith("vision_embed.proj."):
            out["patch_embed." + name.removeprefix("vision_embed.proj.")] = value
        elif name == "vision_embed.cls_token":
            out["cls_token"] = value
        elif name == "text_embed.weight":
            out[name] = value
        elif m := re.match(r"encoder\.layer_norm\.([AB])\.(weight|bias)$", name):
            out[f"layer_norm.{'vision' if m.group(1) == 'A' else 'language'}.{m.group(2)}"] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.(?:self_attn\.|ffn\.)?(\w+)\.([AB])\.(weight|bias)$", name):
            expert = "vision" if m.group(3) == "A" else "language"
            out[f"layers.{m.group(1)}.{m.group(2)}.{expert}.{m.group(4)}"] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.ffn\.([AB])\.(fc1|fc2|ffn_layernorm)\.(weight|bias)$", name):
            expert = "vision" if m.group(2) == "A" else "language"
            out[f"layers.{m.group(1)}.{m.group(3)}.{expert}.{m.group(4)}"] = value
        else:
            raise ValueError(f"{key}: not a BEiT-3 checkpoint key")
    return out


def beit3_config_from_state(state: dict[str, Tensor], head_size: int = 64) -> Beit3Config:
    """The `Beit3Config` of converted weights (sizes read from the tensors; the head count,
    which weights do not show, from `head_size`: 64 in every published BEiT-3)."""
    vocab, d = state["text_embed.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
    patch = state["patch_embed.weight"].shape[-1]
    patches = state["vision_positions.weight"].shape[0] - 1 - POSITION_OFFSET
    return Beit3Config(hidden_size=d, layers=layers, heads=max(d // head_size, 1),
                       ffn_size=state["layers.0.fc1.vision.weight"].shape[0], vocab_size=vocab,
                       image_size=int(math.isqrt(patches)) * patch, patch_size=patch,
                       max_text_positions=state["text_positions.weight"].shape[0] - POSITION_OFFSET)


RESIZES = ("antialias", "official")


def encoder_pixels(images: Tensor, side: int, resize: str = "antialias") -> Tensor:
    """[B, H, W, 3] uint8 -> [B, 3, side, side]: scaled to [0, 1], squashed to the encoder's
    square (bicubic, aspect ratio not kept, as EVF-SAM does) and normalised with mean = std = 0.5.

    resize: "antialias" (refseg's training default): antialiased bicubic, clamped to [0, 1];
    "official": as EVF-SAM's inference.py (`beit3_preprocess`: torchvision ToTensor, then
    Resize(BICUBIC, antialias=None) on the float tensor, which for tensors means no antialiasing,
    and no clamping of bicubic overshoot)."""
    if resize not in RESIZES:
        raise ValueError(f"encoder resize: expected one of {', '.join(RESIZES)}, got {resize!r}")
    x = images.permute(0, 3, 1, 2).float() / 255.0
    if resize == "official":
        x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=False)
    else:
        x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return (x - 0.5) / 0.5


def save_beit3(encoder: Beit3, directory: str | os.PathLike[str]) -> None:
    """A pretrained encoder as a folder: config.json ({"beit3": sizes}) + model.safetensors,
    written to a temporary folder first."""
    with atomic_dir(directory) as tmp:
        save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps({"beit3": dataclasses.asdict(encoder.config)}, indent=1))


def load_beit3_weights(source: str | os.PathLike[str], expected: Beit3Config) -> dict[str, Tensor]:
    """`Beit3` weights (float32) of a pretrained encoder: a `save_beit3` folder, or a published
    BEiT-3 checkpoint file (`.pth`: the state under "model" or "module", names `beit3.*`). Its
    sizes must be `expected`'s (the head count, which weights do not show, is taken from it);
    a difference fails naming the field."""
    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise ValueError(f"{path}: not a BEiT-3 folder (needs config.json and model.safetensors)")
        found = Beit3Config(**json.loads((path / "config.json").read_text())["beit3"])
        state = read_safetensors(path / "model.safetensors")
    elif path.is_file():
        raw = torch.load(path, map_location="cpu", weights_only=True)
        raw = raw.get("model", raw.get("module", raw))
        state = convert_official_beit3(raw, prefix="beit3." if any(k.startswith("beit3.") for k in raw) else "")
        if not state:
            raise ValueError(f"{path}: no BEiT-3 weights in this file")
        found = dataclasses.replace(beit3_config_from_state(state), heads=expected.heads)
    else:
        raise ValueError(f"{path}: no such BEiT-3 folder or checkpoint file (a beit3 pretraining run's final/, e.g. "
                         f"`refseg train configs/beit3_synth.yaml`, or a published BEiT-3 .pth)")
    for name in (f.name for f in dataclasses.fields(Beit3Config)):
        if getattr(found, name) != getattr(expected, name):
            raise ValueError(f"{path}: the pretrained BEiT-3 has {name} {getattr(found, name)}, "
                             f"the config asks for {getattr(expected, name)}")
    return {k: v.float() for k, v in state.items()}
