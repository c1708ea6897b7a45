"""A sample's `video` field as clips (one video, or several for several `<video>` tags, each with bounds), and
the one rule for how per-clip pixels or features become a sample's tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def is_multi_clip(video: Any) -> bool:
    """Whether a `video` field lists several clips (one per `<video>` tag) rather than naming one video."""
    return isinstance(video, (list, tuple))


def video_clips(video: Any, start: float | None = None, end: float | None = None) -> list[tuple[Any, Any, Any]]:
    """The `(video, start, end)` clips of a sample's `video` field, in `<video>` tag order.

    `video` is None (no clip), one video (a path or frames) taking `start`/`end`, or a list for several
    `<video>` tags (e.g. few-shot exemplars) whose entries are videos (taking `start`/`end` too) or
    `{"video", "start", "end"}` mappings with bounds of their own (absent: the whole video).
    """
    if video is None:
        return []
    clips = []
    for v in video if is_multi_clip(video) else [video]:
        if isinstance(v, Mapping):
            clips.append((v["video"], v.get("start"), v.get("end")))
        else:
            clips.append((v, start, end))
    return clips


def stack_clips(per_clip: Sequence[Sequence[torch.Tensor]], multi_clip: bool) -> list[torch.Tensor]:
    """One tensor per encoder from each clip's per-encoder tensors.

    A sample naming one video keeps its tensors as they are, `(T_e, 3, S, S)` pixels; a sample listing
    several clips (`is_multi_clip`) gets them stacked along a leading clip axis, `(V, T_e, 3, S, S)`, even
    when the list holds a single clip.
    """
    if not multi_clip:
        (only,) = per_clip
        return list(only)
    return [torch.stack(tensors) for tensors in zip(*per_clip)]


def with_clip_axis(pixels: torch.Tensor) -> torch.Tensor:
    """A sample's pixels for one encoder with the clip axis: `(T_e, 3, S, S)` → `(1, T_e, 3, S, S)`;
    `(V, T_e, 3, S, S)` unchanged."""
    return pixels if pixels.ndim == 5 else pixels.unsqueeze(0)


__all__ = ["is_multi_clip", "stack_clips", "video_clips", "with_clip_axis"]
