"""Entry points: the training CLI (`merv.cli.train`) and the other command lines."""

from merv.cli.train import MERVCLI, main

__all__ = ["MERVCLI", "main"]
