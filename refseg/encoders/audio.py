"""Audio encoder: VGGish log-mel features and a VGGish-architecture CNN, one 128-d embedding per
0.96 s window (Hershey et al. 2017; the audio encoder of Ref-AVS and SAM2-LOVE, paper Sec. 3.2).

Features, as VGGish frames them (its `mel_features.py` / `vggish_params.py`): 16 kHz mono; STFT
magnitude of 25 ms periodic-Hann frames every 10 ms (FFT length 512, no centring); 64 HTK mel
bands from 125 to 7500 Hz with triangles drawn on the mel scale and no normalisation;
log(mel + 0.01). One example is 96 such frames (0.96 s), [96, 64].

`examples_at(waveform, times)` gives one example centred on each video frame time, padded with
silence at the ends, so a clip of N frames has N audio embeddings, as SAM2-LOVE's F_A has one
row per frame (Ref-AVS: 10 frames at 1 fps, one VGGish embedding per second).

The network (torchvggish's `VGG` layout, which loads the published PyTorch port of VGGish):
`features` = conv3x3(1->64) ReLU pool, conv(64->128) ReLU pool, conv(128->256) ReLU,
conv(256->256) ReLU pool, conv(256->512) ReLU, conv(512->512) ReLU pool (conv keys
features.{0,3,6,8,11,13}); the [B, 512, 6, 4] map is flattened channels-last (as the TensorFlow
original) into `embeddings` = Linear(12288, 4096) ReLU Linear(4096, 4096) ReLU Linear(4096, 128)
ReLU. `VGGishConfig` scales the widths (the SynthRef encoder is narrower; the layout is the same).
The optional PCA post-processing of the AudioSet release (`pproc.pca_matrix`, `pproc.pca_means`;
then 8-bit quantisation) is applied when those weights are loaded and `postprocess` is set.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers.audio_utils import mel_filter_bank

from refseg.io.atomic import atomic_dir
from refseg.sam.checkpoint import read_safetensors

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512
MEL_BANDS = 64
MEL_LOW, MEL_HIGH = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames
EXAMPLE_SAMPLES = (EXAMPLE_FRAMES - 1) * HOP + WINDOW  # 15600 samples give exactly 96 frames
QUANTIZE_RANGE = (-2.0, 2.0)


def mel_matrix() -> Tensor:
    """[257, 64] HTK mel weights of VGGish (triangles on the mel scale, no area normalisation)."""
    bank = mel_filter_bank(num_frequency_bins=FFT // 2 + 1, num_mel_filters=MEL_BANDS, min_frequency=MEL_LOW,
                           max_frequency=MEL_HIGH, sampling_rate=SAMPLE_RATE, norm=None, mel_scale="htk",
                           triangularize_in_mel_space=True)
    return torch.from_numpy(np.asarray(bank, dtype=np.float32))


def log_mel(waveform: Tensor) -> Tensor:
    """VGGish log-mel frames: waveform [..., N] at 16 kHz -> [..., T, 64], T = 1 + (N - 400) // 160.

    The 400-sample Hann window sits at the start of each 512-sample FFT frame (zero-padded
    after it), as VGGish windows 400 samples and pads the FFT input."""
    if waveform.shape[-1] < WINDOW:
        raise ValueError(f"log_mel: need at least {WINDOW} samples (25 ms), got {waveform.shape[-1]}")
    lead = waveform.shape[:-1]
    x = waveform.reshape(-1, waveform.shape[-1]).float()
    x = torch.nn.functional.pad(x, (0, FFT - WINDOW))  # frames of the padded signal = VGGish's frames
    window = torch.nn.functional.pad(torch.hann_window(WINDOW, periodic=True, device=x.device), (0, FFT - WINDOW))
    spec = torch.stft(x, n_fft=FFT, hop_length=HOP, win_length=FFT, window=window, center=False,
                      return_complex=True).abs()  # [B, 257, T]
    mel = spec.transpose(1, 2) @ mel_matrix().to(x.device)
    return torch.log(mel + LOG_OFFSET).reshape(*lead, -1, MEL_BANDS)


def examples_at(waveform: np.ndarray | Tensor, times: np.ndarray | Tensor) -> Tensor:
    """One VGGish example [96, 64] centred on each time (seconds): waveform [N] at 16 kHz,
    times [T] -> [T, 1, 96, 64]; samples before 0 or past the end are silence."""
    wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).reshape(-1)
    centres = np.round(np.asarray(times, dtype=np.float64) * SAMPLE_RATE).astype(np.int64)
    half = EXAMPLE_SAMPLES // 2
    padded = torch.nn.functional.pad(wave, (half, half + EXAMPLE_SAMPLES))
    starts = torch.as_tensor(np.clip(centres, 0, len(wave)))  # offset by `half` in `padded`
    index = starts[:, None] + torch.arange(EXAMPLE_SAMPLES)[None]
    return log_mel(padded[index])[:, None]


@dataclass
class VGGishConfig:
    """channels: the six conv widths (VGGish: 64, 128, 256, 256, 512, 512); hidden: the two fully
    connected widths (4096); dim: the embedding width (128)."""

    channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512)
    hidden: int = 4096
    dim: int = 128

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != 6:
            raise ValueError(f"VGGishConfig.channels: six conv widths, got {self.channels}")


SYNTH_VGGISH = VGGishConfig(channels=(16, 32, 64, 64, 128, 128), hidden=256, dim=128)


class VGGish(nn.Module):
    """log-mel examples [B, 1, 96, 64] -> embeddings [B, dim] (ReLU'd, as the published model;
    PCA-whitened and quantised to 0..255 when `postprocess` and PCA weights are loaded)."""

    def __init__(self, config: VGGishConfig = VGGishConfig(), postprocess: bool = False) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = 1
        for i, channels in enumerate(config.channels):
            layers += [nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(inplace=True)]
            if i in (0, 1, 3, 5):  # pools after conv 1, 2, 4 and 6
                layers.append(nn.MaxPool2d(2, 2))
            width = channels
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(width * 6 * 4, config.hidden), nn.ReLU(inplace=True),
                                        nn.Linear(config.hidden, config.hidden), nn.ReLU(inplace=True),
                                        nn.Linear(config.hidden, config.dim), nn.ReLU(inplace=True))
        self.postprocess = postprocess
        self.pproc = PcaPostprocess(config.dim) if postprocess else None

    def forward(self, examples: Tensor) -> Tensor:
        x = self.features(examples)  # [B, C, 6, 4]
        x = x.permute(0, 2, 3, 1).flatten(1)  # channels last, as the TensorFlow original flattens
        x = self.embeddings(x)
        return self.pproc(x) if self.pproc is not None else x

    def embed(self, waveform: np.ndarray | Tensor, times: np.ndarray | Tensor) -> Tensor:
        """One embedding per time (seconds): [T, dim] from a 16 kHz waveform."""
        device = self.embeddings[0].weight.device
        return self(examples_at(waveform, times).to(device))

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """config.json + model.safetensors, written to a temporary folder first."""
        with atomic_dir(directory) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps({"vggish": dataclasses.asdict(self.config),
                                                         "postprocess": self.postprocess}, indent=1))

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], pca: str | os.PathLike[str] | None = None) -> VGGish:
        """A `save_pretrained` folder, or the published torchvggish weights (`vggish-10086976.pth`:
        `features.*`, `embeddings.*`), with its PCA parameters (`vggish_pca_params-970ea276.pth`:
        `pca_eigen_vectors`, `pca_means`) as `pca` to post-process as the AudioSet release."""
        path = Path(source)
        if path.is_dir():
            meta_file = path / "config.json"
            if not meta_file.is_file() or not (path / "model.safetensors").is_file():
                raise ValueError(f"{path}: not an audio encoder folder (needs config.json and model.safetensors)")
            meta = json.loads(meta_file.read_text())
            if "vggish" not in meta:
                raise ValueError(f"{path}: config.json describes no VGGish audio encoder")
            model = cls(VGGishConfig(**meta["vggish"]), postprocess=bool(meta.get("postprocess")))
            state = read_safetensors(path / "model.safetensors")
        elif path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k.removeprefix("module."): v for k, v in state.items()}
            if "features.0.weight" not in state:
                raise ValueError(f"{path}: not a VGGish state dict (no features.0.weight)")
            model = cls(vggish_config_from_state(state), postprocess=pca is not None)
            if pca is not None:
                params = torch.load(Path(pca), map_location="cpu", weights_only=False)
                state = {**state, "pproc.pca_matrix": torch.as_tensor(params["pca_eigen_vectors"]).float(),
                         "pproc.pca_means": torch.as_tensor(params["pca_means"]).float().reshape(-1, 1)}
        else:
            raise ValueError(f"{path}: no such audio encoder folder or VGGish .pth file")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model.eval()


def vggish_config_from_state(state: dict[str, Tensor]) -> VGGishConfig:
    """The sizes of a torchvggish-layout state dict."""
    convs = (0, 3, 6, 8, 11, 13)
    return VGGishConfig(channels=tuple(int(state[f"features.{i}.weight"].shape[0]) for i in convs),
                        hidden=int(state["embeddings.0.weight"].shape[0]), dim=int(state["embeddings.4.weight"].shape[0]))


class PcaPostprocess(nn.Module):
    """The AudioSet release's post-processing: PCA with whitening, then clipped to [-2, 2] and
    quantised to 0..255 (as float): [B, dim] -> [B, dim]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pca_matrix = nn.Parameter(torch.eye(dim), requires_grad=False)
        self.pca_means = nn.Parameter(torch.zeros(dim, 1), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        low, high = QUANTIZE_RANGE
        pca = (self.pca_matrix @ (x.T - self.pca_means)).T
        return torch.round((pca.clamp(low, high) - low) * (255.0 / (high - low)))
