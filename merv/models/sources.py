"""What a model argument names, and who reads training checkpoints (light: no torch import at module level).

`source_kind` is the one place that decides whether a model argument is a `save_pretrained` directory, a
training checkpoint, a run directory or a registered name. Training checkpoints are written by the training
layer in its own layout, so the model layer does not read them itself: a reader is installed with
`set_checkpoint_reader` (the `merv` package installs `merv.lit`'s when it is imported) and gives back the
model's config and state dict.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from merv.models.vidlm import VideoLMConfig

CONFIG_NAME = "config.json"
"""The file that makes a directory a saved model (`VideoLM.save_pretrained`)."""

SourceKind = Literal["saved", "checkpoint", "run", "registered"]
"""`saved`: a `save_pretrained` directory; `checkpoint`: a training checkpoint file (or a sharded checkpoint's
folder); `run`: a training run's directory (its newest checkpoint); `registered`: a name from `available_models()`."""

CONSOLIDATED_SUFFIX = ".consolidated"
"""What consolidating a sharded (FSDP) `.ckpt` folder appends to its name for the one-file checkpoint."""
CHECKPOINT_SUFFIXES = (".ckpt", ".ckpt" + CONSOLIDATED_SUFFIX)
"""How training checkpoint files (and sharded checkpoint folders) are named."""

CheckpointReader = Callable[[Path], "tuple[VideoLMConfig, dict[str, torch.Tensor]]"]
"""Reads a training checkpoint or run directory into the model's config and state dict."""

_checkpoint_reader: CheckpointReader | None = None


def source_kind(name_or_path: str | os.PathLike) -> SourceKind:
    """What a model argument names; a path that exists wins over a registered name of the same spelling.

    Raises:
        FileNotFoundError: it is none of them.
    """
    from merv.models.registry import available_models  # the registry builds configs: torch and transformers

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


def set_checkpoint_reader(reader: CheckpointReader | None) -> None:
    """Install how training checkpoints and run directories are read (None: they cannot be loaded)."""
    global _checkpoint_reader
    _checkpoint_reader = reader


def read_training_checkpoint(path: str | os.PathLike) -> tuple[VideoLMConfig, dict[str, torch.Tensor]]:
    """The config and state dict of a training checkpoint or run directory, through the installed reader.

    Raises:
        ValueError: no reader is installed.
    """
    if _checkpoint_reader is None:
        raise ValueError(
            f"{path} is a training checkpoint or run directory and no checkpoint reader is installed: "
            "import merv (it installs merv.lit's), or export the checkpoint with `merv export`"
        )
    return _checkpoint_reader(Path(path))
