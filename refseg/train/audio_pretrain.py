"""Pretraining refseg's offline VGGish (task `vggish`) on rendered SynthRef sounds, so that its
128-d embedding says which pitches sound, with which timbres and how loud: what SynthRef's
audio expressions refer to, learnt without any of its words or videos.

Each sample is one 0.96 s example of a mix of 0-2 tones rendered by SynthRef's `tone` (sine,
square or sawtooth) at a pitch drawn log-uniformly from 110-1760 Hz, a loudness in 0.1-1 and an
onset anywhere in the window (sounds that start mid-window, as objects entering a scene), mixed
and scaled as `synth.render_audio` does. Targets, from a linear head on the embedding, for each of
`PITCH_BINS` octave-wide pitch bins centred on the log scale: whether a tone sounds there (BCE),
its loudness times the fraction of the window it sounds (MSE), and for each waveform whether a
tone of it sounds (BCE). SynthRef's two pitches (220 and 880 Hz) fall in different bins.
`save_pretrained` writes the encoder alone (a `VGGish` folder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from refseg.data.synth import WAVEFORMS, tone
from refseg.encoders.audio import EXAMPLE_SAMPLES, SAMPLE_RATE, VGGish, VGGishConfig, log_mel
from refseg.train.config import TrainConfig

PITCH_RANGE = (110.0, 1760.0)  # four octaves
PITCH_BINS = 8  # half-octave bins over the range


class VGGishPretrainer(nn.Module):
    """A VGGish and its attribute head (pitch presence + loudness per bin, waveform presence)."""

    def __init__(self, config: VGGishConfig) -> None:
        super().__init__()
        self.encoder = VGGish(config)
        self.head = nn.Linear(config.dim, 2 * PITCH_BINS + len(WAVEFORMS))

    def forward(self, examples: Tensor) -> Tensor:
        return self.head(self.encoder(examples))

    def meta(self) -> dict[str, object]:
        return {"vggish": dataclasses.asdict(self.encoder.config), "postprocess": False}

    def save_pretrained(self, directory: object) -> None:
        self.encoder.save_pretrained(directory)  # type: ignore[arg-type]


@dataclass
class ToneMix:
    """One example: waveform [15600] and targets: present [bins], loudness [bins], waveforms [3]."""

    wave: np.ndarray
    present: np.ndarray
    loudness: np.ndarray
    waveforms: np.ndarray


def pitch_bin(hz: float) -> int:
    low, high = np.log2(PITCH_RANGE[0]), np.log2(PITCH_RANGE[1])
    return min(int((np.log2(hz) - low) / (high - low) * PITCH_BINS), PITCH_BINS - 1)


def draw_mix(rng: np.random.Generator) -> ToneMix:
    """0, 1 or 2 tones (in distinct pitch bins) in one example window."""
    t = np.arange(EXAMPLE_SAMPLES) / SAMPLE_RATE
    mix = np.zeros(EXAMPLE_SAMPLES)
    present, loudness = np.zeros(PITCH_BINS, np.float32), np.zeros(PITCH_BINS, np.float32)
    waveforms = np.zeros(len(WAVEFORMS), np.float32)
    for _ in range(int(rng.choice(3, p=[0.15, 0.45, 0.4]))):
        hz = float(np.exp(rng.uniform(np.log(PITCH_RANGE[0]), np.log(PITCH_RANGE[1]))))
        b = pitch_bin(hz)
        if present[b]:
            continue
        kind = int(rng.integers(len(WAVEFORMS)))
        level = float(rng.uniform(0.1, 1.0))
        onset = float(rng.uniform(0, 0.8)) if rng.random() < 0.3 else 0.0
        wave = tone(hz, WAVEFORMS[kind], t)
        wave[t < onset] = 0.0
        mix += level * wave
        present[b], waveforms[kind] = 1.0, 1.0
        loudness[b] = level * (1 - onset / t[-1])
    scale = 1.0 / max(float(np.abs(mix).max()), 1.0)  # as render_audio: only a mix above full scale is scaled
    return ToneMix((mix * scale).astype(np.float32), present, loudness * scale, waveforms)


class ToneSampler:
    """Draws `ToneMix` examples; `rng` is checkpointed with the run."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)


class VGGishPretrainTask(nn.Module):
    """Task `vggish`: BCE on pitch and waveform presence, MSE on per-bin loudness."""

    def __init__(self, model: VGGishPretrainer, config: TrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config

    def sampler(self, samples: list, seed: int) -> ToneSampler:
        return ToneSampler(seed)

    def draw_batch(self, sampler: ToneSampler, rng: np.random.Generator, size: int) -> list[ToneMix]:
        return [draw_mix(sampler.rng) for _ in range(size)]

    def forward(self, batch: list[ToneMix]) -> dict[str, Tensor]:
        device = self.model.head.weight.device
        examples = log_mel(torch.from_numpy(np.stack([b.wave for b in batch])).to(device))[:, None]
        out = self.model(examples)
        present = torch.from_numpy(np.stack([b.present for b in batch])).to(device)
        loudness = torch.from_numpy(np.stack([b.loudness for b in batch])).to(device)
        waveforms = torch.from_numpy(np.stack([b.waveforms for b in batch])).to(device)
        terms = {"pitch": F.binary_cross_entropy_with_logits(out[:, :PITCH_BINS], present),
                 "loudness": F.mse_loss(out[:, PITCH_BINS : 2 * PITCH_BINS], loudness) * 10.0,
                 "waveform": F.binary_cross_entropy_with_logits(out[:, 2 * PITCH_BINS :], waveforms)}
        terms["loss"] = terms["pitch"] + terms["loudness"] + terms["waveform"]
        with torch.no_grad():
            terms["pitch_acc"] = ((out[:, :PITCH_BINS] > 0).float() == present).float().mean()
        return terms
