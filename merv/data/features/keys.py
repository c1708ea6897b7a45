"""Feature-cache keys: what identifies an encoder's weights and everything else that determines its aligned
features (`EncoderKey`), and the keys of a model's encoders."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from merv.models.vidlm import aligned_temporal_tokens
from merv.video.cache import FORMAT_VERSION, digest

if TYPE_CHECKING:
    from merv.models.encoders.base import VisionEncoder


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


__all__ = ["EncoderKey", "encoder_keys", "weights_identity"]
