"""Training from a feature cache: a dataset whose samples carry cached aligned features instead of pixels, and
the live encoding of the samples the cache lacks."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from merv.data.dataset import Processor, SkippedSample, VideoTextDataset, describe_sample, record_clips
from merv.data.features.store import CacheLookup, FeatureCache
from merv.video.cache import CorruptCacheEntryError, VideoIdentity
from merv.video.clips import stack_clips, with_clip_axis

if TYPE_CHECKING:
    from merv.models.vidlm import VideoLM

logger = logging.getLogger(__name__)

OnMiss = Literal["encode", "error"]
_MAX_MISS_WARNINGS = 10  # per dataset copy (i.e. per DataLoader worker); the rest go to DEBUG


class FeatureCacheMissError(RuntimeError):
    """A sample has no valid feature-cache entry and the dataset was told not to encode it live."""


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
    batch must go through `fill_missing_features` before the model (`VisualInputs.fill_missing` does it after the
    device transfer). Fed to the model unfilled, it fails on the video-count check instead of training on zeros.

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
                "`merv cache build --config <experiment.yaml>`",
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
            raise FeatureCacheMissError(message + " (on_miss='error'; rebuild with `merv cache build`)")
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


__all__ = ["CachedFeatureDataset", "FeatureCacheMissError", "OnMiss", "fill_missing_features"]
