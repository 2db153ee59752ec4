"""SAM-I2V (Mei, Zhang, Shou, CVPR 2025): an image SAM upgraded into a promptable video
segmenter, through the engine's hooks.

Per frame (`SamI2VHooks`):
  1. image encoder: the image SAM's trunk; then the TFI reads three of its maps and a 5-frame
     pixel window and its output replaces the image embedding (Sec. 3.2, `tfi.py`).
  2. memory: the memory selector picks prompted frames plus frames sampled from a 20-frame past
     by similarity (Sec. 3.3, `selector.py`); memory attention as SAM 2's.
  3. prompt tokens: the MPG's g memory prompt tokens after the clicks (Sec. 3.4, `mpg.py`); on a
     frame without clicks after SAM's two "not a point" tokens, as the official decoder sees them.
  4. memory encoder as SAM 2's; each memory keeps its frame's embedding (the selector's key) and
     its mask logits (the MPG's mask).

The image SAM (`SamI2V.sam`) is a `Sam2`: refseg's own SAM 2 trained on images only, SAM (v1)
(`refseg.sam.vit_sam.ViTSam`, through `from_sam1`), both upgraded by `upgrade`, or TinySAM
(`refseg.sam.tiny_sam.TinySam`), the paper's, which the published checkpoints load into
(`checkpoint.load_official_sam_i2v`). Training reads SAM 2's consecutive memory, as the official
training does (the selector is an inference procedure without parameters).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import Sam2VideoConfig

from refseg.engine.hooks import MethodHooks
from refseg.engine.memory_bank import ObjectMemory
from refseg.engine.session import Session
from refseg.io.atomic import atomic_dir
from refseg.methods.sam_i2v.config import SamI2VConfig
from refseg.methods.sam_i2v.mpg import MemoryPromptGenerator
from refseg.methods.sam_i2v.selector import select
from refseg.methods.sam_i2v.tfi import TemporalFeatureIntegrator
from refseg.sam.image_encoder import ImageFeatures
from refseg.sam.memory import MemoryReadout, memory_position_encoding, memory_tokens
from refseg.sam.checkpoint import read_safetensors
from refseg.sam.model import Sam2
from refseg.sam.single_scale import SingleScaleSam
from refseg.sam.tiny_sam import TinySam
from refseg.sam.vit_sam import ViTSam

CARRIERS: dict[str, type[SingleScaleSam]] = {TinySam.META_KEY: TinySam, ViTSam.META_KEY: ViTSam}

# The parts of an image SAM that `upgrade` keeps; everything else (memory encoder and attention,
# pointers, temporal encodings) starts afresh at SAM-I2V's sizes.
IMAGE_PARTS = ("vision_encoder.", "prompt_encoder.", "mask_decoder.", "shared_image_embedding.", "mask_downsample.",
               "no_memory_embedding")


class SamI2V(nn.Module):
    """SAM-I2V's modules (TFI, MPG; the selector has no parameters) around an image SAM."""

    def __init__(self, sam: Sam2, config: SamI2VConfig) -> None:
        super().__init__()
        self.sam, self.config = sam, config
        picks = config.global_picks + config.local_picks
        if config.selection != "consecutive" and picks > sam.num_maskmem - 1:
            raise ValueError(f"the selector picks {picks} frames but the model has temporal encodings for "
                             f"{sam.num_maskmem - 1} (num_maskmem {sam.num_maskmem})")
        if isinstance(sam, SingleScaleSam) and not config.tfi and sam.neck_dim != sam.hidden_dim:
            raise ValueError(f"without the TFI the image encoder's neck ({sam.neck_dim} channels) must be "
                             f"the heads' width ({sam.hidden_dim})")
        if config.integration_dim != sam.hidden_dim:
            raise ValueError(f"the TFI's integration_dim ({config.integration_dim}) must be the heads' width "
                             f"({sam.hidden_dim}): its output is the image embedding")
        self.tfi = TemporalFeatureIntegrator(config) if config.tfi else None
        self.mpg = None
        if config.mpg != "none":
            self.mpg = MemoryPromptGenerator(sam.hidden_dim, sam.config.memory_encoder_output_channels,
                                             config.num_queries, tuple(sam.prompt_encoder.image_embedding_size),
                                             heads=1, dropout=config.mpg_dropout, masked=config.mpg == "masked")

    def hooks(self) -> SamI2VHooks:
        return SamI2VHooks(self)

    def session(self, **kwargs: object) -> Session:
        """An engine session tracking with SAM-I2V (`Session` arguments: seed, num_frames, ...)."""
        return Session(self.sam, self.hooks(), **kwargs)  # type: ignore[arg-type]

    # -- checkpoints -----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str], dtype: torch.dtype | None = None) -> None:
        """config.json + model.safetensors, written to a temporary folder first."""
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                 for k, v in self.state_dict().items()}
        with atomic_dir(directory) as tmp:
            save_file(state, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(self.meta(), indent=1))

    def meta(self) -> dict[str, object]:
        """What config.json records: SAM-I2V's config, the heads' SAM 2 config and, for a
        single-scale image SAM, its trunk's config under the carrier's `META_KEY`."""
        meta: dict[str, object] = {"sam_i2v": dataclasses.asdict(self.config), "sam2": self.sam.config.to_dict()}
        if isinstance(self.sam, SingleScaleSam):
            meta[self.sam.META_KEY] = self.sam.trunk_meta()
        return meta

    @classmethod
    def from_meta(cls, meta: dict) -> SamI2V:
        """A random-weight model of the sizes `meta` (a `meta()` dict) records."""
        fields = dict(meta["sam_i2v"])
        fields["tapped_dims"] = tuple(fields["tapped_dims"])
        config = SamI2VConfig(**fields)
        heads = Sam2VideoConfig(**meta["sam2"])
        for key, carrier in CARRIERS.items():
            if key in meta:
                return cls(carrier.from_trunk_meta(heads, meta[key]), config)
        return cls(Sam2(heads), config)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> SamI2V:
        """Load a `save_pretrained` folder (or a training run's final/ or checkpoint folder)."""
        path = Path(directory)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: not a SAM-I2V model folder (needs config.json and model.safetensors)")
        meta = json.loads((path / "config.json").read_text())
        if "sam_i2v" not in meta:
            raise ValueError(f"{path}: config.json describes no SAM-I2V model (no 'sam_i2v' entry)")
        model = cls.from_meta(meta)
        state = {k: v.float() if v.is_floating_point() else v for k, v in read_safetensors(path / "model.safetensors").items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model.eval()


def tapped_dims(sam: Sam2) -> tuple[int, int, int]:
    """Channels of the maps the TFI reads: the last two trunk maps and the embedding (TinyViT: its
    stride-16 stages 2 and 3; SAM's ViT: two blocks, `vit_sam.tap_layers`; Hiera: stage 3 at
    stride 16 and stage 4 at stride 32)."""
    if isinstance(sam, SingleScaleSam):
        return (*sam.tapped_dims, sam.neck_dim)
    dims = sam.config.vision_config.backbone_config.embed_dim_per_stage
    return int(dims[2]), int(dims[3]), sam.hidden_dim


def upgrade(image_sam: Sam2, config: SamI2VConfig, memory_layers: int = 4) -> SamI2V:
    """SAM-I2V on an image SAM (`IMAGE_PARTS` kept; the TFI's `tapped_dims` set to its trunk's):
    memory encoder, memory attention (SAM-I2V's sizes: 1 head, FFN 512, `memory_layers` layers),
    pointers and temporal encodings start from SAM 2's initialisation, as do the TFI and MPG
    (from the global random state)."""
    fields = image_sam.config.to_dict()
    fields.update(memory_attention_num_layers=memory_layers, memory_attention_feed_forward_hidden_size=512,
                  memory_attention_num_attention_heads=1)
    heads = Sam2VideoConfig(**fields)
    sam = type(image_sam)(heads, image_sam.trunk_config) if isinstance(image_sam, SingleScaleSam) else Sam2(heads)
    model = SamI2V(sam, dataclasses.replace(config, tapped_dims=tapped_dims(image_sam)))
    kept = {k: v for k, v in image_sam.state_dict().items() if k.startswith(IMAGE_PARTS)}
    missing = [k for k in sam.state_dict() if k.startswith(IMAGE_PARTS) and k not in kept]
    if missing:
        raise ValueError(f"upgrade: the image SAM lacks {missing[:5]}")
    sam.load_state_dict(kept, strict=False)
    return model


class SamI2VHooks(MethodHooks):
    """The engine hooks of SAM-I2V (see the module docstring). The TFI's pixel window, the longer
    memory (K = global + local pool) and the per-memory key and mask follow the config's switches."""

    def __init__(self, model: SamI2V) -> None:
        self.model = model
        c = model.config
        self.pixel_window = c.window if c.tfi else 0
        self.keep_recent = c.keep_recent
        self.store_keys = c.selection != "consecutive"
        self.store_masks = c.mpg == "masked"
        self._memory_pos: Tensor | None = None

    # step 1 ---------------------------------------------------------------------------------------
    def has_output_hook(self) -> bool:
        return self.model.tfi is not None

    def encode_output(self, window: Tensor | None, features: ImageFeatures) -> ImageFeatures:
        """The TFI output replaces the embedding; it reads the last two trunk maps and the embedding."""
        assert self.model.tfi is not None and window is not None
        taps = [features.trunk[-2], features.trunk[-1], features.embed]
        return dataclasses.replace(features, embed=self.model.tfi(taps, window))

    # step 2 ---------------------------------------------------------------------------------------
    def select_memories(self, frame: int, obj_id: int, memory: ObjectMemory, features: ImageFeatures,
                        generator: torch.Generator) -> MemoryReadout:
        """The selector at inference; SAM 2's consecutive memory in training and under
        `selection: consecutive`."""
        m = self.model
        if m.config.selection == "consecutive" or m.training:
            return memory.readout(frame)
        return select(frame, memory, features.embed[0], m.config, m.sam.num_maskmem, generator)

    # step 3 ---------------------------------------------------------------------------------------
    def prompt_tokens(self, frame: int, obj_id: int, features: ImageFeatures, embed: Tensor,
                      readout: MemoryReadout | None, has_points: bool) -> Tensor | None:
        """[1, g, C] memory prompt tokens (no-memory tokens on a frame decoded without memory),
        after two "not a point" tokens when the frame has no clicks: [1, 2 + g, C]."""
        mpg, sam = self.model.mpg, self.model.sam
        if mpg is None:
            return None
        if readout is None:
            tokens = mpg.no_memory_tokens()
        else:
            if self._memory_pos is None or self._memory_pos.device != embed.device:
                self._memory_pos = memory_position_encoding(sam).to(embed.device)
            memory, memory_pe, pointer_tokens = memory_tokens(sam, readout, self._memory_pos.to(embed.dtype), embed.dtype)
            if mpg.masked:
                foreground = mpg.foreground([_mask(m) for m in readout.masks], pointer_tokens)
            else:
                foreground = torch.ones(memory.shape[0], dtype=torch.bool, device=memory.device)
            tokens = mpg(memory, memory_pe, foreground, pointer_tokens)
        tokens = tokens.to(embed.dtype)
        if not has_points:
            nap = sam.prompt_encoder.not_a_point_embed.weight[None].to(embed.dtype)  # [1, 1, C]
            tokens = torch.cat([nap, nap, tokens], dim=1)
        return tokens


def _mask(mask: Tensor | None) -> Tensor:
    if mask is None:
        raise RuntimeError("a memory without its mask: the MPG's masked cross-attention needs store_masks")
    return mask
