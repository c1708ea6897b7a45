"""Training-step throughput: tokens/s and samples/s of forward + backward + optimizer step, and MFU on a GPU.

The batch is built once in memory (random pixels, a tokenised conversation), so the numbers measure the
model step, not data loading (see bench_data.py and bench_cache.py for those). FLOPs per step are counted
with `torch.utils.flop_counter.FlopCounterMode` on one step (matmuls and attention, forward and backward;
attention through the math kernel so that it is counted);
model FLOPs utilisation is that count times steps/s over `--peak_tflops`.

    python benchmarks/bench_train.py [--model tiny|scaled] [--stage align|finetune|lora] [--batch_size 4]
    python benchmarks/bench_train.py --model scaled --device cuda --dtype bfloat16 --peak_tflops 989
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from merv.models import VideoLM, VideoLMConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cache import merv_matched_depth, model_inputs, scaled_config  # noqa: E402

ANSWER = "a red circle moves to the left while a blue square stays still in the corner of the frame"


CONVERSATION = [{"from": "human", "value": "<video>\nDescribe the video."}, {"from": "gpt", "value": ANSWER}]


def make_batch(model: VideoLM, batch_size: int, features: bool) -> dict:
    """One collated batch of `batch_size` captioning samples with random pixels (or random aligned features)."""
    items = []
    for _ in range(batch_size):
        item = model.processor.encode(CONVERSATION, num_videos=1)
        item["pixel_values"] = [
            torch.randn(s.num_frames, 3, s.image_size, s.image_size) for s in model.processor.frame_specs
        ]
        items.append(item)
    batch = model.processor.collate(items)
    if features:  # as a feature-cache batch: (B, T, tokens_per_frame, D_e) per encoder, no pixels
        batch["aligned_features"] = model.encode_aligned(batch.pop("pixel_values"))
    return batch


def to_device(batch: dict, device: torch.device) -> dict:
    def move(x):
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    return {k: move(v) for k, v in batch.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", choices=["tiny", "scaled"], default="tiny", help="VideoLMConfig.tiny() or bench_cache's"
    )
    parser.add_argument("--stage", choices=["align", "finetune", "lora"], default="finetune")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--from_features", action="store_true", help="feed aligned features (feature-cache training)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--peak_tflops", type=float, default=None, help="device peak for MFU (e.g. 989 for H100 bf16)")
    parser.add_argument(
        "--llm_layers", type=int, default=None, help="scaled model: LLM depth (default: merv-full's encoder FLOP share)"
    )
    parser.add_argument("--llm_width", type=int, default=256, help="scaled model: LLM width")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on shared machines)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)

    torch.manual_seed(0)
    if args.model == "tiny":
        config = VideoLMConfig.tiny()
    else:
        layers = args.llm_layers or merv_matched_depth(CONVERSATION, args.llm_width)[0]
        config = scaled_config(layers, args.llm_width)
    model = VideoLM(config)
    model.set_trainable(args.stage)
    model.to(device, dtype)
    batch = to_device(make_batch(model, args.batch_size, args.from_features), device)
    inputs = model_inputs(batch)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> torch.Tensor:
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    # The math attention kernel is made of matmuls the counter sees; torch's fused CPU attention kernel is not
    # counted at all, which would leave attention out of the count (and out of MFU).
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        step()
    flops_per_step = float(counter.get_total_flops())
    step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps

    tokens = int(batch["attention_mask"].sum())  # text + visual positions the LLM processes
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    achieved = flops_per_step / seconds
    mfu = achieved / (args.peak_tflops * 1e12) if args.peak_tflops else None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"\n{args.model} model, stage {args.stage}, batch {args.batch_size} ({tokens} tokens), {args.dtype} on "
        f"{device_name}, {'aligned features' if args.from_features else 'pixels'} in; "
        f"{trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters train"
    )
    print(f"{'s/step':>10}{'samples/s':>12}{'tokens/s':>12}{'GFLOP/step':>12}{'TFLOP/s':>10}{'MFU':>8}")
    print(
        f"{seconds:>10.4f}{args.batch_size / seconds:>12.2f}{tokens / seconds:>12.1f}{flops_per_step / 1e9:>12.2f}"
        f"{achieved / 1e12:>10.3f}{(f'{mfu:.1%}' if mfu is not None else 'n/a'):>8}"
    )
    result = {
        "bench": "train",
        "model": args.model,
        "stage": args.stage,
        "batch_size": args.batch_size,
        "tokens_per_step": tokens,
        "from_features": args.from_features,
        "device": device_name,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "seconds_per_step": round(seconds, 5),
        "samples_per_sec": round(args.batch_size / seconds, 3),
        "tokens_per_sec": round(tokens / seconds, 1),
        "flops_per_step": flops_per_step,
        "flops_per_token": round(flops_per_step / tokens),
        "achieved_tflops": round(achieved / 1e12, 4),
        "mfu": None if mfu is None else round(mfu, 4),
        "final_loss": round(loss.item(), 5),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
