"""SAMWISE (Cuttano et al., CVPR 2025): text-prompted streaming video segmentation on a frozen
SAM 2 and a frozen text encoder, through the engine's hooks.

Per clip of T frames (`SamwiseHooks`):
  1. image encoder: after each of the last three Hiera stages, the text encoder runs up to its
     paired layer and a CMT adapter adapts both (Eq. 2-6, `adapter.py`); after the last stage
     the remaining text layers run and the prompt rho is built (Eq. 1, `prompt.py`).
  3. prompt tokens: rho on every frame, after SAM 2's two "not a point" tokens, on the
     memory-conditioned features (Eq. 7); one mask per frame.
  5. memory: the Conditional Memory Encoder may fuse the memory-less mask into what the memory
     encoder sees (Eq. 8-10, `cme.py`).
Several expressions are tracked by one `SamwiseStream`, one engine session (memory bank) each:
the adapters make the image features depend on the text, so each expression has its own. The
stream encodes a clip once for a batch of expressions (`ExpressionBatch`: the Hiera stages
before the first adapter run once, the adapted stages on one copy of the clip per expression)
and hands each session its copy's features.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import Sam2VideoConfig

from refseg.encoders.text import MINILM, TextEncoder
from refseg.engine.hooks import MethodHooks
from refseg.engine.session import FrameResult, Session
from refseg.io.atomic import atomic_dir
from refseg.methods.samwise.adapter import CrossModalTemporalAdapter
from refseg.methods.samwise.cme import ConditionalMemoryEncoder, fuse_masks, memory_less_token, switch_labels
from refseg.methods.samwise.prompt import TextPrompt, verb_token_mask
from refseg.sam.image_encoder import ImageFeatures
from refseg.sam.mask_decoder import DecoderOutput, decode_masks
from refseg.sam.checkpoint import load_sam2, read_safetensors
from refseg.sam.memory import MemoryReadout
from refseg.sam.model import Sam2
from refseg.sam.preprocess import SAM2, Preprocess
from refseg.sam.prompt_encoder import embed_prompts


CME_POLICIES = ("learned", "never", "always", "random")
RULES = ("official", "refseg")


@dataclass(frozen=True)
class SamwisePreprocess(Preprocess):
    """The official evaluation input (`VideoEvalDataset`): torchvision's `Resize(S - 4,
    max_size=S)` on the PIL image, i.e. PIL bilinear on the 8-bit frame to torchvision's size
    (the shorter side to S - 4 and the longer to int((S - 4) * long / short); when that exceeds
    S, the longer to S and the shorter to int(S * (S - 4) / new_long), truncated twice: 120 x 215
    becomes 571 x 1024, not the rounded 572), then normalised and padded bottom / right."""

    resize: str = "fit"
    resizer: str = "pil"

    def content(self, height: int, width: int, size: int) -> tuple[int, int]:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size - 4, int((size - 4) * long / short)
        if new_long > size:
            new_short, new_long = int(size * new_short / new_long), size
        return (new_long, new_short) if width <= height else (new_short, new_long)


SAMWISE_PREPROCESS = SamwisePreprocess()


@dataclass
class SamwiseConfig:
    """What SAMWISE adds to SAM 2 and a text encoder.

    text_encoder: "minilm" (offline default), a local folder or a hub id (frozen, not saved).
    text_layers: text layer after which each of the three adapters runs (default: the ends of
        the encoder's thirds, e.g. 2, 4, 6 for MiniLM-L6; the official RoBERTa pairing is 4, 8, 12).
    adapters, hsa, vta, tva, motion, cme: components (all on = the paper; the switches give
        the Table 2 ablations).
    patches: HSA sub-volume side per adapter (P = 8, 4, 2).
    cme_weight: lambda of Eq. 10; cme_window: the CME decides on frames after the first
        `cme_window`, at most once every `cme_window - 1` frames (official schedule).
    cme_policy: when the memory-less mask is fused into memory (the paper's Table 3, bottom):
        "learned" (the CME decides; nothing without `cme`), "never", "always" (every frame
        after the first `cme_window`) or "random" (each of those frames with probability 1/4,
        seeded per expression). The last three need no CME; while the CME trains, "learned".
    rules: "official" (the official SAMWISE evaluation: frames resized by torchvision's
        `Resize(S - 4, max_size=S)` and padded, the first frame an ordinary memory that ages
        out after 6 frames, no stability fallback) or "refseg" (SAM 2's rules: frames
        stretched to S x S, the first frame a prompted memory kept for the whole stream, the
        stability fallback on). Models trained by refseg before the official rules were known
        (the embedded default among them) were trained, and are measured, with "refseg".
    """

    text_encoder: str = MINILM
    text_layers: list[int] | None = None
    adapter_dim: int = 256
    heads: int = 8
    patches: list[int] = field(default_factory=lambda: [8, 4, 2])
    adapters: bool = True
    hsa: bool = True
    vta: bool = True
    tva: bool = True
    motion: bool = True
    cme: bool = True
    cme_weight: float = 10.0
    cme_window: int = 4
    cme_policy: str = "learned"
    clip_len: int = 8
    rules: str = "official"


class Samwise(nn.Module):
    """SAMWISE modules around a frozen `Sam2` and a frozen `TextEncoder`."""

    def __init__(self, sam: Sam2, text: TextEncoder, config: SamwiseConfig) -> None:
        super().__init__()
        self.sam, self.text, self.config = sam, text, config
        layers = config.text_layers or [round(text.num_layers * k / 3) for k in (1, 2, 3)]
        if len(layers) != 3 or sorted(layers) != layers or layers[-1] > text.num_layers or layers[0] < 1:
            raise ValueError(f"text_layers must be three increasing layers in 1..{text.num_layers}, got {layers}")
        self.text_layers = layers
        if config.rules not in RULES:
            raise ValueError(f"rules must be one of {', '.join(RULES)}, got {config.rules!r}")
        if config.cme_policy not in CME_POLICIES:
            raise ValueError(f"cme_policy must be one of {', '.join(CME_POLICIES)}, got {config.cme_policy!r}")
        dims = list(sam.config.vision_config.backbone_config.embed_dim_per_stage)
        self.num_stages = len(dims)
        self.adapters = nn.ModuleList([
            CrossModalTemporalAdapter(dims[self.num_stages - 3 + k], text.hidden_size, config.adapter_dim,
                                      config.patches[k], config.heads, config.hsa, config.vta, config.tva)
            for k in range(3)
        ]) if config.adapters else nn.ModuleList()
        self.prompt = TextPrompt(text.hidden_size, sam.hidden_dim, config.motion)
        self.cme = ConditionalMemoryEncoder(sam.hidden_dim) if config.cme else None
        for p in [*sam.parameters(), *text.parameters()]:
            p.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def hooks(self, text: str) -> SamwiseHooks:
        return SamwiseHooks(self, text)

    def stream(self, texts: list[str], memory_dtype: torch.dtype = torch.bfloat16, batch: int = 4) -> SamwiseStream:
        return SamwiseStream(self, texts, memory_dtype, batch)

    # -- checkpoints -----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str], dtype: torch.dtype | None = None,
                        sam2_source: str | None = None) -> None:
        """config.json + model.safetensors, written to a temporary folder first. The frozen text
        encoder is referenced by `config.text_encoder`, not copied; so is the frozen SAM 2 when
        `sam2_source` names where it loads from (`load_sam2`, e.g. "synth": the embedded default
        stores only SAMWISE's own modules), otherwise its weights are stored too."""
        skip = ("text.", "sam.") if sam2_source else ("text.",)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                 for k, v in self.state_dict().items() if not k.startswith(skip)}
        meta = {"samwise": dataclasses.asdict(self.config)}
        meta.update({"sam2_source": sam2_source} if sam2_source else {"sam2": self.sam.config.to_dict()})
        with atomic_dir(directory) as tmp:
            save_file(state, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], text: TextEncoder | None = None) -> Samwise:
        """Load a `save_pretrained` folder (weights converted to float32)."""
        path = Path(directory)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: not a SAMWISE model folder (needs config.json and model.safetensors)")
        meta = json.loads((path / "config.json").read_text())
        config = SamwiseConfig(**meta["samwise"])
        source = meta.get("sam2_source")
        sam = load_sam2(source) if source else Sam2(Sam2VideoConfig(**meta["sam2"]))
        model = cls(sam, text if text is not None else TextEncoder.from_pretrained(config.text_encoder), config)
        state = {k: v.float() if v.is_floating_point() else v for k, v in read_safetensors(path / "model.safetensors").items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("text.", "sam.") if source else "text.")]
        if missing or unexpected:
            raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model.eval()


class ExpressionBatch:
    """Step 1 for E expressions on one clip: the text encoder and the CMT adapters run beside the
    Hiera stages (`encode_stage`, a `StageHook`); from the first adapted stage on, the features
    hold one copy of the clip per expression ([E T, h, w, C], expression-major), each adapted by
    its expression alone. After the last stage `rho` [E, 1, C] holds each expression's prompt.
    Texts are padded to the longest; padding is masked everywhere, so an expression's features
    and prompt are those it gets on its own (to float rounding)."""

    def __init__(self, model: Samwise, texts: list[str]) -> None:
        self.model = model
        self.tokens = model.text.tokenize(texts)
        self.verbs = verb_token_mask(self.tokens)
        self.sentence = model.text.sentence_index(self.tokens)
        self.padding = self.tokens.mask == 0
        self.rho: Tensor | None = None  # [E, 1, C] prompts of the current clip
        self._hidden: Tensor | None = None
        self._bias: Tensor | None = None
        self._done = 0

    def __len__(self) -> int:
        return self.tokens.ids.shape[0]

    def encode_stage(self, stage: int, features: Tensor) -> Tensor:
        m = self.model
        if stage == 0:  # a new clip: the text is encoded again, alongside the frames
            self._hidden = m.text.embed(self.tokens)
            self._bias = m.text.attention_bias(self.tokens, self._hidden.dtype)
            self._done = 0
        k = stage - (m.num_stages - 3)
        if m.adapters and k >= 0:
            if k == 0 and len(self) > 1:  # one copy of the clip per expression from here on
                features = features.repeat(len(self), 1, 1, 1)
            self._run_text(m.text_layers[k])
            features, self._hidden = m.adapters[k](features, self._hidden, self.padding)
        if stage == m.num_stages - 1:
            self._run_text(m.text.num_layers)
            self.rho = m.prompt(self._hidden, self.sentence, self.verbs)
        return features

    def _run_text(self, layer: int) -> None:
        self._hidden = self.model.text.run_layers(self._hidden, self._bias, self._done, layer)
        self._done = layer


class SamwiseHooks(MethodHooks):
    """The engine hooks of one expression. `switches` counts the frames on which the CME fused
    the memory-less mask (Eq. 10). Set `train_cme` to record the CME's decisions and their
    self-supervised labels in `cme_records` (training)."""

    multimask = False
    # the official model: no multimask fallback on unstable masks, the first frame an ordinary
    # memory that ages out (no conditioning frame), frames resized as its evaluation does, no
    # hole filling (neither rule set fills holes)
    stability_fallback = False
    prompted_start = False
    fill_holes = 0
    preprocess = SAMWISE_PREPROCESS

    def __init__(self, model: Samwise, text: str) -> None:
        self.model = model
        self.clip_len = model.config.clip_len
        if model.config.rules == "refseg":
            self.stability_fallback, self.prompted_start, self.preprocess = None, True, SAM2
        self.text = ExpressionBatch(model, [text])
        self.rho: Tensor | None = None  # [1, 1, C] prompt of the current clip (set by `encode_stage` or a stream)
        self.last_switch = 0
        self.switches = 0
        self.train_cme = False
        self.cme_records: list[tuple[Tensor, Tensor]] = []
        self._draws = torch.Generator().manual_seed(0)  # the "random" CME policy

    # step 1 ---------------------------------------------------------------------------------------
    def encode_stage(self, stage: int, features: Tensor) -> Tensor:
        features = self.text.encode_stage(stage, features)
        if stage == self.model.num_stages - 1:
            self.rho = self.text.rho
        return features

    # step 3 ---------------------------------------------------------------------------------------
    def prompt_tokens(self, frame: int, obj_id: int, features: ImageFeatures, embed: Tensor,
                      readout: MemoryReadout | None = None, has_points: bool = False) -> Tensor:
        """[1, 3, C]: SAM 2's two "not a point" tokens, then rho (the released model's layout)."""
        nap = self.model.sam.prompt_encoder.not_a_point_embed.weight[None].to(self.rho.dtype)  # [1, 1, C]
        return torch.cat([nap, nap, self.rho], dim=1)

    # step 5 ---------------------------------------------------------------------------------------
    def memory_mask(self, frame: int, obj_id: int, features: ImageFeatures, output: DecoderOutput) -> Tensor:
        m = self.model
        window, policy = m.config.cme_window, "learned" if self.train_cme else m.config.cme_policy
        if policy == "never" or frame <= window:
            return output.high_res
        if policy == "learned" and (m.cme is None or frame - self.last_switch < window - 1):
            return output.high_res
        if policy == "random" and not bool(torch.rand((), generator=self._draws) < 0.25):
            return output.high_res
        sam = m.sam
        embed = features.embed + sam.no_memory_embedding.view(1, -1, 1, 1)  # memory-less features
        sparse, dense = embed_prompts(sam.prompt_encoder, 1, extra=self.prompt_tokens(frame, obj_id, features, embed))
        if policy == "learned":
            tau_l = memory_less_token(sam, embed, sparse, dense)
            logits = m.cme(output.pointer.detach(), tau_l.detach())  # [1, 2]
            switch = bool(logits.softmax(-1)[0, 1] > 0.5)
        else:  # "always", or "random" after its draw above
            switch = True
        if not (switch or self.train_cme):  # the memory-less mask P_l is needed only to fuse or to label
            return output.high_res
        alone = decode_masks(sam, features.high_res, embed, sparse, dense, multimask=False,
                             stability_fallback=self.stability_fallback)  # P_l
        if self.train_cme:
            min_pixels = max(1, round(50 * (sam.image_size / 1024) ** 2))
            labels = switch_labels(output.high_res.detach(), alone.high_res.detach(), alone.object_score.detach(), min_pixels)
            self.cme_records.append((logits, labels))
        if switch:
            self.last_switch = frame
            self.switches += 1
            return fuse_masks(output.high_res, alone.high_res, m.config.cme_weight)
        return output.high_res


class SamwiseStream:
    """Stream frames for several expressions (object ids 1..N in the order given), `batch` of
    them encoded together (1: each on its own; more costs memory for features of batch x T frames).

    Frames are buffered into clips of T (`config.clip_len`): `push` returns the results of a
    clip when it completes (else an empty list), `flush` those of a shorter last clip.
    """

    def __init__(self, model: Samwise, texts: list[str], memory_dtype: torch.dtype = torch.bfloat16,
                 batch: int = 4) -> None:
        if not texts:
            raise ValueError("SamwiseStream needs at least one text prompt")
        if batch < 1:
            raise ValueError(f"batch: expressions encoded together, at least 1, got {batch}")
        self.model = model
        self.sessions: dict[int, Session] = {}
        for obj_id, text in enumerate(texts, start=1):
            session = Session(model.sam, model.hooks(text), memory_dtype=memory_dtype)
            session.add_object(obj_id)
            self.sessions[obj_id] = session
        ids = list(self.sessions)
        self.batches = [(ids[i : i + batch], ExpressionBatch(model, texts[i : i + batch]))
                        for i in range(0, len(texts), batch)]
        self._buffer: list[np.ndarray | Tensor] = []

    @property
    def memory_nbytes(self) -> int:
        """Bytes of the memory banks of all expressions (each bounded)."""
        return sum(s.bank.nbytes for s in self.sessions.values())

    def push(self, frame: np.ndarray | Tensor) -> list[FrameResult]:
        self._buffer.append(frame)
        return self.flush() if len(self._buffer) == self.model.config.clip_len else []

    def flush(self) -> list[FrameResult]:
        if not self._buffer:
            return []
        clip, self._buffer = self._buffer, []
        per_object: dict[int, list[FrameResult]] = {}
        for ids, expressions in self.batches:
            per_object.update(self._push_batch(clip, ids, expressions))
        merged = []
        for i, first in enumerate(next(iter(per_object.values()))):
            objects = {obj_id: results[i].objects[obj_id] for obj_id, results in per_object.items()}
            merged.append(FrameResult(first.index, first.height, first.width, objects))
        return merged

    def _push_batch(self, clip: list[np.ndarray | Tensor], ids: list[int],
                    expressions: ExpressionBatch) -> dict[int, list[FrameResult]]:
        """The clip's frames encoded once for the expressions of `ids`, each session tracking its
        expression's copy of the features."""
        lead = self.sessions[ids[0]]
        tensors = lead.check_frames(clip)
        size = self.model.sam.image_size
        with lead.computing():
            pixels = torch.cat([lead.hooks.preprocess.pixels(t[None], size) for t in tensors])
            features = self.model.sam.encode_images(pixels, expressions.encode_stage)
        t = len(tensors)
        shared = len(features) == t  # no adapter: the features do not depend on the text
        out = {}
        for e, obj_id in enumerate(ids):
            session = self.sessions[obj_id]
            session.hooks.rho = expressions.rho[e : e + 1]
            first = 0 if shared else e * t
            out[obj_id] = session.push_encoded(tensors, [features.frame(first + i) for i in range(t)])
        return out

    def __enter__(self) -> SamwiseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._buffer.clear()

