"""`VisualInputs`: the one owner of how a model's training samples get their visual inputs.

Decoded pixels (read from a video tensor cache when one is set), or the frozen encoders' aligned features read
from a feature cache, with the samples it lacks encoded live on the device. The training module, which owns the
model, builds it; the data module builds its datasets through it and never sees a cache.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from merv.data.dataset import VideoTextDataset
from merv.data.features import CachedFeatureDataset, FeatureCache, OnMiss, fill_missing_features
from merv.video import VideoTensorCache

if TYPE_CHECKING:
    from merv.models.vidlm import VideoLM


class VisualInputs:
    """Builds datasets whose samples carry what `model` needs, and completes partly cached batches.

    Args:
        model: the model being trained: its processor decodes and tokenises, its encoders and alignment key
            the feature cache and encode what the cache lacks.
        feature_cache: folder of a feature cache (`merv cache build --config <experiment.yaml>`);
            samples then carry the frozen encoders' aligned features from it instead of pixels. None decodes.
        on_miss: what a sample without a valid cache entry does: `encode` (decode it; `fill_missing` runs the
            frozen encoders on it once the batch is on the device) or `error` (fail, naming the record).
        video_cache: folder of a video tensor cache: clips whose decoded, resized pixels are there (for the
            model's frame counts and sizes, and the file as it is now) are read instead of decoded.
        video_cache_writable: also store the clips decoded on the way (off by default, so a run never writes
            into a cache other runs read).
    """

    def __init__(
        self,
        model: VideoLM,
        *,
        feature_cache: str | os.PathLike | None = None,
        on_miss: OnMiss = "encode",
        video_cache: str | os.PathLike | None = None,
        video_cache_writable: bool = False,
    ) -> None:
        if on_miss not in ("encode", "error"):
            raise ValueError(f"on_miss must be 'encode' or 'error', got {on_miss!r}")
        self.model = model
        self.on_miss = on_miss
        self.feature_cache = FeatureCache.for_model(feature_cache, model) if feature_cache else None
        # The datasets' own processor, so the model's (used for generation and evaluation) never gains a cache.
        self.processor = copy.copy(model.processor)
        if video_cache:
            # One namespace for every split: entries are checked against each video file anyway.
            self.processor.pixel_cache = VideoTensorCache(
                video_cache, self.processor.frame_specs, "training", writable=video_cache_writable
            )

    def dataset(self, records: Sequence[Mapping[str, Any]], **kwargs: Any) -> VideoTextDataset:
        """A dataset of `records` for this model; `kwargs` go to `VideoTextDataset` (skip limits, backend)."""
        if self.feature_cache is None:
            return VideoTextDataset(records, self.processor, **kwargs)
        return CachedFeatureDataset(records, self.processor, self.feature_cache, on_miss=self.on_miss, **kwargs)

    def fill_missing(self, batch: Any) -> Any:
        """Encode the samples of a collated, device-side batch that the feature cache lacked (in place), so the
        model receives complete `aligned_features`; any other batch passes through unchanged."""
        if isinstance(batch, dict) and "cache_miss" in batch:
            fill_missing_features(batch, self.model)
        return batch


__all__ = ["VisualInputs"]
