"""The `merv` command: one console script whose subcommands are the modules of this package.

    merv fit|validate|test --config a.yaml [--x.y v]     training (LightningCLI, `merv.cli.train`)
    merv eval mcq|openended|judge|action|table|merge ... evaluation (`merv.cli.eval`)
    merv cache build ...                                 frozen-encoder feature cache (`merv.cli.cache`)
    merv export --model RUN_DIR --output DIR             a checkpoint as a `save_pretrained` directory
    merv chat --model M --video V --question Q           ask a model about a video

`python -m merv.cli ...` is the same command. Subcommand modules are imported only when run, so `merv chat`
does not pay for Lightning and `merv --help` answers at once. Every flag is snake_case, and `--model` always
names the model to run (whatever `merv.load_vid` accepts).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

    from merv.cli.train import MERVCLI

__all__ = ["COMMANDS", "MERVCLI", "config_parser", "main", "parse_config", "rename_flags"]

Config = TypeVar("Config")


class Command(NamedTuple):
    """A `merv` subcommand: the module whose `main(argv) -> int` runs it and its line in `merv --help`."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "fit": Command("merv.cli.train", "train a model (LightningCLI: --config a.yaml [--config b.yaml] [--x.y v])"),
    "validate": Command("merv.cli.train", "run the validation loop of a configured model"),
    "test": Command("merv.cli.train", "run the test loop of a configured model"),
    "eval": Command("merv.cli.eval", "benchmarks: mcq, openended, judge, action, table, merge"),
    "cache": Command("merv.cli.cache", "build the frozen-encoder feature cache of an experiment"),
    "export": Command("merv.cli.export", "write a training checkpoint as a directory that loads without Lightning"),
    "chat": Command("merv.cli.chat", "ask a model a question about a video"),
}

TRAINING = tuple(name for name, command in COMMANDS.items() if command.module == "merv.cli.train")
"""Subcommands of the LightningCLI; it receives the whole command line, subcommand included."""


def _overview() -> argparse.ArgumentParser:
    """The top-level parser: only for `merv --help` and for rejecting an unknown subcommand."""
    parser = argparse.ArgumentParser(
        prog="merv",
        description="Train, evaluate and run multi-encoder video language models.",
        epilog="`merv <command> --help` lists a command's options. Options before a training subcommand go to "
        "the LightningCLI, e.g. `merv --config all.yaml fit` with `fit:` and `test:` sections in one file.",
    )
    sub = parser.add_subparsers(title="commands", metavar="<command>")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `merv` subcommand (the console script's entry point).

    Args:
        argv: the arguments after `merv`; None reads `sys.argv`.

    Returns:
        The exit status of the command: 0 on success. `--help` and usage errors exit through `SystemExit`,
        as argparse does.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        # As argparse does: help exits with 0; no command at all is a usage error, with the overview.
        _overview().print_help(sys.stdout if args else sys.stderr)
        raise SystemExit(0 if args else 2)
    name, rest = args[0], args[1:]
    if name in TRAINING or name.startswith("-"):
        from merv.cli.train import main as train

        # None lets the LightningCLI read sys.argv itself; handing it a copy would make it warn about both.
        train(None if argv is None else args)
        return 0
    if name not in COMMANDS:
        _overview().error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    status = importlib.import_module(COMMANDS[name].module).main(rest)
    return 0 if status is None else int(status)


def __getattr__(name: str) -> Any:
    # `from merv.cli import MERVCLI` keeps working without importing Lightning for every command.
    if name == "MERVCLI":
        from merv.cli.train import MERVCLI

        return MERVCLI
    raise AttributeError(f"module 'merv.cli' has no attribute {name!r}")


# ------------------------------------------------------------------------------------- typed command lines


def config_parser(config_class: type, prog: str, description: str, config_file: bool = True) -> ArgumentParser:
    """A jsonargparse parser whose options are the fields of a dataclass, with its docstring as their help.

    Besides one flag per field it takes `--config FILE` (YAML of the same fields; later flags win) and
    `--print_config`. A boolean field also works as a bare switch: `--merge_lora` means `--merge_lora true`.

    Args:
        config_class: a dataclass whose `Attributes:` docstring section documents each field.
        prog: the command as typed, e.g. `merv export`.
        description: the first line of `--help`.
        config_file: offer `--config FILE`; off where `--config` means something else (`merv cache build`
            passes it to the experiment's parser).
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=description)
    if config_file:
        parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_class_arguments(config_class, as_group=False)
    switches = {name for name, hint in typing.get_type_hints(config_class).items() if hint is bool}
    for action in parser._actions:
        if action.dest in switches:
            action.nargs, action.const = "?", True
    return parser


def parse_config(parser: ArgumentParser, config_class: type[Config], argv: Sequence[str] | None) -> Config:
    """Parse `argv` with a `config_parser` into an instance of its dataclass.

    A value the dataclass rejects (its `__post_init__` raises ValueError) is reported like any parse error:
    the usage, the message, exit status 2.
    """
    namespace = parser.parse_args(None if argv is None else list(argv))
    try:
        return config_class(**{f.name: namespace[f.name] for f in dataclasses.fields(config_class)})
    except ValueError as err:
        parser.error(str(err))


def rename_flags(argv: Sequence[str], renames: Mapping[str, str]) -> list[str]:
    """`argv` with former flag spellings replaced by the current ones, as `--old v` and as `--old=v`.

    Lets a script keep the flags its users have typed for years while its options come from a typed config.
    """
    renamed = []
    for arg in argv:
        flag, equals, value = arg.partition("=")
        renamed.append(renames[flag] + equals + value if flag in renames else arg)
    return renamed
