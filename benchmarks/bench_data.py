"""Per-sample data path: one decode shared by every encoder vs one decode per encoder, against bare decoding.

Four ways to produce one training sample's per-encoder pixels, timed on the same videos in one run:

* bare: `read_frames` of every encoder's frames (their sorted union, decoded once), no transforms: the floor;
* shared: the training path, `VideoTextDataset.__getitem__`: one decode, each encoder's uint8 resize (shared
  by encoders with the same frame count and size), tokenising the conversation. Pixels stay uint8 until the
  model normalises them on its device, so no float pass happens here;
* separate: one `read_frames` per encoder, then its resize (what per-encoder pipelines do);
* cached: the training path reading every clip's pixels from a filled video tensor cache
  (`model.video_cache`): no decoding at all.

Prints a table and one JSON line. Defaults (MERV's four encoders at 16/16/32/16 frames, all at 224 px,
from 320x240 30 fps clips) run in about a minute on a CPU core:

    python benchmarks/bench_data.py [--videos 8] [--seconds 4] [--width 320 --height 240] [--backend pyav]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from merv.data.dataset import VideoTextDataset
from merv.data.synthetic import write_video
from merv.models.encoders.base import CLIP_MEAN, CLIP_STD, HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD
from merv.models.llm import build_tiny_tokenizer
from merv.models.processor import VideoLMProcessor
from merv.models.prompting import PromptFormat
from merv.video import FrameSpec, VideoTensorCache, read_frames

NORMS = [(CLIP_MEAN, CLIP_STD), (IMAGENET_MEAN, IMAGENET_STD), (HALF_MEAN, HALF_STD), (HALF_MEAN, HALF_STD)]


def make_videos(out: Path, count: int, width: int, height: int, seconds: float, fps: int) -> list[str]:
    """Camera-like clips: a textured background panning slowly and a few moving blobs (realistic bitrate)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for v in range(count):
        texture = rng.normal(0, 12, (height, width * 2, 3)).astype(np.float32)
        base = np.stack([xx / width * 180, yy / height * 160, (xx + yy) / (width + height) * 200], -1)
        frames = []
        for t in range(int(seconds * fps)):
            shift = int(t * 2) % width
            frame = base + texture[:, shift : shift + width] + 20 * np.sin(t / 7 + v)
            for k in range(3):
                cx = (0.2 + 0.3 * k) * width + 40 * np.sin(t / (9 + k))
                cy = (0.3 + 0.2 * k) * height + 30 * np.cos(t / (11 + k))
                frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (height / 8) ** 2] = (230 - 60 * k, 60 + 70 * k, 90)
            frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        path = out / f"clip_{v:03d}.mp4"
        write_video(path, np.stack(frames), fps=fps)
        paths.append(str(path))
    return paths


def timed(fns: dict, paths: list[str], rounds: int) -> dict[str, float]:
    """Best (lowest) seconds per video over the rounds, for each function.

    The functions take turns on every clip, so load from other processes hits them alike; the minimum
    over rounds is the least disturbed measurement.
    """
    totals = {name: [0.0] * rounds for name in fns}
    for r in range(rounds):
        for p in paths:
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(p)
                totals[name][r] += time.perf_counter() - start
    return {name: min(t) / len(paths) for name, t in totals.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8, help="clips to generate")
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--frames", default="16,16,32,16", help="frames per encoder")
    parser.add_argument("--sizes", default="224,224,224,224", help="input size per encoder")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the clips (best is kept)")
    parser.add_argument("--backend", default=None, help="decord, pyav or torchcodec (default: decord, then PyAV)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (DataLoader workers use 1)")
    parser.add_argument("--video_dir", help="use these .mp4 files instead of generating clips")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    counts = [int(x) for x in args.frames.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    if len(counts) != len(sizes):
        parser.error("--frames and --sizes need one value per encoder")
    specs = [FrameSpec(k, s, *NORMS[i % len(NORMS)]) for i, (k, s) in enumerate(zip(counts, sizes))]
    tokenizer = build_tiny_tokenizer()
    processor = VideoLMProcessor(tokenizer, PromptFormat("merv", tokenizer.eos_token), specs, num_visual_tokens=64)

    with tempfile.TemporaryDirectory() as tmp:
        if args.video_dir:
            paths = sorted(str(p) for p in Path(args.video_dir).glob("*.mp4"))[: args.videos]
        else:
            paths = make_videos(Path(tmp), args.videos, args.width, args.height, args.seconds, args.fps)
        convo = [{"from": "human", "value": "<video>\nDescribe the video."}, {"from": "gpt", "value": "a clip"}]
        dataset = VideoTextDataset(
            [{"video": p, "conversations": convo} for p in paths], processor, backend=args.backend
        )
        index = {p: i for i, p in enumerate(paths)}
        cached_processor = copy.copy(processor)
        cached_processor.pixel_cache = VideoTensorCache(Path(tmp) / "pixels", specs, "bench", writable=True)
        cached_dataset = VideoTextDataset(dataset.records, cached_processor, backend=args.backend)
        for i in range(len(paths)):  # fill the cache: every timed call below is a hit
            cached_dataset[i]

        def bare(p):
            return read_frames(p, counts, backend=args.backend)

        def shared(p):
            return dataset[index[p]]

        def separate(p):
            return [spec.resize(read_frames(p, [spec.num_frames], backend=args.backend)[0]) for spec in specs]

        def cached(p):
            return cached_dataset[index[p]]

        # The paths must agree: the shared decode gives exactly the pixels of decoding per encoder, and the
        # cache gives them back unchanged.
        for a, b, c in zip(shared(paths[0])["pixel_values"], separate(paths[0]), cached(paths[0])["pixel_values"]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            torch.testing.assert_close(a, c, rtol=0, atol=0)
        paths_fns = {"bare": bare, "shared": shared, "separate": separate, "cached": cached}
        for fn in paths_fns.values():  # warm-up: codec initialisation, page cache
            fn(paths[0])
        seconds = timed(paths_fns, paths, args.rounds)

    rows = [
        ("bare decode (floor)", "bare"),
        ("shared decode + transforms (training path)", "shared"),
        ("separate decode per encoder + transforms", "separate"),
        ("video tensor cache hit (training path)", "cached"),
    ]
    print(
        f"\n{len(paths)} clips {args.width}x{args.height} {args.seconds:g}s@{args.fps}fps, frames {counts}, "
        f"sizes {sizes}, {args.threads} thread(s), backend {args.backend or 'auto'}"
    )
    print(f"{'path':<52}{'ms/sample':>11}{'samples/s':>11}{'x bare':>9}")
    for label, key in rows:
        s = seconds[key]
        print(f"{label:<52}{s * 1e3:>11.1f}{1 / s:>11.2f}{s / seconds['bare']:>9.2f}")
    result = {
        "bench": "data",
        "clips": len(paths),
        "resolution": [args.width, args.height],
        "frames": counts,
        "sizes": sizes,
        "threads": args.threads,
        "samples_per_sec": {k: round(1 / v, 3) for k, v in seconds.items()},
        "shared_over_bare": round(seconds["shared"] / seconds["bare"], 3),
        "separate_over_shared": round(seconds["separate"] / seconds["shared"], 3),
        "shared_over_cached": round(seconds["shared"] / seconds["cached"], 3),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(
        f"shared/bare = {result['shared_over_bare']:.2f}x (target <= 1.3x); separate/shared = "
        f"{result['separate_over_shared']:.2f}x; shared/cached = {result['shared_over_cached']:.2f}x"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
