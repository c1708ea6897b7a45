"""Command lines of label classification: `prepare` writes instruction files, `evaluate` runs a model.

    python -m merv.eval.action prepare --labels fall/labels.csv --split_dir fall/splits --out fall/instruct
    python scripts/eval_action.py --model_path run/model --labels fall/labels.csv \\
        --split_file fall/splits/test.csv --mode zero-shot
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merv.data.dataset import MAX_SKIP_FRACTION
from merv.eval.action.data import load_action_records, write_instruction_file
from merv.eval.action.evaluation import ActionEvalConfig
from merv.eval.action.labels import parse_class_list, parse_label_map
from merv.eval.action.predict import MODES
from merv.eval.commands import run_action
from merv.eval.loading import ModelConfig
from merv.eval.metrics import DEFAULT_POSITIVE
from merv.eval.runner import summary_line

logger = logging.getLogger(__name__)


def _csv_arg(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def build_eval_parser() -> argparse.ArgumentParser:
    """Flags of `scripts/eval_action.py`."""
    p = argparse.ArgumentParser(description="Evaluate a VideoLM on action recognition / fall detection.")
    p.add_argument("--model_path", required=True, help="saved model dir, .ckpt, run dir or registered name")
    p.add_argument("--labels", required=True, help="label CSV, class-folder root, or prepared .jsonl")
    p.add_argument("--format", default=None, help="annotation format (default: sniffed)")
    p.add_argument("--split_file", default=None, help="OmniFall split CSV of the evaluated videos")
    p.add_argument("--split", default=None, help="split folder of a folder-per-class dataset (e.g. test)")
    p.add_argument("--video_root", default=None, help="folder video paths are relative to")
    p.add_argument("--mode", default="zero-shot", choices=MODES)
    p.add_argument("--k", type=int, default=4, help="few-shot exemplars per query")
    p.add_argument("--exemplars", default="random", choices=("random", "similar"))
    p.add_argument("--train_labels", default=None, help="exemplar pool annotations (default: --labels)")
    p.add_argument(
        "--train_split_file", default=None, help="exemplar pool split (default: train.csv beside --split_file)"
    )
    p.add_argument("--train_split", default=None, help="exemplar pool split folder of folder datasets")
    p.add_argument("--exemplar_pool", type=int, default=1000, help="at most this many pool clips (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None, help="label set: a,b,c or a file with one class per line")
    p.add_argument("--label_map", default=None, help="label renames: src=dst,src2=dst2")
    p.add_argument("--positive", default=",".join(DEFAULT_POSITIVE), help="positive classes of the fall view")
    p.add_argument("--unparsed_as", default="error", choices=("error", "negative"))
    p.add_argument("--breakdown", default="auto", help="metadata columns (a,b), 'auto' or 'none'")
    p.add_argument("--output_dir", default=None, help="default eval_results/<model name>/action")
    p.add_argument("--max_new_tokens", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N clips only")
    p.add_argument("--num_chunks", type=int, default=1, help="split the clips into this many chunks")
    p.add_argument("--chunk_idx", type=int, default=0, help="which chunk this process computes (0-based)")
    p.add_argument("--max_skip_fraction", type=float, default=MAX_SKIP_FRACTION)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    p.add_argument("--tensorboard_dir", default=None, help="also log the metrics and confusion matrix here")
    p.add_argument(
        "--video_cache", default=None, help="folder caching decoded, resized clips (exemplars too) for later runs"
    )
    return p


def eval_main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Parse flags, load the model, evaluate one chunk; returns the report once every chunk has finished."""
    args = build_eval_parser().parse_args(argv)
    model = ModelConfig(args.model_path, args.device, args.dtype, args.video_cache)
    cfg = ActionEvalConfig(
        labels=args.labels,
        format=args.format,
        video_root=args.video_root,
        split_file=args.split_file,
        split=args.split,
        classes=parse_class_list(args.classes),
        label_map=parse_label_map(args.label_map),
        mode=args.mode,
        k=args.k,
        exemplar_strategy=args.exemplars,
        train_labels=args.train_labels,
        train_split_file=args.train_split_file,
        train_split=args.train_split,
        max_exemplar_pool=args.exemplar_pool or None,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        positive=_csv_arg(args.positive) or [],
        unparsed_as=args.unparsed_as,
        breakdown=_csv_arg(args.breakdown) or ["none"],
        output_dir=args.output_dir,
        model_path=args.model_path,
        limit=args.limit,
        max_skip_fraction=args.max_skip_fraction,
        num_chunks=args.num_chunks,
        chunk_idx=args.chunk_idx,
    )
    return run_action(model, cfg, args.tensorboard_dir)


def prepare_main(argv: Sequence[str] | None = None) -> list[Path]:
    """`prepare`: write LLaVA-format `.jsonl` training/eval files (one per split) from a classification dataset."""
    p = argparse.ArgumentParser(
        prog="python -m merv.eval.action prepare",
        description="Write instruction files (one per split) for fine-tuning.",
    )
    p.add_argument("--labels", required=True, help="label CSV or class-folder root")
    p.add_argument("--format", default=None)
    p.add_argument("--video_root", default=None)
    p.add_argument("--split_dir", default=None, help="folder of train/val/test.csv split files")
    p.add_argument("--split_file", default=None, help="one split file")
    p.add_argument("--classes", default=None, help="label set: a,b,c or a file")
    p.add_argument("--label_map", default=None, help="label renames: src=dst,...")
    p.add_argument("--balance", action="store_true", help="oversample rarer classes in the train split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (or a .jsonl file with --split_file)")
    args = p.parse_args(argv)
    common = {
        "format": args.format,
        "video_root": args.video_root,
        "classes": parse_class_list(args.classes),
        "label_map": parse_label_map(args.label_map),
    }
    out = Path(args.out)
    written = []
    if args.split_dir:
        files = [Path(args.split_dir) / f"{s}.csv" for s in ("train", "val", "test")]
        files = [f for f in files if f.is_file()]
        if not files:
            raise FileNotFoundError(f"no train/val/test.csv in {args.split_dir}")
        for f in files:
            task, records = load_action_records(args.labels, split_file=f, **common)
            written.append(
                write_instruction_file(
                    records, task, out / f"{f.stem}.jsonl", balance=args.balance and f.stem == "train", seed=args.seed
                )
            )
    elif args.split_file:
        task, records = load_action_records(args.labels, split_file=args.split_file, **common)
        target = out if out.suffix == ".jsonl" else out / f"{Path(args.split_file).stem}.jsonl"
        written.append(write_instruction_file(records, task, target, balance=args.balance, seed=args.seed))
    else:
        task, records = load_action_records(args.labels, **common)
        splits = sorted({str(r["split"]) for r in records if "split" in r})
        for split in splits or [None]:
            chosen = [r for r in records if split is None or str(r.get("split")) == split]
            written.append(
                write_instruction_file(
                    chosen,
                    task,
                    out / f"{split or 'all'}.jsonl",
                    balance=args.balance and split == "train",
                    seed=args.seed,
                )
            )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m merv.eval.action prepare ...` or `python -m merv.eval.action evaluate ...`."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] not in ("prepare", "evaluate"):
        raise SystemExit("usage: python -m merv.eval.action {prepare,evaluate} [flags]  (--help after either)")
    if argv[0] == "prepare":
        for path in prepare_main(argv[1:]):
            logger.info("wrote %s", path)
        return 0
    report = eval_main(argv[1:])
    if report is None:
        logger.info("chunk finished; the report is written once every chunk has finished")
        return 0
    logger.info("%s", summary_line(report))
    logger.info("report: %s", report["files"]["report"])
    return 0
