"""Stage hand-off: loading every trained module of a previous stage into a freshly built model."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch

from merv.models import VideoLM
from merv.models.loading import find_last_checkpoint, load_state, read_checkpoint
from merv.models.vidlm import CONFIG_NAME

logger = logging.getLogger(__name__)


def read_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """`VideoLM` state dict from a Lightning `.ckpt`, a run directory's last checkpoint, or a saved model dir."""
    source = Path(source)
    if source.is_dir() and (source / CONFIG_NAME).is_file():
        return VideoLM.from_pretrained(source).state_dict()
    if source.is_dir():
        source = find_last_checkpoint(source)
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint or saved model at {source}")
    return read_checkpoint(source)[1]


def _group(key: str) -> str:
    return "adapters" if "lora_" in key else key.split(".")[0]


def init_weights(model: VideoLM, source: str | Path) -> Counter:
    """Load every trained module (projectors, fusion, LLM, LoRA adapters) from a previous stage.

    Call before `model.freeze(stage)`; see `merge_adapters_unless_lora` for adapters.

    Returns:
        Count of loaded tensors per module group.
    """
    state = read_state_dict(source)
    if not any(k.startswith(("projectors.", "fusion.")) for k in state):
        raise RuntimeError(f"{source} holds no projector or fusion weights: not a merv checkpoint")
    load_state(model, state, source)
    loaded = Counter(_group(k) for k in state)
    logger.info("initialised from %s: %s", source, dict(loaded))
    return loaded


def merge_adapters_unless_lora(model: VideoLM, stage: str) -> None:
    """A stage that trains the full LLM starts from the adapters merged into its weights."""
    if stage != "lora" and hasattr(model.llm, "peft_config"):
        model.llm = model.llm.merge_and_unload()
