"""`load_vid`: one entry point for saved model dirs, Lightning checkpoints, run dirs and registered names.

Reads Lightning checkpoints as plain dicts (`torch.load(weights_only=True)`), so inference never needs
Lightning installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from merv.models.registry import available_models, model_cache_dir, model_config
from merv.models.vidlm import CONFIG_NAME, VideoLM, VideoLMConfig

logger = logging.getLogger(__name__)

MODEL_PREFIX = "model."  # MERVLitModule keeps the VideoLM as `self.model`


class ModelNotFoundError(FileNotFoundError):
    """A registered name whose weights are not on this machine."""


def find_last_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The newest `last*.ckpt` (else any `*.ckpt`) below a run directory."""
    run_dir = Path(run_dir)
    for pattern in ("last*.ckpt", "*.ckpt"):
        found = sorted(run_dir.rglob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    raise FileNotFoundError(f"no .ckpt file below {run_dir}")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict | None, dict[str, torch.Tensor]]:
    """A Lightning checkpoint's VideoLM config (as a dict, None if absent) and VideoLM state dict."""
    # weights_only: a checkpoint may come from anywhere, so never unpickle arbitrary objects.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    state = {k[len(MODEL_PREFIX) :]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    return ckpt.get("hyper_parameters", {}).get("vidlm"), state


def load_state(model: VideoLM, state: dict[str, torch.Tensor], source: str | os.PathLike) -> list[str]:
    """Load a VideoLM state dict (adding LoRA adapters first if it has them); return the keys it lacked.

    Only frozen weights that come from a named pretrained source may be missing (they are not stored in
    checkpoints); anything else missing or unexpected is an error naming `source`.
    """
    if any("lora_" in k for k in state) and not hasattr(model.llm, "peft_config"):
        model.add_lora()
    result = model.load_state_dict(state, strict=False)
    named_llm = model.config.llm.name_or_path is not None
    bad = [
        k
        for k in result.missing_keys
        if not (model._stored_by_reference(k) or (named_llm and k.startswith("llm.") and "lora_" not in k))
    ]
    if bad or result.unexpected_keys:
        raise RuntimeError(
            f"{source} does not match the model: missing {bad[:8]}, unexpected {result.unexpected_keys[:8]}"
        )
    return result.missing_keys


def load_checkpoint_model(path: str | os.PathLike) -> VideoLM:
    """Build the VideoLM a Lightning checkpoint (or a run dir's last checkpoint) describes and load it."""
    path = Path(path)
    if path.is_dir():
        path = find_last_checkpoint(path)
    config, state = read_checkpoint(path)
    if config is None:
        raise ValueError(f"{path} has no `vidlm` hyper-parameters: not a merv training checkpoint")
    model = VideoLM(VideoLMConfig(**config))
    load_state(model, state, path)
    return model.eval()


def load_vid(
    name_or_path: str | os.PathLike,
    hf_token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> VideoLM:
    """Load a VideoLM for inference (MERV's quick-start entry point).

    Args:
        name_or_path: a `save_pretrained` directory, a Lightning `.ckpt`, a run directory (its last
            checkpoint), or a registered name (see `available_models()`).
        hf_token: token for gated hub weights of the encoders or LLM (e.g. Llama-2); also read from `HF_TOKEN`.
        cache_dir: where registered names' weights are looked for (default `$MERV_CACHE/models` or
            `~/.cache/merv/models`).
        dtype: cast the model to this dtype.
        device: move the model to this device.
    """
    if hf_token:
        os.environ.setdefault("HF_TOKEN", hf_token)
    path = Path(name_or_path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        model = VideoLM.from_pretrained(path)
    elif path.suffix == ".ckpt" or path.is_dir():
        model = load_checkpoint_model(path)
    elif str(name_or_path) in available_models():
        name = str(name_or_path)
        model_config(name)  # the name is known; now find its weights
        local = model_cache_dir(cache_dir) / name
        if not (local / CONFIG_NAME).is_file():
            raise ModelNotFoundError(
                f"weights for {name!r} are not on this machine: looked for a saved model in {local}. "
                f"Train it (see TRAINING.md), then export it there with "
                f"`python scripts/export.py --checkpoint <run dir or .ckpt> --output {local}`, "
                f"or pass cache_dir= / set MERV_CACHE to where it is."
            )
        model = VideoLM.from_pretrained(local)
    else:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a saved model directory, a checkpoint, a run directory nor a "
            f"registered name ({', '.join(available_models())})"
        )
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model.eval()
