"""SAM2-LOVE (Wang et al., CVPR 2025): segment what is said and heard. Frozen audio, text and
frame encoders; projections (Eq. 1); a fusion transformer (Eq. 2) run once per frame over
[seg; audio; text; frame; history] (Eq. 3-4) with the [seg] token propagated from frame to frame;
the final [seg] prompts SAM 2 on the first frame only, and SAM 2's memory tracks the rest.

Parameters (no official code exists; the names follow what the paper's README says it builds
on): `audio_proj.*`, `text_proj.*`, `visual_proj.*` (Eq. 1, Ref-AVS's names), `fusion.*` (Eq. 2),
`tokens.*` (the learnt [seg], [aud], [vis] and the type / time embeddings), `motion_proj.*`
(refseg's motion cue, `LoveConfig.motion`; absent when it is off), `text_hidden_fcs.0.*`
(EVF-SAM's projector of the final [seg] to SAM 2's prompt width: Linear(D, D), ReLU, Linear(D,
256)), `sam.*` (SAM 2 in refseg's layout; `refseg.sam.checkpoint` converts the official
`visual_model.*` names), `audio_encoder.*` (torchvggish layout) and `frame_encoder.model.*`
(`transformers` ViT). The text encoder is not stored: `config.text` names it.

Trainable (Sec. 3.3): the projections, the fusion transformer, the tokens, `text_hidden_fcs`
and SAM 2's prompt encoder and mask decoder (each switchable); frozen: the three encoders and
SAM 2's image encoder and memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import Sam2VideoConfig

from refseg.encoders.audio import SAMPLE_RATE, SYNTH_VGGISH, VGGish, VGGishConfig
from refseg.encoders.text import MINILM, TextEncoder
from refseg.encoders.vit import FrameViT, VitSizes
from refseg.io.atomic import atomic_dir
from refseg.io.audio import fit_to_frames, frame_times, resample
from refseg.methods.sam2_love.fusion import FusionTransformer, projection
from refseg.methods.sam2_love.propagation import HISTORY, Chain, TokenPropagation
from refseg.prompts import Audio
from refseg.sam.checkpoint import read_safetensors
from refseg.sam.model import Sam2

PROMPTS = ("token", "mean")
# the decoder's projections of the two high-resolution levels belong to the frame's image features
# (`refseg.sam.image_encoder` applies them once per frame), which training keeps frozen and cached:
# they stay as SAM 2 trained them even where the rest of the mask decoder trains
IMAGE_PATH = ("mask_decoder.conv_s0.", "mask_decoder.conv_s1.")


@dataclass
class LoveConfig:
    """width, layers, heads, mlp_ratio: the fusion transformer (paper: 1024 wide, 6 layers).
    max_frames: N, the frames the token chain reads, spread evenly over the video (Ref-AVS: 10).
    seg_tokens: K propagated [seg] tokens (Tab. 4; the first prompts SAM 2).
    history: [his] with the current frame ("current", Eq. 4), without it ("previous", Fig. 4) or
        none ("off", Tab. 2's baseline).
    prompt: "token" (the propagated [seg]) or "mean" (Tab. 5's mean of one pass over all frames).
    type_embeddings, time_embeddings, space: refseg's modality-type, frame-position and
        patch-position embeddings ("sam", "learnt" or "off"; `propagation` module docstring).
    text: the frozen text encoder ("minilm", or a BERT / RoBERTa folder such as DistilRoBERTa);
        max_text_tokens: Ref-AVS's 25.
    audio: the VGGish sizes; vit: the frame ViT's.
    audio_encoder, frame_encoder: pretrained weights a new model starts from (a VGGish folder
        or torchvggish .pth; a ViT folder); None: random (tests).
    train_prompt_encoder, train_mask_decoder: Tab. 6's SAM 2 rows (the decoder's high-resolution
        projections stay frozen with the image features: `IMAGE_PATH`).
    multimask: SAM 2 decodes three candidates and keeps the best predicted IoU (False: one mask,
        as EVF-SAM's SAM 2 prompt).
    motion: refseg's addition, not the paper's. Each chain frame's patch tokens also get
        W_m (p_i - p_{i-1}): the change of its frozen patch features since the previous chain
        frame (zero at frame 0), through a bias-free projection W_m [D, d_V] that starts at zero.
        The paper's chain sees one frame's patches a step, so telling which of two look-alikes
        sounds needs positions carried from step to step in the [seg]; with the change in view,
        "what moves while the high sound plays" is on the patches of that step. Starting at zero,
        a model with it computes what the same weights without it compute, so it can start from
        a checkpoint trained without it (`additions_over`)."""

    width: int = 256
    layers: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    max_frames: int = 12
    seg_tokens: int = 1
    history: str = "current"
    prompt: str = "token"
    type_embeddings: bool = True
    time_embeddings: bool = True
    space: str = "sam"
    text: str = MINILM
    max_text_tokens: int = 25
    audio: VGGishConfig = field(default_factory=lambda: dataclasses.replace(SYNTH_VGGISH))
    vit: VitSizes = field(default_factory=VitSizes)
    audio_encoder: str | None = None
    frame_encoder: str | None = None
    train_prompt_encoder: bool = True
    train_mask_decoder: bool = True
    multimask: bool = False
    motion: bool = False

    def check(self) -> None:
        if self.history not in HISTORY:
            raise ValueError(f"sam2_love.history: expected one of {', '.join(HISTORY)}, got {self.history!r}")
        if self.prompt not in PROMPTS:
            raise ValueError(f"sam2_love.prompt: expected one of {', '.join(PROMPTS)}, got {self.prompt!r}")
        if self.prompt == "mean" and self.seg_tokens != 1:
            raise ValueError("sam2_love.seg_tokens: the mean prompt has no [seg] token (set 1)")
        if self.max_frames < 1:
            raise ValueError(f"sam2_love.max_frames: need at least 1, got {self.max_frames}")


def chain_frames(num_frames: int, max_frames: int) -> np.ndarray:
    """Indices of the N = min(T, max_frames) frames the token chain reads, spread evenly over
    the T frames from the first to the last."""
    if num_frames < 1:
        raise ValueError("chain_frames: the video has no frame")
    count = min(num_frames, max_frames)
    return np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64)


def clip_fps(num_frames: int, audio: Audio) -> float:
    """The frame rate that spreads `num_frames` frames over the sound (a dataset's frame folder
    and its audio file: Ref-AVS's 10 frames over 10 s give 1 fps; SynthRef's give 8)."""
    if audio.seconds <= 0:
        raise ValueError("clip_fps: the audio is empty")
    return num_frames / audio.seconds


@torch.no_grad()
def patch_places(sam: Sam2, grid: int) -> Tensor:
    """[grid * grid, C] SAM 2's prompt-encoder encoding (random Fourier features) of the centre of
    each patch of a grid x grid layout over the frame, row by row, as a click there is encoded."""
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) * sam.image_size / grid
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], -1)[None, None]  # [1, 1, hw, 2] pixels of SAM's input
    size = (sam.image_size, sam.image_size)
    return sam.prompt_encoder.shared_embedding(points, size)[0, 0].float()


@dataclass
class ClipFeatures:
    """The frozen encoders' outputs for the N chain frames of a clip (shared by all its
    expressions): audio [N, d_A] (one VGGish embedding centred on each frame), cls [N, d_V],
    patches [N, hw, d_V]."""

    audio: Tensor
    cls: Tensor
    patches: Tensor


class Sam2Love(nn.Module):
    """See the module docstring. `prompt_tokens(clip, texts)` gives SAM 2's prompt [B, 1, C]."""

    def __init__(self, sam: Sam2, config: LoveConfig, text: TextEncoder, fresh: bool = True) -> None:
        """fresh: a new model (loads `config.audio_encoder` / `config.frame_encoder` when set);
        False when every weight is loaded next."""
        super().__init__()
        config = dataclasses.replace(config)  # loading the encoders records their sizes in it
        config.check()
        self.sam, self.config, self.text = sam, config, text
        if fresh and config.audio_encoder:
            self.audio_encoder = VGGish.from_pretrained(config.audio_encoder)
            config.audio = dataclasses.replace(self.audio_encoder.config)
        else:
            self.audio_encoder = VGGish(config.audio)
        if fresh and config.frame_encoder:
            self.frame_encoder = FrameViT.from_pretrained(config.frame_encoder)
            config.vit = VitSizes.of(self.frame_encoder.model.config)
        else:
            self.frame_encoder = FrameViT.new(config.vit)
        d = config.width
        self.audio_proj = projection(config.audio.dim, d)
        self.text_proj = projection(text.hidden_size, d)
        self.visual_proj = projection(self.frame_encoder.hidden_size, d)
        self.fusion = FusionTransformer(d, config.layers, config.heads, config.mlp_ratio)
        self.tokens = TokenPropagation(d, config.max_frames, patch_places(sam, self.frame_encoder.grid),
                                       config.seg_tokens, config.history, config.type_embeddings,
                                       config.time_embeddings, config.space)
        self.text_hidden_fcs = nn.ModuleList([nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, sam.hidden_dim))])
        if config.motion:  # zero without drawing from the random stream: every other module starts as without it
            self.motion_proj = nn.utils.skip_init(nn.Linear, self.frame_encoder.hidden_size, d, bias=False)
            nn.init.zeros_(self.motion_proj.weight)
        else:
            self.motion_proj = None
        for module in (self.audio_encoder, self.frame_encoder, self.text):
            module.requires_grad_(False).eval()
        for name, p in sam.named_parameters():
            p.requires_grad_((config.train_prompt_encoder and name.startswith("prompt_encoder."))
                             or (config.train_mask_decoder and name.startswith("mask_decoder.")
                                 and not name.startswith(IMAGE_PATH)))

    def train(self, mode: bool = True) -> Sam2Love:
        super().train(mode)
        for module in (self.audio_encoder, self.frame_encoder, self.text):
            module.eval()  # frozen: no dropout
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def additions_over(self, other: dict) -> tuple[str, ...]:
        """Name prefixes of this model's parameters that a model of config `other` (a
        `LoveConfig` as a dict, e.g. a checkpoint's config.json "sam2_love") lacks and that start
        where they add nothing, so that this model may start from that checkpoint."""
        return ("motion_proj.",) if self.config.motion and not other.get("motion", False) else ()

    def visual_tokens(self, patches: Tensor, previous: Tensor | None) -> Tensor:
        """Projected patch tokens (Eq. 1) [B, N, hw, D] of frozen patches [B, N, hw, d_V], with
        the motion cue when `config.motion` (`previous` [B, hw, d_V]: the chain frame before the
        first of `patches`, None at frame 0)."""
        tokens = self.visual_proj(patches)
        if self.motion_proj is None:
            return tokens
        before = torch.cat([patches[:, :1] if previous is None else previous[:, None], patches[:, :-1]], 1)
        return tokens + self.motion_proj(patches - before)

    @property
    def device(self) -> torch.device:
        return self.text_hidden_fcs[0][0].weight.device

    # -- frozen encoders ---------------------------------------------------------------------
    @torch.no_grad()
    def encode_frames(self, frames: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """frames [N, H, W, 3] uint8 -> (cls [N, d_V], patches [N, hw, d_V])."""
        return self.frame_encoder(torch.as_tensor(np.asarray(frames)))

    @torch.no_grad()
    def encode_audio(self, audio: Audio | None, times: np.ndarray, num_frames: int, fps: float) -> Tensor:
        """One embedding per time (seconds) [N, d_A] of the clip's sound, resampled to 16 kHz and
        fit to `num_frames` frames at `fps` (shorter: silence, with a warning); None: silence."""
        if audio is None:
            samples = np.zeros(int(round(num_frames / fps * SAMPLE_RATE)), np.float32)
        else:
            samples = fit_to_frames(resample(audio, SAMPLE_RATE), num_frames, fps).samples
        return self.audio_encoder.embed(samples, times)

    def clip_features(self, frames: Sequence[np.ndarray] | np.ndarray, audio: Audio | None, fps: float) -> ClipFeatures:
        """The frozen features of a whole video's frames [T, H, W, 3] (only the chain frames are
        encoded) and its sound."""
        index = chain_frames(len(frames), self.config.max_frames)
        cls, patches = self.encode_frames(np.stack([frames[i] for i in index]))
        return ClipFeatures(self.encode_audio(audio, frame_times(len(frames), fps)[index], len(frames), fps), cls,
                            patches)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token states [B, P, d_T] and padding [B, P] (True = padding) of the frozen text encoder."""
        tokens = self.text.tokenize(list(texts), self.config.max_text_tokens)
        return self.text(tokens), tokens.mask == 0

    # -- the prompt ----------------------------------------------------------------------------
    def seg_chain(self, clip: ClipFeatures | list[ClipFeatures], text: Tensor,
                  text_padding: Tensor) -> Chain:
        """Eq. 1-4 for B expressions: clip (one, shared; or one per expression), text [B, P, d_T]
        -> the `Chain` (final [seg] [B, K, D], or the mean prompt [B, 1, D])."""
        batch = text.shape[0]
        clips = clip if isinstance(clip, list) else [clip] * batch
        device = self.device
        audio = self.audio_proj(torch.stack([c.audio for c in clips]).to(device))
        cls = self.visual_proj(torch.stack([c.cls for c in clips]).to(device))
        patches = self.visual_tokens(torch.stack([c.patches for c in clips]).to(device), None)
        words = self.text_proj(text.to(device))
        padding = text_padding.to(device)
        if self.config.prompt == "mean":
            return Chain(self.tokens.mean(self.fusion, audio, words, padding, cls, patches))
        return self.tokens(self.fusion, audio, words, padding, cls, patches)

    def prompt_tokens(self, clip: ClipFeatures | list[ClipFeatures], text: Tensor, text_padding: Tensor) -> Tensor:
        """SAM 2's sparse prompt [B, 1, C]: the first final [seg] through `text_hidden_fcs`."""
        return self.text_hidden_fcs[0](self.seg_chain(clip, text, text_padding).final[:, :1])

    # -- use -------------------------------------------------------------------------------------
    def stream(self, texts: Sequence[str], audio: Audio | None = None, fps: float | None = None,
               memory_dtype: torch.dtype = torch.bfloat16):
        """A `LoveStream`: push every frame, then `flush()` returns all results (the method reads
        the whole clip, audio and frames, before its first mask). audio None: silence (then give
        fps); fps None: the frames spread over the audio."""
        from refseg.methods.sam2_love.stream import LoveStream

        return LoveStream(self, texts, audio, fps, memory_dtype)

    def online_stream(self, texts: Sequence[str], audio: Audio | None, fps: float, stride: int | None = None,
                      threshold: float = 0.9, memory_dtype: torch.dtype = torch.bfloat16):
        """The streaming alternative (`LoveOnlineStream`): a result per pushed frame from what has
        been seen and heard so far, re-prompting when the token turns; not the paper's method."""
        from refseg.methods.sam2_love.stream import LoveOnlineStream

        return LoveOnlineStream(self, texts, audio, fps, stride, threshold, memory_dtype)

    def meta(self) -> dict[str, object]:
        return {"sam2_love": dataclasses.asdict(self.config), "sam2": self.sam.config.to_dict()}

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """config.json + model.safetensors (everything but the text encoder, which `config.text`
        names), written to a temporary folder first."""
        state = {k: v.contiguous() for k, v in self.state_dict().items() if not k.startswith("text.")}
        with atomic_dir(directory) as tmp:
            save_file(state, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(self.meta(), indent=1))

    @classmethod
    def from_meta(cls, meta: dict) -> Sam2Love:
        fields = dict(meta["sam2_love"])
        fields["audio"] = VGGishConfig(**fields["audio"])
        fields["vit"] = VitSizes(**fields["vit"])
        config = LoveConfig(**fields)
        return cls(Sam2(Sam2VideoConfig(**meta["sam2"])), config, TextEncoder.from_pretrained(config.text), fresh=False)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> Sam2Love:
        """A `save_pretrained` folder (or a training run's final/ or checkpoint folder)."""
        path = Path(directory)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: not a SAM2-LOVE model folder (needs config.json and model.safetensors)")
        meta = json.loads((path / "config.json").read_text())
        if "sam2_love" not in meta:
            raise ValueError(f"{path}: config.json describes no SAM2-LOVE model (no 'sam2_love' entry)")
        model = cls.from_meta(meta)
        state = {k: v.float() if v.is_floating_point() else v for k, v in read_safetensors(path / "model.safetensors").items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("text.")]
        if missing or unexpected:
            raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model.eval()
