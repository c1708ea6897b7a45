"""Map-style dataset of video-text records: decodes in DataLoader workers and skips unreadable videos.

A sample whose video cannot be decoded becomes a `SkippedSample` marker; `VideoTextDataset.collate`
drops the markers and records how many it dropped in the batch (`num_skipped`), so the counts survive
the trip from worker processes. A `SkipCounter` in the main process adds them up and fails the run
when too many samples are skipped: `MERVDataModule` feeds its own counter, plain PyTorch loops iterate
with `track_skips`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from merv.models.processor import VisualTokensOverflowError
from merv.video import VideoDecodeError, video_clips
from merv.video.clips import is_multi_clip, stack_clips

logger = logging.getLogger(__name__)

Clip = tuple[str, float | None, float | None]


def record_clips(record: Mapping[str, Any]) -> list[Clip]:
    """The `(path, start, end)` clips of a record's `video` field, in `<video>` tag order, as the processor
    reads them (`merv.video.video_clips`); paths come back as written, not resolved."""
    return [
        (os.fspath(v), s, e) for v, s, e in video_clips(record.get("video"), record.get("start"), record.get("end"))
    ]


def describe_sample(index: int, record: Mapping[str, Any]) -> str:
    """`sample 3 (id) from <annotation file>: record 7` for logs and errors (the origin when the record has one)."""
    text = f"sample {index} ({record.get('id', '?')})"
    origin = record.get("record_origin")
    return f"{text} from {origin}" if origin else text


class Processor(Protocol):
    """What the dataset needs from a processor (`merv.models.processor.VideoLMProcessor` provides it)."""

    def preprocess(self, video: str, start: float | None, end: float | None, **decode: Any) -> list[torch.Tensor]: ...

    def num_videos(self, video: Any) -> int: ...

    def encode(self, conversations: Sequence[dict[str, str]], num_videos: int) -> dict[str, torch.Tensor]: ...

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SkippedSample:
    """Marker returned for a sample that cannot be used: an unreadable video, or more visual tokens than
    `max_length` holds (dropped by `collate`, counted as skipped)."""

    index: int
    path: str
    reason: str


MAX_SKIP_FRACTION = 0.05
"""Default largest fraction of samples with unreadable videos before a run fails (training and evaluation).

One in twenty: public video datasets lose a percent or two of their files to dead links and bad encodes,
which a run should survive; beyond that the cause is a wrong root, an unmounted disk or a broken download,
and in evaluation the missing items would move the accuracy by points, so the run stops rather than report
a number that does not describe the benchmark. Configs of large, cleaned datasets tighten it; synthetic
smoke tests loosen it."""


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

    def __init__(
        self, max_skip_fraction: float = MAX_SKIP_FRACTION, min_samples: int = 100, max_files_kept: int = 20
    ) -> None:
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
    """Feed every batch to `counter` and yield only the batches that still hold samples.

    The plain-PyTorch counterpart of what `MERVDataModule` does per batch:
    `for batch in track_skips(loader, dataset.skip_counter): ...`.
    """
    for batch in batches:
        counter.update(batch)
        if batch.get("num_samples", 0):
            yield batch


class VideoTextDataset(Dataset):
    """Records (from `load_annotations`) -> processor items; text-only records mix with video records.

    Videos are decoded in `__getitem__`, i.e. in DataLoader workers, once per clip at every encoder's
    frame count, and reach tensors only through the processor. A record's `video` may be one clip or a
    list of clips, one per `<video>` tag (see `record_clips`); the item then holds `(V, T_e, 3, S, S)`
    pixels per encoder, as `VideoLMProcessor.videos_pixels` builds them. If any clip cannot be decoded
    the whole sample is skipped.

    The dataset only marks skipped samples; they are counted in the main process, where the batches
    arrive: feed each collated batch to `skip_counter.update` (or iterate with `track_skips`). Nothing
    else feeds the counter, and copies of the dataset in DataLoader workers never do.

    Args:
        records: dicts with `conversations`, optional `video` (a path, a list of clips, or None) and
            optional `start`/`end` seconds.
        processor: provides `preprocess`, `num_videos`, `encode` and `collate`.
        max_skip_fraction: largest tolerated fraction of samples with unreadable videos (configures the
            counter built here when `skip_counter` is None).
        min_samples: samples to see before that fraction is checked (likewise).
        backend: video backend for `read_frames` (None: decord, falling back to PyAV).
        decode_timeout: seconds before a decode counts as hung and the sample is skipped.
        skip_counter: a counter to share, e.g. one a data module keeps across the datasets it builds; None
            builds one from `max_skip_fraction` and `min_samples`.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        processor: Processor,
        *,
        max_skip_fraction: float = MAX_SKIP_FRACTION,
        min_samples: int = 100,
        backend: str | None = None,
        decode_timeout: float | None = 60.0,
        skip_counter: SkipCounter | None = None,
    ) -> None:
        self.records = list(records)
        self.processor = processor
        self.backend = backend
        self.decode_timeout = decode_timeout
        self.skip_counter = skip_counter if skip_counter is not None else SkipCounter(max_skip_fraction, min_samples)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        record = self.records[index]
        item = self._encode(index, record)  # first: a sample that cannot fit is skipped before any decoding
        if isinstance(item, SkippedSample):
            return item
        pixels = self._pixels(index, record)
        if isinstance(pixels, SkippedSample):
            return pixels
        item["pixel_values"] = pixels
        item["index"] = index
        return item

    def _pixels(self, index: int, record: Mapping[str, Any]) -> list[torch.Tensor] | SkippedSample | None:
        """Per-encoder pixels of the record's clips (None without video), or the marker of the clip that failed."""
        clips = record_clips(record)
        if not clips:
            return None
        per_clip = []
        for path, start, end in clips:
            try:
                # Through the processor, so its pixel cache (if any) serves training too.
                pixels = self.processor.preprocess(path, start, end, backend=self.backend, timeout=self.decode_timeout)
            except VideoDecodeError as e:
                which = f", clip {len(per_clip) + 1} of {len(clips)}" if len(clips) > 1 else ""
                logger.warning("skipping %s%s: %s", describe_sample(index, record), which, e)
                return SkippedSample(index, e.path, e.reason)
            per_clip.append(pixels)
        return stack_clips(per_clip, is_multi_clip(record.get("video")))  # (T_e, 3, S, S) or (V, T_e, 3, S, S)

    def _encode(self, index: int, record: Mapping[str, Any]) -> dict[str, Any] | SkippedSample:
        """Token ids, labels and video mask; a conversation that cannot be encoded is an error naming the sample.

        A sample whose visual tokens alone overflow `max_length` (many clips in one record) is skipped and
        counted like an unreadable video: its data are fine, this model just cannot take it whole.
        """
        num_videos = self.processor.num_videos(record.get("video"))
        try:
            return dict(self.processor.encode(record["conversations"], num_videos=num_videos))
        except VisualTokensOverflowError as e:
            logger.warning("skipping %s: %s", describe_sample(index, record), e)
            clips = record_clips(record)
            return SkippedSample(index, clips[0][0] if clips else "", str(e))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{describe_sample(index, record)}: cannot encode the conversation: {e}") from e

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


__all__ = [
    "Clip",
    "SkipCounter",
    "SkipRateError",
    "SkippedSample",
    "VideoTextDataset",
    "describe_sample",
    "record_clips",
    "track_skips",
]
