"""Which model an evaluation runs: the model config, loading it for inference, and where its results go."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass
class ModelConfig:
    """The model an evaluation runs.

    Attributes:
        model: a saved model dir, a Lightning `.ckpt`, a training run dir or a registered name (see `load_vid`).
        device: torch device; None = cuda when available, else cpu.
        dtype: cast the model to this dtype; None keeps the checkpoint's.
        video_cache: folder caching decoded, resized clips, so later runs on the same benchmark (other
            checkpoints, strategies or chunks) skip decoding; None decodes every time.
    """

    model: str
    device: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    video_cache: str | None = None

    @property
    def recorded_path(self) -> str:
        """The model as results record it: the absolute path of a file or folder, else the registered name."""
        path = Path(self.model)
        return str(path.resolve()) if path.exists() else self.model


def load_model(cfg: ModelConfig, dataset_id: str = "eval") -> Any:
    """Load a model for inference (see `load_vid`).

    With `cfg.video_cache`, the model's processor reads decoded, resized clips from that folder and stores
    the ones it decodes, namespaced by `dataset_id` and the encoders' frame counts and sizes.
    """
    import torch

    from merv.models.loading import load_vid
    from merv.video import VideoTensorCache

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = None if cfg.dtype is None else getattr(torch, cfg.dtype)
    model = load_vid(cfg.model, dtype=dtype, device=device)
    if cfg.video_cache:
        processor = model.processor
        processor.pixel_cache = VideoTensorCache(cfg.video_cache, processor.frame_specs, dataset_id, writable=True)
    return model


# Path parts that every run or export shares: they tell models apart only together with the parts above them.
_GENERIC_PART = re.compile(r"model|run|checkpoints|version_\d+|.*\.ckpt(\.consolidated)?")


def default_output_dir(model_path: str, root: str = "eval_results") -> Path:
    """Where a model's results go by default: `<root>/<name>`, `name` being the model's path from its last
    distinctive part, joined with `-`.

    Exported models are all called `model` and checkpoints `last.ckpt`, so the name reaches up to the
    first folder that is not a run, version or checkpoint folder: `outputs/tour/run/version_0/model` gives
    `eval_results/tour-run-version_0-model`, `models/merv-tiny` gives `eval_results/merv-tiny`, and a
    registered name stays itself.
    """
    path = Path(model_path)
    parts = (path.resolve() if path.exists() else path).parts
    name: list[str] = []
    for part in reversed(parts):
        if part in ("", "/", ".", ".."):
            continue
        name.insert(0, part)
        if not _GENERIC_PART.fullmatch(part):
            break
    return Path(root) / ("-".join(name) or "model")
