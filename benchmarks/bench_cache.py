"""Align-stage training from the feature cache vs with live encoders, on MERV scaled to a CPU.

The model (`scaled_config`) keeps MERV's layout at CPU size: its four encoder families (CLIP, DINOv2, ViViT,
SigLIP) at its frame counts (16/16/32/16), each pooled to 16 x 4x4 tokens, linear projectors, cross-attention
fusion and a Llama whose size the preset picks:

* `cpu` (default): an LLM as deep and wide as the one the quick-start trains on a CPU (2 layers, width 64). Encoders dominate the step,
  as they do whenever a small model is trained.
* `merv`: a width-256 LLM as deep as it takes for the encoders' share of the step's FLOPs to equal
  `merv-full`'s (LLaMA-2 7B, counted with `FlopCounterMode` on the meta device, the same caption). The cache
  only removes the encoders (and decoding), so this is the speed-up to expect at MERV's own proportions.

Both modes train copies of the same initial weights on the same batches (fixed order, AdamW on projectors +
fusion), taking turns step by step; the table reports median seconds per step:

* live: `VideoTextDataset` decodes and resizes each clip (bench_data.py's clips); the model runs its encoders;
* cache: `merv.data.features.build_feature_cache` encodes every clip once (timed separately), then
  `CachedFeatureDataset` batches carry `aligned_features` and no encoder runs.

Prints a table and one JSON line; checks that the losses of both modes agree within `--tolerance`.

    python benchmarks/bench_cache.py [--preset cpu|merv] [--steps 10] [--batch_size 2] [--num_workers 0]
        [--dtype float32] [--llm_layers N] [--llm_width W] [--width 320 --height 240 --seconds 4 --fps 30]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Dinov2Config

from merv.data.dataset import VideoTextDataset
from merv.data.features import DTYPES, CachedFeatureDataset, FeatureCache, build_feature_cache
from merv.models import VideoLM, VideoLMConfig
from merv.models.encoders import list_encoders, register_encoder
from merv.models.encoders.clip import ClipEncoder
from merv.models.encoders.clip import _config as clip_config
from merv.models.encoders.dinov2 import Dinov2Encoder
from merv.models.encoders.siglip import SiglipEncoder
from merv.models.encoders.siglip import _config as siglip_config
from merv.models.encoders.vivit import VivitEncoder
from merv.models.encoders.vivit import _config as vivit_config
from merv.models.llm import TINY_LLM_ARCH, LLMConfig
from merv.models.registry import model_config
from merv.models.vidlm import EncoderConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import make_videos  # noqa: E402

MODEL_INPUTS = ("input_ids", "attention_mask", "video_mask", "pixel_values", "labels", "aligned_features")
ENCODER_WIDTH = 128
"""Width of the scaled encoders; 4 layers each, 64 px frames in 8x8 patches (an 8x8 grid like MERV's pooled one)."""
LLAMA2_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
"""The published architecture of `meta-llama/Llama-2-7b-hf`, MERV's LLM; used to count FLOPs on the meta device."""
PRESETS: dict[str, tuple[int | None, int]] = {
    "cpu": (TINY_LLM_ARCH["num_hidden_layers"], TINY_LLM_ARCH["hidden_size"]),
    "merv": (None, 256),
}
"""LLM (depth, width) per preset; depth None = the depth that matches merv-full's encoder FLOP share."""


def register_scaled_encoders() -> None:
    """Register CPU-sized members of MERV's four encoder families under `bench-*` ids (idempotent)."""
    if "bench-clip" in list_encoders():
        return
    w, layers, heads, patch, size = ENCODER_WIDTH, 4, 4, 8, 64

    @register_encoder("bench-clip")
    def clip(pretrained: str | None = None, num_frames: int = 16) -> ClipEncoder:
        return ClipEncoder(clip_config(w, 4 * w, layers, heads, patch, size), num_frames=num_frames)

    @register_encoder("bench-dinov2")
    def dinov2(pretrained: str | None = None, num_frames: int = 16) -> Dinov2Encoder:
        config = Dinov2Config(
            hidden_size=w, num_hidden_layers=layers, num_attention_heads=heads, patch_size=patch, image_size=size
        )
        return Dinov2Encoder(config, image_size=size, num_frames=num_frames)

    @register_encoder("bench-vivit")
    def vivit(pretrained: str | None = None, num_frames: int = 32) -> VivitEncoder:
        return VivitEncoder(vivit_config(size, patch, num_frames, w, 4 * w, layers, heads))

    @register_encoder("bench-siglip")
    def siglip(pretrained: str | None = None, num_frames: int = 16) -> SiglipEncoder:
        return SiglipEncoder(siglip_config(w, 4 * w, layers, heads, patch, size), num_frames=num_frames)


def scaled_config(llm_layers: int, llm_width: int = 256) -> VideoLMConfig:
    """MERV at CPU size: its four encoder families at its frame counts (16/16/32/16), each pooled from an
    8x8 grid to 16 x 4x4 tokens (MERV: 16x16 to 8x8), linear projectors, cross-attention fusion, a small Llama."""
    register_scaled_encoders()
    arch = {
        **TINY_LLM_ARCH,
        "hidden_size": llm_width,
        "intermediate_size": 4 * llm_width,
        "num_hidden_layers": llm_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
    }
    return VideoLMConfig(
        encoders=[
            EncoderConfig("bench-clip", num_frames=16),
            EncoderConfig("bench-dinov2", num_frames=16),
            EncoderConfig("bench-vivit", num_frames=32),
            EncoderConfig("bench-siglip", num_frames=16),
        ],
        llm=LLMConfig(arch=arch),
        temporal_tokens=16,
        tokens_per_frame=16,
        projector="linear",
        max_length=512,
    )


def make_records(out: Path, count: int, width: int, height: int, seconds: float, fps: int) -> list[dict]:
    """Captioning records over generated clips (the same camera-like clips as bench_data.py)."""
    paths = make_videos(out, count, width, height, seconds, fps)
    return [
        {
            "id": f"clip_{i}",
            "video": p,
            "conversations": [
                {"from": "human", "value": "<video>\nDescribe the video."},
                {"from": "gpt", "value": "three coloured circles move over a textured background"},
            ],
        }
        for i, p in enumerate(paths)
    ]


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}


class Trainer:
    """Optimizer steps on one model and loader, timing data loading and compute of every step separately."""

    def __init__(self, model: VideoLM, loader, lr: float = 1e-3) -> None:
        self.model = model
        self.batches = iter(loader)
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        self.losses: list[float] = []
        self.data_s: list[float] = []
        self.compute_s: list[float] = []

    def step(self, timed: bool = True) -> None:
        t0 = time.perf_counter()
        batch = next(self.batches)
        t1 = time.perf_counter()
        loss = self.model(**model_inputs(batch)).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        self.losses.append(loss.item())
        if timed:
            self.data_s.append(t1 - t0)
            self.compute_s.append(t2 - t1)

    def median(self) -> dict[str, float]:
        """Median seconds per step: data, compute and their per-step sum."""
        totals = [d + c for d, c in zip(self.data_s, self.compute_s)]
        return {
            "data": statistics.median(self.data_s),
            "compute": statistics.median(self.compute_s),
            "total": statistics.median(totals),
        }


def count_align_flops(config: VideoLMConfig, text_tokens: int, llm_arch: dict | None = None) -> dict[str, float]:
    """FLOPs of one align-stage sample, counted on the meta device (no weights, no compute): the frozen
    encoders vs the rest (projectors, fusion, the LLM forward and the backward the projectors' gradients need).

    The visual tokens go first and the `text_tokens` after them; the order does not change the count.
    """
    config = copy.deepcopy(config)
    config.encoders = [dataclasses.replace(e, pretrained=None) for e in config.encoders]
    if llm_arch is not None:
        config.llm = LLMConfig(arch=llm_arch)
    with torch.device("meta"):
        model = VideoLM(config)
    model.set_trainable("align")
    specs = [enc.frame_spec for enc in model.encoders]
    pixels = [torch.empty(1, s.num_frames, 3, s.image_size, s.image_size, device="meta") for s in specs]
    with FlopCounterMode(display=False) as counter:
        aligned = model.encode_aligned(pixels)
    encoders = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        visual, _ = model.fuse(aligned)
        ids = torch.zeros(1, text_tokens, dtype=torch.long, device="meta")
        embeds = torch.cat([visual, model.llm.get_input_embeddings()(ids)], 1)
        labels = torch.cat([torch.full(visual.shape[:2], -100, dtype=torch.long, device="meta"), ids], 1)
        model.llm(inputs_embeds=embeds, labels=labels).loss.backward()
    values = sum(a.numel() for a in aligned)  # what a feature cache stores per clip
    return {"encoders": float(encoders), "rest": float(counter.get_total_flops()), "feature_values": values}


def share(flops: dict[str, float]) -> float:
    return flops["encoders"] / (flops["encoders"] + flops["rest"])


def matching_depth(target: float, text_tokens: int, llm_width: int) -> int:
    """The scaled model's LLM depth whose encoder FLOP share is closest to `target`.

    Only the LLM grows with depth, by the same amount per layer, so two counts give the line to solve.
    """
    one, two = (count_align_flops(scaled_config(n, llm_width), text_tokens) for n in (1, 2))
    per_layer = two["rest"] - one["rest"]
    wanted_rest = one["encoders"] * (1 - target) / target
    return max(1, round(1 + (wanted_rest - one["rest"]) / per_layer))


def merv_matched_depth(conversations: list[dict], llm_width: int) -> tuple[int, int, dict[str, float]]:
    """For one captioning sample: the scaled LLM depth that gives merv-full's encoder FLOP share, the number
    of text tokens, and merv-full's counted FLOPs (LLaMA-2 7B, the same text length)."""
    probe = VideoLM(scaled_config(1, llm_width)).processor.encode(conversations, num_videos=1)
    text_tokens = int((~probe["video_mask"]).sum())
    reference = count_align_flops(model_config("merv-full"), text_tokens, LLAMA2_7B)
    return matching_depth(share(reference), text_tokens, llm_width), text_tokens, reference


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per mode")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers (0: data time is visible)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="cache storage dtype")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="LLM size: the quick-start's (cpu) or matched to merv-full's encoder FLOP share (merv)",
    )
    parser.add_argument("--llm_layers", type=int, default=None, help="override the preset's LLM depth")
    parser.add_argument("--llm_width", type=int, default=None, help="override the preset's LLM width")
    parser.add_argument("--width", type=int, default=320, help="clip width (bench_data.py's default clips)")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on shared machines)")
    parser.add_argument("--tolerance", type=float, default=None, help="max loss difference (default by dtype)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tolerance = args.tolerance if args.tolerance is not None else {"float32": 1e-4}.get(args.dtype, 1e-2)
    steps = args.steps

    with tempfile.TemporaryDirectory() as tmp:
        records = make_records(
            Path(tmp) / "videos", (steps + 1) * args.batch_size, args.width, args.height, args.seconds, args.fps
        )
        preset_layers, llm_width = PRESETS[args.preset]
        llm_width = args.llm_width or llm_width
        matched, text_tokens, reference = merv_matched_depth(records[0]["conversations"], llm_width)
        layers = args.llm_layers or preset_layers or matched
        config = scaled_config(layers, llm_width)
        flops = count_align_flops(config, text_tokens)

        torch.manual_seed(0)
        model = VideoLM(config)
        model.set_trainable("align")

        def loader(dataset):
            return torch.utils.data.DataLoader(
                dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=dataset.collate
            )

        t0 = time.perf_counter()
        stats = build_feature_cache(
            records,
            model.encoders,
            Path(tmp) / "cache",
            temporal_tokens=model.config.temporal_tokens,
            tokens_per_frame=model.config.tokens_per_frame,
            dtype=DTYPES[args.dtype],
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            progress=False,
        )
        build_s = time.perf_counter() - t0
        assert stats.built == len(records)
        cached_model = copy.deepcopy(model)
        cache = FeatureCache.for_model(Path(tmp) / "cache", cached_model)
        live_ds = VideoTextDataset(records, model.processor)
        cached_ds = CachedFeatureDataset(records, cached_model.processor, cache, on_miss="error")
        runs = {"live": Trainer(model, loader(live_ds)), "cache": Trainer(cached_model, loader(cached_ds))}
        # The modes take turns step by step, so load from other processes hits both alike; medians drop spikes.
        for i in range(steps + 1):
            for run in runs.values():
                run.step(timed=i > 0)  # the first step pays for lazy initialisation
        entry_bytes = sum(f.stat().st_size for f in Path(tmp, "cache").rglob("*.safetensors")) / len(records)
    live, cached = runs["live"].median(), runs["cache"].median()

    diff = max(abs(a - b) for a, b in zip(runs["live"].losses, runs["cache"].losses))
    speedup = live["total"] / cached["total"]
    encoder_share, reference_share = share(flops), share(reference)
    element = DTYPES[args.dtype].itemsize
    print(
        f"\nalign stage, {steps} timed steps of batch {args.batch_size}, {torch.get_num_threads()} torch threads, "
        f"{args.num_workers} workers; {args.width}x{args.height} clips of {args.seconds:g} s at {args.fps} fps; "
        f"encoders {[e.id for e in config.encoders]} at {[e.num_frames for e in config.encoders]} frames, "
        f"LLM {layers}x{llm_width} ({args.preset} preset), {text_tokens} text tokens"
    )
    print(
        f"encoder share of align-step FLOPs: {encoder_share:.1%} here ({flops['encoders'] / 1e9:.1f} of "
        f"{(flops['encoders'] + flops['rest']) / 1e9:.1f} GFLOP per sample); merv-full {reference_share:.1%} "
        f"({reference['encoders'] / 1e12:.1f} of {(reference['encoders'] + reference['rest']) / 1e12:.1f} TFLOP), "
        f"so the cache can speed merv-full's compute up by at most {1 / (1 - reference_share):.2f}x"
    )
    print(f"{'mode':<8}{'steps/s':>10}{'data s/step':>13}{'compute s/step':>16}{'first losses':>30}")
    for name, r in (("live", live), ("cache", cached)):
        first = ", ".join(f"{x:.5f}" for x in runs[name].losses[:3])
        print(f"{name:<8}{1 / r['total']:>10.3f}{r['data']:>13.3f}{r['compute']:>16.3f}{first:>30}")
    print(
        f"speed-up {speedup:.2f}x (compute only {live['compute'] / cached['compute']:.2f}x); "
        f"cache build {build_s:.1f} s for {stats.built} clips, {entry_bytes / 1e6:.2f} MB per clip "
        f"(merv-full: {reference['feature_values'] * element / 1e6:.1f} MB per clip in {args.dtype}); "
        f"max |loss diff| {diff:.2e} (tolerance {tolerance:g})"
    )
    result = {
        "bench": "cache",
        "steps": steps,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "clips": [args.width, args.height, args.seconds, args.fps],
        "encoders": [f"{e.id}@{e.num_frames}" for e in config.encoders],
        "preset": args.preset,
        "llm": [layers, llm_width],
        "encoder_flop_share": round(encoder_share, 4),
        "merv_full_encoder_flop_share": round(reference_share, 4),
        "live_steps_per_sec": round(1 / live["total"], 4),
        "cache_steps_per_sec": round(1 / cached["total"], 4),
        "speedup": round(speedup, 3),
        "compute_speedup": round(live["compute"] / cached["compute"], 3),
        "live_data_s": round(live["data"], 4),
        "cache_data_s": round(cached["data"], 4),
        "build_s": round(build_s, 2),
        "cache_bytes_per_clip": round(entry_bytes),
        "merv_full_cache_bytes_per_clip": reference["feature_values"] * element,
        "max_loss_diff": diff,
        "losses_match": diff <= tolerance,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    if diff > tolerance:
        print(f"FAIL: losses differ by {diff:.2e} > {tolerance:g}", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["losses_match"] else 1)
