"""A sample's `video` field as clips: one video, or several for several `<video>` tags, each with bounds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def video_clips(video: Any, start: float | None = None, end: float | None = None) -> list[tuple[Any, Any, Any]]:
    """The `(video, start, end)` clips of a sample's `video` field, in `<video>` tag order.

    `video` is None (no clip), one video (a path or frames) taking `start`/`end`, or a list for several
    `<video>` tags (e.g. few-shot exemplars) whose entries are videos (taking `start`/`end` too) or
    `{"video", "start", "end"}` mappings with bounds of their own (absent: the whole video).
    """
    if video is None:
        return []
    clips = []
    for v in video if isinstance(video, (list, tuple)) else [video]:
        if isinstance(v, Mapping):
            clips.append((v["video"], v.get("start"), v.get("end")))
        else:
            clips.append((v, start, end))
    return clips


__all__ = ["video_clips"]
