"""Named models: MERV's multi-encoder model, its single-encoder baselines, and tiny CPU variants.

A name fixes the architecture; the weights are a `save_pretrained` directory found in the local model
cache (`$MERV_CACHE/models/<name>`, default `~/.cache/merv/models/<name>`), put there by `merv export`.
This is the one place the named architectures are written: YAML configs name them (`from_name: merv-full`,
see `expand_registered`) instead of restating them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from merv.models.llm import LLMConfig
from merv.models.vidlm import EncoderConfig, LoraSettings, VideoLMConfig

# MERV's four encoders with their frame counts, in MERV's order. LanguageBind-Video's code lives outside
# transformers and timm; CLIP ViT-L/14, the image tower it starts from, stands in for it.
MERV_ENCODERS = {
    "languagebind": EncoderConfig("clip-l14-224", 16, "openai/clip-vit-large-patch14"),
    "dinov2": EncoderConfig("timm-dinov2-reg4-l14-224", 16, "timm/vit_large_patch14_reg4_dinov2.lvd142m"),
    "vivit": EncoderConfig("vivit-b16x2-224", 32, "google/vivit-b-16x2-kinetics400"),
    "siglip": EncoderConfig("timm-siglip-b16-224", 16, "timm/vit_base_patch16_siglip_224.webli"),
}
MERV_LLM = LLMConfig(name_or_path="meta-llama/Llama-2-7b-hf", dtype="bfloat16", prompt_format="merv")


def _merv(encoders: list[EncoderConfig]) -> VideoLMConfig:
    # MERV pools every encoder to 16 x 8 x 8 (1024 visual tokens) and projects each with one linear layer.
    # With a single encoder, `build_fusion` makes the cross-attention a parameter-free pass-through.
    return VideoLMConfig(
        encoders=encoders,
        llm=MERV_LLM,
        temporal_tokens=16,
        tokens_per_frame=64,
        projector="linear",
        fusion="cross-attention",
        max_length=2048,
        lora=LoraSettings(r=128, alpha=256, dropout=0.05, target_modules="all-linear"),
    )


_MODELS: dict[str, Callable[[], VideoLMConfig]] = {
    # Four encoders; merv-full's LLM is instruction-tuned (stage 2), merv-frozen's kept frozen.
    "merv-full": lambda: _merv(list(MERV_ENCODERS.values())),
    "merv-frozen": lambda: _merv(list(MERV_ENCODERS.values())),
    # Single-encoder baselines, one per MERV encoder.
    **{f"merv-{key}-only": (lambda enc=enc: _merv([enc])) for key, enc in MERV_ENCODERS.items()},
    # CPU-sized: two tiny encoders (4 and 8 frames) and a 2-layer LLM.
    "merv-tiny": VideoLMConfig.tiny,
}


def available_models() -> list[str]:
    """Registered model names."""
    return sorted(_MODELS)


def model_config(name: str, **overrides: Any) -> VideoLMConfig:
    """The architecture a registered name stands for: a fresh config the caller may change freely.

    Args:
        name: a registered name (see `available_models()`).
        **overrides: `VideoLMConfig` fields to change; a mapping given for a nested config (`llm`, `lora`)
            changes only the keys it names, anything else (a value, a list such as `encoders`) replaces.

    Raises:
        KeyError: `name` is not registered.
    """
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    # The MERV configs are built from the module-level MERV_LLM and MERV_ENCODERS objects; a deep copy
    # keeps a caller's edits out of them and out of every later result.
    config = copy.deepcopy(_MODELS[name]())
    if not overrides:
        return config
    return VideoLMConfig(**_merge(config.to_dict(), overrides))


FROM_NAME = "from_name"
"""The key that makes a mapping in a config file a registered architecture (`{from_name: merv-full, ...}`)."""


def expand_registered(value: Any) -> Any:
    """Config data (as loaded from YAML) with every `{from_name: <name>, **overrides}` mapping replaced by the
    fields of `model_config(name, **overrides)`; everything else is returned as it is.

    The training command line loads its config files through this, so a model config names its architecture
    and states only what differs, `--print_config` shows every field, and later configs and flags override
    single fields as usual.
    """
    if isinstance(value, list):
        return [expand_registered(v) for v in value]
    if not isinstance(value, dict):
        return value
    value = {k: expand_registered(v) for k, v in value.items()}
    if FROM_NAME not in value:
        return value
    overrides = dict(value)
    return model_config(overrides.pop(FROM_NAME), **overrides).to_dict()


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def model_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where named models' weights are looked for: `cache_dir`, `$MERV_CACHE/models`, or `~/.cache/merv/models`."""
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get("MERV_CACHE")
    return Path(root) / "models" if root else Path.home() / ".cache" / "merv" / "models"
