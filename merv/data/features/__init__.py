"""The frozen-encoder feature cache: each encoder's aligned, pre-projection features per video.

`FeatureCache` (`store`) holds each encoder's `VideoLM.encode_aligned` output, one safetensors file per (encoder
namespace, video clip), in the entry format of `merv.video.cache`. `EncoderKey` (`keys`) names what determines an
encoder's features; `build_feature_cache` (`build`) fills a cache, sharded over ranks; `CachedFeatureDataset`
(`dataset`) trains from it and `fill_missing_features` encodes the samples it lacks.

Layout of a feature cache::

    ROOT/<encoder id>-<key digest>/meta.json                    the namespace's key, human-readable
    ROOT/<encoder id>-<key digest>/<ab>/<clip digest>.safetensors  one tensor `features` (T, tokens_per_frame, D)

The namespace digest covers everything that changes an encoder's output (id, weights identity, frame count,
resolution, layer, alignment grid); the clip digest covers the resolved video path and the clip bounds. The
video's size and modification time live in each entry's metadata, so a rewritten video makes its entries
stale (detected and rebuilt) instead of orphaning them. Entries are written to a temporary file and moved
into place with `os.replace`, so readers never see half a file and parallel builds never collide.
"""

from merv.data.features.build import BuildStats, build_feature_cache, dedupe_clips
from merv.data.features.dataset import CachedFeatureDataset, FeatureCacheMissError, OnMiss, fill_missing_features
from merv.data.features.keys import EncoderKey, encoder_keys, weights_identity
from merv.data.features.store import DTYPES, CacheLookup, FeatureCache, StorageDtype

__all__ = [
    "DTYPES",
    "BuildStats",
    "CacheLookup",
    "CachedFeatureDataset",
    "EncoderKey",
    "FeatureCache",
    "FeatureCacheMissError",
    "OnMiss",
    "StorageDtype",
    "build_feature_cache",
    "dedupe_clips",
    "encoder_keys",
    "fill_missing_features",
    "weights_identity",
]
