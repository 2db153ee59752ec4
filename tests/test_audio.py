"""Audio: reading sound tracks through real files, VGGish's log-mel frames against an independent
NumPy computation, the encoder's torchvggish layout, and the Audio prompt."""

from __future__ import annotations

import logging
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from refseg.encoders.audio import (EXAMPLE_SAMPLES, PcaPostprocess, VGGish, VGGishConfig, examples_at, log_mel,
                                   vggish_config_from_state)
from refseg.io.audio import fit_to_frames, read_audio, resample
from refseg.io.video import InputError
from refseg.prompts import Audio

RATE = 16000


def tone(seconds: float, hz: float, rate: int = RATE, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_av(path, frames: int, fps: int, audio: np.ndarray | None, rate: int = RATE, codec: str = "pcm_s16le") -> None:
    """A video file with `frames` grey frames and (optionally) a mono audio track."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264" if path.suffix == ".mp4" else "ffv1", rate=fps)
        video.width, video.height = 64, 48
        video.pix_fmt = "yuv420p" if path.suffix == ".mp4" else "yuv420p"
        sound = out.add_stream(codec, rate=rate, layout="mono") if audio is not None else None
        for i in range(frames):
            image = np.full((48, 64, 3), 10 * i % 255, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            fmt = "s16" if codec == "pcm_s16le" else "fltp"
            data = np.round(audio * 32767).astype(np.int16) if fmt == "s16" else audio.astype(np.float32)
            step = 1024
            for start in range(0, len(data), step):
                chunk = data[start : start + step][None]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="mono")
                frame.sample_rate = rate
                frame.pts = start
                frame.time_base = Fraction(1, rate)
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)


# -- reading -------------------------------------------------------------------------------------
def test_video_sound_track_round_trip_is_sample_exact_for_pcm(tmp_path):
    wave_in = np.round(tone(1.5, 440.0) * 32767) / 32767  # on the 16-bit grid
    path = tmp_path / "clip.mkv"
    write_av(path, 12, 8, wave_in)
    got = read_audio(path)
    assert got.rate == RATE and len(got.samples) == len(wave_in)
    np.testing.assert_allclose(got.samples, wave_in, atol=1 / 32767)


def test_aac_track_matches_within_codec_tolerance(tmp_path):
    wave_in = tone(2.0, 330.0)
    path = tmp_path / "clip.mp4"
    write_av(path, 16, 8, wave_in, codec="aac")
    got = read_audio(path).samples
    assert abs(len(got) - len(wave_in)) <= 2048  # AAC frames of 1024 samples
    n = min(len(got), len(wave_in)) - 2048
    lag = int(np.argmax([np.dot(got[2048 : 2048 + 4000], wave_in[2048 - k : 2048 - k + 4000]) for k in range(64)]))
    error = got[2048 : 2048 + n - 64] - wave_in[2048 - lag : 2048 - lag + n - 64]
    snr = 10 * np.log10(np.mean(wave_in**2) / np.mean(error**2))
    assert snr > 20, snr


def test_audio_file_is_resampled_and_mixed_to_mono(tmp_path):
    rate = 44100
    left, right = tone(1.0, 440.0, rate, 0.6), tone(1.0, 440.0, rate, 0.2)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(2)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(np.round(np.stack([left, right], 1) * 32767).astype("<i2").tobytes())
    got = read_audio(path, rate=RATE)
    assert got.rate == RATE and abs(len(got.samples) - RATE) <= 1
    expected = tone(1.0, 440.0, RATE, 0.4)  # the mean of the channels, at 16 kHz
    np.testing.assert_allclose(got.samples[400:-400], expected[400 : len(got.samples) - 400], atol=2e-3)


def test_resample_matches_a_tone_at_the_new_rate():
    got = resample(Audio(tone(1.0, 440.0, 44100), 44100), RATE)
    assert len(got.samples) == RATE
    np.testing.assert_allclose(got.samples[200:-200], tone(1.0, 440.0)[200:-200], atol=1e-3)


def test_missing_track_and_unreadable_file_fail_in_one_line(tmp_path):
    silent = tmp_path / "silent.mkv"
    write_av(silent, 4, 8, None)
    with pytest.raises(InputError, match=r"silent.mkv: no audio track \(pass the sound as a separate file with --audio FILE\)"):
        read_audio(silent)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF0000WAVEjunk" * 4)
    with pytest.raises(InputError, match=r"junk.wav: cannot decode"):
        read_audio(junk)
    with pytest.raises(InputError, match="no such audio or video file"):
        read_audio(tmp_path / "absent.wav")


def test_short_track_is_padded_with_silence_and_warns(caplog):
    audio = Audio(np.ones(RATE, np.float32) * 0.25, RATE)  # 1 s
    with caplog.at_level(logging.WARNING):
        fitted = fit_to_frames(audio, 16, 8.0, "clip.mp4")  # 2 s of video
    assert len(fitted.samples) == 2 * RATE
    assert (fitted.samples[:RATE] == 0.25).all() and (fitted.samples[RATE:] == 0).all()
    assert "clip.mp4: the audio is 1.00 s long, the video 2.00 s; the last 1.00 s are taken as silence" in caplog.text
    caplog.clear()
    cut = fit_to_frames(audio, 4, 8.0)
    assert len(cut.samples) == RATE // 2 and not caplog.text


def test_audio_prompt_validates():
    assert Audio(np.zeros((100, 2)), 8000).samples.shape == (100,)
    with pytest.raises(ValueError, match="non-empty 1-D waveform"):
        Audio(np.zeros(0), RATE)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Audio(np.array([0.0, np.nan]), RATE)
    with pytest.raises(ValueError, match="positive number of Hz"):
        Audio(np.zeros(10), 0)


# -- log-mel ---------------------------------------------------------------------------------------
def reference_log_mel(signal: np.ndarray) -> np.ndarray:
    """VGGish's recipe written from its description, in NumPy: 400-sample periodic Hann frames
    every 160 samples, |rfft| with 512 points, HTK mel triangles 125-7500 Hz on the mel scale
    (DC bin excluded), log(mel + 0.01)."""
    n = 1 + (len(signal) - 400) // 160
    frames = np.stack([signal[i * 160 : i * 160 + 400] for i in range(n)]).astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    spectrum = np.abs(np.fft.rfft(frames * window, 512))
    mel = lambda hz: 1127.0 * np.log(1.0 + hz / 700.0)  # noqa: E731
    bins = mel(np.linspace(0, 8000, 257))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    weights = np.zeros((257, 64))
    for k in range(64):
        lower, centre, upper = edges[k : k + 3]
        weights[:, k] = np.maximum(0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    weights[0] = 0.0
    return np.log(spectrum @ weights + 0.01)


def test_log_mel_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    signal = (0.3 * np.sin(2 * np.pi * 700 * np.arange(8000) / RATE) + 0.05 * rng.standard_normal(8000)).astype(np.float32)
    got = log_mel(torch.from_numpy(signal)).numpy()
    want = reference_log_mel(signal)
    assert got.shape == want.shape == (1 + (8000 - 400) // 160, 64)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_examples_are_96_frames_centred_on_each_time():
    signal = np.random.default_rng(1).standard_normal(3 * RATE).astype(np.float32) * 0.1
    ex = examples_at(signal, np.array([0.0, 1.5, 3.0]))
    assert ex.shape == (3, 1, 96, 64)
    centre = int(1.5 * RATE)
    own = log_mel(torch.from_numpy(signal[centre - EXAMPLE_SAMPLES // 2 : centre + EXAMPLE_SAMPLES // 2]))
    torch.testing.assert_close(ex[1, 0], own)
    padded = np.concatenate([np.zeros(EXAMPLE_SAMPLES // 2, np.float32), signal[: EXAMPLE_SAMPLES // 2]])
    torch.testing.assert_close(ex[0, 0], log_mel(torch.from_numpy(padded)))  # silence before the start


# -- the encoder -------------------------------------------------------------------------------------
def torchvggish_forward(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The published network from its state dict: six 3x3 convs with ReLU and four 2x2 pools,
    the map flattened as torchvggish does (transpose(1, 3), then transpose(1, 2)), three Linear +
    ReLU."""
    for i, conv in enumerate((0, 3, 6, 8, 11, 13)):
        x = F.relu(F.conv2d(x, state[f"features.{conv}.weight"], state[f"features.{conv}.bias"], padding=1))
        if i in (0, 1, 3, 5):
            x = F.max_pool2d(x, 2, 2)
    x = torch.transpose(torch.transpose(x, 1, 3), 1, 2).contiguous().view(x.shape[0], -1)
    for fc in (0, 2, 4):
        x = F.relu(F.linear(x, state[f"embeddings.{fc}.weight"], state[f"embeddings.{fc}.bias"]))
    return x


def test_vggish_has_torchvggish_layout_and_output(tmp_path):
    torch.manual_seed(0)
    config = VGGishConfig(channels=(4, 8, 8, 8, 16, 16), hidden=32, dim=128)
    model = VGGish(config).eval()
    state = model.state_dict()
    expected = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")}
    expected |= {f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    assert set(state) == expected
    assert vggish_config_from_state(state) == config
    x = torch.randn(3, 1, 96, 64)
    torch.testing.assert_close(model(x), torchvggish_forward(state, x))
    # a published-layout .pth plus its PCA parameters: PCA-whitened, clipped, quantised
    torch.save(dict(state), tmp_path / "vggish.pth")
    pca = {"pca_eigen_vectors": np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32) * 0.1,
           "pca_means": np.random.default_rng(1).standard_normal(128).astype(np.float32)}
    torch.save(pca, tmp_path / "pca.pth")
    loaded = VGGish.from_pretrained(tmp_path / "vggish.pth", pca=tmp_path / "pca.pth")
    raw = torchvggish_forward(state, x)
    white = (torch.from_numpy(pca["pca_eigen_vectors"]) @ (raw.T - torch.from_numpy(pca["pca_means"])[:, None])).T
    want = torch.round((white.clamp(-2, 2) + 2) * 255 / 4)
    torch.testing.assert_close(loaded(x), want)
    assert isinstance(loaded.pproc, PcaPostprocess)
    model.save_pretrained(tmp_path / "folder")
    torch.testing.assert_close(VGGish.from_pretrained(tmp_path / "folder")(x), model(x))


def test_vggish_rejects_other_files(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a VGGish state dict"):
        VGGish.from_pretrained(tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no such audio encoder"):
        VGGish.from_pretrained(tmp_path / "absent")
