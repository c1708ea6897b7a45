"""Align-stage training from the feature cache vs with live encoders, on a CPU-sized multi-encoder model.

The model (`scaled_config`) keeps MERV's shape at CPU scale: three encoder families (SigLIP and DINOv2
image towers at 8 frames, a ViViT video tower at 16 frames with 2-frame tubelets), all aligned to 8 x 16
tokens, cross-attention fusion and a 6-layer Llama. Sizes are chosen so the encoders' share of the
align step's FLOPs is close to the real MERV model's (measured and printed; see benchmarks/README.md).

Both modes train copies of the same initial weights on the same batches (fixed order, AdamW on projectors +
fusion), taking turns step by step; the table reports median seconds per step:

* live: `VideoTextDataset` decodes and transforms each clip; the model runs its frozen encoders;
* cache: `merv.data.cache.build_feature_cache` encodes every clip once (timed separately), then
  `CachedFeatureDataset` batches carry `aligned_features` and no encoder runs.

Prints a table and one JSON line; checks that the losses of both modes agree within `--tolerance`.

    python benchmarks/bench_cache.py [--steps 10] [--batch-size 2] [--num-workers 0] [--dtype float32]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Dinov2Config, VivitConfig

from merv.data.cache import DTYPES, CachedFeatureDataset, FeatureCache, build_feature_cache
from merv.data.dataset import VideoTextDataset
from merv.models import VideoLM, VideoLMConfig
from merv.models.encoders import list_encoders, register_encoder
from merv.models.encoders.dinov2 import Dinov2Encoder
from merv.models.encoders.siglip import SiglipEncoder
from merv.models.encoders.siglip import _config as siglip_config
from merv.models.encoders.vivit import VivitEncoder
from merv.models.llm import TINY_LLM_ARCH, LLMConfig
from merv.models.vidlm import EncoderConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import make_videos  # noqa: E402

MODEL_INPUTS = ("input_ids", "attention_mask", "video_mask", "pixel_values", "labels", "aligned_features")
WIDTH = 256
"""Encoder width of the scaled model; 4 layers each."""


def register_scaled_encoders() -> None:
    """Register CPU-sized members of three encoder families under `bench-*` ids (idempotent)."""
    if "bench-siglip-w256-128" in list_encoders():
        return

    @register_encoder("bench-siglip-w256-128")
    def siglip(pretrained: str | None = None, num_frames: int = 8) -> SiglipEncoder:
        return SiglipEncoder(
            siglip_config(WIDTH, 4 * WIDTH, 4, 4, 16, 128), num_frames=num_frames, pretrained=pretrained
        )

    @register_encoder("bench-dinov2-w256-112")
    def dinov2(pretrained: str | None = None, num_frames: int = 8) -> Dinov2Encoder:
        config = Dinov2Config(
            hidden_size=WIDTH, num_hidden_layers=4, num_attention_heads=4, patch_size=14, image_size=518
        )
        return Dinov2Encoder(config, image_size=112, num_frames=num_frames, pretrained=pretrained)

    @register_encoder("bench-vivit-w256-128")
    def vivit(pretrained: str | None = None, num_frames: int = 16) -> VivitEncoder:
        config = VivitConfig(
            image_size=128,
            num_frames=num_frames,
            tubelet_size=[2, 16, 16],
            hidden_size=WIDTH,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=4 * WIDTH,
            hidden_act="gelu_fast",
            layer_norm_eps=1e-6,
        )
        return VivitEncoder(config, pretrained=pretrained)


def scaled_config(llm_layers: int = 6, llm_width: int = 256) -> VideoLMConfig:
    """Three encoder families at 8/8/16 frames, aligned to T=8 x 16 tokens, fused into a small Llama."""
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
            EncoderConfig("bench-siglip-w256-128", num_frames=8),
            EncoderConfig("bench-dinov2-w256-112", num_frames=8),
            EncoderConfig("bench-vivit-w256-128", num_frames=16),
        ],
        llm=LLMConfig(arch=arch),
        temporal_tokens=8,
        tokens_per_frame=16,
        max_length=512,
    )


def make_records(out: Path, count: int) -> list[dict]:
    """Captioning records over generated 160x120 clips (2 s at 15 fps)."""
    paths = make_videos(out, count, 160, 120, 2.0, 15)
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


def step_flops(model: VideoLM, batch: dict) -> dict[str, float]:
    """FLOPs of one training step, split into frozen encoders and everything else (counted, not estimated)."""
    model = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        aligned = model.encode_aligned(batch["pixel_values"])
    encoders = counter.get_total_flops()
    inputs = {**model_inputs(batch), "aligned_features": aligned}
    inputs.pop("pixel_values", None)
    with FlopCounterMode(display=False) as counter:
        model(**inputs).loss.backward()
    return {"encoders": float(encoders), "rest": float(counter.get_total_flops())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per mode")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (0: data time is visible)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="cache storage dtype")
    parser.add_argument("--llm-layers", type=int, default=6)
    parser.add_argument("--llm-width", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on shared machines)")
    parser.add_argument("--tolerance", type=float, default=None, help="max loss difference (default by dtype)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tolerance = args.tolerance if args.tolerance is not None else {"float32": 1e-4}.get(args.dtype, 1e-2)

    torch.manual_seed(0)
    model = VideoLM(scaled_config(args.llm_layers, args.llm_width))
    model.freeze("align")
    steps = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        records = make_records(Path(tmp) / "videos", (steps + 1) * args.batch_size)

        def loader(dataset):
            return torch.utils.data.DataLoader(
                dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=dataset.collate
            )

        live_ds = VideoTextDataset(records, model.processor)
        flops = step_flops(model, live_ds.collate([live_ds[i] for i in range(args.batch_size)]))

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
        cached_ds = CachedFeatureDataset(records, cached_model.processor, cache, on_miss="error")
        runs = {"live": Trainer(model, loader(live_ds)), "cache": Trainer(cached_model, loader(cached_ds))}
        # The modes take turns step by step, so load from other processes hits both alike; medians drop spikes.
        for i in range(steps + 1):
            for run in runs.values():
                run.step(timed=i > 0)  # the first step pays for lazy initialisation
    live, cached = runs["live"].median(), runs["cache"].median()

    diff = max(abs(a - b) for a, b in zip(runs["live"].losses, runs["cache"].losses))
    speedup = live["total"] / cached["total"]
    share = flops["encoders"] / (flops["encoders"] + flops["rest"])
    print(
        f"\nalign stage, {steps} timed steps of batch {args.batch_size}, {torch.get_num_threads()} torch threads, "
        f"{args.num_workers} workers; encoders {[e.id for e in model.config.encoders]} at "
        f"{[e.num_frames for e in model.config.encoders]} frames, LLM {args.llm_layers}x{args.llm_width}"
    )
    print(
        f"encoder share of step FLOPs: {share:.1%} ({flops['encoders'] / 1e9:.1f} of "
        f"{(flops['encoders'] + flops['rest']) / 1e9:.1f} GFLOP per batch)"
    )
    print(f"{'mode':<8}{'steps/s':>10}{'data s/step':>13}{'compute s/step':>16}{'first losses':>30}")
    for name, r in (("live", live), ("cache", cached)):
        first = ", ".join(f"{x:.5f}" for x in runs[name].losses[:3])
        print(f"{name:<8}{1 / r['total']:>10.3f}{r['data']:>13.3f}{r['compute']:>16.3f}{first:>30}")
    print(
        f"speed-up {speedup:.2f}x (compute only {live['compute'] / cached['compute']:.2f}x); "
        f"cache build {build_s:.1f} s for {stats.built} clips; max |loss diff| {diff:.2e} (tolerance {tolerance:g})"
    )
    result = {
        "bench": "cache",
        "steps": steps,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "encoders": [f"{e.id}@{e.num_frames}" for e in model.config.encoders],
        "llm": [args.llm_layers, args.llm_width],
        "encoder_flop_share": round(share, 4),
        "live_steps_per_sec": round(1 / live["total"], 4),
        "cache_steps_per_sec": round(1 / cached["total"], 4),
        "speedup": round(speedup, 3),
        "compute_speedup": round(live["compute"] / cached["compute"], 3),
        "build_s": round(build_s, 2),
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
