"""Training command line: `merv fit|validate|test --config a.yaml [--config b.yaml] [--x.y v]` (LightningCLI)."""

from __future__ import annotations

import os

from jsonargparse import get_loader, set_loader
from lightning.pytorch.cli import LightningCLI

from merv.lit import MERVDataModule, MERVLitModule
from merv.models.registry import expand_registered

PARSER_MODE = "merv-yaml"
"""YAML in which `{from_name: <registered model>, ...}` stands for that architecture (see `expand_registered`)."""
_load_yaml = get_loader("yaml")
set_loader(PARSER_MODE, lambda text: expand_registered(_load_yaml(text)), (ValueError, KeyError))


class MERVCLI(LightningCLI):
    """LightningCLI with MERV's module and data module; later configs and flags override earlier ones."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # No `predict`: the module has no predict step; answers come from `merv eval`.
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def init_parser(self, **kwargs):
        kwargs.setdefault("parser_mode", PARSER_MODE)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # Shuffling follows the run's seed, so one number makes a run reproducible.
        parser.link_arguments("seed_everything", "data.seed")
        parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir")


def main(args: list[str] | None = None) -> MERVCLI:
    """Run `fit`, `validate` or `test` and return the CLI (its `trainer`, `model` and `datamodule`).

    Args:
        args: the command line from the subcommand on, e.g. `["fit", "--config", "a.yaml"]`; None reads
            `sys.argv`.
    """
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    return MERVCLI(
        MERVLitModule,
        MERVDataModule,
        # `python -m merv.cli` would otherwise call itself `__main__.py` in usage lines.
        parser_kwargs={"prog": "merv"},
        # Requeued SLURM jobs write into the same run dir.
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        args=args,
    )
