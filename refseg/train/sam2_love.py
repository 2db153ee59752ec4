"""SAM2-LOVE training (paper Sec. 3.3, Eq. 5): SAM 2 sees the first frame only, the fusion module
sees the whole clip, and the loss is on the first frame's mask:

    L = λ_bce BCE(M̂_0, M_0) + λ_dice DICE(M̂_0, M_0)        (`loss.bce`, `loss.dice`; 1 : 1)

with gradients through the whole N-step [seg] chain. The frozen encoders' outputs (audio, text,
frame ViT, and SAM 2's image features of frame 0) are computed once per video (or text), as the
videos are made one by one, and kept in memory as float16 with each expression's frame-0 target
(`LoveVideo`; the frames are dropped: ~0.8 MB a 256 px SynthRef video instead of ~17 MB), so
thousands of videos fit and a step runs only the trainable parts. SAM 2's object-score head is part of
the decoder the paper trains; refseg also trains it (`loss.object`, presence CE: present unless the
expression refers to nothing), because the engine gates masks by it; `loss.object: 0` leaves it
as loaded. `loss.place` (refseg's aid, 0 by default) adds the squared distance of the prompt token
from SAM 2's own embedding of a positive click at the target's frame-0 centroid, relative to that
embedding's norm: a token SAM 2's decoder already reads (`bench/sam2_love_token_probe.py`).
`loss.ground` (refseg's aid, 0 by default) teaches the fusion to find the target on frame 0 and
the chain to keep its place, with two terms and heads that train with the task (not part of the
model):
  ground_patch  each output at frame 0's patches predicts the share of that patch the target
                covers (a Linear; BCE; an expression that refers to nothing: zero everywhere),
                one hop, as BEiT-3's patch loss teaches EVF-SAM's fusion to ground;
  ground_place  a pointer scores each patch's place (its space embedding alone) against the [seg]
                leaving frame 0 and against the final [seg]; each score vector is trained by
                cross-entropy toward the target's share of each patch of frame 0,
                p_j = |M_0 ∩ patch_j| / |M_0| (`ground_acc`: how often the best-scored patch of
                the final [seg] holds some of the target). Keys of place only, so that the token
                must say where the target is, the thing SAM 2's decoder reads fastest.
The grounding stage (configs/sam2_love_synth_ground.yaml) trains the fusion on `loss.ground`
alone over frame 0 (`data.chain_frames: 1`): SAM 2 then decodes nothing, a step costs one fusion
pass, and the fusion's long plateau before it finds a named object (docs/RESULTS.md) is crossed
in big batches; the full recipe then starts from it (`model.init`).
Expressions are drawn uniformly (weighted by `data.phenomenon_weights`; `{null: 0}`
leaves out the expressions that refer to nothing, as Ref-AVS's training set has none). Clips are
not augmented (the cached features fix them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from refseg.data import synth
from refseg.data.sample import Expression, VideoSample
from refseg.io.atomic import atomic_file
from refseg.methods.sam2_love.model import ClipFeatures, Sam2Love, clip_fps
from refseg.prompts import Audio
from refseg.sam.image_encoder import normalise_frames
from refseg.sam.mask_decoder import decode_masks
from refseg.sam.model import Sam2
from refseg.train.beit3 import patch_coverage
from refseg.train.config import TrainConfig
from refseg.train.evf import mask_losses
from refseg.train.task import seeded

log = logging.getLogger(__name__)


def data_fingerprint(source: str, root: str | None) -> bytes:
    """What the videos of `source` are made from, beyond the data settings: SynthRef's generator
    (its module's source, so that a store kept before the scenes changed is not read as theirs),
    or each file under a dataset's `root` (its path, size and modification time, so that an edited
    or replaced dataset is summarised again)."""
    if source == "synthref":
        return hashlib.sha256(Path(synth.__file__).read_bytes()).digest()
    digest = hashlib.sha256()
    base = Path(root) if root is not None else None
    if base is not None and base.is_dir():
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(base)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.digest()


@dataclass
class LoveSample:
    """One (video, expression) draw and its seed."""

    video: int
    expression: int
    seed: int


@dataclass
class LoveVideo:
    """What training keeps of one video: its frozen features (float16), its expressions and each
    one's frame-0 target (bit-packed). The frames, the sound and the other masks are dropped."""

    clip: ClipFeatures  # chain features: audio [N, d_A], cls [N, d_V], patches [N, hw, d_V]
    first: tuple[Tensor, ...]  # SAM 2's features of frame 0: high_res..., embed
    expressions: list[Expression]
    targets: np.ndarray  # [E, ceil(H*W/8)] uint8, frame 0's target of each expression, np.packbits
    shape: tuple[int, int]

    def target(self, expression: int) -> np.ndarray:
        """Frame 0's target of one expression, [H, W] bool."""
        size = self.shape[0] * self.shape[1]
        return np.unpackbits(self.targets[expression], count=size).reshape(self.shape).astype(bool)


class ExpressionSampler:
    """Draws (video, expression) pairs with phenomenon weights; `rng` is checkpointed."""

    def __init__(self, videos: Sequence[LoveVideo], weights: dict[str, float], seed: int) -> None:
        self.pairs = [(v, e) for v, s in enumerate(videos) for e in range(len(s.expressions))]
        w = np.array([max([weights.get(p, 1.0) for p in videos[v].expressions[e].phenomena] or [1.0])
                      for v, e in self.pairs], dtype=np.float64)
        if not self.pairs or w.sum() <= 0:
            raise ValueError("sam2_love: no expression to train on (empty data, or every phenomenon weighted 0)")
        self.p = w / w.sum()
        self.rng = np.random.default_rng(seed)

    def draw(self) -> tuple[int, int]:
        return self.pairs[int(self.rng.choice(len(self.pairs), p=self.p))]


class LoveTask(nn.Module):
    """See the module docstring."""

    def __init__(self, model: Sam2Love, config: TrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config
        self.videos: list[LoveVideo] = []
        self.texts: dict[str, Tensor] = {}  # text -> frozen token states [P, d_T] (float16)
        width = model.config.width
        if config.data.chain_frames is not None and config.data.chain_frames < 1:
            raise ValueError(f"data.chain_frames: need at least 1 frame, got {config.data.chain_frames}")
        if not any((config.loss.bce, config.loss.dice, config.loss.object, config.loss.place, config.loss.ground)):
            raise ValueError("sam2_love: every loss weight (bce, dice, object, place, ground) is 0; nothing to learn")
        if config.loss.ground > 0 and model.config.space == "off":
            raise ValueError("loss.ground: the pointer reads the patches' space embeddings; sam2_love.space is off")
        self.pointer = nn.ModuleDict({"query": nn.Linear(width, width), "key": nn.Linear(width, width),
                                      "patch": nn.Linear(width, 1)}) if config.loss.ground > 0 else None

    def sampler(self, samples: Iterable[VideoSample], seed: int) -> ExpressionSampler:
        """Summarise each video as it comes (`summarise`), or read the summaries back from
        `data.feature_store`, then draw from them."""
        store = self.config.data.feature_store
        path = Path(store) / f"sam2_love-{self.feature_key()}.pt" if store else None
        if path is not None and path.is_file():
            log.info("frozen features: read from %s", path)
            self.videos = [LoveVideo(ClipFeatures(*v["clip"]), tuple(v["first"]), v["expressions"], v["targets"],
                                     tuple(v["shape"])) for v in torch.load(path, weights_only=False)]
        else:
            self.videos = [self.summarise(s) for s in tqdm(samples, desc="frozen features", unit="video")]
            if path is not None:
                with atomic_file(path) as tmp:
                    torch.save([{"clip": (v.clip.audio, v.clip.cls, v.clip.patches), "first": v.first,
                                 "expressions": v.expressions, "targets": v.targets, "shape": v.shape}
                                for v in self.videos], tmp)
                log.info("frozen features: kept in %s", path)
        return ExpressionSampler(self.videos, self.config.data.phenomenon_weights, seed)

    def feature_key(self) -> str:
        """A hash of what the kept features depend on: the data that makes the videos (the data
        settings, and `data_fingerprint`'s code or files behind them), the chain length and input
        size, and every weight of the frozen encoders (audio, frame ViT, SAM 2's image encoder and
        the decoder's high-resolution projections it applies)."""
        d, model = self.config.data, self.model
        what = {"source": d.source, "root": d.root, "split": d.split, "seed": d.seed, "count": d.count,
                "image": d.image, "audio_visual": d.audio_visual, "extra_colours": d.extra_colours,
                "scenario": d.scenario, "max_frames": model.config.max_frames, "image_size": model.sam.image_size}
        digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
        digest.update(data_fingerprint(d.source, d.root))
        decoder = model.sam.mask_decoder
        for module in (model.audio_encoder, model.frame_encoder, model.sam.vision_encoder, decoder.conv_s0,
                       decoder.conv_s1):
            for name, value in sorted(module.state_dict().items()):
                digest.update(name.encode())
                digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def draw_batch(self, sampler: ExpressionSampler, rng: np.random.Generator, size: int) -> list[LoveSample]:
        return [LoveSample(*sampler.draw(), int(rng.integers(2**31))) for _ in range(size)]

    # -- frozen features, computed once ------------------------------------------------------------
    @torch.no_grad()
    def summarise(self, sample: VideoSample) -> LoveVideo:
        """A video's frozen features and frame-0 targets (`LoveVideo`)."""
        if sample.audio is None:
            raise ValueError(f"sam2_love: video {sample.video_id} has no audio; SAM2-LOVE trains on sound + text + "
                             "frames (SynthRef, or a refavs dataset with audio.wav per video)")
        frames = sample.load_frames()
        audio = Audio(sample.audio, sample.sample_rate)
        f = self.model.clip_features(frames, audio, clip_fps(len(frames), audio))
        sam = self.model.sam
        feats = sam.encode_images(normalise_frames(torch.from_numpy(frames[:1]).to(self.model.device), sam.image_size))
        targets = np.stack([np.packbits(sample.target_mask(e)[0].ravel()) for e in sample.expressions]) \
            if sample.expressions else np.zeros((0, 0), np.uint8)
        return LoveVideo(ClipFeatures(*(t.to("cpu", torch.float16) for t in (f.audio, f.cls, f.patches))),
                         tuple(t[0].to("cpu", torch.float16) for t in (*feats.high_res, feats.embed)),
                         list(sample.expressions), targets, frames.shape[1:3])

    def clip(self, video: int) -> ClipFeatures:
        """A video's chain features as float32: every audio window, and the frames up to
        `data.chain_frames`."""
        c, k = self.videos[video].clip, self.config.data.chain_frames
        return ClipFeatures(c.audio.float(), c.cls[:k].float(), c.patches[:k].float())

    def text(self, text: str) -> Tensor:
        if text not in self.texts:
            states, padding = self.model.encode_texts([text])
            self.texts[text] = states[0, ~padding[0]].to("cpu", torch.float16)
        return self.texts[text].float()

    # -- the step -------------------------------------------------------------------------------
    def forward(self, batch: list[LoveSample]) -> dict[str, Tensor]:
        with seeded(batch[0].seed):
            return self._losses(batch)

    def _losses(self, batch: list[LoveSample]) -> dict[str, Tensor]:
        model, sam, w = self.model, self.model.sam, self.config.loss
        device = model.device
        clips = [self.clip(s.video) for s in batch]
        expressions = [self.videos[s.video].expressions[s.expression] for s in batch]
        text, padding = pad_texts([self.text(e.text) for e in expressions])
        chain = model.seg_chain(clips, text, padding)  # final [seg] [B, K, D], through the whole chain
        targets = torch.from_numpy(np.stack([self.videos[s.video].target(s.expression)
                                             for s in batch])).to(device, torch.float32)[:, None]
        zero = torch.zeros((), device=device)
        terms: dict[str, Tensor] = {}
        if w.bce or w.dice or w.object or w.place:  # SAM 2 decodes the prompt (not in the grounding stage)
            tokens = model.text_hidden_fcs[0](chain.final[:, :1])  # [B, 1, C]
            *high_res, embed = (torch.stack([self.videos[s.video].first[n] for s in batch]).to(device, torch.float32)
                                for n in range(3))
            dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embed)
            out = decode_masks(sam, high_res, embed + sam.no_memory_embedding.view(1, -1, 1, 1), tokens[:, None],
                               dense, multimask=model.config.multimask, presence_gate=False)
            everything = torch.ones(len(batch), dtype=torch.bool, device=device)  # empty targets teach empty masks
            terms, _ = mask_losses(out.low_res, out.object_score[:, 0], targets, everything)
            clicks, present = click_tokens(sam, targets[:, 0])
            # rows with a target only: an empty target has no place (and a 0/0 gap)
            terms["place"] = ((tokens[present, 0] - clicks[present]).pow(2).sum(-1)
                              / clicks[present].pow(2).sum(-1)).mean() if present.any() else zero
        else:
            terms.update(bce=zero, dice=zero, object=zero, place=zero)
        ground = zero
        if self.pointer is not None:
            final = chain.final[:, :1]
            first = final if chain.steps is None else chain.steps[:, 0, :1]  # the mean prompt has no chain
            terms["ground_place"], terms["ground_acc"] = self.ground(first, final, targets[:, 0])
            ground = terms["ground_place"]
            if chain.first_patches is not None:
                terms["ground_patch"] = self.ground_patch(chain.first_patches, targets[:, 0])
                ground = ground + terms["ground_patch"]
        terms["loss"] = (w.bce * terms["bce"] + w.dice * terms["dice"] + w.object * terms["object"]
                         + w.place * terms["place"] + w.ground * ground)
        return terms

    def ground_patch(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """`ground_patch` (module docstring): outputs [B, hw, D] at frame 0's patches, targets
        [B, H, W] -> the mean BCE of each patch's logit against the share of it the target covers."""
        cover = patch_coverage(targets, self.model.frame_encoder.grid).flatten(1)  # [B, hw], row by row
        logits = self.pointer["patch"](outputs)[..., 0]
        return nn.functional.binary_cross_entropy_with_logits(logits, cover)

    def place_logits(self, token: Tensor) -> Tensor:
        """The pointer's score of each patch's place (its space embedding alone) for a [seg]:
        token [B, 1, D] -> [B, hw], patches row by row."""
        model = self.model
        places = model.tokens.placed(torch.zeros(model.frame_encoder.grid ** 2, model.config.width,
                                                 device=token.device))
        keys = self.pointer["key"](places)  # [hw, D]
        return (self.pointer["query"](token) @ keys.T)[:, 0] / keys.shape[-1] ** 0.5

    def ground(self, first: Tensor, final: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """`ground_place` (module docstring): first, final [B, 1, D] ([seg] leaving frame 0, after
        the last frame), targets [B, H, W] frame 0's masks -> (the mean cross-entropy of both
        over the rows with a target, the final [seg]'s hit rate); zeros when no row has one."""
        share = patch_coverage(targets, self.model.frame_encoder.grid).flatten(1)  # [B, hw], row by row
        present = share.sum(1) > 0
        zero = torch.zeros((), device=targets.device)
        if not present.any():
            return zero, zero
        share = share[present] / share[present].sum(1, keepdim=True)
        losses = []
        for token in (first, final):
            logits = self.place_logits(token[present])  # [B', hw]
            losses.append(-(share * logits.log_softmax(-1)).sum(-1).mean())
        hits = best_patch_hits(logits, share).float().mean()  # the final [seg]'s
        return sum(losses) / len(losses), hits


def best_patch_hits(logits: Tensor, cover: Tensor) -> Tensor:
    """logits [B, hw] a pointer's patch scores, cover [B, hw] the target's cover of each patch ->
    [B] bool: the best-scored patch holds some of the target."""
    return cover.gather(1, logits.argmax(-1, keepdim=True))[:, 0] > 0


def pad_texts(states: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Token states of B texts (each [P_i, d_T]) -> [B, P, d_T] padded with zeros to the longest,
    and padding [B, P] (True = padding)."""
    length = max(len(t) for t in states)
    text = torch.zeros(len(states), length, states[0].shape[-1])
    padding = torch.ones(len(states), length, dtype=torch.bool)
    for i, t in enumerate(states):
        text[i, : len(t)], padding[i, : len(t)] = t, False
    return text, padding


def click_tokens(sam: Sam2, targets: Tensor) -> tuple[Tensor, Tensor]:
    """SAM 2's sparse embedding of a positive click at each target's centroid (the prompt
    encoder's Fourier features of the point, plus its "positive" embedding): targets [B, H, W]
    -> ([B, C], present [B]; an empty target's row is zeros)."""
    batch, height, width = targets.shape
    mass = targets.flatten(1).sum(1)
    present = mass > 0
    ys = torch.arange(height, device=targets.device, dtype=torch.float32)
    xs = torch.arange(width, device=targets.device, dtype=torch.float32)
    cy = (targets.sum(2) * ys).sum(1) / mass.clamp(min=1)
    cx = (targets.sum(1) * xs).sum(1) / mass.clamp(min=1)
    scale = torch.tensor([sam.image_size / width, sam.image_size / height], device=targets.device)
    points = torch.stack([cx, cy], -1) * scale + 0.5  # SAM's pixel-centre convention
    encoder = sam.prompt_encoder
    with torch.no_grad():
        pe = encoder.shared_embedding(points[:, None, None], (sam.image_size, sam.image_size))[:, 0, 0]
        clicks = pe + encoder.point_embed.weight[1]
    return clicks * present[:, None], present
