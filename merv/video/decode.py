"""Video decoding: one decode per sample serves every encoder's frame count.

Frames are sampled (`merv.video.sampling`) over the frames the decoder really produces; several frame
counts share one decode of the union of their indices. A video is a file, a still image, or a folder of
extracted frames (one image per frame). Every failure surfaces as `VideoDecodeError`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from merv.video.sampling import SegmentError, gather_frames, sample_indices, segment_frames

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
"""Still images: decoded once and repeated to the requested frame count."""

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".gif"})
"""Suffixes the annotation readers treat as videos (decoding only singles out images and GIFs)."""

FRAME_FOLDER_FPS = 3.0
"""Frame rate assumed for a folder of extracted frames, to place `start`/`end` seconds on its images (the
frame folders benchmarks ship, TVQA's and MVBench's episodic reasoning, hold 3 fps frames)."""

BACKENDS = ("decord", "pyav", "torchcodec")

# Decoding runs inside DataLoader workers, which already give one process per core: a single decoder
# thread per video avoids oversubscribing the CPU.
_DECODER_THREADS = 1

_T = TypeVar("_T")


class VideoDecodeError(RuntimeError):
    """A video (or image) could not be turned into frames.

    Args:
        path: the file that failed.
        reason: what went wrong, in words.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode video '{self.path}': {reason}")

    def __reduce__(self):
        # Keeps the error picklable, so it can cross DataLoader worker boundaries intact.
        return (type(self), (self.path, self.reason))


class _DecodeFailure(Exception):
    """Internal: a backend-independent reason for failing, turned into VideoDecodeError by the caller."""


class _ShortStream(Exception):
    """Internal: the decoder produced fewer frames than the demuxer announced."""

    def __init__(self, count: int) -> None:
        super().__init__(f"decoder produced only {count} frames")
        self.count = count


# ---- backends -----------------------------------------------------------------------------------
#
# A backend reader opens one file and offers `num_frames`, `timestamps()` (seconds, presentation order,
# relative to the first frame), `decode(sorted_indices) -> (K, H, W, 3) uint8 array` and `close()`.


class _PyAVReader:
    """PyAV: a demux pass counts packets and reads their timestamps, a decode pass converts the wanted frames."""

    def __init__(self, path: str) -> None:
        import av

        self._av = av
        self.path = path
        with av.open(path) as container:
            if not container.streams.video:
                raise _DecodeFailure("the file has no video stream")
            stream = container.streams.video[0]
            pts = [p.pts for p in container.demux(stream) if p.size > 0]  # size 0: the demuxer's flush packet
            if not pts:
                raise _DecodeFailure("the video stream holds no frames")
            time_base = stream.time_base
            rate = stream.average_rate or stream.guessed_rate
        if any(p is None for p in pts) or time_base is None:
            # No usable timestamps (some AVI/raw streams): assume a constant frame rate.
            fps = float(rate) if rate else 1.0
            self._times = np.arange(len(pts), dtype=np.float64) / fps
        else:
            ticks = np.sort(np.asarray(pts, dtype=np.float64))  # decode order -> presentation order
            self._times = (ticks - ticks[0]) * float(time_base)
        self.num_frames = len(pts)

    def timestamps(self) -> np.ndarray:
        return self._times

    def decode(self, indices: Sequence[int]) -> np.ndarray:
        wanted = set(indices)
        last = max(indices)
        out: dict[int, np.ndarray] = {}
        count = 0
        with self._av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_count = _DECODER_THREADS
            for frame in container.decode(stream):
                if count in wanted:
                    out[count] = frame.to_ndarray(format="rgb24")
                count += 1
                if count > last:
                    break
        if len(out) < len(wanted):
            raise _ShortStream(count)
        return np.stack([out[i] for i in indices])

    def close(self) -> None:
        pass


class _DecordReader:
    """decord (the maintained `decord2` fork): indexed random access with its own keyframe seeking."""

    def __init__(self, path: str) -> None:
        import decord

        self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=_DECODER_THREADS)
        self.num_frames = len(self._reader)
        if self.num_frames == 0:
            raise _DecodeFailure("the video stream holds no frames")

    def timestamps(self) -> np.ndarray:
        times = np.asarray(self._reader.get_frame_timestamp(list(range(self.num_frames))), dtype=np.float64)
        starts = times.reshape(self.num_frames, -1)[:, 0]
        return starts - starts[0]

    def decode(self, indices: Sequence[int]) -> np.ndarray:
        batch = self._reader.get_batch(list(indices))
        # The result type follows decord's global bridge setting (numpy NDArray by default, torch if set).
        if hasattr(batch, "asnumpy"):
            return batch.asnumpy()
        return np.asarray(batch)

    def close(self) -> None:
        del self._reader


class _TorchCodecReader:
    """torchcodec (optional): exact-mode scan for the frame count, batched `get_frames_at` decoding."""

    def __init__(self, path: str) -> None:
        from torchcodec.decoders import VideoDecoder

        self.path = path
        self._decoder = VideoDecoder(
            path, dimension_order="NHWC", num_ffmpeg_threads=_DECODER_THREADS, seek_mode="exact"
        )
        self.num_frames = len(self._decoder)
        if self.num_frames == 0:
            raise _DecodeFailure("the video stream holds no frames")

    def timestamps(self) -> np.ndarray:
        # torchcodec exposes per-frame times only by decoding; PyAV's demux pass gets them without decoding.
        return _PyAVReader(self.path).timestamps()[: self.num_frames]

    def decode(self, indices: Sequence[int]) -> np.ndarray:
        return self._decoder.get_frames_at(list(indices)).data.numpy()

    def close(self) -> None:
        del self._decoder


def _natural_key(name: str) -> list[str | int]:
    # `frame_2.jpg` before `frame_10.jpg`: frame numbers are not always zero-padded.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def frame_folder_images(path: str | os.PathLike) -> list[Path]:
    """The frame images of a folder of extracted frames, in frame order (names compared number-aware).

    Hidden files are ignored; an empty list means the folder is not a frame folder.
    """
    folder = Path(path)
    files = [
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


class _FrameFolderReader:
    """A folder of extracted frames, one image per frame at `FRAME_FOLDER_FPS`; only wanted images are read."""

    def __init__(self, path: str) -> None:
        self.files = frame_folder_images(path)
        if not self.files:
            raise _DecodeFailure(
                f"the directory holds no frame images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "a video must be a file or a folder of extracted frames"
            )
        self.num_frames = len(self.files)

    def timestamps(self) -> np.ndarray:
        return np.arange(self.num_frames, dtype=np.float64) / FRAME_FOLDER_FPS

    def decode(self, indices: Sequence[int]) -> np.ndarray:
        from PIL import Image

        arrays = []
        for i in indices:
            try:
                with Image.open(self.files[i]) as image:
                    arrays.append(np.asarray(image.convert("RGB")))
            except Exception as e:  # noqa: BLE001 - a damaged frame makes the clip unreadable, not the run
                raise _DecodeFailure(f"cannot read frame '{self.files[i].name}' ({type(e).__name__}: {e})") from e
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise _DecodeFailure(f"the frame images differ in size: {sorted(shapes)}")
        return np.stack(arrays)

    def close(self) -> None:
        pass


_READERS: dict[str, Callable[[str], Any]] = {
    "decord": _DecordReader,
    "pyav": _PyAVReader,
    "torchcodec": _TorchCodecReader,
}


def backend_available(name: str) -> bool:
    """Whether a decoding backend's package is importable (`decord` comes from the `decord2` package)."""
    module = {"decord": "decord", "pyav": "av", "torchcodec": "torchcodec"}.get(name)
    if module is None:
        raise ValueError(f"unknown video backend {name!r}; expected one of {BACKENDS}")
    return importlib.util.find_spec(module) is not None


def _decode_with(
    open_reader: Callable[[str], Any], path: str, frame_counts: Sequence[int], start: float | None, end: float | None
) -> list[torch.Tensor]:
    """Open with one reader, plan the union of indices, decode it once and split it per count."""
    reader = open_reader(path)
    try:
        num_frames = reader.num_frames
        for _ in range(2):
            if start is None and end is None:
                candidates = np.arange(num_frames)
            else:
                try:
                    candidates = segment_frames(reader.timestamps()[:num_frames], start, end)
                except SegmentError as e:
                    raise _DecodeFailure(str(e)) from None
            per_count = [[int(candidates[j]) for j in sample_indices(len(candidates), k)] for k in frame_counts]
            union = sorted(set().union(*per_count))
            try:
                frames = torch.from_numpy(np.ascontiguousarray(reader.decode(union)))  # (U, H, W, 3)
            except _ShortStream as short:
                # The container announced more frames than the decoder delivers (truncated or damaged
                # tail): plan again over the frames that really exist.
                if short.count == 0:
                    raise _DecodeFailure("the decoder produced no frames") from None
                logger.debug("%s: decoder produced %d of %d frames", path, short.count, num_frames)
                num_frames = short.count
                continue
            position = {idx: row for row, idx in enumerate(union)}
            return [frames[torch.tensor([position[i] for i in idx], dtype=torch.long)] for idx in per_count]
        raise _DecodeFailure("the decoder's frame count kept changing between passes")
    finally:
        reader.close()


def _read_image(path: str, frame_counts: Sequence[int]) -> list[torch.Tensor]:
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    frame = torch.from_numpy(array.copy()).unsqueeze(0)  # (1, H, W, 3)
    return gather_frames(frame, frame_counts)


def _decode(
    path: str, frame_counts: Sequence[int], start: float | None, end: float | None, backend: str | None
) -> list[torch.Tensor]:
    if os.path.isdir(path):
        try:
            return _decode_with(_FrameFolderReader, path, frame_counts, start, end)
        except _DecodeFailure:
            raise
        except Exception as e:  # noqa: BLE001 - an unreadable folder must become a skip, not a crash
            raise _DecodeFailure(f"{type(e).__name__}: {str(e).strip()[:300]}") from e
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        try:
            return _read_image(path, frame_counts)
        except Exception as e:
            raise _DecodeFailure(f"cannot read image ({type(e).__name__}: {e})") from e
    if backend is None:
        # decord cannot read GIF palettes, and is optional: PyAV always is there to fall back on.
        order = ["pyav"] if suffix == ".gif" or not backend_available("decord") else ["decord", "pyav"]
    else:
        order = [backend]
    reasons = []
    for name in order:
        try:
            return _decode_with(_READERS[name], path, frame_counts, start, end)
        except _DecodeFailure as e:
            reasons.append(f"{name}: {e}" if len(order) > 1 else str(e))
        except Exception as e:  # noqa: BLE001 - any library error on a bad file must become a skip, not a crash
            reasons.append(f"{name}: {type(e).__name__}: {str(e).strip()[:300]}")
        if len(order) > 1 and name != order[-1]:
            logger.debug("%s: %s failed (%s), trying %s", path, name, reasons[-1], order[order.index(name) + 1])
    raise _DecodeFailure("; ".join(reasons))


def _run_bounded(fn: Callable[[], _T], timeout: float | None, path: str) -> _T:
    """Run `fn` in a daemon thread and give up after `timeout` seconds.

    A hung decode cannot be killed from Python. The worker thread is a daemon so it never blocks
    interpreter exit; if it does hang, it keeps its file handle and CPU until the process ends, which
    for DataLoader workers is the end of the epoch. A decoder that hangs while holding the GIL cannot be
    bounded by any thread: the DataLoader's own `timeout` is the last line of defence there.
    """
    if timeout is None:
        return fn()
    result: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = e
        finally:
            done.set()

    threading.Thread(target=target, name=f"merv-decode:{Path(path).name}", daemon=True).start()
    if not done.wait(timeout):
        raise VideoDecodeError(path, f"decoding did not finish within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def read_frames(
    path: str | os.PathLike,
    frame_counts: Sequence[int],
    *,
    start: float | None = None,
    end: float | None = None,
    backend: str | None = None,
    timeout: float | None = 60.0,
) -> list[torch.Tensor]:
    """Decode a video once and sample it for several frame counts.

    The sorted union of every count's indices is decoded in one pass; each count then takes its own
    subset, so the result is pixel-equal to decoding each count alone. Still images (jpg, png, ...)
    load as a static video; GIFs decode as videos. A directory is a folder of extracted frames: its images
    (`frame_folder_images`) are the frames, `FRAME_FOLDER_FPS` apart, and only the sampled ones are read.

    Args:
        path: video file, image file or folder of extracted frames.
        frame_counts: frames wanted per consumer, e.g. one count per encoder.
        start: segment start in seconds (relative to the first frame); sampling stays inside the segment.
        end: segment end in seconds.
        backend: `"decord"`, `"pyav"` or `"torchcodec"`; None tries decord, then PyAV if decord fails.
            Images and frame folders are read with PIL whatever the backend.
        timeout: seconds before a decode counts as hung (None: no bound). See `_run_bounded` for
            what happens to a hung decoder thread.

    Returns:
        One `(T_e, H, W, 3)` uint8 tensor per entry of `frame_counts`.

    Raises:
        VideoDecodeError: the file is missing, empty, corrupt, has no video stream or no frames, cannot
            be decoded, the segment holds no frame, decoding timed out, or a directory holds no frame
            images (or unreadable or differently sized ones).
        ValueError: bad arguments (unknown backend, counts below 1, segment end before its start).
    """
    path = os.fspath(path)
    counts = [int(k) for k in frame_counts]
    if not counts or min(counts) < 1:
        raise ValueError(f"frame_counts must be positive integers, got {list(frame_counts)}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {BACKENDS}")
    if start is not None and end is not None and end < start:
        raise ValueError(f"segment end ({end}) is before its start ({start}) for '{path}'")
    if backend is not None and not backend_available(backend):
        package = {"decord": "decord2", "pyav": "av"}.get(backend, backend)
        raise ImportError(f"video backend {backend!r} is not installed: pip install {package}")
    if not os.path.exists(path):
        raise VideoDecodeError(path, "the file does not exist")
    if not os.path.isdir(path) and os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes)")

    def work() -> list[torch.Tensor]:
        try:
            return _decode(path, counts, start, end, backend)
        except _DecodeFailure as e:
            raise VideoDecodeError(path, str(e)) from None

    return _run_bounded(work, timeout, path)


__all__ = [
    "BACKENDS",
    "FRAME_FOLDER_FPS",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "VideoDecodeError",
    "backend_available",
    "frame_folder_images",
    "read_frames",
]
