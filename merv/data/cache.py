"""The frozen-encoder feature cache: each encoder's aligned, pre-projection features per video.

`FeatureCache` holds each encoder's `VideoLM.encode_aligned` output, one safetensors file per (encoder
namespace, video clip), in the entry format of `merv.video.cache`. `build_feature_cache` fills it, sharded
over ranks; `CachedFeatureDataset` trains from it and `fill_missing_features` encodes the samples it lacks.

Layout of a feature cache::

    ROOT/<encoder id>-<key digest>/meta.json                    the namespace's key, human-readable
    ROOT/<encoder id>-<key digest>/<ab>/<clip digest>.safetensors  one tensor `features` (T, tokens_per_frame, D)

The namespace digest covers everything that changes an encoder's output (id, weights identity, frame count,
resolution, layer, alignment grid); the clip digest covers the resolved video path and the clip bounds. The
video's size and modification time live in each entry's metadata, so a rewritten video makes its entries
stale (detected and rebuilt) instead of orphaning them. Entries are written to a temporary file and moved
into place with `os.replace`, so readers never see half a file and parallel builds never collide.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from merv.data.dataset import Clip, Processor, SkippedSample, VideoTextDataset, describe_sample, record_clips
from merv.models.vidlm import aligned_temporal_tokens
from merv.video import FrameSpec, VideoDecodeError, read_frames
from merv.video.cache import (
    FORMAT_VERSION,
    CorruptCacheEntryError,
    VideoIdentity,
    clip_bound,
    digest,
    read_entry,
    write_entry,
)
from merv.video.clips import stack_clips, with_clip_axis

if TYPE_CHECKING:
    from merv.models.encoders.base import VisionEncoder
    from merv.models.vidlm import VideoLM

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Storage dtypes by name (the `--dtype` choices of `python -m merv.cache build`)."""

OnMiss = Literal["encode", "error"]
_MAX_MISS_WARNINGS = 10  # per dataset copy (i.e. per DataLoader worker); the rest go to DEBUG


class FeatureCacheMissError(RuntimeError):
    """A sample has no valid feature-cache entry and the dataset was told not to encode it live."""


# ---- identities ---------------------------------------------------------------------------------


_WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".h5", ".msgpack"})


def _local_weights_fingerprint(path: Path) -> str:
    """Digest of the names, sizes and modification times of a local checkpoint's weight and config files."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(
            p for p in path.iterdir() if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json")
        )
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return digest(stats)


def _hub_commit(repo_id: str) -> str | None:
    """The commit the local Hugging Face cache resolves `repo_id` (default revision) to; None if not cached."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "refs" / "main"
        return ref.read_text().strip() or None
    except Exception:  # noqa: BLE001 - no hub library, an odd id, no cache entry: fall back to the name alone
        return None


def weights_identity(encoder: VisionEncoder) -> str:
    """Names the weights an encoder holds, so features computed with other weights are never reused.

    * Named pretrained weights from a local directory (or file): `pretrained:<source>@local:<digest>`, the
      digest over the weight and config files' names, sizes and modification times, so a re-exported
      checkpoint at the same path makes old entries stale.
    * A hub id: `pretrained:<source>@<commit>` with the snapshot the local Hugging Face cache resolves it to
      (read offline from `refs/main`), else `pretrained:<source>`.
    * Random init: a SHA-256 over the state dict. Random-init encoders have no name, so their content is
      hashed: features built by one run are only reused by a run whose encoder holds exactly the same
      values (same seed and init, same dtype).
    """
    if encoder.pretrained is not None:
        source = str(encoder.pretrained)
        local = Path(source).expanduser()
        if local.exists():
            return f"pretrained:{source}@local:{_local_weights_fingerprint(local)}"
        commit = _hub_commit(source)
        return f"pretrained:{source}@{commit}" if commit else f"pretrained:{source}"
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{h.hexdigest()}"


@dataclass(frozen=True)
class EncoderKey:
    """Everything that determines one encoder's aligned features for a given clip."""

    encoder_id: str
    weights: str
    """`weights_identity` of the encoder."""
    num_frames: int
    image_size: int
    layer: int
    temporal_tokens: int
    """T of the alignment grid."""
    tokens_per_frame: int
    embed_dim: int
    """D of the stored features (fixed by the id; kept to check entry shapes)."""

    @classmethod
    def of(cls, encoder: VisionEncoder, temporal_tokens: int, tokens_per_frame: int) -> EncoderKey:
        return cls(
            encoder_id=encoder.encoder_id,
            weights=weights_identity(encoder),
            num_frames=encoder.num_frames,
            image_size=encoder.image_size,
            layer=encoder.layer,
            temporal_tokens=temporal_tokens,
            tokens_per_frame=tokens_per_frame,
            embed_dim=encoder.embed_dim,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one video's features: `(T, tokens_per_frame, D)`."""
        return self.temporal_tokens, self.tokens_per_frame, self.embed_dim

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)

    @property
    def namespace(self) -> str:
        """Directory name: readable id plus a digest of the whole key."""
        return f"{self.encoder_id}-{digest(self.to_json())}"


def encoder_keys(
    encoders: Sequence[VisionEncoder], temporal_tokens: int | None, tokens_per_frame: int
) -> list[EncoderKey]:
    """One key per encoder for a model with these encoders and alignment settings."""
    t = aligned_temporal_tokens(encoders, temporal_tokens)
    return [EncoderKey.of(e, t, tokens_per_frame) for e in encoders]


# ---- entry files --------------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---- feature cache ------------------------------------------------------------------------------


@dataclass
class CacheLookup:
    """Outcome of looking a clip up for every encoder.

    `status` is `hit` (every encoder has a valid entry; `features` holds one `(T, tokens_per_frame, D)`
    tensor per encoder), `missing` (some entry does not exist) or `stale` (no entry is missing but some
    was built from other bytes or another key); `reason` names each failing encoder and why. Training
    encodes a clip that is not a hit with every encoder (`fill_missing_features`); `build_feature_cache`
    is what runs only the encoders whose entries are invalid.
    """

    status: Literal["hit", "missing", "stale"]
    features: list[torch.Tensor] | None = None
    reason: str = ""


class FeatureCache:
    """Aligned frozen-encoder features on disk, one namespace per `EncoderKey`.

    Args:
        root: cache folder (created on first write).
        keys: one key per encoder of the model, in the model's encoder order.
    """

    def __init__(self, root: str | os.PathLike, keys: Sequence[EncoderKey]) -> None:
        self.root = Path(root)
        self.keys = list(keys)
        if not self.keys:
            raise ValueError("a feature cache needs at least one encoder key")

    @classmethod
    def for_model(cls, root: str | os.PathLike, model: VideoLM) -> FeatureCache:
        """The cache entries `model.encode_aligned` would produce (keys from its encoders and alignment)."""
        return cls(root, encoder_keys(model.encoders, model.temporal_tokens, model.config.tokens_per_frame))

    def namespace_dir(self, index: int) -> Path:
        return self.root / self.keys[index].namespace

    def entry_path(self, index: int, video: VideoIdentity) -> Path:
        digest = video.clip_digest
        return self.namespace_dir(index) / digest[:2] / f"{digest}.safetensors"

    def missing_namespaces(self) -> list[str]:
        """Encoder ids whose namespace folder does not exist (nothing was ever built for them)."""
        return [k.encoder_id for i, k in enumerate(self.keys) if not self.namespace_dir(i).is_dir()]

    def write_namespace_meta(self) -> None:
        """Record each namespace's key in `meta.json` (for people browsing the cache; reads do not need it)."""
        for i, key in enumerate(self.keys):
            path = self.namespace_dir(i) / "meta.json"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".meta.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
                tmp.write_text(json.dumps(json.loads(key.to_json()), indent=2) + "\n")
                os.replace(tmp, path)

    def check(
        self, index: int, video: VideoIdentity, *, dtype: torch.dtype | None = None
    ) -> tuple[Literal["hit", "missing", "stale", "corrupt"], torch.Tensor | None, str]:
        """Read and verify one encoder's entry for a clip.

        Args:
            index: encoder index.
            video: the clip's identity, taken now (`VideoIdentity.of`).
            dtype: also count an entry stored in another dtype as stale (a build asking for that dtype).

        Returns:
            `(status, features, reason)`: `hit` with the `(T, tokens_per_frame, D)` features, or `missing`,
            `stale` (built from other bytes or another key) or `corrupt` (unreadable, wrong shape or
            checksum) with the reason in words (for `corrupt`, the entry path is `entry_path(index, video)`).
        """
        key = self.keys[index]
        path = self.entry_path(index, video)
        try:
            meta, tensors = read_entry(path, ["features"])
        except FileNotFoundError:
            return "missing", None, f"{key.encoder_id}: no entry"
        except CorruptCacheEntryError as e:
            return "corrupt", None, e.reason
        why = "the entry was built for another encoder key" if meta.get("encoder_key") != key.to_json() else None
        why = why or video.mismatch(meta)
        stored = meta.get("dtype")
        if why is None and dtype is not None and stored != _dtype_name(dtype):
            why = f"stored as {stored}, building {_dtype_name(dtype)}"
        if why is not None:
            return "stale", None, f"{key.encoder_id}: {why}"
        features = tensors["features"]
        if tuple(features.shape) != key.shape:
            return "corrupt", None, f"features have shape {tuple(features.shape)}, expected {key.shape}"
        if _dtype_name(features.dtype) != stored:
            return "corrupt", None, f"features are {_dtype_name(features.dtype)}, the metadata says {stored}"
        return "hit", features, ""

    def lookup(self, video: VideoIdentity) -> CacheLookup:
        """Read every encoder's entry for a clip (training).

        Raises:
            CorruptCacheEntryError: an entry exists but is unreadable, has the wrong shape or checksum.
        """
        features: list[torch.Tensor] = []
        statuses, reasons = set(), []
        for i in range(len(self.keys)):
            status, feats, reason = self.check(i, video)
            if status == "corrupt":
                raise CorruptCacheEntryError(self.entry_path(i, video), reason)
            if status == "hit":
                features.append(feats)
                continue
            statuses.add(status)
            reasons.append(reason)
        if statuses:
            return CacheLookup("missing" if "missing" in statuses else "stale", None, "; ".join(reasons))
        return CacheLookup("hit", features)

    def write(self, index: int, video: VideoIdentity, features: torch.Tensor) -> Path:
        """Store one encoder's `(T, tokens_per_frame, D)` features for a clip (atomically)."""
        key = self.keys[index]
        if tuple(features.shape) != key.shape:
            raise ValueError(f"{key.encoder_id}: features of shape {tuple(features.shape)}, expected {key.shape}")
        path = self.entry_path(index, video)
        meta = {"encoder_key": key.to_json(), "dtype": _dtype_name(features.dtype), **video.metadata()}
        write_entry(path, {"features": features}, meta)
        return path


# ---- building -----------------------------------------------------------------------------------


@dataclass
class BuildStats:
    """Counts of one (rank's) build.

    Each of the `videos` distinct clips is a hit, a miss (`missing` or `stale`), or a video file that does not
    exist (`failed` only); misses whose video cannot be decoded also count in `failed`.
    """

    videos: int = 0
    hits: int = 0
    missing: int = 0
    """Misses with at least one encoder's entry absent."""
    stale: int = 0
    """The other misses: every entry exists, but one was built from other bytes, key or dtype, or is corrupt."""
    built: int = 0
    """Clips whose entries were written."""
    failed: int = 0
    """Clips whose video does not exist or could not be decoded (nothing written)."""
    corrupt: int = 0
    """Misses with at least one unreadable entry (rebuilt); each is also counted in `missing` when another of
    its entries is absent, else in `stale`."""
    entries_written: int = 0
    rank: int = 0
    world_size: int = 1

    @property
    def misses(self) -> int:
        return self.missing + self.stale

    def summary(self) -> str:
        return (
            f"rank {self.rank}/{self.world_size}: {self.videos} videos, {self.hits} hits, {self.misses} misses "
            f"({self.stale} stale, {self.corrupt} corrupt), {self.built} built, {self.failed} failed"
        )


class _PixelJobs(Dataset):
    """Decodes clips once and resizes them for every encoder (DataLoader workers do the work); the pixels stay
    uint8 until `VisionEncoder.encode_aligned` normalises them, as in training."""

    def __init__(
        self,
        jobs: Sequence[VideoIdentity],
        specs: Sequence[FrameSpec],
        backend: str | None,
        timeout: float | None,
    ) -> None:
        self.jobs = list(jobs)
        self.specs = list(specs)
        self.backend = backend
        self.timeout = timeout

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> tuple[int, list[torch.Tensor]] | SkippedSample:
        job = self.jobs[index]
        counts = [s.num_frames for s in self.specs]
        try:
            frames = read_frames(
                job.path, counts, start=job.start, end=job.end, backend=self.backend, timeout=self.timeout
            )
        except VideoDecodeError as e:
            logger.warning("cannot build features for '%s': %s", job.path, e.reason)
            return SkippedSample(index, e.path, e.reason)
        return index, [spec.resize(f) for spec, f in zip(self.specs, frames)]


def _collate_jobs(items):
    return items


def dedupe_clips(records: Sequence[Mapping[str, Any]]) -> list[Clip]:
    """Distinct clips (resolved path, start, end) of all records, in first-seen order."""
    seen: dict[Clip, None] = {}
    for r in records:
        for path, start, end in record_clips(r):
            seen.setdefault((os.path.realpath(path), clip_bound(start), clip_bound(end)), None)
    return list(seen)


def build_feature_cache(
    records: Sequence[Mapping[str, Any]],
    encoders: Sequence[VisionEncoder],
    root: str | os.PathLike,
    *,
    temporal_tokens: int | None = None,
    tokens_per_frame: int,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    backend: str | None = None,
    decode_timeout: float | None = 60.0,
    progress: bool = True,
) -> BuildStats:
    """Encode every distinct clip of `records` once per encoder and store the aligned features.

    Clips are sorted and sharded round-robin over `world_size` ranks, so parallel processes (one per GPU)
    split the work without talking to each other. Entries that are already valid are left alone (hits);
    missing, stale and corrupt ones are built. Existing entries are read back and checksummed, so a build
    also repairs damaged files. Only the encoders whose entry is invalid run for a clip, so adding an encoder
    to a model only encodes with the new one.

    Args:
        records: annotation records (`video` a path or a list of clips, see `record_clips`; optional
            `start`/`end` seconds); text-only records are ignored.
        encoders: the model's frozen encoders, in its order (the same weights training will use); they are
            moved to `device` and put in eval mode.
        root: cache folder.
        temporal_tokens: the model's `temporal_tokens` setting (None: smallest encoder T').
        tokens_per_frame: the model's `tokens_per_frame`.
        dtype: storage dtype (float16/bfloat16 halve the disk space).
        batch_size: clips encoded per forward pass.
        num_workers: DataLoader workers decoding videos.
        device: where the encoders run.
        rank: this process's shard.
        world_size: number of shards.
        overwrite: rebuild entries even when they are valid.
        backend: video backend for `read_frames` (None: decord, then PyAV).
        decode_timeout: seconds before a decode counts as hung.
        progress: show a tqdm bar.

    Returns:
        This rank's counts.
    """
    from tqdm.auto import tqdm

    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    t = aligned_temporal_tokens(encoders, temporal_tokens)
    cache = FeatureCache(root, encoder_keys(encoders, t, tokens_per_frame))
    clips = sorted(dedupe_clips(records), key=lambda c: (c[0], json.dumps(c[1:])))[rank::world_size]
    stats = BuildStats(rank=rank, world_size=world_size)
    todo: list[tuple[VideoIdentity, list[int]]] = []
    for path, start, end in tqdm(clips, desc=f"checking (rank {rank})", unit="video", disable=not progress):
        stats.videos += 1
        try:
            ident = VideoIdentity.of(path, start, end)
        except FileNotFoundError:
            logger.warning("cannot build features for '%s': the file does not exist", path)
            stats.failed += 1
            continue
        need, statuses = [], set()
        for i in range(len(encoders)):
            status, _, reason = ("missing", None, "") if overwrite else cache.check(i, ident, dtype=dtype)
            if status == "corrupt":
                logger.warning("corrupt cache entry '%s': %s; rebuilding it", cache.entry_path(i, ident), reason)
            if status != "hit":
                need.append(i)
                statuses.add(status)
        if not need:
            stats.hits += 1
            continue
        stats.corrupt += "corrupt" in statuses
        if "missing" in statuses:
            stats.missing += 1
        else:
            stats.stale += 1
        todo.append((ident, need))
    if not todo:
        logger.info("feature cache %s: %s", cache.root, stats.summary())
        return stats

    cache.write_namespace_meta()
    device = torch.device(device)
    for enc in encoders:
        enc.to(device).eval()
    jobs = _PixelJobs([j for j, _ in todo], [e.frame_spec for e in encoders], backend, decode_timeout)
    loader = DataLoader(jobs, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_jobs)
    bar = tqdm(total=len(todo), desc=f"encoding (rank {rank})", unit="video", disable=not progress)
    with torch.inference_mode():
        for items in loader:
            good = [it for it in items if not isinstance(it, SkippedSample)]
            stats.failed += len(items) - len(good)
            for e, enc in enumerate(encoders):
                rows = [(j, px) for j, px in good if e in todo[j][1]]
                if not rows:
                    continue
                pixels = torch.stack([px[e] for _, px in rows])
                feats = enc.encode_aligned(pixels, t, tokens_per_frame).to("cpu", dtype)  # (B, T, tpf, D)
                for (j, _), f in zip(rows, feats):
                    cache.write(e, todo[j][0], f.clone())
                    stats.entries_written += 1
            stats.built += len(good)
            bar.update(len(items))
    bar.close()
    logger.info("feature cache %s: %s", cache.root, stats.summary())
    return stats


# ---- training from the cache --------------------------------------------------------------------


class CachedFeatureDataset(VideoTextDataset):
    """`VideoTextDataset` that yields cached aligned features instead of decoding videos.

    Per sample with video(s):

    * hit (every clip has valid entries): the item carries `cached_features`, one `(V, T, tokens_per_frame,
      D_e)` tensor per encoder for its V videos, and no pixels; nothing is decoded.
    * missing or stale entry (for any clip or encoder): with `on_miss="encode"` the sample is decoded as
      usual, all its clips, and carries `pixel_values`; `fill_missing_features` later runs every frozen
      encoder of the model on those videos (live encoding). With `on_miss="error"` a `FeatureCacheMissError`
      names the record and the reason.
    * corrupt entry: skipped like an unreadable video (a warning, counted in `num_skipped`).
    * a video file that no longer exists: skipped like an unreadable video.

    `collate` returns `aligned_features` (one `(B_v, T, tokens_per_frame, D_e)` tensor per encoder, B_v videos
    in batch order) when every video of the batch was a hit. Otherwise it returns `partial_features` (cached
    rows, zeros elsewhere), the `cache_miss` row mask and `pixel_values` for the missing rows only; such a
    batch must go through `fill_missing_features` before the model (`MERVDataModule` does it after the device
    transfer). Fed to the model unfilled, it fails on the video-count check instead of training on zeros.

    Args:
        records: as for `VideoTextDataset`.
        processor: as for `VideoTextDataset`.
        cache: the feature cache, keyed for the model being trained (`FeatureCache.for_model`).
        on_miss: `encode` (fall back to live encoding) or `error`.
        **kwargs: passed to `VideoTextDataset`.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        processor: Processor,
        cache: FeatureCache,
        *,
        on_miss: OnMiss = "encode",
        **kwargs: Any,
    ) -> None:
        super().__init__(records, processor, **kwargs)
        if on_miss not in ("encode", "error"):
            raise ValueError(f"on_miss must be 'encode' or 'error', got {on_miss!r}")
        if len(cache.keys) != len(processor.frame_counts):
            raise ValueError(f"the cache has {len(cache.keys)} encoder keys, the model {len(processor.frame_counts)}")
        self.cache = cache
        self.on_miss = on_miss
        self._miss_warnings = 0
        absent = cache.missing_namespaces()
        if absent:
            logger.warning(
                "feature cache %s holds nothing for encoder(s) %s: every sample will %s; build it with "
                "`python -m merv.cache build --config <experiment.yaml>`",
                cache.root,
                ", ".join(absent),
                "be encoded live" if on_miss == "encode" else "fail",
            )

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        record = self.records[index]
        clips = record_clips(record)
        if not clips:
            return super().__getitem__(index)
        sample = describe_sample(index, record)
        per_video = []
        for path, start, end in clips:
            try:
                ident = VideoIdentity.of(path, start, end)
            except FileNotFoundError:
                logger.warning("skipping %s: video '%s' does not exist", sample, path)
                return SkippedSample(index, path, "the file does not exist")
            try:
                found = self.cache.lookup(ident)
            except CorruptCacheEntryError as e:
                logger.warning("skipping %s: %s", sample, e)
                return SkippedSample(index, e.path, e.reason)
            if found.status != "hit":
                return self._miss(index, sample, path, found)
            per_video.append(found.features)
        item = self._encode(index, record)
        if isinstance(item, SkippedSample):
            return item
        item["pixel_values"] = None
        item["cached_features"] = stack_clips(per_video, multi_clip=True)  # (V, T, tokens_per_frame, D_e)
        item["index"] = index
        return item

    def _miss(self, index: int, sample: str, path: str, found: CacheLookup) -> dict[str, Any] | SkippedSample:
        """Decode the whole sample (every clip, for every encoder) or fail, as `on_miss` says."""
        message = f"{sample}, video '{path}': feature cache {found.status}: {found.reason}"
        if self.on_miss == "error":
            raise FeatureCacheMissError(message + " (on_miss='error'; rebuild with `python -m merv.cache build`)")
        self._miss_warnings += 1
        log = logger.warning if self._miss_warnings <= _MAX_MISS_WARNINGS else logger.debug
        log("%s; encoding it live", message)
        item = super().__getitem__(index)
        if not isinstance(item, SkippedSample):
            item["cached_features"] = None
        return item

    def collate(self, items: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
        """As `VideoTextDataset.collate`, plus the cached features (see the class docstring)."""
        batch = super().collate(items)
        # One row per video, in batch order: the row order of `pixel_values` and `aligned_features`.
        miss: list[bool] = []
        hits: list[list[torch.Tensor]] = [[] for _ in self.cache.keys]
        for it in items:
            if isinstance(it, SkippedSample):
                continue
            if it.get("cached_features") is not None:
                miss += [False] * len(it["cached_features"][0])
                for e, feats in enumerate(it["cached_features"]):
                    hits[e].append(feats)
            elif it.get("pixel_values") is not None:
                miss += [True] * len(with_clip_axis(it["pixel_values"][0]))
        if not miss:
            return batch
        mask = torch.tensor(miss, dtype=torch.bool)
        stacked = []
        for key, parts in zip(self.cache.keys, hits):
            dtype = parts[0].dtype if parts else torch.float32
            if any(p.dtype != dtype for p in parts):
                dtype = torch.float32  # entries built with different --dtype: widen rather than round
            out = torch.zeros((len(miss), *key.shape), dtype=dtype)  # (B_v, T, tokens_per_frame, D_e)
            if parts:
                out[~mask] = torch.cat([p.to(dtype) for p in parts])
            stacked.append(out)
        batch["num_cache_misses"] = int(mask.sum())
        if mask.any():
            batch["partial_features"] = stacked
            batch["cache_miss"] = mask
        else:
            batch["aligned_features"] = stacked
        return batch


def fill_missing_features(batch: dict[str, Any], model: VideoLM) -> dict[str, Any]:
    """Encode a partially cached batch's missing rows with `model`'s frozen encoders, in place.

    Afterwards the batch carries complete `aligned_features` and no `pixel_values`. Live rows are cast to
    the cached rows' dtype, so a sample gets the same values whether or not its entry existed. Batches
    without `cache_miss` pass through unchanged.
    """
    if "cache_miss" not in batch:
        return batch
    partial = batch.pop("partial_features")
    miss = batch.pop("cache_miss")
    pixels = batch.pop("pixel_values")
    live = model.encode_aligned(pixels)  # one (B_miss, T, tokens_per_frame, D_e) per encoder
    for out, feats in zip(partial, live):
        out[miss.to(out.device)] = feats.to(out.device, out.dtype)
    batch["aligned_features"] = partial
    batch["pixel_values"] = None
    return batch


__all__ = [
    "DTYPES",
    "BuildStats",
    "CacheLookup",
    "CachedFeatureDataset",
    "EncoderKey",
    "FeatureCache",
    "FeatureCacheMissError",
    "aligned_temporal_tokens",
    "build_feature_cache",
    "dedupe_clips",
    "record_clips",
    "encoder_keys",
    "fill_missing_features",
    "weights_identity",
]
