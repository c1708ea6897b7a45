"""`load_vid`: one entry point for saved model dirs, training checkpoints, run dirs and registered names.

Which kind a model argument is comes from `merv.models.sources.source_kind`. This module reads only what the
model layer writes; a training checkpoint reaches it as a config and a state dict from the installed checkpoint
reader (`merv.lit.checkpoints`), so inference from a saved model never needs Lightning installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from merv.models.registry import model_cache_dir
from merv.models.sources import CONFIG_NAME, read_training_checkpoint, source_kind
from merv.models.vidlm import VideoLM

logger = logging.getLogger(__name__)


class ModelNotFoundError(FileNotFoundError):
    """A registered name whose weights are not on this machine."""


def saved_model_dir(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The `save_pretrained` directory a saved model path or a registered name stands for.

    Args:
        name_or_path: a saved model directory or a registered name.
        cache_dir: where registered names' weights are looked for (see `model_cache_dir`).

    Raises:
        ModelNotFoundError: a registered name whose weights are not in the model cache.
        ValueError: `name_or_path` is a training checkpoint or run directory.
    """
    kind = source_kind(name_or_path)
    if kind == "saved":
        return Path(name_or_path)
    if kind != "registered":
        raise ValueError(f"{name_or_path} is a training {kind}, not a saved model: export it with `merv export`")
    name = str(name_or_path)
    local = model_cache_dir(cache_dir) / name
    if not (local / CONFIG_NAME).is_file():
        raise ModelNotFoundError(
            f"weights for {name!r} are not on this machine: looked for a saved model in {local}. "
            f"Train it (see TRAINING.md), then export it there with "
            f"`merv export --model <run dir or .ckpt> --output {local}`, "
            f"or pass cache_dir= / set MERV_CACHE to where it is."
        )
    return local


@contextmanager
def using_hf_token(token: str | None) -> Iterator[None]:
    """Make `token` the Hugging Face token while loading, then restore the environment as it was.

    An explicit token must win over `HF_TOKEN` and must not outlive the call. The environment is the one
    channel every loader here reads: timm's hub download takes no token argument.
    """
    if not token:
        yield
        return
    previous = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = token
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = previous


def load_vid(
    name_or_path: str | os.PathLike,
    hf_token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> VideoLM:
    """Load a VideoLM for inference (MERV's quick-start entry point, `from merv import load_vid`).

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
    with using_hf_token(hf_token):
        model = _load(name_or_path, cache_dir)
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model.eval()


def _load(name_or_path: Any, cache_dir: str | os.PathLike | None) -> VideoLM:
    if source_kind(name_or_path) in ("saved", "registered"):
        return VideoLM.from_pretrained(saved_model_dir(name_or_path, cache_dir))
    config, state = read_training_checkpoint(name_or_path)
    model = VideoLM(config)
    model.load_weights(state, name_or_path)
    return model
