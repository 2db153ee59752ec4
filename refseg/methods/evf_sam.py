"""EVF-SAM (Zhang et al. 2024): referring segmentation by prompting SAM 2 with the [CLS] of an
early vision-language fusion encoder.

The multimodal encoder reads the image (squashed to a small square, normalised with mean = std
= 0.5) and the text together; its image [CLS] (BEiT-3: sequence position 0, after the final
norm) goes through the projector, a 2-layer MLP with ReLU, to SAM's prompt width (Sec. 3.2,
Fig. 4). The projected token [B, 1, 256] is the only sparse prompt (no padding point), or follows
the clicks / box when the user gives them too (the "zero-initialised sparse embeddings" the
token is concatenated to). SAM 2 is frozen, as in EVF-SAM2; its prompt encoder and mask decoder
can be trained by config (the SAM-1 recipe). With no click, SAM 2's rule gives three
candidates and the best predicted IoU is kept, as the official SAM 2 variant does.

Fusion (Table 3): `early` (the encoder attends over image and text together; BEiT-3 or ViLT),
`late` (the same encoder run on the image alone and on the text alone, the two [CLS]
concatenated) and `text` (the text alone). `fusion_layers` stops BEiT-3 after that many layers
(the L1-L12 rows).

Video (the official video demo, but streaming): the token prompts one frame (default 0; the
frame the user names) through `Session.add_object` and the engine tracks through memory. On a
SAM (v1) backbone, which has no memory, every frame is segmented from the text (single mask, as
the official SAM-1 variant decodes).
`[semantic] ` before a category name asks for a semantic / part-level mask (the multitask
checkpoints learned it); it is plain text to the tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import AutoTokenizer, BertModel, Sam2VideoConfig, SamConfig, ViltConfig, ViltModel

from refseg.encoders.fusion import (RESIZES, Beit3, Beit3Config, beit3_config_from_state, convert_official_beit3,
                                    encoder_pixels, load_beit3_weights)
from refseg.encoders.text import MINILM, minilm_path
from refseg.engine.hooks import MethodHooks
from refseg.engine.session import FrameResult, ObjectResult, Session
from refseg.io.atomic import atomic_dir
from refseg.prompts import Box, Points, Prompt
from refseg.sam.checkpoint import config_for_official, convert_official_state_dict, read_safetensors
from refseg.sam.image_encoder import ImageFeatures
from refseg.sam.mask_decoder import DecoderOutput
from refseg.sam.memory import MemoryReadout
from refseg.sam.model import Sam2
from refseg.sam.preprocess import SAM1, SAM2, SAM2_VIDEO, Preprocess
from refseg.sam.sam1 import Sam1, convert_official_sam1, sam1_config

ENCODERS = ("beit3", "vilt")
SAM_INPUTS = ("refseg", "official")
FUSIONS = ("early", "late", "text")
SEMANTIC = "[semantic] "  # prefix of semantic / part-level prompts (multitask training)
# The official video inference (inference_video.py -> model/evf_sam2_video.py): SAM 2's
# `load_video_frames` stretches each JPEG frame to S x S with PIL's default resize filter (bicubic,
# `SAM2_VIDEO`) and `build_sam2_video_predictor` sets fill_hole_area=8 (hustvl/EVF-SAM,
# model/segment_anything_2/sam2/utils/misc.py:92-101, build_sam.py:64).
VIDEO_FILL_HOLE_AREA = 8


def semantic(category: str) -> str:
    """The prompt asking for the semantic / part-level mask of `category` ("[semantic] person"),
    as the official multitask checkpoints were trained; text without the prefix is referring."""
    return category if category.startswith(SEMANTIC) else SEMANTIC + category


def synth_beit3() -> Beit3Config:
    """The BEiT-3 refseg trains on SynthRef: 4 layers of width 384 (MiniLM's, so its word
    embeddings can seed the language side), 128 px images."""
    return Beit3Config(hidden_size=384, layers=4, heads=6, ffn_size=1536, vocab_size=30522, image_size=128,
                       patch_size=16, max_text_positions=64)


@dataclass
class EvfConfig:
    """encoder: beit3 or vilt (ViLT through `transformers`, sized by the `beit3` fields).
    fusion: early, late or text (see the module docstring; late and text need beit3).
    beit3: the encoder's sizes (image_size is the square the image is squashed to).
    tokenizer: "minilm" (BERT uncased, offline) or a tokenizer folder (an official EVF-SAM
        checkpoint folder ships BEiT-3's XLM-R sentencepiece tokenizer).
    text_embeddings: "minilm" copies MiniLM's word embeddings into the text table at
        construction (the widths must match); None leaves them random.
    encoder_weights: a pretrained BEiT-3 that a new model starts from (its sizes must be
        `beit3`'s): a folder written by the `beit3` pretraining task (`refseg train
        configs/beit3_synth.yaml`, its final/) or a published BEiT-3 `.pth`; the text table then
        comes from it, not from `text_embeddings`.
    fusion_layers: run only the first k layers (BEiT-3), None: all.
    encoder_resize: how the image is squashed to the encoder's square (`encoder_pixels`):
        "antialias" (refseg's; what its trained models saw) or "official" (EVF-SAM's
        inference.py: bicubic without antialiasing, not clamped; official checkpoints use it).
    sam_input: how a frame becomes SAM's input and the masks go back (`sam_preprocess`):
        "refseg" (SAM 2's image-predictor rule; SAM v1 always follows its own predictor) or
        "official" (EVF-SAM's inference.py, see `sam_preprocess`); with "official",
        `segment` also keeps the decoder's masks whatever the occlusion logit says, as the
        official image path never reads it, and `stream` follows the official video
        inference (inference_video.py: SAM 2's JPEG loader, `video_preprocess`; the text
        frame's memory from its binarised, hole-filled mask; holes of up to
        `VIDEO_FILL_HOLE_AREA` pixels filled in every low-res mask, see `EvfHooks`).
    train_prompt_encoder, train_mask_decoder: unfreeze these SAM 2 parts.
    """

    encoder: str = "beit3"
    fusion: str = "early"
    beit3: Beit3Config = field(default_factory=synth_beit3)
    tokenizer: str = MINILM
    text_embeddings: str | None = MINILM
    encoder_weights: str | None = None
    fusion_layers: int | None = None
    max_text_tokens: int = 32
    encoder_resize: str = "antialias"
    sam_input: str = "refseg"
    train_prompt_encoder: bool = False
    train_mask_decoder: bool = False

    def check(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"evf.encoder: expected one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"evf.fusion: expected one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.encoder == "vilt" and self.fusion != "early":
            raise ValueError("evf: ViLT is an early-fusion encoder (fusion: early)")
        if self.sam_input not in SAM_INPUTS:
            raise ValueError(f"evf.sam_input: expected one of {', '.join(SAM_INPUTS)}, got {self.sam_input!r}")
        if self.encoder_resize not in RESIZES:
            raise ValueError(f"evf.encoder_resize: expected one of {', '.join(RESIZES)}, got {self.encoder_resize!r}")
        if self.encoder == "vilt" and self.encoder_weights:
            raise ValueError("evf.encoder_weights: a pretrained BEiT-3; ViLT starts from `transformers` weights")


def load_tokenizer(source: str) -> object:
    return AutoTokenizer.from_pretrained(minilm_path() if source == MINILM else source)


def tokenize(tokenizer: object, texts: Sequence[str], max_tokens: int,
             device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """ids [B, L] and padding [B, L] (True = padding), padded to the longest text."""
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError(f"text prompts must be non-empty strings, got {list(texts)!r}")
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device) == 0


@torch.no_grad()
def seed_text_table(table: Tensor) -> None:
    """Copy MiniLM's word embeddings into an encoder's text table (`evf.text_embeddings: minilm`)."""
    words = BertModel.from_pretrained(minilm_path()).embeddings.word_embeddings.weight
    if table.shape != words.shape:
        raise ValueError(f"evf.text_embeddings: MiniLM's table is {tuple(words.shape)}, the encoder's "
                         f"{tuple(table.shape)} (set beit3.hidden_size 384 and vocab_size 30522, or None)")
    table.copy_(words)


def vilt_config(sizes: Beit3Config, max_text_tokens: int) -> ViltConfig:
    """A ViLT of the given sizes (`transformers` ViltModel; BERT vocabulary)."""
    return ViltConfig(hidden_size=sizes.hidden_size, num_hidden_layers=sizes.layers,
                      num_attention_heads=sizes.heads, intermediate_size=sizes.ffn_size,
                      vocab_size=sizes.vocab_size, image_size=sizes.image_size, patch_size=sizes.patch_size,
                      max_position_embeddings=max_text_tokens)


class EvfSam(nn.Module):
    """Multimodal encoder + projector around a frozen `Sam2` (or SAM v1, `Sam1`).

    Attributes: sam, encoder (`Beit3` or `ViltModel`), projector (Linear-ReLU-Linear: D_in ->
    D_in -> C, D_in = the encoder width, twice that for late fusion), tokenizer.
    """

    def __init__(self, sam: Sam2 | Sam1, config: EvfConfig, fresh: bool = True) -> None:
        """fresh: a new model (seeds the text table per `config.text_embeddings`); False when
        weights are loaded next."""
        super().__init__()
        config.check()
        self.sam, self.config = sam, config
        self.tokenizer = load_tokenizer(config.tokenizer)
        sizes = config.beit3
        if config.encoder == "vilt":
            self.encoder: nn.Module = ViltModel(vilt_config(sizes, config.max_text_tokens), add_pooling_layer=False)
        else:
            self.encoder = Beit3(sizes)
        if fresh and config.encoder_weights:
            self.encoder.load_state_dict(load_beit3_weights(config.encoder_weights, sizes))
        elif fresh and config.text_embeddings == MINILM:
            seed_text_table(self.encoder.embeddings.text_embeddings.word_embeddings.weight if config.encoder == "vilt"
                            else self.encoder.text_embed.weight)
        width = sizes.hidden_size * (2 if config.fusion == "late" else 1)
        self.projector = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, sam.hidden_dim))
        for name, p in sam.named_parameters():
            trainable = ((config.train_prompt_encoder and name.startswith("prompt_encoder."))
                         or (config.train_mask_decoder and name.startswith("mask_decoder.")))
            p.requires_grad_(trainable)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- the prompt token --------------------------------------------------------------------
    def preprocess(self, images: Tensor) -> Tensor:
        """[B, H, W, 3] uint8 -> [B, 3, s, s] (`encoder_pixels` at the encoder's side s)."""
        return encoder_pixels(images, self.config.beit3.image_size, self.config.encoder_resize)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """ids [B, L] and padding [B, L] (True = padding), padded to the longest text."""
        return tokenize(self.tokenizer, texts, self.config.max_text_tokens, self.projector[0].weight.device)

    def fused(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        """The multimodal embedding [B, D_in] of B (image, text) pairs; images [B, H, W, 3] uint8."""
        ids, padding = self.tokenize(texts)
        pixels = self.preprocess(images.to(ids.device))
        c = self.config
        if c.encoder == "vilt":
            out = self.encoder(input_ids=ids, attention_mask=(~padding).long(), pixel_values=pixels,
                               pixel_mask=torch.ones(pixels.shape[0], *pixels.shape[2:], dtype=torch.long,
                                                     device=ids.device))
            return out.last_hidden_state[:, 0]  # [CLS]: the first text token, which attends to both
        if c.fusion == "early":
            return self.encoder(pixels, ids, padding, c.fusion_layers)[0][:, 0]  # image [CLS]
        text = self.encoder(ids=ids, text_padding=padding, num_layers=c.fusion_layers)[0][:, 0]  # text [CLS]
        if c.fusion == "text":
            return text
        image = self.encoder(pixels, num_layers=c.fusion_layers)[0][:, 0]
        return torch.cat([image, text], dim=-1)

    def prompt_embedding(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        """Projected [CLS]: [B, 1, C] sparse prompt tokens for B (image, text) pairs."""
        return self.projector(self.fused(images, texts))[:, None]

    # -- use -----------------------------------------------------------------------------------
    def stream(self, texts: Sequence[str], frame: int = 0,
               memory_dtype: torch.dtype = torch.bfloat16) -> EvfStream | EvfFrameStream:
        """Texts prompt frame `frame` and SAM 2 tracks after it; on SAM v1, every frame from `frame`."""
        if isinstance(self.sam, Sam1):
            return EvfFrameStream(self, texts, frame)
        return EvfStream(self, texts, frame, memory_dtype)

    @torch.inference_mode()
    def segment(self, image: np.ndarray, texts: Sequence[str]) -> FrameResult:
        """Segment one RGB image [H, W, 3] uint8 for each text (object ids 1..N)."""
        if isinstance(self.sam, Sam1):
            return EvfFrameStream(self, texts).push(image)[0]
        return EvfStream(self, texts, image_path=True).push(image)[0]

    def sam_preprocess(self) -> Preprocess:
        """How a frame becomes SAM's input (and masks go back), per `config.sam_input`.

        "official", as EVF-SAM's inference.py `sam_preprocess`: on SAM 2, the 8-bit image
        stretched to S x S by `F.interpolate` (bilinear, no antialiasing; the uint8 kernel
        rounds), low-res logits resized straight to the image size; on SAM v1, the longest side
        fit to S by PIL's bilinear resize of the 8-bit image (`refseg.sam.preprocess.SAM1`), padded
        at the bottom / right after normalisation, logits upsampled to S, cropped, resized.
        "refseg": the engine's SAM 2 rule. SAM v1 always follows its official predictor
        (`Sam1.preprocess`, which its training also uses)."""
        official = self.config.sam_input == "official"
        if isinstance(self.sam, Sam1):
            return SAM1
        return Preprocess(resize="stretch", antialias=False, resizer="uint8") if official else SAM2

    def video_preprocess(self) -> Preprocess:
        """How `stream` feeds frames to SAM 2: with `sam_input` "official", as the official
        video inference loads them (SAM 2's `load_video_frames`: the 8-bit frame stretched to
        S x S by PIL's `resize` with its default filter, bicubic; logits resized straight back);
        otherwise the image rule (`sam_preprocess`)."""
        if self.config.sam_input == "official" and not isinstance(self.sam, Sam1):
            return SAM2_VIDEO
        return self.sam_preprocess()

    # -- checkpoints -----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str], dtype: torch.dtype | None = None) -> None:
        """config.json + model.safetensors (SAM 2, encoder, projector), written to a temporary
        folder first; the tokenizer is referenced by `config.tokenizer`."""
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                 for k, v in self.state_dict().items()}
        backbone = "sam" if isinstance(self.sam, Sam1) else "sam2"
        with atomic_dir(directory) as tmp:
            save_file(state, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps({"evf": dataclasses.asdict(self.config),
                                                         backbone: self.sam.config.to_dict()}, indent=1))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> EvfSam:
        """Load a `save_pretrained` folder (weights converted to float32)."""
        path = Path(directory)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: not an EVF-SAM model folder (needs config.json and model.safetensors)")
        meta = json.loads((path / "config.json").read_text())
        config = EvfConfig(**dict(meta["evf"], beit3=Beit3Config(**meta["evf"]["beit3"])))
        sam = Sam1(SamConfig(**meta["sam"])) if "sam" in meta else Sam2(Sam2VideoConfig(**meta["sam2"]))
        model = cls(sam, config, fresh=False)
        state = {k: v.float() if v.is_floating_point() else v for k, v in read_safetensors(path / "model.safetensors").items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model.eval()


    @classmethod
    def from_official(cls, folder: str | os.PathLike[str],
                      sam_config: Sam2VideoConfig | SamConfig | None = None,
                      encoder_heads: int | None = None) -> EvfSam:
        """An official EVF-SAM or EVF-SAM2 checkpoint folder (weights `*.safetensors` or
        `pytorch_model*.bin` with `mm_extractor.beit3.*`, `text_hidden_fcs.*`, `visual_model.*`,
        and its tokenizer files). The backbone (SAM or SAM 2) and the sizes are read from the
        weights (SAM's from the published sizes, or `sam_config`; BEiT-3's head count, which the
        weights do not show, is width / 64 as in every published BEiT-3, or `encoder_heads`);
        missing or unexpected keys fail by name. The image goes to BEiT-3 as the official
        inference script prepares it (`encoder_resize="official"`)."""
        path = Path(folder)
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise ValueError(f"{path}: no *.safetensors or pytorch_model*.bin weights")
        state: dict[str, Tensor] = {}
        for file in files:
            state.update(read_safetensors(file) if file.suffix == ".safetensors"
                         else torch.load(file, map_location="cpu", weights_only=True))
        converted = convert_official_evf(state)
        sizes = beit3_config_from_state({k.removeprefix("encoder."): v for k, v in converted.items()
                                         if k.startswith("encoder.")})
        if encoder_heads is not None:
            sizes = dataclasses.replace(sizes, heads=int(encoder_heads))
        visual = {k.removeprefix("visual_model."): v for k, v in state.items() if k.startswith("visual_model.")}
        if _is_sam1(visual):
            sam: Sam2 | Sam1 = Sam1(sam_config if isinstance(sam_config, SamConfig) else sam1_config(
                visual["image_encoder.patch_embed.proj.weight"].shape[0]))
        else:
            sam = Sam2(sam_config if isinstance(sam_config, Sam2VideoConfig) else config_for_official(visual))
        config = EvfConfig(beit3=sizes, tokenizer=str(path), text_embeddings=None,
                           max_text_tokens=sizes.max_text_positions, encoder_resize="official", sam_input="official")
        model = cls(sam, config, fresh=False)
        missing, unexpected = model.load_state_dict(converted, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model.eval()


class EvfFrameStream:
    """EVF-SAM on SAM (v1): no memory, so every frame from `frame` on is segmented from the texts
    (the token read from that frame), one mask each. Clicks or a box (`add_prompt`) join the
    text on the next pushed frame. Same protocol as `EvfStream`."""

    def __init__(self, model: EvfSam, texts: Sequence[str], frame: int = 0) -> None:
        if not texts:
            raise ValueError("EvfFrameStream needs at least one text prompt")
        model.tokenize(texts)
        self.model, self.texts, self.frame = model, list(texts), int(frame)
        self.index = 0
        self.prompts: dict[int, list[Prompt]] = {}

    @property
    def memory_nbytes(self) -> int:
        """Bytes of memory kept between frames: none (SAM v1 has no memory)."""
        return 0

    def add_prompt(self, obj_id: int, prompt: Points | Box) -> None:
        if not 1 <= obj_id <= len(self.texts):
            raise ValueError(f"object {obj_id}: the texts give objects 1..{len(self.texts)}")
        if not isinstance(prompt, (Points, Box)):
            raise TypeError(f"EVF-SAM takes Points or Box with the text, got {type(prompt).__name__}")
        self.prompts.setdefault(obj_id, []).append(prompt)

    def push(self, frame: np.ndarray | Tensor) -> list[FrameResult]:
        index, self.index = self.index, self.index + 1
        image = torch.as_tensor(np.ascontiguousarray(frame))
        height, width = image.shape[:2]
        if index < self.frame:
            return [FrameResult(index, height, width, {})]
        sam = self.model.sam
        assert isinstance(sam, Sam1)
        tokens = self.model.prompt_embedding(image[None].expand(len(self.texts), -1, -1, -1), self.texts)
        rule, size = self.model.sam_preprocess(), sam.image_size
        pixels = rule.pixels(image[None].to(tokens.device), size)
        embed = sam.encode(pixels)
        resized = rule.content(height, width, size)
        scale = torch.tensor([resized[1] / width, resized[0] / height], device=tokens.device)
        objects = {}
        for obj_id in range(1, len(self.texts) + 1):
            prompts = self.prompts.pop(obj_id, [])
            clicks = [p for p in prompts if isinstance(p, Points)]
            boxes = [p for p in prompts if isinstance(p, Box)]
            points = labels = box = None
            if clicks:
                points = torch.tensor(np.concatenate([p.xy for p in clicks]), dtype=torch.float32,
                                      device=tokens.device)[None] * scale
                labels = torch.tensor(np.concatenate([p.labels for p in clicks]), device=tokens.device)[None]
            if boxes:
                b = boxes[-1]
                box = torch.tensor([[b.x0, b.y0, b.x1, b.y1]], device=tokens.device) * scale.repeat(2)
            low, iou = sam.decode(embed, points, labels, box, extra=tokens[obj_id - 1 : obj_id])
            logits = rule.logits(low.float(), height, width, size)[0, 0].cpu()
            # SAM has no presence head: the object is present where any pixel is foreground
            objects[obj_id] = ObjectResult(mask=(logits > 0).numpy(), logits=logits, low_res_logits=low[0, 0].cpu(),
                                           score=float(logits.max()), iou=float(iou[0, 0]))
        return [FrameResult(index, height, width, objects)]

    def flush(self) -> list[FrameResult]:
        return []

    def __enter__(self) -> EvfFrameStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.prompts.clear()


class EvfHooks(MethodHooks):
    """Gives each object's projected token on its prompt frame (set by `EvfStream` per frame).
    `preprocess`: the model's SAM input rule; `presence_gate` False keeps the decoder's masks
    whatever the occlusion logit says (EVF-SAM's official image path).

    fill_holes: the engine's hole filling of output masks and of the text frame's memory mask
        (`fill_hole_area=8` in the official EVF-SAM2 video predictor; its image path fills
        nothing: 0).
    binarize_text_memory: the text frame's memory is made from its mask thresholded at 0 (as
        SAM 2 makes the memory of a frame the user prompted), not from its sigmoid.
    """

    def __init__(self, preprocess: Preprocess = SAM2, presence_gate: bool = True, fill_holes: int = 0,
                 binarize_text_memory: bool = False) -> None:
        self.tokens: dict[int, Tensor] = {}  # obj_id -> [1, 1, C], for the frame being pushed
        self.preprocess = preprocess
        self.presence_gate = presence_gate
        self.fill_holes = int(fill_holes)
        self.binarize_text_memory = binarize_text_memory

    def prompt_tokens(self, frame: int, obj_id: int, features: ImageFeatures, embed: Tensor,
                      readout: MemoryReadout | None = None, has_points: bool = False) -> Tensor | None:
        return self.tokens.get(obj_id)

    def memory_mask(self, frame: int, obj_id: int, features: ImageFeatures, output: DecoderOutput) -> Tensor:
        """On the text frame of the official video inference: its mask (holes filled by the
        engine, as on any prompted frame), binarised. SAM 2's predictor consolidates a prompted
        frame's output and encodes its memory with `is_mask_from_pts=True`, which
        `binarize_mask_from_pts_for_mem_enc` thresholds; logits of +-1e4 give the engine's
        sigmoid exactly 1 and 0. Tracked frames: the decoder's mask."""
        if not (self.binarize_text_memory and obj_id in self.tokens):
            return output.high_res
        return torch.where(output.high_res > 0, 1e4, -1e4).to(output.high_res.dtype)


class EvfStream:
    """Segment and track one object per text (ids 1..N): the texts prompt frame `frame`, the
    engine tracks every later frame through memory. Clicks or a box given with `add_prompt`
    join the text token on that frame."""

    def __init__(self, model: EvfSam, texts: Sequence[str], frame: int = 0,
                 memory_dtype: torch.dtype = torch.bfloat16, image_path: bool = False) -> None:
        """image_path: one image, no tracking (`EvfSam.segment`): with `sam_input` "official"
        the masks are not gated by the occlusion logit, as in the official image inference."""
        if not texts:
            raise ValueError("EvfStream needs at least one text prompt")
        model.tokenize(texts)  # bad texts fail here, before any frame
        self.model, self.texts, self.frame = model, list(texts), int(frame)
        official = model.config.sam_input == "official"
        if image_path:
            self.hooks = EvfHooks(model.sam_preprocess(), presence_gate=not official)
        else:  # the official video inference: SAM 2's video predictor around the text frame
            self.hooks = EvfHooks(model.video_preprocess(), fill_holes=VIDEO_FILL_HOLE_AREA if official else 0,
                                  binarize_text_memory=official)
        self.session = Session(model.sam, self.hooks, memory_dtype=memory_dtype)
        for obj_id in range(1, len(texts) + 1):
            self.session.add_object(obj_id, self.frame)

    @property
    def memory_nbytes(self) -> int:
        """Bytes of the memory bank (bounded)."""
        return self.session.bank.nbytes

    def add_prompt(self, obj_id: int, prompt: Points | Box) -> None:
        """Clicks or a box for object `obj_id` on the text's frame, used together with the text."""
        if not 1 <= obj_id <= len(self.texts):
            raise ValueError(f"object {obj_id}: the texts give objects 1..{len(self.texts)}")
        if not isinstance(prompt, (Points, Box)):
            raise TypeError(f"EVF-SAM takes Points or Box with the text, got {type(prompt).__name__}")
        self.session.add_prompt(obj_id, prompt, self.frame)

    def push(self, frame: np.ndarray | Tensor) -> list[FrameResult]:
        """The frame's result, as a one-element list (the stream protocol `SamwiseStream` shares:
        results come back as they are ready)."""
        if self.session.frame_index == self.frame:
            image = torch.as_tensor(np.ascontiguousarray(frame))[None].expand(len(self.texts), -1, -1, -1)
            tokens = self.model.prompt_embedding(image, self.texts)
            self.hooks.tokens = {i: tokens[i - 1 : i] for i in range(1, len(self.texts) + 1)}
        try:
            result = self.session.push(frame)
        finally:
            self.hooks.tokens = {}
        return [result]

    def flush(self) -> list[FrameResult]:
        """Nothing is buffered: every result was returned by `push`."""
        return []

    def __enter__(self) -> EvfStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.tokens = {}


# -- official checkpoints ------------------------------------------------------------------------
def _is_sam1(visual: dict[str, Tensor]) -> bool:
    """SAM (v1) layout: a ViT `image_encoder.blocks.*`; SAM 2's is Hiera `image_encoder.trunk.*`."""
    return any(k.startswith("image_encoder.blocks.") for k in visual)


# EVF-SAM's SAM 2 fork names the memory fuser's layer scale `weight` (official SAM 2: `gamma`;
# model/segment_anything_2/sam2/modeling/memory_encoder.py:97 of hustvl/EVF-SAM).
_FUSER_SCALE = re.compile(r"^(memory_encoder\.fuser\.layers\.\d+)\.weight$")


def convert_official_evf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """EVF-SAM / EVF-SAM2 checkpoint names -> `EvfSam` names: `mm_extractor.beit3.*`
    (torchscale BEiT-3) -> `encoder.*`, `text_hidden_fcs.0.{0,2}.*` -> `projector.{0,2}.*`,
    `visual_model.*` (the official SAM or SAM 2 layout) -> `sam.*`. Unknown keys raise
    ValueError naming them."""
    out = {f"encoder.{k}": v for k, v in convert_official_beit3(state, "mm_extractor.beit3.").items()}
    visual = {k.removeprefix("visual_model."): v for k, v in state.items() if k.startswith("visual_model.")}
    if not _is_sam1(visual):
        visual = {_FUSER_SCALE.sub(r"\1.gamma", k): v for k, v in visual.items()}
    convert = convert_official_sam1 if _is_sam1(visual) else convert_official_state_dict
    out.update({f"sam.{k}": v for k, v in convert(visual).items()})
    for key, value in state.items():
        if key.startswith(("mm_extractor.beit3.", "visual_model.")):
            continue
        if key.startswith("text_hidden_fcs.0."):
            out["projector." + key.removeprefix("text_hidden_fcs.0.")] = value
        else:
            raise ValueError(f"{key}: not an EVF-SAM2 checkpoint key")
    return out
