"""Callbacks: throughput, skipped videos, fusion weights, sample generations, and model export."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from merv.lit.strategies import is_sharded
from merv.video import VideoDecodeError

logger = logging.getLogger(__name__)


class ThroughputMonitor(L.Callback):
    """Logs `train/samples_per_sec` and `train/tokens_per_sec`, measured between consecutive batches
    (so data loading counts), and `data/skipped_videos`, the running count of unreadable videos."""

    def __init__(self) -> None:
        self._last: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: dict[str, Any], batch_idx: int) -> None:
        now = time.perf_counter()
        counter = getattr(trainer.datamodule, "skip_counter", None)
        if counter is not None:
            pl_module.log("data/skipped_videos", float(counter.skipped))
        if self._last is not None and "input_ids" in batch:
            elapsed = now - self._last
            size = len(batch["input_ids"])
            pl_module.log("train/samples_per_sec", size / elapsed, batch_size=size)
            pl_module.log("train/tokens_per_sec", float(batch["attention_mask"].sum()) / elapsed, batch_size=size)
        self._last = now

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # the epoch boundary (validation, worker start-up) is not training time

    def on_train_end(self, trainer, pl_module) -> None:
        counter = getattr(trainer.datamodule, "skip_counter", None)
        if counter is not None and counter.skipped:
            logger.warning("%s; first files: %s", counter.summary(), ", ".join(counter.skipped_files[:5]))


class FusionWeightLogger(L.Callback):
    """Logs the mean per-encoder fusion weight of each training batch as `fusion/<encoder id>`."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        weights = pl_module.model.last_fusion_weights
        if weights is None:
            return
        for enc, w in zip(pl_module.model.encoders, weights.float().mean(dim=0)):
            pl_module.log(f"fusion/{enc.encoder_id}", w, batch_size=weights.shape[0])


class GenerationLogger(L.Callback):
    """Every `every_n_steps` optimizer steps, answers the first human turn of a few validation records and logs
    the text.

    Rank 0 generates alone, which needs a full copy of the weights: under sharded strategies (FSDP, DeepSpeed,
    model parallel) the callback does nothing.

    Args:
        every_n_steps: how often to generate (0 disables).
        num_samples: records to answer.
        max_new_tokens: generation length.
    """

    def __init__(self, every_n_steps: int = 200, num_samples: int = 2, max_new_tokens: int = 24) -> None:
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.max_new_tokens = max_new_tokens
        self._last_step: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        # Nothing has been learnt yet at the start (or since the checkpoint a resumed run starts from).
        self._last_step = trainer.global_step
        if self.every_n_steps and is_sharded(trainer.strategy):
            logger.info("sharded strategy: sample generations are not logged")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        # With gradient accumulation several batches end at the same global step: generate once per step.
        if not self.every_n_steps or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        if not trainer.is_global_zero or is_sharded(trainer.strategy):
            return
        records = getattr(trainer.datamodule, "val_records", None) or getattr(trainer.datamodule, "train_records", [])
        # One-clip samples: their prompt has a single video to show (multi-clip records are few-shot style).
        records = [r for r in records if isinstance(r.get("video"), str)][: self.num_samples]
        if not records:
            return
        model = pl_module.model
        was_training = model.training
        model.eval()
        lines = []
        for r in records:
            builder = model.get_prompt_builder()
            builder.add_turn("human", r["conversations"][0]["value"])
            try:
                text = model.generate(
                    r["video"],
                    builder.get_prompt(),
                    max_new_tokens=self.max_new_tokens,
                    start=r.get("start"),
                    end=r.get("end"),
                )
            except (OSError, ValueError, VideoDecodeError, torch.cuda.OutOfMemoryError) as e:
                # An unreadable video, a prompt longer than max_length (ValueError), or a generation that does
                # not fit beside training costs a sample line, never the run.
                text = f"<generation failed: {e}>"
            expected = r["conversations"][1]["value"] if len(r["conversations"]) > 1 else ""
            lines.append(f"**{Path(r['video']).name}** — expected: `{expected}` — generated: `{text}`")
        model.train(was_training)
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            experiment.add_text("samples/generations", "\n\n".join(lines), step)
        logger.info("step %d generations:\n%s", step, "\n".join(lines))


class ExportPretrained(L.Callback):
    """At the end of `fit`, writes the model with `save_pretrained` to `<log_dir>/<dirname>`.

    Sharded strategies (FSDP, DeepSpeed) hold no full copy of the weights on any rank: there the run's
    checkpoint is exported afterwards instead (`merv export`).
    """

    def __init__(self, dirname: str = "model", merge_lora: bool = False) -> None:
        self.dirname = dirname
        self.merge_lora = merge_lora

    def on_train_end(self, trainer, pl_module) -> None:
        out = Path(trainer.log_dir or trainer.default_root_dir) / self.dirname  # collective: every rank asks
        if is_sharded(trainer.strategy):
            logger.info("sharded strategy: export the last checkpoint with `merv export` instead")
            return
        if trainer.is_global_zero:
            with torch.no_grad():
                pl_module.model.save_pretrained(out, merge_lora=self.merge_lora)
            logger.info("saved the trained model to %s", out)
