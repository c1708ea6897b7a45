"""`merv export --model RUN_DIR_OR_CKPT --output DIR [--merge_lora]`: a checkpoint as a `save_pretrained` directory.

The directory loads with `merv.load_vid(dir)` or `VideoLM.from_pretrained(dir)`, without Lightning. FSDP runs
with `state_dict_type: sharded` write checkpoint folders; consolidate one first, which writes
`<folder>.consolidated` beside it, and export that file:

    python -m lightning.pytorch.utilities.consolidate_checkpoint outputs/run/version_0/checkpoints/last.ckpt
    merv export --model outputs/run/version_0/checkpoints/last.ckpt.consolidated --output models/merv
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from merv.cli import COMMANDS, config_parser, parse_config
from merv.models.loading import load_vid


@dataclass
class ExportConfig:
    """What to export and where.

    Attributes:
        model: the model to export: a run directory (its newest `last*.ckpt`), a Lightning `.ckpt`, a
            consolidated FSDP checkpoint, a saved model directory or a registered name.
        output: directory to write (`config.json`, `model.safetensors`, `llm/`).
        merge_lora: fold LoRA adapters into the LLM weights, so the export needs no peft to run.
    """

    model: str
    output: str
    merge_lora: bool = False


def export(cfg: ExportConfig) -> Path:
    """Load `cfg.model` and write it with `save_pretrained`; return the output directory."""
    model = load_vid(cfg.model)
    model.save_pretrained(cfg.output, merge_lora=cfg.merge_lora)
    return Path(cfg.output)


def parse_args(argv: Sequence[str] | None = None) -> ExportConfig:
    """The `ExportConfig` of a `merv export` command line (the arguments after `export`)."""
    parser = config_parser(ExportConfig, "merv export", COMMANDS["export"].summary)
    return parse_config(parser, ExportConfig, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`merv export`: export, then say where to."""
    cfg = parse_args(argv)
    print(f"exported {cfg.model} to {export(cfg)}")
    return 0
