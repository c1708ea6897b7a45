"""`MERVDataModule`: annotation files → datasets → DataLoaders whose order survives a resume."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler

from merv.data import load_annotations
from merv.data.dataset import MAX_SKIP_FRACTION, SkipCounter, VideoTextDataset

logger = logging.getLogger(__name__)

# Lightning warns that a mid-epoch resume replays the epoch unless the DataLoader is stateful; this data
# module checkpoints its position and skips what was trained on instead, so the warning does not apply.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


class ResumableSampler(DistributedSampler):
    """Shuffles with a seed per epoch (like `DistributedSampler`) and can skip the part of an epoch a
    resumed run already trained on, so `fit --ckpt_path` continues on exactly the same samples.

    Lightning leaves a `DistributedSampler` in place (it would otherwise wrap custom samplers), and calls
    `set_epoch` on it every epoch. `len()` stays the full epoch: Lightning sizes every epoch from it once.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self._skip = 0

    def skip_next(self, num_samples: int) -> None:
        """Drop the first `num_samples` of the next epoch's indices (this rank's share)."""
        self._skip = num_samples

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self._skip :]
        self._skip = 0
        return iter(indices)


class MERVDataModule(L.LightningDataModule):
    """Training and validation data from annotation files in any supported format.

    The LightningModule owns the model and its visual inputs: datasets come from its `visual_inputs`, so frame
    counts, tokenisation and caches are never configured here.

    Args:
        train_files: annotation files (or folder-per-class directories) concatenated for training.
        val_files: annotation files for validation loss.
        test_files: annotation files for `test`.
        video_root: folder video paths are relative to (default: as each format defines).
        format: annotation format for every file; None sniffs each.
        batch_size: samples per device per step.
        num_workers: DataLoader worker processes that decode videos.
        max_skip_fraction: fail loudly once more than this fraction of videos could not be read.
        pin_memory: pin batches for faster host-to-GPU copies.
        shuffle: shuffle training samples every epoch (seeded).
        seed: shuffling seed.
    """

    def __init__(
        self,
        train_files: list[str] | None = None,
        val_files: list[str] | None = None,
        test_files: list[str] | None = None,
        video_root: str | None = None,
        format: str | None = None,
        batch_size: int = 8,
        num_workers: int = 2,
        max_skip_fraction: float = MAX_SKIP_FRACTION,
        pin_memory: bool = True,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_records: list[dict] = []
        self.val_records: list[dict] = []
        self.test_records: list[dict] = []
        self.skip_counter = SkipCounter(max_skip_fraction)
        # Position in the training data, saved in checkpoints so a resumed run skips what it trained on.
        self._epoch, self._batches_done = 0, 0
        self._resume_from: dict | None = None

    def load_records(self, files: list[str] | None) -> list[dict]:
        """The records of annotation `files`, read as this data module reads them (format, video root)."""
        records: list[dict] = []
        for f in files or []:
            loaded = load_annotations(f, format=self.hparams.format, video_root=self.hparams.video_root)
            logger.info("%s: %d records", f, len(loaded))
            records.extend(loaded)
        return records

    def setup(self, stage: str) -> None:
        if stage == "fit" and not self.train_records:
            self.train_records = self.load_records(self.hparams.train_files)
            if not self.train_records:
                raise ValueError("no training records: set data.train_files")
        if stage in ("fit", "validate") and not self.val_records:
            self.val_records = self.load_records(self.hparams.val_files)
        if stage == "test" and not self.test_records:
            self.test_records = self.load_records(self.hparams.test_files)

    def _dataset(self, records: list[dict]) -> VideoTextDataset:
        inputs = self.trainer.lightning_module.visual_inputs
        return inputs.dataset(records, max_skip_fraction=self.hparams.max_skip_fraction)

    def _loader(self, dataset: VideoTextDataset, sampler=None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=dataset.collate,
            pin_memory=self.hparams.pin_memory and self.trainer.accelerator.__class__.__name__ != "CPUAccelerator",
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset(self.train_records)
        dataset.skip_counter = self.skip_counter
        trainer = self.trainer
        sampler = ResumableSampler(
            dataset, trainer.world_size, trainer.global_rank, self.hparams.shuffle, self.hparams.seed
        )
        # On `fit --ckpt_path`, `load_state_dict` has run before this: skip what the epoch already trained on.
        resume, self._resume_from = self._resume_from, None
        if resume and resume["epoch"] == trainer.current_epoch:
            sampler.skip_next(resume["batches_done"] * self.hparams.batch_size)
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self._dataset(self.val_records)) if self.val_records else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(self.test_records))

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # Workers report skipped videos per batch; the main process adds them up and fails the run
        # once the skip rate passes `max_skip_fraction`.
        if self.trainer.training:
            self.skip_counter.update(batch)
            if self.trainer.current_epoch != self._epoch:
                self._epoch, self._batches_done = self.trainer.current_epoch, 0
            self._batches_done += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches_done": self._batches_done}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_from = dict(state_dict)
        self._epoch, self._batches_done = state_dict["epoch"], state_dict["batches_done"]
