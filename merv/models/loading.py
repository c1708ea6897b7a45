"""What a model argument names, and loading saved models and registered names for inference.

`source_kind` is the one place that decides whether a model argument is a `save_pretrained` directory, a
training checkpoint, a run directory or a registered name. This module reads only what the model layer writes;
training checkpoints are read by `merv.lit.checkpoints` and reach `load_vid` as a config and a state dict
through its `checkpoint_reader`, so inference from a saved model never needs Lightning installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch

from merv.models.registry import available_models, model_cache_dir
from merv.models.vidlm import CONFIG_NAME, VideoLM, VideoLMConfig

logger = logging.getLogger(__name__)

SourceKind = Literal["saved", "checkpoint", "run", "registered"]
"""`saved`: a `save_pretrained` directory; `checkpoint`: a training checkpoint file (or a sharded checkpoint's
folder); `run`: a training run's directory (its newest checkpoint); `registered`: a name from `available_models()`."""

CONSOLIDATED_SUFFIX = ".consolidated"
"""What consolidating a sharded (FSDP) `.ckpt` folder appends to its name for the one-file checkpoint."""
CHECKPOINT_SUFFIXES = (".ckpt", ".ckpt" + CONSOLIDATED_SUFFIX)
"""How training checkpoint files (and sharded checkpoint folders) are named."""

CheckpointReader = Callable[[Path], tuple[VideoLMConfig, dict[str, torch.Tensor]]]
"""Reads a training checkpoint or run directory into the model's config and state dict."""


class ModelNotFoundError(FileNotFoundError):
    """A registered name whose weights are not on this machine."""


def source_kind(name_or_path: str | os.PathLike) -> SourceKind:
    """What a model argument names; a path that exists wins over a registered name of the same spelling.

    Raises:
        FileNotFoundError: it is none of them.
    """
    path = Path(name_or_path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return "saved"
    if path.name.endswith(CHECKPOINT_SUFFIXES):
        return "checkpoint"
    if path.is_dir():
        return "run"
    if str(name_or_path) in available_models():
        return "registered"
    raise FileNotFoundError(
        f"{str(name_or_path)!r} is neither a saved model directory, a checkpoint, a run directory nor a "
        f"registered name ({', '.join(available_models())})"
    )


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
        raise ValueError(f"{name_or_path} is a training {kind}, not a saved model: export it with scripts/export.py")
    name = str(name_or_path)
    local = model_cache_dir(cache_dir) / name
    if not (local / CONFIG_NAME).is_file():
        raise ModelNotFoundError(
            f"weights for {name!r} are not on this machine: looked for a saved model in {local}. "
            f"Train it (see TRAINING.md), then export it there with "
            f"`python scripts/export.py --checkpoint <run dir or .ckpt> --output {local}`, "
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
    checkpoint_reader: CheckpointReader | None = None,
) -> VideoLM:
    """Load a VideoLM for inference (MERV's quick-start entry point; `merv.load_vid` reads checkpoints too).

    Args:
        name_or_path: a `save_pretrained` directory, a registered name (see `available_models()`), or with a
            `checkpoint_reader` a training checkpoint or run directory (its last checkpoint).
        hf_token: token for gated hub weights of the encoders or LLM (e.g. Llama-2), used for this call only
            and in preference to `HF_TOKEN`; without it, `HF_TOKEN` (or a `huggingface-cli login`) is used.
        cache_dir: where registered names' weights are looked for (default `$MERV_CACHE/models` or
            `~/.cache/merv/models`).
        dtype: cast the model to this dtype.
        device: move the model to this device.
        checkpoint_reader: reads a training checkpoint or run directory into a config and a state dict.

    Raises:
        ValueError: a training checkpoint or run directory without a `checkpoint_reader`.
    """
    with using_hf_token(hf_token):
        model = _load(name_or_path, cache_dir, checkpoint_reader)
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model.eval()


def _load(name_or_path: Any, cache_dir: str | os.PathLike | None, reader: CheckpointReader | None) -> VideoLM:
    kind = source_kind(name_or_path)
    if kind in ("saved", "registered"):
        return VideoLM.from_pretrained(saved_model_dir(name_or_path, cache_dir))
    if reader is None:
        raise ValueError(
            f"{name_or_path} is a training {kind}: load it with `merv.load_vid`, which reads training "
            "checkpoints, or export it with scripts/export.py"
        )
    config, state = reader(Path(name_or_path))
    model = VideoLM(config)
    model.load_weights(state, name_or_path)
    return model
