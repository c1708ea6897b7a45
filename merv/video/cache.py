"""Pixel I/O: on-disk and in-memory caches of decoded, resized per-encoder pixels, and the entry format they
share with the feature cache.

* `PixelCache`: what `VideoLMProcessor.preprocess` consults before decoding a video file.
* `VideoTensorCache`: decoded, resized per-encoder pixels (`processor.preprocess` output) on disk, for
  repeated evaluation (or training that decodes the same clips every epoch).
* `PixelMemory`: the same in memory for the last clips decoded, e.g. few-shot exemplars reused by every
  question; built on `LRUCache`.
* `VideoIdentity`, `write_entry`, `read_entry`: which bytes an entry was computed from, and atomic,
  checksummed safetensors entries (`merv.data.features` stores encoder features the same way).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from merv.video.decode import frame_folder_images
from merv.video.pixels import FrameSpec

logger = logging.getLogger(__name__)


class PixelCache(Protocol):
    """Where `VideoLMProcessor.preprocess` looks up a clip's per-encoder pixels before decoding it
    (`VideoTensorCache` on disk, `PixelMemory` in memory)."""

    def get(self, video: str | os.PathLike, start: float | None, end: float | None) -> list[torch.Tensor] | None:
        """The clip's `(T_e, 3, S_e, S_e)` uint8 pixels per encoder, or None to decode it."""

    def put(
        self, video: str | os.PathLike, start: float | None, end: float | None, pixels: Sequence[torch.Tensor]
    ) -> bool:
        """Offer a clip's decoded pixels; returns whether they were stored (a read-only cache declines)."""


FORMAT_VERSION = "merv-cache/1"
"""Written into every entry and namespace; bump it when sampling, alignment or the layout change."""


class CorruptCacheEntryError(RuntimeError):
    """A cache file exists but cannot be trusted (truncated, garbage, wrong shape, checksum mismatch).

    Args:
        path: the entry file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"corrupt cache entry '{self.path}': {reason}")

    def __reduce__(self):
        # Picklable with its arguments, so it crosses DataLoader worker boundaries intact.
        return (type(self), (self.path, self.reason))


def digest(value: Any, length: int = 16) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def clip_bound(value: Any) -> float | None:
    # 1 and 1.0 are the same bound: normalise before hashing.
    return None if value is None else float(value)


@dataclass(frozen=True)
class VideoIdentity:
    """Which bytes a cache entry was computed from: resolved path, size, modification time and clip bounds.

    For a folder of extracted frames, size and modification time are the total size and the latest
    modification time of its frame images, so replacing any frame makes its entries stale.
    """

    path: str
    size: int
    mtime_ns: int
    start: float | None = None
    end: float | None = None

    @classmethod
    def of(cls, video: str | os.PathLike, start: float | None = None, end: float | None = None) -> VideoIdentity:
        """Stat a video file now.

        Raises:
            FileNotFoundError: the file does not exist.
        """
        path = os.path.realpath(os.fspath(video))
        st = os.stat(path)
        if os.path.isdir(path):
            # A folder's own mtime only changes when entries are added or removed, not when a frame is rewritten.
            stats = [f.stat() for f in frame_folder_images(path)]
            size = sum(f.st_size for f in stats)
            mtime_ns = max([st.st_mtime_ns, *(f.st_mtime_ns for f in stats)])
            return cls(path, size, mtime_ns, clip_bound(start), clip_bound(end))
        return cls(path, st.st_size, st.st_mtime_ns, clip_bound(start), clip_bound(end))

    @property
    def clip_digest(self) -> str:
        """Names the entry file: path and clip only, so a changed file maps to the same (then stale) entry."""
        return digest([self.path, self.start, self.end], 32)

    def metadata(self) -> dict[str, str]:
        return {
            "video": self.path,
            "size": str(self.size),
            "mtime_ns": str(self.mtime_ns),
            "start": json.dumps(self.start),
            "end": json.dumps(self.end),
        }

    def mismatch(self, metadata: Mapping[str, str]) -> str | None:
        """Why an entry's metadata does not describe this video now (None when it does)."""
        if (
            metadata.get("video") != self.path
            or metadata.get("start") != json.dumps(self.start)
            or (metadata.get("end") != json.dumps(self.end))
        ):
            return f"the entry belongs to {metadata.get('video')!r} [{metadata.get('start')}, {metadata.get('end')}]"
        if metadata.get("size") != str(self.size):
            return f"the video changed since the entry was built (size {metadata.get('size')} -> {self.size} bytes)"
        if metadata.get("mtime_ns") != str(self.mtime_ns):
            return (
                f"the video changed since the entry was built (mtime_ns {metadata.get('mtime_ns')} -> {self.mtime_ns})"
            )
        return None


# Files whose change means other weights in a local pretrained directory (a re-export rewrites them).


def _crc(tensor: torch.Tensor) -> str:
    return f"{zlib.crc32(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()):08x}"


def write_entry(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file atomically: a unique temp file in the same folder, then `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT_VERSION, **metadata}
    meta.update({f"crc32:{k}": _crc(v) for k, v in tensors.items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_entry(path: Path, names: Sequence[str] | None) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and (unless `names` is None) the named tensors, checksums verified.

    Raises:
        FileNotFoundError: no entry.
        CorruptCacheEntryError: the file is not a readable entry of this format.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != FORMAT_VERSION:
                raise CorruptCacheEntryError(path, f"format {meta.get('format')!r}, expected {FORMAT_VERSION!r}")
            tensors = {}
            available = set(f.keys())
            for name in names or ():
                if name not in available:
                    raise CorruptCacheEntryError(path, f"no tensor {name!r}")
                tensors[name] = f.get_tensor(name)
    except (FileNotFoundError, CorruptCacheEntryError):
        raise
    except Exception as e:  # noqa: BLE001 - whatever fails to parse (SafetensorError, OSError, ...) is untrustworthy
        raise CorruptCacheEntryError(path, f"{type(e).__name__}: {e}") from None
    for name, t in tensors.items():
        if meta.get(f"crc32:{name}") != _crc(t):
            raise CorruptCacheEntryError(path, f"checksum mismatch for tensor {name!r}")
    return meta, tensors


# ---- pixel caches -------------------------------------------------------------------------------


class VideoTensorCache:
    """On-disk cache of decoded, resized per-encoder pixels (`processor.preprocess` output).

    Set it as a processor's `pixel_cache` (the eval scripts' `--video_cache`, training's
    `model.video_cache`) and every video file that processor reads is looked up here before it is decoded.
    Entries live in a namespace per (dataset identity, every encoder's frame count, size and normalisation)
    and are checked against the video file's identity like feature-cache entries. The cache is read-only
    unless `writable=True`: a read-only cache stores nothing it is offered, so a training run never writes
    to a shared cache by accident.

    Args:
        root: cache folder.
        frame_specs: the model's per-encoder frame specs (`processor.frame_specs`).
        dataset_id: names the dataset (e.g. the benchmark name), so two datasets never share entries even
            if their paths collide after moving.
        writable: store what `put` is offered.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        frame_specs: Sequence[FrameSpec],
        dataset_id: str,
        *,
        writable: bool = False,
    ) -> None:
        self.specs = list(frame_specs)
        key = {
            "format": FORMAT_VERSION,
            "dataset": dataset_id,
            "specs": [[s.num_frames, s.image_size, list(s.mean), list(s.std)] for s in self.specs],
        }
        self._key = json.dumps(key, sort_keys=True)
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset_id)[:40] or "dataset"
        self.dir = Path(root) / f"pixels-{slug}-{digest(key)}"
        self.writable = writable
        self.hits = 0
        self.misses = 0
        self._write_failed = False

    def _path(self, video: VideoIdentity) -> Path:
        digest = video.clip_digest
        return self.dir / digest[:2] / f"{digest}.safetensors"

    def get(
        self, video: str | os.PathLike, start: float | None = None, end: float | None = None
    ) -> list[torch.Tensor] | None:
        """Cached `(T_e, 3, S_e, S_e)` uint8 pixels per encoder, or None (missing, stale or corrupt entry)."""
        try:
            ident = VideoIdentity.of(video, start, end)
            meta, tensors = read_entry(self._path(ident), sorted({_pixel_group(spec) for spec in self.specs}))
        except FileNotFoundError:
            self.misses += 1
            return None
        except CorruptCacheEntryError as e:
            logger.warning("%s; ignoring it", e)
            self.misses += 1
            return None
        except OSError as e:  # an unreadable cache must not stop a run that can decode the video
            logger.warning("video tensor cache: cannot read the entry of %s (%s); decoding it", video, e)
            self.misses += 1
            return None
        if meta.get("key") != self._key or ident.mismatch(meta) is not None:
            self.misses += 1
            return None
        self.hits += 1
        return [tensors[_pixel_group(spec)] for spec in self.specs]

    def put(
        self, video: str | os.PathLike, start: float | None, end: float | None, pixels: Sequence[torch.Tensor]
    ) -> bool:
        """Store one clip's per-encoder pixels if the cache is writable; returns whether it stored them."""
        if len(pixels) != len(self.specs):
            raise ValueError(f"got pixels for {len(pixels)} encoders, the cache has {len(self.specs)}")
        if not self.writable:
            return False
        tensors: dict[str, torch.Tensor] = {}
        for spec, p in zip(self.specs, pixels):
            tensors.setdefault(_pixel_group(spec), p)
        try:
            ident = VideoIdentity.of(video, start, end)
            write_entry(self._path(ident), tensors, {"key": self._key, **ident.metadata()})
        except OSError as e:  # a full disk or a folder without write access costs the cache, not the run
            if not self._write_failed:
                logger.warning("video tensor cache %s: cannot store entries (%s); continuing without", self.dir, e)
            self._write_failed = True
            return False
        return True


def _pixel_group(spec: FrameSpec) -> str:
    """Encoders with the same frame count and size get the same pixels (the processor resizes them once),
    so an entry stores one tensor per group: safetensors refuses tensors that share memory, and the disk
    need not hold copies."""
    return f"pixels_{spec.num_frames}x{spec.image_size}"


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """A bounded in-memory mapping that evicts the least recently used item.

    Args:
        max_items: capacity, at least 1.
    """

    def __init__(self, max_items: int = 32) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.max_items = max_items
        self._items: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        if key not in self._items:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)


class PixelMemory:
    """In-memory pixel cache for a processor's `pixel_cache`: the last `max_items` clips it decoded.

    Few-shot evaluation puts exemplar clips in front of many queries; an exemplar used again while it is
    among the last `max_items` clips is not decoded again (every one, once the pool fits). Clips are keyed
    by file identity and bounds, so a rewritten file is decoded anew.

    Args:
        max_items: clips kept (a `merv-full` clip is about 7 MB of uint8 pixels).
    """

    def __init__(self, max_items: int = 32) -> None:
        self.items: LRUCache[VideoIdentity, list[torch.Tensor]] = LRUCache(max_items)

    def get(
        self, video: str | os.PathLike, start: float | None = None, end: float | None = None
    ) -> list[torch.Tensor] | None:
        try:
            key = VideoIdentity.of(video, start, end)
        except FileNotFoundError:
            return None  # decoding it reports the missing file the usual way
        return self.items.get(key)

    def put(
        self, video: str | os.PathLike, start: float | None, end: float | None, pixels: Sequence[torch.Tensor]
    ) -> bool:
        self.items.put(VideoIdentity.of(video, start, end), list(pixels))
        return True


__all__ = [
    "FORMAT_VERSION",
    "CorruptCacheEntryError",
    "LRUCache",
    "PixelCache",
    "PixelMemory",
    "VideoIdentity",
    "VideoTensorCache",
    "clip_bound",
    "digest",
    "read_entry",
    "write_entry",
]
