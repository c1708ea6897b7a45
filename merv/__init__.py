"""merv: video language models from several frozen visual encoders, a fusion projector and any causal LM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from merv.models.sources import set_checkpoint_reader

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from merv.models import VideoLMConfig

__version__ = "0.1.0"
__all__ = ["available_models", "load_vid"]


def _read_checkpoint(path: Path) -> tuple[VideoLMConfig, dict[str, torch.Tensor]]:
    # Imported when a checkpoint is read, so a saved model loads without Lightning installed.
    from merv.lit.checkpoints import read_checkpoint

    return read_checkpoint(path)


# Training checkpoints are written in the training layer's layout, which the model layer does not know; the
# package is the one place above both, so every use of merv (`load_vid`, evaluation, the stage hand-off) reads
# them through `merv.lit`.
set_checkpoint_reader(_read_checkpoint)


def __getattr__(name: str):
    # Lazy, so `import merv.data` (e.g. in DataLoader workers) does not pull in the model stack.
    if name == "load_vid":
        from merv.models.loading import load_vid

        return load_vid
    if name == "available_models":
        from merv.models.registry import available_models

        return available_models
    raise AttributeError(f"module 'merv' has no attribute {name!r}")
