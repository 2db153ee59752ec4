"""Reading frames (video files, image folders, single images, live sources) and writing videos,
through PyAV.

Live sources: `cam://N` (camera N: /dev/videoN through video4linux2 on Linux, AVFoundation
device N on macOS) and network streams (rtsp://, rtmp://, http(s)://, udp://); they are read
until they end or the reader stops.

Every frame comes out as an H x W x 3 uint8 RGB numpy array. A file that cannot be decoded,
or that holds no frame, raises `InputError` naming the file. A file that decodes in part (cut
short, damaged packets) gives the frames that decode and says which did not (`DecodeReport`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from refseg.errors import InputError, raise_if_stopped

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


LIVE_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://")


def is_live(source: str | os.PathLike[str]) -> bool:
    return str(source).startswith(("cam://", *LIVE_SCHEMES))


@dataclass
class DecodeReport:
    """What reading an input gave, against what its container announced.

    decoded: frames read; announced: the frame count the container states (its frame table, or
    duration x rate; None where it states neither: live sources, folders, some Matroska files);
    skipped_after: for each packet that could not be decoded, how many frames had been read
    before it; corrupt: indices of frames the decoder marked as damaged (concealed errors)."""

    decoded: int = 0
    announced: int | None = None
    skipped_after: list[int] = field(default_factory=list)
    corrupt: list[int] = field(default_factory=list)

    @property
    def missing(self) -> int:
        """Announced frames that never came (one frame of slack for rounded durations)."""
        if self.announced is None or self.decoded >= self.announced - 1:
            return 0
        return self.announced - self.decoded

    def problems(self) -> list[str]:
        """One phrase per kind of damage, with counts and frame indices; empty for a sound input."""
        found = []
        if self.missing:
            where = "" if self.skipped_after else f" (frames {self.decoded}-{self.announced - 1}: a truncated file?)"
            found.append(f"the container announces {self.announced} frames but only {self.decoded} were read{where}")
        if self.skipped_after:
            found.append(f"{len(self.skipped_after)} undecodable packet(s) skipped, after frames {_listed(self.skipped_after)}")
        if self.corrupt:
            found.append(f"{len(self.corrupt)} frame(s) decoded with concealed damage: {_listed(self.corrupt)}")
        return found

    def as_dict(self) -> dict:
        return {"frames_decoded": self.decoded, "frames_announced": self.announced,
                "skipped_packets_after_frames": self.skipped_after, "damaged_frames": self.corrupt}


def _listed(indices: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


class FrameStream(Iterator[np.ndarray]):
    """The frames of an input, one H x W x 3 uint8 RGB array at a time, and `report`, what the
    reading found so far (complete once the stream is exhausted). Damage is logged as one warning
    when the stream ends; with `strict`, the first sign of it raises `InputError` instead. With
    `max_side`, larger frames come out scaled to fit it (live sources too)."""

    def __init__(self, source: str | os.PathLike[str], strict: bool = False, max_side: int | None = None) -> None:
        if max_side is not None and max_side < 16:
            raise InputError(f"--max-side: frames need at least 16 px on their longer side, got {max_side}")
        self.source = source
        self.strict = strict
        self.max_side = max_side
        self.report = DecodeReport()
        self._frames = self._read()

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> np.ndarray:
        raise_if_stopped()  # a stop a library swallowed ends the run at the next frame
        return next(self._frames)

    def _read(self) -> Iterator[np.ndarray]:
        source = self.source
        if is_live(source):
            yield from self._counted(_live(str(source), self._rgb))
            return
        path = Path(source)
        if path.is_dir():
            images = folder_images(path)
            if not images:
                raise InputError(f"{path}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
            yield from self._counted(read_image(image, self.max_side) for image in images)
            return
        if not path.is_file():
            raise InputError(f"{path}: no such file or folder")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield from self._counted(iter([read_image(path, self.max_side)]))
            return
        yield from self._decode(path)

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded frame as RGB, scaled by FFmpeg to fit `max_side`."""
        height, width = fit_size(frame.height, frame.width, self.max_side)
        if (height, width) == (frame.height, frame.width):
            return frame.to_ndarray(format="rgb24")
        return frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()

    def _counted(self, items: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for item in items:
            self.report.decoded += 1
            yield item

    def _damage(self, what: str) -> None:
        if self.strict:
            raise InputError(f"{self.source}: {what} (--strict; without it the readable frames are used)")

    def _decode(self, path: Path) -> Iterator[np.ndarray]:
        report = self.report
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError) as err:
            raise InputError(f"{path}: cannot open as a video ({_reason(err)})") from err
        with container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            report.announced = _announced(container, stream)
            try:
                for packet in container.demux(stream):
                    try:
                        decoded = packet.decode()
                    except av.FFmpegError as err:
                        report.skipped_after.append(report.decoded)
                        self._damage(f"an undecodable packet after frame {report.decoded} ({_reason(err)})")
                        continue
                    for frame in decoded:
                        if frame.is_corrupt:
                            report.corrupt.append(report.decoded)
                            self._damage(f"frame {report.decoded} is damaged")
                        report.decoded += 1
                        yield self._rgb(frame)
            except av.FFmpegError as err:  # the container itself stops making sense
                if report.decoded == 0:
                    raise InputError(f"{path}: cannot decode video ({_reason(err)})") from err
                report.skipped_after.append(report.decoded)
                self._damage(f"the file cannot be read past frame {report.decoded} ({_reason(err)})")
        if report.decoded == 0:
            raise InputError(f"{path}: no frame could be decoded (empty or corrupt file)")
        if report.missing:
            self._damage(f"{report.missing} of the {report.announced} announced frames are missing")
        problems = report.problems()
        if problems:
            log.warning("%s: %s; the results cover the %d frames read (--strict makes this an error)", path,
                        "; ".join(problems), report.decoded)


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)


def _announced(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int | None:
    """The frame count the container states: its frame table, else its duration x frame rate."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate
    if stream.duration and stream.time_base and rate:
        return round(float(stream.duration * stream.time_base * rate))
    if container.duration and rate:
        return round(container.duration / av.time_base * float(rate))
    return None


def frames(source: str | os.PathLike[str], strict: bool = False, max_side: int | None = None) -> FrameStream:
    """Frames of a video file, of the images of a folder (sorted by name), of one image, or of a
    live source (`cam://N`, rtsp:// ...); see `FrameStream` for what is said of damaged input.
    `max_side`: frames larger than that on their longer side come out scaled to fit it (decoded
    smaller where the format allows), so that memory per frame is bounded."""
    return FrameStream(source, strict, max_side)


def folder_images(folder: Path) -> list[Path]:
    """The image files of a folder of frames, in frame (name) order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _live(source: str, rgb: Callable[[av.VideoFrame], np.ndarray]) -> Iterator[np.ndarray]:
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
                yield rgb(frame)
        except av.FFmpegError as err:
            raise InputError(f"{source}: stream interrupted ({err})") from err


def fit_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is at most `max_side` (aspect kept)."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_image(path: str | os.PathLike[str], max_side: int | None = None) -> np.ndarray:
    """One image file as H x W x 3 uint8 RGB, decoded by PIL (libjpeg for JPEG), as the official
    code of SAM 2, SAMWISE and EVF-SAM reads dataset frames: FFmpeg's JPEG decoder gives other
    pixels (up to 22 grey levels apart on 89 % of a 480 x 854 test frame), and other masks.

    max_side: a larger image comes out scaled to fit it; a JPEG is decoded at the nearest larger
    power-of-two reduction first (libjpeg's DCT scaling), so its full size is never in memory."""
    try:
        with Image.open(path) as image:
            size = fit_size(image.height, image.width, max_side)
            if size != (image.height, image.width):
                image.draft("RGB", (size[1], size[0]))
                return np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)).copy()
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


def letterbox(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """`frame` [h, w, 3] scaled to fit `height` x `width` with its aspect kept, centred on black."""
    h, w = frame.shape[:2]
    scale = min(height / h, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    out[top : top + size[1], left : left + size[0]] = scaled
    return out


class VideoWriter:
    """Writes RGB frames to an H.264 (yuv420p) video, atomically.

    Frames go to a hidden temporary file beside the target, renamed onto it by `close()`; if the
    writer is closed after an error (used as a context manager), the temporary file is removed
    and nothing is left at the target. Odd frame sizes are padded by one pixel (H.264 needs
    even sizes); a frame of another size than the first is scaled to fit the first's with its
    aspect kept (`letterbox`).
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
        if self._stream is not None and frame.shape[:2] != (self._stream.height, self._stream.width):
            frame = letterbox(frame, self._stream.height, self._stream.width)
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
