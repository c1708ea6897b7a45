"""Lightning glue: the LightningModule, the DataModule, callbacks and checkpoint helpers."""

from merv.lit.callbacks import ExportPretrained, FusionWeightLogger, GenerationLogger, ThroughputMonitor
from merv.lit.data import MERVDataModule
from merv.lit.module import MERVLitModule

__all__ = [
    "ExportPretrained",
    "FusionWeightLogger",
    "GenerationLogger",
    "MERVDataModule",
    "MERVLitModule",
    "ThroughputMonitor",
]
