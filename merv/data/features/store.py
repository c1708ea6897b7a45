"""The feature store: each encoder's aligned features per video clip, one safetensors entry per (encoder
namespace, clip), read back and verified (`FeatureCache`)."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from merv.data.features.keys import EncoderKey, encoder_keys
from merv.video.cache import CorruptCacheEntryError, VideoIdentity, read_entry, write_entry

if TYPE_CHECKING:
    from merv.models.vidlm import VideoLM

logger = logging.getLogger(__name__)

StorageDtype = Literal["float32", "float16", "bfloat16"]
DTYPES: dict[StorageDtype, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""Storage dtypes by name (the `--dtype` choices of `merv cache build`)."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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


__all__ = ["DTYPES", "CacheLookup", "FeatureCache", "StorageDtype"]
