"""SAM2-LOVE's token propagation and token accumulation (paper Sec. 3.2, Eq. 3-4, Fig. 4).

For frame i of the N frames the fusion module reads (Eq. 3, with [his]^i appended, Eq. 4):

    F_M^i = [ [seg]_i ; F̂_A ; [aud] ; F̂_T ; [vis] ; F̂_V^i ; [his]^i ]

  [seg]_i  [B, K, D]  the propagated token: a learnt parameter for i = 0, then the first K
                      outputs of the previous frame, Q_{i-1}^{0..K-1}
  F̂_A     [B, N, D]  one projected audio embedding per frame (the same at every step)
  [aud]    [B, 1, D]  learnt separator, "end of audio"
  F̂_T     [B, P, D]  projected text tokens (padding ignored by attention)
  [vis]    [B, 1, D]  learnt separator, "beginning of visual"
  F̂_V^i   [B, hw, D] projected patch tokens of frame i
  [his]^i  [B, i+1, D] the projected [cls] of frames 0..i (Eq. 4; `history="previous"` takes
                      0..i-1, Fig. 4's reading; "off" drops it)

Q_i = FusionTransformer(F_M^i); the [seg] after the last frame, Q_{N-1}^0, is the prompt. The
paper names no position or modality embeddings; without any, a bidirectional transformer cannot
tell audio from text, nor which audio window goes with the current frame. refseg adds learnt
modality-type embeddings (audio, text, visual, history), learnt time embeddings (the frame's
position in the chain: to audio window t, to the patches of frame i, to [cls]^t) and space
embeddings (the patch's place in the frame, added to F̂_V^i), each switchable off
(`type_embeddings`, `time_embeddings`, `space`). The space embedding is by default SAM 2's own
prompt-encoder encoding of each patch centre (the Fourier features a click there gets) through a
learnt Linear (`space="sam"`), so that the [seg] token can say where the target is in the terms
SAM 2's decoder reads a place in: trained on SynthRef, a token made from that encoding of the
target's centre is decoded after ~100 steps, one made from SAM 2's features inside the target
after 300 steps not yet (docs/RESULTS.md); "learnt" is a free table per patch.

The Tab. 5 alternative (`mean`): one pass over [F̂_A ; [aud] ; F̂_T ; [vis] ; F̂_V^0..N-1 ; [cls]^0..N-1]
and the mean of its outputs (padding excluded) is the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from refseg.methods.sam2_love.fusion import FusionTransformer

HISTORY = ("current", "previous", "off")
SPACES = ("sam", "learnt", "off")
AUDIO, TEXT, VISUAL, HIS = range(4)


@dataclass
class Chain:
    """What the chain gives: final [B, K, D] the [seg] after the last frame (the mean prompt
    [B, 1, D]); steps [B, N, K, D] the [seg] leaving each frame and first_patches [B, hw, D] the
    outputs at frame 0's patches (both None for the mean prompt)."""

    final: Tensor
    steps: Tensor | None = None
    first_patches: Tensor | None = None


class TokenPropagation(nn.Module):
    """The learnt tokens of Eq. 3 ([seg] x K, [aud], [vis]), the type and time embeddings, and
    the chain over frames (`forward`) or the mean alternative (`mean`)."""

    def __init__(self, width: int, max_frames: int, places: Tensor, seg_tokens: int = 1, history: str = "current",
                 type_embeddings: bool = True, time_embeddings: bool = True, space: str = "sam") -> None:
        """places: [hw, C] SAM 2's prompt encoding of each patch centre (`space="sam"`)."""
        super().__init__()
        if history not in HISTORY:
            raise ValueError(f"history: expected one of {', '.join(HISTORY)}, got {history!r}")
        if space not in SPACES:
            raise ValueError(f"space: expected one of {', '.join(SPACES)}, got {space!r}")
        if seg_tokens < 1:
            raise ValueError(f"seg_tokens: need at least one [seg] token, got {seg_tokens}")
        self.history = history
        self.seg = nn.Parameter(torch.randn(seg_tokens, width) * 0.02)
        self.aud = nn.Parameter(torch.randn(1, width) * 0.02)
        self.vis = nn.Parameter(torch.randn(1, width) * 0.02)
        self.types = nn.Parameter(torch.randn(4, width) * 0.02) if type_embeddings else None
        self.times = nn.Parameter(torch.randn(max_frames, width) * 0.02) if time_embeddings else None
        self.space = nn.Parameter(torch.randn(places.shape[0], width) * 0.02) if space == "learnt" else None
        self.space_proj = nn.Linear(places.shape[1], width) if space == "sam" else None
        self.register_buffer("places", places.clone() if space == "sam" else torch.zeros(0))

    @property
    def max_frames(self) -> int:
        return int(self.times.shape[0]) if self.times is not None else 1 << 30

    def _typed(self, x: Tensor, kind: int) -> Tensor:
        return x + self.types[kind] if self.types is not None else x

    def _timed(self, x: Tensor, index: Tensor | int) -> Tensor:
        return x + self.times[index] if self.times is not None else x

    def placed(self, patches: Tensor) -> Tensor:
        """patches [..., hw, D] + their space embeddings."""
        if self.space_proj is not None:
            return patches + self.space_proj(self.places)
        return patches + self.space if self.space is not None else patches

    def _context(self, audio: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """[F̂_A ; [aud] ; F̂_T ; [vis]] [B, N + P + 2, D] and the part that repeats each step."""
        batch, frames = audio.shape[:2]
        steps = torch.arange(frames, device=audio.device)
        a = self._timed(self._typed(audio, AUDIO), steps)
        return (torch.cat([a, self.aud.expand(batch, -1, -1)], 1),
                torch.cat([self._typed(text, TEXT), self.vis.expand(batch, -1, -1)], 1))

    def step(self, fusion: FusionTransformer, seg: Tensor, audio: Tensor, text: Tensor, text_padding: Tensor,
             cls: Tensor, patches: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """One frame of the chain: F_M^i (Eq. 3-4) through the transformer -> (the next [seg]
        [B, K, D], the outputs at frame i's patches [B, hw, D]).

        seg [B, K, D] entering frame i; audio [B, N', D] (every window of the clip, or, streaming,
        those heard so far); text [B, P, D], text_padding [B, P]; cls [B, >= i+1, D] (frames
        0..i at least); patches [B, hw, D] of frame i."""
        batch = audio.shape[0]
        if i >= self.max_frames:
            raise ValueError(f"token chain: frame {i + 1} of the chain, the model has time embeddings for "
                             f"{self.max_frames}")
        head, tail = self._context(audio, text)
        visual = self._timed(self._typed(self.placed(patches), VISUAL), i)
        count = {"current": i + 1, "previous": i, "off": 0}[self.history]
        his = self._timed(self._typed(cls[:, :count], HIS), torch.arange(count, device=cls.device))
        seq = torch.cat([seg, head, tail, visual, his], 1)
        zeros = torch.zeros(batch, seq.shape[1], dtype=torch.bool, device=seq.device)
        start = seg.shape[1] + head.shape[1]
        mask = torch.cat([zeros[:, :start], text_padding, zeros[:, start + text.shape[1] :]], 1)
        out = fusion(seq, mask)
        at = start + text.shape[1] + 1
        return out[:, : seg.shape[1]], out[:, at : at + patches.shape[1]]  # Q_i^{0..K-1}: the next frame's [seg]

    def initial(self, batch: int) -> Tensor:
        """The learnt [seg] entering frame 0, [B, K, D]."""
        return self.seg.expand(batch, -1, -1)

    def forward(self, fusion: FusionTransformer, audio: Tensor, text: Tensor, text_padding: Tensor, cls: Tensor,
                patches: Tensor) -> Chain:
        """audio [B, N, D], text [B, P, D], text_padding [B, P] (True = padding), cls [B, N, D],
        patches [B, N', hw, D] (all projected, Eq. 1; N' <= N: the chain stops after frame N' - 1,
        each step still hearing all N audio windows) -> the `Chain`."""
        seg = self.initial(audio.shape[0])
        outputs, first = [], None
        for i in range(patches.shape[1]):
            seg, at_patches = self.step(fusion, seg, audio, text, text_padding, cls, patches[:, i], i)
            outputs.append(seg)
            first = at_patches if i == 0 else first
        return Chain(seg, torch.stack(outputs, 1), first)

    def mean(self, fusion: FusionTransformer, audio: Tensor, text: Tensor, text_padding: Tensor, cls: Tensor,
             patches: Tensor) -> Tensor:
        """Tab. 5's "mean": [B, 1, D], the mean of one pass over every frame at once."""
        batch, frames, hw = patches.shape[:3]
        head, tail = self._context(audio, text)
        steps = torch.arange(frames, device=audio.device)
        visual = self._timed(self._typed(self.placed(patches), VISUAL), steps[:, None]).reshape(batch, frames * hw, -1)
        parts = [head, tail, visual]
        if self.history != "off":
            parts.append(self._timed(self._typed(cls, HIS), steps))
        seq = torch.cat(parts, 1)
        mask = torch.zeros(batch, seq.shape[1], dtype=torch.bool, device=audio.device)
        mask[:, head.shape[1] : head.shape[1] + text.shape[1]] = text_padding
        out = fusion(seq, mask)
        keep = (~mask).float()[..., None]
        return ((out * keep).sum(1) / keep.sum(1))[:, None]
