"""Reading audio: the sound track of a video file, or a separate audio file, as one mono
waveform at the rate an audio encoder wants, and its alignment to a video's frames.

Everything PyAV (FFmpeg) decodes is read: WAV, FLAC, MP3, Ogg, the AAC or PCM track of an MP4 /
MKV / AVI / WebM. The signal is resampled by FFmpeg's resampler to `rate` and its channels
averaged to mono (as `refseg.data.formats.common.read_wav` does). A file without a sound track,
or that cannot be decoded, raises `InputError` in one line that names the file and says what the
user can pass instead.

A track shorter than the video it goes with is padded with silence, with one warning naming the
shortfall (`fit_to_frames`): the frames past the end of the sound are then segmented as if they
were silent, which is what a listener would hear. A longer track is cut at the video's end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import numpy as np

from refseg.io.video import InputError
from refseg.prompts import Audio

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")


def read_audio(path: str | os.PathLike[str], rate: int = 16000) -> Audio:
    """The first sound track of a video or audio file, mono, resampled to `rate` Hz."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such audio or video file")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                video = bool(container.streams.video)
                hint = "pass the sound as a separate file with --audio FILE" if video else "is it an audio file?"
                raise InputError(f"{path}: no audio track ({hint})")
            stream = container.streams.audio[0]
            # keep the channels and average them (FFmpeg's own downmix scales stereo by 1/sqrt(2))
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
    except av.FFmpegError as err:
        raise InputError(f"{path}: cannot decode its audio ({err}); pass a readable file with --audio FILE") from err
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InputError(f"{path}: its audio track holds no sample; pass the sound with --audio FILE")
    return Audio(samples, rate)


def fit_to_frames(audio: Audio, num_frames: int, fps: float, name: str = "the audio") -> Audio:
    """The waveform cut or padded with silence to the length of `num_frames` frames at `fps`
    (a shorter track logs one warning, naming `name` and the missing seconds)."""
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"fit_to_frames: need frames >= 1 and fps > 0, got {num_frames} frames at {fps} fps")
    need = int(round(num_frames / fps * audio.rate))
    have = len(audio.samples)
    if have >= need:
        return Audio(audio.samples[:need], audio.rate)
    missing = (need - have) / audio.rate
    if missing > 0.5 / fps:  # more than half a frame: say so
        log.warning("%s: the audio is %.2f s long, the video %.2f s; the last %.2f s are taken as silence",
                    name, have / audio.rate, need / audio.rate, missing)
    return Audio(np.concatenate([audio.samples, np.zeros(need - have, np.float32)]), audio.rate)


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """Timestamps [T] in seconds of frames 0..T-1 at `fps` (frame t shown at t / fps)."""
    return np.arange(num_frames, dtype=np.float64) / fps


def resample(audio: Audio, rate: int) -> Audio:
    """The waveform at `rate` Hz, through FFmpeg's resampler (as `read_audio` resamples)."""
    if audio.rate == rate:
        return audio
    frame = av.AudioFrame.from_ndarray(audio.samples[None].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = audio.rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return Audio(np.concatenate(chunks), rate)
