"""Training checkpoints: finding a run's last one, reading `MERVLitModule`'s layout, and the stage hand-off.

A checkpoint holds the module's `state_dict` (the `VideoLM` under `model.`) and its `hyper_parameters` (the
architecture under `vidlm`); it is read as plain tensors and dicts (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import torch

from merv.models import VideoLM, VideoLMConfig
from merv.models.loading import saved_model_dir
from merv.models.sources import CONSOLIDATED_SUFFIX, source_kind

logger = logging.getLogger(__name__)

MODEL_PREFIX = "model."  # MERVLitModule keeps the VideoLM as `self.model`


def resolve_checkpoint_file(path: str | os.PathLike) -> Path:
    """A checkpoint file: `path` itself, or for a sharded (FSDP) `*.ckpt` directory its consolidated file.

    Raises:
        ValueError: `path` is a sharded checkpoint directory that has not been consolidated.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    consolidated = path.with_name(path.name + CONSOLIDATED_SUFFIX)
    if consolidated.is_file():
        return consolidated
    raise ValueError(
        f"{path} is a sharded (FSDP) checkpoint directory; consolidate it into one file first with "
        f"`python -m lightning.pytorch.utilities.consolidate_checkpoint {path}` "
        f"(it writes {consolidated.name} beside it)"
    )


def find_last_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The newest `last*.ckpt` (else any `*.ckpt`) file below a run directory (or a sharded checkpoint's file).

    FSDP writes sharded checkpoints as directories named `*.ckpt`; such a checkpoint is read from the
    `*.ckpt.consolidated` file Lightning's consolidation writes beside it. If the newest checkpoint is a
    sharded directory without one, this raises rather than fall back to an older file.

    Raises:
        FileNotFoundError: no checkpoint below `run_dir`.
        ValueError: the newest checkpoint is sharded and not consolidated.
    """
    run_dir = Path(run_dir)
    if run_dir.suffix == ".ckpt":  # itself a sharded checkpoint, not a run directory
        return resolve_checkpoint_file(run_dir)
    for pattern in ("last*.ckpt", "*.ckpt"):
        found = [*run_dir.rglob(pattern), *run_dir.rglob(pattern + CONSOLIDATED_SUFFIX)]
        files = [p for p in found if p.is_file()]
        # A consolidated sharded directory is already represented by its consolidated file.
        sharded = [p for p in found if p.is_dir() and not p.with_name(p.name + CONSOLIDATED_SUFFIX).is_file()]
        if files or sharded:
            return resolve_checkpoint_file(max(files + sharded, key=lambda p: p.stat().st_mtime))
    raise FileNotFoundError(f"no .ckpt file below {run_dir}")


def _checkpoint_file(source: str | os.PathLike) -> Path:
    """The file a checkpoint or run directory is read from."""
    if source_kind(source) == "run":
        return find_last_checkpoint(source)
    return resolve_checkpoint_file(source)


def _read(path: Path) -> tuple[dict | None, dict[str, torch.Tensor]]:
    # weights_only: a checkpoint may come from anywhere, so never unpickle arbitrary objects.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    state = {k[len(MODEL_PREFIX) :]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    return ckpt.get("hyper_parameters", {}).get("vidlm"), state


def read_checkpoint(source: str | os.PathLike) -> tuple[VideoLMConfig, dict[str, torch.Tensor]]:
    """The `VideoLM` config and state dict of a training checkpoint, or of a run directory's last checkpoint.

    Raises:
        ValueError: the checkpoint has no `vidlm` hyper-parameters (not written by `MERVLitModule`).
    """
    path = _checkpoint_file(source)
    config, state = _read(path)
    if config is None:
        raise ValueError(f"{path} has no `vidlm` hyper-parameters: not a merv training checkpoint")
    return VideoLMConfig(**config), state


def load_checkpoint_model(source: str | os.PathLike) -> VideoLM:
    """Build the `VideoLM` a training checkpoint (or a run directory's last checkpoint) describes and load it."""
    config, state = read_checkpoint(source)
    model = VideoLM(config)
    model.load_weights(state, source)
    return model.eval()


def read_state_dict(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """`VideoLM` state dict of any model argument: a checkpoint, a run directory, a saved model or a registered
    name (see `merv.models.loading.source_kind`)."""
    if source_kind(source) in ("saved", "registered"):
        return VideoLM.from_pretrained(saved_model_dir(source)).state_dict()
    path = _checkpoint_file(source)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint or saved model at {source}")
    return _read(path)[1]


def _group(key: str) -> str:
    return "adapters" if "lora_" in key else key.split(".")[0]


def init_weights(model: VideoLM, source: str | Path) -> Counter:
    """Load every trained module (projectors, fusion, LLM, LoRA adapters) from a previous stage.

    Call before `model.set_trainable(stage)`; see `merge_adapters_unless_lora` for adapters.

    Returns:
        Count of loaded tensors per module group.
    """
    state = read_state_dict(source)
    if not any(k.startswith(("projectors.", "fusion.")) for k in state):
        raise RuntimeError(f"{source} holds no projector or fusion weights: not a merv checkpoint")
    model.load_weights(state, source)
    loaded = Counter(_group(k) for k in state)
    logger.info("initialised from %s: %s", source, dict(loaded))
    return loaded


def merge_adapters_unless_lora(model: VideoLM, stage: str) -> None:
    """A stage that trains the full LLM starts from the adapters merged into its weights."""
    if stage != "lora" and hasattr(model.llm, "peft_config"):
        model.llm = model.llm.merge_and_unload()


__all__ = [
    "find_last_checkpoint",
    "init_weights",
    "load_checkpoint_model",
    "merge_adapters_unless_lora",
    "read_checkpoint",
    "read_state_dict",
    "resolve_checkpoint_file",
]
