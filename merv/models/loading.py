"""`load_vid`: one entry point for saved model dirs, Lightning checkpoints, run dirs and registered names.

Reads Lightning checkpoints as plain dicts (`torch.load(weights_only=True)`), so inference never needs
Lightning installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from merv.models.registry import available_models, model_cache_dir
from merv.models.vidlm import CONFIG_NAME, VideoLM, VideoLMConfig, _is_peft

logger = logging.getLogger(__name__)

MODEL_PREFIX = "model."  # MERVLitModule keeps the VideoLM as `self.model`


class ModelNotFoundError(FileNotFoundError):
    """A registered name whose weights are not on this machine."""


CONSOLIDATED_SUFFIX = ".consolidated"  # what Lightning's consolidate_checkpoint appends to a sharded checkpoint


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
    if any("lora_" in k for k in state) and not _is_peft(model.llm):
        model.add_lora()
    return model._load_state(state, source)


@contextmanager
def _hf_token(token: str | None) -> Iterator[None]:
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
        hf_token: token for gated hub weights of the encoders or LLM (e.g. Llama-2), used for this call only
            and in preference to `HF_TOKEN`; without it, `HF_TOKEN` (or a `huggingface-cli login`) is used.
        cache_dir: where registered names' weights are looked for (default `$MERV_CACHE/models` or
            `~/.cache/merv/models`).
        dtype: cast the model to this dtype.
        device: move the model to this device.
    """
    with _hf_token(hf_token):
        model = _load(name_or_path, cache_dir)
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model.eval()


def _load(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None) -> VideoLM:
    path = Path(name_or_path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        model = VideoLM.from_pretrained(path)
    elif path.suffix == ".ckpt" or path.name.endswith(".ckpt" + CONSOLIDATED_SUFFIX) or path.is_dir():
        model = load_checkpoint_model(path)
    elif str(name_or_path) in available_models():
        name = str(name_or_path)
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
    return model
