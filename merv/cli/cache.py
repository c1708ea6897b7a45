"""`merv cache build --config <experiment.yaml> [--out DIR] [--dtype float16|bfloat16|float32]`.

Runs the experiment's frozen encoders once over its annotation files and stores each video's aligned
features in a feature cache (see `merv.data.features`); train from it with `--model.feature_cache DIR`.
The experiment YAML is read with the training CLI's own parser, so `--config` files and `--model.*` /
`--data.*` overrides mean exactly what they mean for `python -m merv.cli fit`. Several processes split
the videos between them (`--rank`/`--world_size`, or the `RANK`/`WORLD_SIZE` or SLURM variables).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ArgumentParser

from merv.cli import config_parser
from merv.cli.train import MERVCLI
from merv.data.features import DTYPES, BuildStats, StorageDtype, build_feature_cache
from merv.lit import MERVDataModule, MERVLitModule
from merv.models.encoders import VisionEncoder
from merv.models.sources import source_kind
from merv.models.vidlm import WEIGHTS_NAME, build_encoders

logger = logging.getLogger(__name__)

SPLITS = {"train": "train_files", "val": "val_files", "test": "test_files"}
_EXPERIMENT_FLAGS = ("--config", "--seed_everything", "--model", "--data", "--trainer")
"""Flags (and `--model.*`, `--data.*`, `--trainer.*`) that belong to the experiment, not to the command."""


@dataclass
class BuildOptions:
    """Options of `build`; the experiment itself comes from `--config` files and `--model.*` / `--data.*`
    overrides, read by the training CLI's parser.

    Attributes:
        out: cache folder (default: model.feature_cache, else $MERV_CACHE/features).
        dtype: storage dtype; float16 and bfloat16 halve the disk space.
        splits: annotation splits whose videos are encoded.
        batch_size: videos per encoder pass (default: data.batch_size).
        num_workers: decoding workers (default: data.num_workers).
        device: where the encoders run (default: cuda:LOCAL_RANK when CUDA is available, else cpu).
        rank: this process's shard (default: $RANK, $SLURM_PROCID or 0).
        world_size: number of shards (default: $WORLD_SIZE, $SLURM_NTASKS or 1).
        overwrite: rebuild entries that are already valid.
        progress: show progress bars (`--progress false` hides them).
        log_level: Logging level.
    """

    out: str | None = None
    dtype: StorageDtype = "float32"
    splits: list[Literal["train", "val", "test"]] = field(default_factory=lambda: list(SPLITS))
    batch_size: int | None = None
    num_workers: int | None = None
    device: str | None = None
    rank: int | None = None
    world_size: int | None = None
    overwrite: bool = False
    progress: bool = True
    log_level: str = "INFO"


class _SettingsCLI(MERVCLI):
    """Parses an experiment exactly like `merv.cli` but builds only the module and data module settings.

    A Trainer is never built: its strategy (FSDP, DeepSpeed) could start distributed setup a build does not need.
    """

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def encoder_state(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The `encoders.*` tensors of an `init_from` source, without loading the rest of the model.

    A `save_pretrained` directory is read key by key from its safetensors file (the LLM under `llm/` is
    never opened); Lightning checkpoints and run directories go through `read_state_dict`.
    """
    path = Path(source)
    if source_kind(path) == "saved":
        from safetensors import safe_open

        with safe_open(str(path / WEIGHTS_NAME), framework="pt") as f:
            names = f.keys()  # a safe_open handle lists its tensors only through keys()
            return {k: f.get_tensor(k) for k in names if k.startswith("encoders.")}
    from merv.lit.checkpoints import read_state_dict

    return {k: v for k, v in read_state_dict(path).items() if k.startswith("encoders.")}


def frozen_encoders(module: MERVLitModule) -> list[VisionEncoder]:
    """The frozen encoders a training run of `module` would hold, without building the rest of its model.

    They are built by `build_encoders`, as `VideoLM` builds them, so randomly initialised encoders get the
    weights the run's seed gives them whatever else drew random numbers first; `init_from` weights are loaded
    on top. The feature cache keys random encoders by a hash of their weights, so any difference would show
    up as misses.
    """
    encoders = list(build_encoders(module.config.encoders))
    if module.hparams.init_from:
        state = encoder_state(module.hparams.init_from)
        for i, enc in enumerate(encoders):
            prefix = f"encoders.{i}."
            own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if own:
                enc.load_state_dict(own)
    return encoders


def build(options: BuildOptions, experiment: Sequence[str]) -> BuildStats:
    """The `build` command: parse the experiment, build its encoders, fill the cache, print the counts.

    Args:
        options: the command's options.
        experiment: the experiment's arguments for the training CLI's parser (`--config FILE`, overrides).
    """
    logging.basicConfig(level=options.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    cli = _SettingsCLI(MERVLitModule, MERVDataModule, run=False, args=list(experiment), seed_everything_default=0)
    module, data = cli.model, cli.datamodule

    root = options.out or module.hparams.feature_cache
    if root is None and os.environ.get("MERV_CACHE"):
        root = os.path.join(os.environ["MERV_CACHE"], "features")
    if root is None:
        raise SystemExit("no cache folder: pass --out, set model.feature_cache in the config, or set $MERV_CACHE")
    # The data module's own loader, so the cache covers exactly the records training reads.
    records = [r for split in options.splits for r in data.load_records(getattr(data.hparams, SPLITS[split]))]
    if not records:
        configs = " ".join(experiment)
        raise SystemExit(f"no records in the {'/'.join(options.splits)} annotation files of {configs}")

    rank = options.rank if options.rank is not None else _env_int("RANK", "SLURM_PROCID", default=0)
    world = options.world_size
    if world is None:
        world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    device = options.device
    if device is None:
        local = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    stats = build_feature_cache(
        records,
        frozen_encoders(module),
        root,
        temporal_tokens=module.config.temporal_tokens,
        tokens_per_frame=module.config.tokens_per_frame,
        dtype=DTYPES[options.dtype],
        batch_size=options.batch_size or data.hparams.batch_size,
        num_workers=data.hparams.num_workers if options.num_workers is None else options.num_workers,
        device=device,
        rank=rank,
        world_size=world,
        overwrite=options.overwrite,
        progress=options.progress,
    )
    print(f"feature cache {root}: {stats.summary()}")
    return stats


def split_experiment_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate the experiment's arguments (`--config FILE`, `--seed_everything N`, `--model.*`, `--data.*`,
    `--trainer.*`, each with its value) from the command's own.

    Returns:
        `(experiment, own)`, each in the order given.
    """
    experiment: list[str] = []
    own: list[str] = []
    args = iter(argv)
    for arg in args:
        name = arg.split("=", 1)[0]
        if name.split(".", 1)[0] not in _EXPERIMENT_FLAGS:
            own.append(arg)
            continue
        experiment.append(arg)
        if "=" not in arg:
            value = next(args, None)
            if value is None:
                raise SystemExit(f"{arg} expects a value")
            experiment.append(value)
    return experiment, own


def parser() -> ArgumentParser:
    """The command line of `merv cache` (also `python -m merv.cli.cache`)."""
    main_parser = ArgumentParser(prog="merv cache", description="Frozen-encoder feature caches for merv experiments.")
    commands = main_parser.add_subcommands(dest="subcommand")
    build_parser = config_parser(
        BuildOptions,
        "merv cache build",
        "Fill a feature cache for an experiment: `--config <experiment.yaml>` (repeatable, later ones win) and "
        "`--model.*` / `--data.*` overrides go to the training CLI's parser.",
        config_file=False,
    )
    commands.add_subcommand("build", build_parser, help="encode a dataset once and store the aligned features")
    return main_parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `merv cache`; returns the exit status."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    experiment, own = split_experiment_args(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(own)
    if args.subcommand == "build":
        if not any(a.split("=", 1)[0] == "--config" for a in experiment):
            raise SystemExit("build needs the experiment: --config <experiment.yaml>")
        options = args.build.as_dict()
        build(BuildOptions(**{f.name: options[f.name] for f in dataclasses.fields(BuildOptions)}), experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
