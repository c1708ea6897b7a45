"""Map-style dataset of video-text records: decodes in DataLoader workers and skips unreadable videos.

A sample whose video cannot be decoded becomes a `SkippedSample` marker; `VideoTextDataset.collate`
drops the markers and records how many it dropped in the batch (`num_skipped`), so the counts survive
the trip from worker processes. A `SkipCounter` in the main process adds them up and fails the run
when too many samples are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from merv.data.video import VideoDecodeError, read_frames

logger = logging.getLogger(__name__)


class Processor(Protocol):
    """What the dataset needs from a processor (`merv.models.processor.VideoLMProcessor` provides it)."""

    @property
    def frame_counts(self) -> list[int]: ...

    def pixels(self, frames_per_encoder: list[torch.Tensor]) -> list[torch.Tensor]: ...

    def encode(self, conversations: Sequence[dict[str, str]], has_video: bool) -> dict[str, torch.Tensor]: ...

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SkippedSample:
    """Marker returned for a sample whose video could not be decoded (dropped by `collate`)."""

    index: int
    path: str
    reason: str


class SkipRateError(RuntimeError):
    """Too many samples were skipped: the data (or its paths) are broken, not a few files."""


class SkipCounter:
    """Main-process tally of seen and skipped samples, fed with collated batches.

    Each batch carries `num_samples` and `num_skipped` from the worker that built it; `update` adds
    them up and raises `SkipRateError` once the skipped fraction passes `max_skip_fraction`, judged
    only after `min_samples` samples so a few bad files early on do not end a run.

    Args:
        max_skip_fraction: largest tolerated fraction of skipped samples.
        min_samples: samples to see before the fraction is checked.
        max_files_kept: how many skipped file names to keep for the report.
    """

    def __init__(self, max_skip_fraction: float = 0.05, min_samples: int = 100, max_files_kept: int = 20) -> None:
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        self.max_skip_fraction = max_skip_fraction
        self.min_samples = min_samples
        self.max_files_kept = max_files_kept
        self.reset()

    def reset(self) -> None:
        """Forget all counts (e.g. at the start of an epoch)."""
        self.seen = 0
        self.skipped = 0
        self.skipped_files: list[str] = []

    @property
    def fraction(self) -> float:
        """Skipped samples over all samples seen so far (0 before any)."""
        return self.skipped / self.seen if self.seen else 0.0

    def update(self, batch: Mapping[str, Any]) -> None:
        """Add one collated batch's counts, then check the skip rate.

        Raises:
            SkipRateError: the skipped fraction passed `max_skip_fraction` after `min_samples` samples.
        """
        skipped = int(batch.get("num_skipped", 0))
        self.seen += int(batch.get("num_samples", 0)) + skipped
        self.skipped += skipped
        room = self.max_files_kept - len(self.skipped_files)
        if room > 0:
            self.skipped_files.extend(list(batch.get("skipped_files", []))[:room])
        self.check()

    def check(self) -> None:
        """Raise `SkipRateError` if the skip rate is over the limit (once enough samples were seen)."""
        if self.seen >= self.min_samples and self.fraction > self.max_skip_fraction:
            files = ", ".join(self.skipped_files[:5])
            raise SkipRateError(
                f"{self.skipped} of {self.seen} samples ({self.fraction:.1%}) had unreadable videos, more than "
                f"max_skip_fraction={self.max_skip_fraction:.1%}; first skipped files: {files}"
            )

    def summary(self) -> str:
        """One line for the end-of-run log."""
        return f"skipped {self.skipped} of {self.seen} samples ({self.fraction:.2%}) with unreadable videos"


def track_skips(batches: Iterable[Mapping[str, Any]], counter: SkipCounter) -> Iterator[Mapping[str, Any]]:
    """Feed every batch to `counter` and yield only the batches that still hold samples."""
    for batch in batches:
        counter.update(batch)
        if batch.get("num_samples", 0):
            yield batch


class VideoTextDataset(Dataset):
    """Records (from `load_annotations`) -> processor items; text-only records mix with video records.

    Videos are decoded in `__getitem__`, i.e. in DataLoader workers, once per sample at every encoder's
    frame count, and reach tensors only through the processor. Use `collate` as the DataLoader's
    `collate_fn` and feed the batches to `skip_counter` (or iterate with `track_skips`).

    Args:
        records: dicts with `conversations`, optional `video` (path or None) and optional `start`/`end` seconds.
        processor: provides `frame_counts`, `pixels`, `encode` and `collate`.
        max_skip_fraction: largest tolerated fraction of samples with unreadable videos.
        min_samples: samples to see before the skip fraction is checked.
        backend: video backend for `read_frames` (None: decord, falling back to PyAV).
        decode_timeout: seconds before a decode counts as hung and the sample is skipped.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        processor: Processor,
        *,
        max_skip_fraction: float = 0.05,
        min_samples: int = 100,
        backend: str | None = None,
        decode_timeout: float | None = 60.0,
    ) -> None:
        self.records = list(records)
        self.processor = processor
        self.backend = backend
        self.decode_timeout = decode_timeout
        self.skip_counter = SkipCounter(max_skip_fraction, min_samples)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        record = self.records[index]
        video = record.get("video")
        pixels = None
        if video is not None:
            try:
                frames = read_frames(
                    video,
                    self.processor.frame_counts,
                    start=record.get("start"),
                    end=record.get("end"),
                    backend=self.backend,
                    timeout=self.decode_timeout,
                )
            except VideoDecodeError as e:
                logger.warning("skipping sample %d (%s): %s", index, record.get("id", "?"), e)
                return SkippedSample(index, e.path, e.reason)
            pixels = self.processor.pixels(frames)
        try:
            item = dict(self.processor.encode(record["conversations"], has_video=video is not None))
        except (KeyError, ValueError) as e:
            raise ValueError(f"sample {index} ({record.get('id', '?')}): cannot encode the conversation: {e}") from e
        item["pixel_values"] = pixels
        item["index"] = index
        return item

    def collate(self, items: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
        """Drop skipped samples, collate the rest with the processor and add the skip counts.

        The batch gains `num_samples`, `num_skipped`, `skipped_files` and `indices` (dataset indices of
        the samples kept). When every sample was skipped the batch holds only these keys.
        """
        kept = [it for it in items if not isinstance(it, SkippedSample)]
        skipped = [it for it in items if isinstance(it, SkippedSample)]
        batch: dict[str, Any] = self.processor.collate(kept) if kept else {}
        batch["indices"] = torch.tensor([it["index"] for it in kept], dtype=torch.long)
        batch["num_samples"] = len(kept)
        batch["num_skipped"] = len(skipped)
        batch["skipped_files"] = [s.path for s in skipped]
        return batch


__all__ = ["SkipCounter", "SkipRateError", "SkippedSample", "VideoTextDataset", "track_skips"]
