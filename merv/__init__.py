"""merv: video language models from several frozen visual encoders, a fusion projector and any causal LM."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from merv.models import VideoLM, VideoLMConfig

__version__ = "0.1.0"
__all__ = ["available_models", "load_vid"]


def load_vid(
    name_or_path: str | os.PathLike,
    hf_token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> VideoLM:
    """Load a VideoLM for inference (MERV's quick-start entry point).

    Args:
        name_or_path: a `save_pretrained` directory, a training `.ckpt`, a run directory (its last
            checkpoint), or a registered name (see `available_models()`).
        hf_token: token for gated hub weights of the encoders or LLM (e.g. Llama-2), used for this call only
            and in preference to `HF_TOKEN`; without it, `HF_TOKEN` (or a `huggingface-cli login`) is used.
        cache_dir: where registered names' weights are looked for (default `$MERV_CACHE/models` or
            `~/.cache/merv/models`).
        dtype: cast the model to this dtype.
        device: move the model to this device.
    """
    # Imports inside, so `import merv.data` (e.g. in DataLoader workers) does not pull in the model stack, and
    # a saved model loads without Lightning: only training checkpoints are read by `merv.lit`.
    from merv.models.loading import load_vid as load

    return load(name_or_path, hf_token, cache_dir, dtype, device, checkpoint_reader=_read_checkpoint)


def _read_checkpoint(path: Path) -> tuple[VideoLMConfig, dict[str, torch.Tensor]]:
    from merv.lit.checkpoints import read_checkpoint

    return read_checkpoint(path)


def __getattr__(name: str):
    # Lazy for the same reason as `load_vid`'s imports.
    if name == "available_models":
        from merv.models.registry import available_models

        return available_models
    raise AttributeError(f"module 'merv' has no attribute {name!r}")
