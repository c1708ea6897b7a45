"""`python -m merv.cache build --config <experiment.yaml> [--out DIR] [--dtype float16|bfloat16|float32]`.

Runs the experiment's frozen encoders once over its annotation files and stores each video's aligned
features in a feature cache (see `merv.data.cache`); train from it with `--data.feature_cache DIR`.
The experiment YAML is read with the training CLI's own parser, so `--config` files and `--model.*` /
`--data.*` overrides mean exactly what they mean for `python -m merv.cli fit`. Several processes split
the videos between them (`--rank/--world-size`, or the `RANK`/`WORLD_SIZE` or SLURM variables).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from merv.cli import MERVCLI
from merv.data.cache import DTYPES, BuildStats, build_feature_cache
from merv.lit import MERVDataModule, MERVLitModule
from merv.models.encoders import VisionEncoder, build_encoder
from merv.models.sources import source_kind
from merv.models.vidlm import WEIGHTS_NAME

logger = logging.getLogger(__name__)

SPLITS = {"train": "train_files", "val": "val_files", "test": "test_files"}


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


def build_encoders(module: MERVLitModule) -> list[VisionEncoder]:
    """The frozen encoders a training run of `module` would hold.

    They are built in the model's order right after the CLI seeded the RNG, as `VideoLM` builds them first,
    so randomly initialised encoders get the same weights; `init_from` weights are loaded on top. The
    feature cache keys random encoders by a hash of their weights, so any difference shows up as misses.
    """
    encoders = [build_encoder(e.id, pretrained=e.pretrained, num_frames=e.num_frames) for e in module.config.encoders]
    if module.hparams.init_from:
        state = encoder_state(module.hparams.init_from)
        for i, enc in enumerate(encoders):
            prefix = f"encoders.{i}."
            own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if own:
                enc.load_state_dict(own)
    return encoders


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m merv.cache",
        description="Frozen-encoder feature caches for merv experiments (see merv.data.cache).",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build",
        help="encode a dataset once and store the aligned features",
        description="Fill a feature cache. Unknown flags (e.g. --data.video_root X) go to the experiment parser.",
        allow_abbrev=False,
    )
    b.add_argument("--config", action="append", required=True, help="experiment YAML (repeat: later ones win)")
    b.add_argument("--out", help="cache folder (default: data.feature_cache, else $MERV_CACHE/features)")
    b.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="storage dtype (default float32)")
    b.add_argument("--splits", nargs="+", choices=sorted(SPLITS), default=sorted(SPLITS), help="annotation splits")
    b.add_argument("--batch-size", type=int, help="videos per encoder pass (default: data.batch_size)")
    b.add_argument("--num-workers", type=int, help="decoding workers (default: data.num_workers)")
    b.add_argument("--device", help="where encoders run (default: cuda:LOCAL_RANK if available, else cpu)")
    b.add_argument("--rank", type=int, help="this shard (default: $RANK, $SLURM_PROCID or 0)")
    b.add_argument("--world-size", type=int, help="number of shards (default: $WORLD_SIZE, $SLURM_NTASKS or 1)")
    b.add_argument("--overwrite", action="store_true", help="rebuild entries that are already valid")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def build(args: argparse.Namespace, overrides: Sequence[str]) -> BuildStats:
    """The `build` command: parse the experiment, build the encoders, fill the cache, print the counts."""
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    cli_args = [a for c in args.config for a in ("--config", c)] + list(overrides)
    cli = _SettingsCLI(MERVLitModule, MERVDataModule, run=False, args=cli_args, seed_everything_default=0)
    module, data = cli.model, cli.datamodule

    root = args.out or data.hparams.feature_cache
    if root is None and os.environ.get("MERV_CACHE"):
        root = os.path.join(os.environ["MERV_CACHE"], "features")
    if root is None:
        raise SystemExit("no cache folder: pass --out, set data.feature_cache in the config, or set $MERV_CACHE")
    # The data module's own loader, so the cache covers exactly the records training reads.
    records = [r for split in args.splits for r in data._load(getattr(data.hparams, SPLITS[split]))]
    if not records:
        raise SystemExit(f"no records in the {'/'.join(args.splits)} annotation files of {', '.join(args.config)}")

    rank = args.rank if args.rank is not None else _env_int("RANK", "SLURM_PROCID", default=0)
    world = args.world_size if args.world_size is not None else _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    device = args.device
    if device is None:
        local = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    encoders = build_encoders(module)
    stats = build_feature_cache(
        records,
        encoders,
        root,
        temporal_tokens=module.config.temporal_tokens,
        tokens_per_frame=module.config.tokens_per_frame,
        dtype=DTYPES[args.dtype],
        batch_size=args.batch_size or data.hparams.batch_size,
        num_workers=data.hparams.num_workers if args.num_workers is None else args.num_workers,
        device=device,
        rank=rank,
        world_size=world,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"feature cache {root}: {stats.summary()}")
    return stats


def main(argv: Sequence[str] | None = None) -> BuildStats:
    """Entry point of `python -m merv.cache`; flags it does not know go to the experiment parser."""
    args, overrides = _parser().parse_known_args(argv)
    return build(args, overrides)


if __name__ == "__main__":
    main()
