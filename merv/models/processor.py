"""Turns raw samples (video + conversation) into model tensors; shared by training, evaluation and chat.

The processor holds no weights, so DataLoader workers get a cheap pickled copy and do all decoding,
resizing and tokenisation there. `VideoLM.prepare_batch` and the training datasets both go through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from merv.models.prompting import GPT, VIDEO_TOKEN, PromptFormat, Segment, normalize_role
from merv.video import FrameSpec, PixelCache, gather_frames, read_frames, video_clips
from merv.video.clips import is_multi_clip, stack_clips, with_clip_axis

IGNORE_INDEX = -100


class VisualTokensOverflowError(ValueError):
    """A conversation's visual tokens reach past `max_length` (e.g. many images or videos in one sample), so
    no cut of its text can make it fit."""


class VideoLMProcessor:
    """Frames → per-encoder pixels, conversations → token ids with labels and a video mask, items → batches.

    Visual positions: each sample with a video gets `num_visual_tokens` placeholder positions at its
    `<video>` tag (or, when the text has none, right after a leading BOS, whether added here or written
    by a chat template, else at the start); `video_mask` marks them and the model writes the fused
    visual embeddings there.

    Args:
        tokenizer: a Hugging Face tokenizer with pad and eos tokens.
        prompt_format: how turns become text.
        frame_specs: one per encoder, in the model's encoder order.
        num_visual_tokens: fused visual sequence length L_v.
        max_length: training conversations longer than this are cut at the end (never inside the visual
            tokens); a prompt without a target (`encode_prompt`) that is longer raises instead, since
            cutting its end would drop the question or the assistant header.
        pixel_cache: consulted for video files before decoding them, and offered what was decoded; None
            decodes every time. Set it on a model's processor (`model.processor.pixel_cache = ...`) to
            share decoded clips across evaluation runs or few-shot prompts.
    """

    def __init__(
        self,
        tokenizer,
        prompt_format: PromptFormat,
        frame_specs: Sequence[FrameSpec],
        num_visual_tokens: int,
        max_length: int = 2048,
        pixel_cache: PixelCache | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.frame_specs = list(frame_specs)
        self.num_visual_tokens = num_visual_tokens
        self.max_length = max_length
        self.pixel_cache = pixel_cache

    @property
    def frame_counts(self) -> list[int]:
        return [s.num_frames for s in self.frame_specs]

    # ---- video ---------------------------------------------------------------------------------

    def load_frames(
        self,
        video: str | torch.Tensor | np.ndarray,
        start: float | None = None,
        end: float | None = None,
        **decode: Any,
    ) -> list[torch.Tensor]:
        """One decode (or one in-memory gather) serving every encoder: `(T_e, H, W, 3)` uint8 each.

        `decode` goes to `read_frames` for files (`backend`, `timeout`).
        """
        if _is_path(video):
            return read_frames(video, self.frame_counts, start=start, end=end, **decode)
        frames = torch.as_tensor(video)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        return gather_frames(frames, self.frame_counts)

    def pixels(self, frames_per_encoder: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Resize each encoder's frames to its input size: `(T_e, 3, S_e, S_e)` uint8 each.

        Pixels stay uint8 until `VideoLM.encode_aligned` normalises them on the model's device: a quarter of
        the bytes through worker queues and host-to-device copies, and no float pass on the CPU. Encoders
        with the same frame count see the same frames, so those with the same size share one resize.
        """
        if len(frames_per_encoder) != len(self.frame_specs):
            raise ValueError(
                f"got frames for {len(frames_per_encoder)} encoders, the model has {len(self.frame_specs)}"
            )
        resized: dict[tuple[int, int], torch.Tensor] = {}
        for spec, frames in zip(self.frame_specs, frames_per_encoder):
            key = (spec.num_frames, spec.image_size)
            if key not in resized:
                resized[key] = spec.resize(frames)
        return [resized[(spec.num_frames, spec.image_size)] for spec in self.frame_specs]

    def preprocess(
        self, video, start: float | None = None, end: float | None = None, **decode: Any
    ) -> list[torch.Tensor]:
        """Video file or `(T, H, W, 3)` uint8 frames → one resized `(T_e, 3, S_e, S_e)` uint8 tensor per encoder.

        Video files go through `pixel_cache` when one is set (in-memory frames are already decoded);
        `decode` goes to `read_frames` (`backend`, `timeout`).
        """
        cache = self.pixel_cache if _is_path(video) else None
        if cache is not None and (pixels := cache.get(video, start, end)) is not None:
            return pixels
        pixels = self.pixels(self.load_frames(video, start, end, **decode))
        if cache is not None:
            cache.put(video, start, end, pixels)
        return pixels

    # ---- text ----------------------------------------------------------------------------------

    def _tokenize_segments(
        self, segments: list[Segment], num_videos: int, truncate: bool = True
    ) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        ids: list[int] = []
        labels: list[int] = []
        video: list[bool] = []

        def add(token_ids: list[int], target: bool, is_video: bool = False) -> None:
            ids.extend(token_ids)
            labels.extend(token_ids if target else [IGNORE_INDEX] * len(token_ids))
            video.extend([is_video] * len(token_ids))

        placeholder = [tok.pad_token_id] * self.num_visual_tokens
        tags = sum(s.text.count(VIDEO_TOKEN) for s in segments)
        if tags != num_videos and not (tags == 0 and num_videos == 1):
            raise ValueError(f"the conversation has {tags} {VIDEO_TOKEN} tags for {num_videos} videos")
        if self.prompt_format.adds_bos and tok.bos_token_id is not None:
            add([tok.bos_token_id], target=False)
        for seg in segments:
            for i, piece in enumerate(seg.text.split(VIDEO_TOKEN)):
                if i > 0:
                    add(placeholder, target=False, is_video=True)
                if piece:
                    add(tok(piece, add_special_tokens=False)["input_ids"], seg.target)
        if tags == 0 and num_videos == 1:
            # An untagged video goes right after BOS; chat templates write their own BOS (and headers),
            # so it is found in the tokens rather than assumed at position 0.
            at = int(bool(ids) and tok.bos_token_id is not None and ids[0] == tok.bos_token_id)
            ids[at:at] = placeholder
            labels[at:at] = [IGNORE_INDEX] * len(placeholder)
            video[at:at] = [True] * len(placeholder)
        if len(ids) > self.max_length:
            if not truncate:
                visual = sum(video)
                raise ValueError(
                    f"the prompt is {len(ids)} tokens ({visual} visual + {len(ids) - visual} text), more than "
                    f"max_length={self.max_length}; cutting it would drop its end (the question and the answer "
                    "header): shorten the prompt or raise max_length"
                )
            if any(video[self.max_length :]):
                raise VisualTokensOverflowError(
                    f"{sum(video)} visual tokens ({num_videos} video(s)) and the text before them do not fit in "
                    f"max_length={self.max_length}; the conversation cannot be cut short of them"
                )
            ids, labels, video = ids[: self.max_length], labels[: self.max_length], video[: self.max_length]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "video_mask": torch.tensor(video, dtype=torch.bool),
        }

    def encode(self, conversations: Sequence[dict[str, str]], num_videos: int) -> dict[str, torch.Tensor]:
        """LLaVA-style turns (`{"from": "human"|"gpt", "value": ...}`) → `input_ids`, `labels`, `video_mask`.

        Labels are -100 everywhere except the assistant answers and their end-of-turn token. Each `<video>` tag
        takes the next of the sample's `num_videos` videos in order; a single video without a tag goes first.
        """
        turns = []
        for i, turn in enumerate(conversations):
            try:
                turns.append((normalize_role(turn["from"]), turn["value"]))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"conversation turn {i}: {e}") from None
        if not turns or turns[-1][0] != GPT:
            raise ValueError("a training conversation must end with a gpt turn")
        return self._tokenize_segments(self.prompt_format.segments(turns), num_videos)

    def encode_prompt(self, prompt_text: str, num_videos: int = 1) -> dict[str, torch.Tensor]:
        """Already-rendered prompt text (from `PromptBuilder.get_prompt()`) → ids and video mask.

        Raises:
            ValueError: the prompt with its visual tokens is longer than `max_length`.
        """
        return self._tokenize_segments([Segment(prompt_text, target=False)], num_videos, truncate=False)

    # ---- batching ------------------------------------------------------------------------------

    def videos_pixels(self, video, start: float | None = None, end: float | None = None) -> list[torch.Tensor] | None:
        """Pixels for a sample's `video` field (see `video_clips`): None, one video, or a list of videos.

        Returns one tensor per encoder, `(T_e, 3, S, S)` for one video or `(V, T_e, 3, S, S)` for a list.
        """
        clips = video_clips(video, start, end)
        if not clips:
            return None
        return stack_clips([self.preprocess(v, s, e) for v, s, e in clips], is_multi_clip(video))

    @staticmethod
    def num_videos(video) -> int:
        """How many videos a sample's `video` field holds: 0 for None, the length of a list, else 1."""
        if video is None:
            return 0
        return len(video) if is_multi_clip(video) else 1

    def item(self, sample: dict[str, Any]) -> dict[str, Any]:
        """A sample dict (`video` path/frames/list or None, `conversations`, optional `start`/`end`) → an item."""
        video = sample.get("video")
        item = self.encode(sample["conversations"], num_videos=self.num_videos(video))
        item["pixel_values"] = self.videos_pixels(video, sample.get("start"), sample.get("end"))
        return item

    def collate(
        self, items: Sequence[dict[str, Any]], padding_side: Literal["left", "right"] = "right"
    ) -> dict[str, Any]:
        """Pad items to the longest sequence (on `padding_side`); stack pixels of the samples that have a video.

        `pixel_values` is a list with one `(B_v, T_e, 3, S_e, S_e)` tensor per encoder, B_v being the
        number of videos in the batch, in order (None when no sample has one).
        """
        if not items:
            raise ValueError("cannot collate an empty list of items")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        length = max(len(it["input_ids"]) for it in items)
        pad_id = self.tokenizer.pad_token_id

        def pad(t: torch.Tensor, value) -> torch.Tensor:
            fill = t.new_full((length - len(t),), value)
            return torch.cat([t, fill] if padding_side == "right" else [fill, t])

        batch: dict[str, Any] = {
            "input_ids": torch.stack([pad(it["input_ids"], pad_id) for it in items]),
            "attention_mask": torch.stack([pad(torch.ones_like(it["input_ids"]), 0) for it in items]),
            "video_mask": torch.stack([pad(it["video_mask"], False) for it in items]),
        }
        if all("labels" in it for it in items):
            batch["labels"] = torch.stack([pad(it["labels"], IGNORE_INDEX) for it in items])
        with_video = [it["pixel_values"] for it in items if it.get("pixel_values") is not None]
        batch["pixel_values"] = (
            [torch.cat([with_clip_axis(p) for p in px]) for px in zip(*with_video)]  # (B_v, T_e, 3, S, S)
            if with_video
            else None
        )
        return batch

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self.collate([self.item(s) for s in samples])


def _is_path(video: Any) -> bool:
    return isinstance(video, (str, bytes)) or hasattr(video, "__fspath__")


__all__ = ["IGNORE_INDEX", "VideoLMProcessor", "VisualTokensOverflowError"]
