"""Reading frames (video files, image folders, single images, live sources) and writing videos,
through PyAV.

Live sources: `cam://N` (camera N: /dev/videoN through video4linux2 on Linux, AVFoundation
device N on macOS) and network streams (rtsp://, rtmp://, http(s)://, udp://); they are read
until they end or the reader stops.

Every frame comes out as an H x W x 3 uint8 RGB numpy array. A file that cannot be decoded,
or that holds no frame, raises `InputError` naming the file.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class InputError(ValueError):
    """An input file or folder that cannot be read."""


LIVE_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://")


def is_live(source: str | os.PathLike[str]) -> bool:
    return str(source).startswith(("cam://", *LIVE_SCHEMES))


def frames(source: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Frames of a video file, of the images of a folder (sorted by name), of one image, or of a
    live source (`cam://N`, rtsp:// ...)."""
    if is_live(source):
        yield from _live(str(source))
        return
    path = Path(source)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"{path}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
        for image in images:
            yield read_image(image)
        return
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        yield read_image(path)
        return
    yield from _decode(path)


def _live(source: str) -> Iterator[np.ndarray]:
    if source.startswith("cam://"):
        index = source.removeprefix("cam://")
        if not index.isdigit():
            raise InputError(f"{source}: expected cam://N with N a camera number")
        url, options = (f"/dev/video{index}", "v4l2") if sys.platform.startswith("linux") else (index, "avfoundation")
    else:
        url, options = source, None
    try:
        container = av.open(url, format=options, timeout=10.0)
    except (av.FFmpegError, OSError) as err:
        raise InputError(f"{source}: cannot open the live source ({err})") from err
    with container:
        if not container.streams.video:
            raise InputError(f"{source}: no video stream")
        try:
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as err:
            raise InputError(f"{source}: stream interrupted ({err})") from err


def _decode(path: Path) -> Iterator[np.ndarray]:
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                count += 1
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as err:
        raise InputError(f"{path}: cannot decode video after {count} frames ({err})") from err
    if count == 0:
        raise InputError(f"{path}: no frame could be decoded (empty or corrupt file)")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """One image file as H x W x 3 uint8 RGB, decoded by PIL (libjpeg for JPEG), as the official
    code of SAM 2, SAMWISE and EVF-SAM reads dataset frames: FFmpeg's JPEG decoder gives other
    pixels (up to 22 grey levels apart on 89 % of a 480 x 854 test frame), and other masks."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: cannot decode image ({err})") from err


def video_fps(source: str | os.PathLike[str], default: float = 24.0) -> float:
    """Frame rate of a video file (`default` for folders, images or unknown rates)."""
    path = Path(source)
    if not path.is_file() or path.suffix.lower() not in VIDEO_SUFFIXES:
        return default
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
    except (av.FFmpegError, IndexError):
        return default
    return float(rate) if rate else default


class VideoWriter:
    """Writes RGB frames to an H.264 (yuv420p) video, atomically.

    Frames go to a hidden temporary file beside the target, renamed onto it by `close()`; if the
    writer is closed after an error (used as a context manager), the temporary file is removed
    and nothing is left at the target. Odd frame sizes are padded by one pixel (H.264 needs
    even sizes).
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = 24.0, crf: int = 18) -> None:
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one H x W x 3 uint8 RGB frame."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: frames must be H x W x 3 uint8, got {frame.shape} {frame.dtype}")
        height, width = frame.shape[:2]
        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fmt = {".mkv": "matroska", ".webm": "webm", ".avi": "avi"}.get(self.path.suffix.lower(), "mp4")
            self._container = av.open(str(self._tmp), mode="w", format=fmt)
            codec = "libvpx-vp9" if fmt == "webm" else "libx264"
            self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = frame.shape[1], frame.shape[0]
            self._stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                self._stream.options = {"crf": str(self.crf)}
        assert self._stream is not None
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._container is None:
            return
        assert self._stream is not None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop what was written; the target is left untouched."""
        if self._container is not None:
            self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
