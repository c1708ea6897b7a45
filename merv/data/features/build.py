"""Filling a feature cache: every distinct clip of a dataset encoded once per encoder, sharded over ranks."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from merv.data.dataset import Clip, SkippedSample, record_clips
from merv.data.features.keys import encoder_keys
from merv.data.features.store import FeatureCache
from merv.models.vidlm import aligned_temporal_tokens
from merv.video import FrameSpec, VideoDecodeError, read_frames
from merv.video.cache import VideoIdentity, clip_bound

if TYPE_CHECKING:
    from merv.models.encoders.base import VisionEncoder

logger = logging.getLogger(__name__)


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


__all__ = ["BuildStats", "build_feature_cache", "dedupe_clips"]
