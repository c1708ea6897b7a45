"""Frame sampling: which frames of a video (or of a segment of it) each encoder sees."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class SegmentError(ValueError):
    """A `[start, end]` segment holds no frame of the video (the decoder turns it into a `VideoDecodeError`)."""


def sample_indices(num_available: int, num_samples: int) -> list[int]:
    """Evenly spaced frame indices at segment midpoints.

    The `N` available frames are cut into `K` equal segments and the frame at each segment's midpoint
    is taken: `floor((k + 0.5) * N / K)` for `k = 0..K-1`. When `N < K` frames repeat, which pads a
    short video by repetition.

    Args:
        num_available: number of frames the decoder produced (N), at least 1.
        num_samples: number of frames wanted (K), at least 1.

    Returns:
        K non-decreasing indices in `[0, N)`.
    """
    if num_available < 1:
        raise ValueError(f"num_available must be at least 1, got {num_available}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    # Integer arithmetic: floor((2k + 1) * N / 2K) is exact where float products could round down.
    return [((2 * k + 1) * num_available) // (2 * num_samples) for k in range(num_samples)]


def gather_frames(frames: torch.Tensor, frame_counts: Sequence[int]) -> list[torch.Tensor]:
    """Sample in-memory frames for several frame counts.

    Args:
        frames: `(N, H, W, 3)` uint8 frames.
        frame_counts: one count per consumer (encoder).

    Returns:
        One `(T_e, H, W, 3)` tensor per count, sampled with `sample_indices`.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (N, H, W, 3), got {tuple(frames.shape)}")
    return [frames[torch.tensor(sample_indices(frames.shape[0], k), dtype=torch.long)] for k in frame_counts]


def segment_frames(times: np.ndarray, start: float | None, end: float | None) -> np.ndarray:
    """Indices of the frames shown during `[start, end]` seconds (times relative to the first frame).

    Frame i is on screen from `times[i]` until the next frame; a frame belongs to the segment when that
    interval overlaps it, so a segment shorter than a frame still gets the frame on screen at the time.
    """
    n = len(times)
    lo = max(0.0, float(start)) if start is not None else 0.0
    hi = float(end) if end is not None else float("inf")
    if hi < lo:
        raise ValueError(f"segment end ({end}) is before its start ({start})")
    step = float(np.median(np.diff(times))) if n > 1 else float("inf")
    ends = np.append(times[1:], times[-1] + step)
    # `times <= lo` keeps the frame on screen at `lo` when the segment has zero length.
    idx = np.flatnonzero(((times < hi) | (times <= lo)) & (ends > lo))
    if idx.size == 0:
        duration = float(ends[-1]) if np.isfinite(ends[-1]) else float(times[-1])
        raise SegmentError(f"segment [{lo:g}, {hi:g}] s holds no frame (the video spans {duration:g} s)")
    return idx


__all__ = ["SegmentError", "gather_frames", "sample_indices", "segment_frames"]
