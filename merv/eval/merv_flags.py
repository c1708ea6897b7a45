"""MERV's evaluation flags, translated to the typed configs: the body of `scripts/eval_mcq.py`,
`scripts/eval_openended.py` and `scripts/eval_gpt.py`.

The flags are MERV's (`--model_path --eval_dataset --num_chunks --chunk_idx --filename_question
--filename_answer --strategy`, `--pred_path --output_file`), so MERV's job scripts run unchanged; what they
do is `merv.eval.commands`, the same as `merv eval mcq|openended|judge`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from merv.data.dataset import MAX_SKIP_FRACTION
from merv.eval.commands import run_benchmark, run_judge
from merv.eval.judge import JudgeConfig
from merv.eval.loading import ModelConfig
from merv.eval.runner import STRATEGIES, EvalConfig, summary_line
from merv.eval.tasks import get_task, list_tasks

log = logging.getLogger(__name__)

_DATA_SUFFIXES = ("", ".json", ".jsonl", ".csv", ".parquet")


def resolve_data_file(name: str | None, data_root: str, dataset: str, required: bool) -> Path | None:
    """An annotation file given as a path, or as a bare name under `<data_root>/<dataset>/` (MERV's layout).

    Args:
        name: path or file name (extension optional), or None.
        data_root: root of the benchmark folders.
        dataset: the `--eval_dataset` value as typed (folder name).
        required: raise when nothing is found; otherwise return None.
    """
    if name is None:
        if required:
            raise FileNotFoundError("no annotation file given: pass --filename_question")
        return None
    tried = []
    for folder in (Path(), Path(data_root) / dataset):
        for suffix in _DATA_SUFFIXES:
            p = folder / f"{name}{suffix}"
            tried.append(str(p))
            if p.exists():
                return p
    if required:
        raise FileNotFoundError(f"annotation file {name!r} not found; tried {', '.join(tried)}")
    return None


def _positive_fraction(text: str) -> float:
    x = float(text)
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a value within [0, 1], got {text}")
    return x


def _run_parser(description: str, kind: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, allow_abbrev=False)
    p.add_argument("--model_path", required=True, help="saved model dir, .ckpt, run dir or registered name")
    p.add_argument(
        "--eval_dataset",
        required=True,
        help=f"benchmark task or alias; one of: {', '.join(list_tasks(kind))}",  # type: ignore[arg-type]
    )
    p.add_argument(
        "--filename_question",
        default="test_q",
        help="annotation file: a path, or a name under <data_root>/<eval_dataset>/",
    )
    p.add_argument(
        "--filename_answer",
        default=None,
        help="separate answer file (question/answer formats); default test_a if present",
    )
    p.add_argument(
        "--video_root", default=None, help="folder of the videos (default <data_root>/<eval_dataset>/videos)"
    )
    p.add_argument(
        "--data_root",
        default=os.environ.get("MERV_EVAL_ROOT", "eval_data"),
        help="root of benchmark folders (env MERV_EVAL_ROOT)",
    )
    p.add_argument("--output_dir", default=None, help="default eval_results/<model name> (see default_output_dir)")
    p.add_argument("--num_chunks", type=int, default=1, help="split the benchmark into this many chunks")
    p.add_argument("--chunk_idx", type=int, default=0, help="which chunk this process computes (0-based)")
    p.add_argument(
        "--max_new_tokens", type=int, default=None, help="generation length (default 16 for MCQ, 128 open-ended)"
    )
    p.add_argument(
        "--max_skip_fraction",
        type=_positive_fraction,
        default=MAX_SKIP_FRACTION,
        help="fail when a larger fraction of videos is unreadable",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    p.add_argument("--device", default=None, help="torch device (default cuda if available)")
    p.add_argument("--dtype", default=None, help="cast the model, e.g. bfloat16")
    p.add_argument("--merge_only", action="store_true", help="only merge finished chunks and write the report")
    p.add_argument(
        "--video_cache", default=None, help="folder caching decoded, resized clips for later runs of this benchmark"
    )
    return p


def _configs_from_args(args: argparse.Namespace, strategy: str = "naive") -> tuple[ModelConfig, EvalConfig]:
    model = ModelConfig(args.model_path, args.device, args.dtype, args.video_cache)
    task = get_task(args.eval_dataset)
    qfile = resolve_data_file(args.filename_question, args.data_root, args.eval_dataset, required=True)
    explicit_answer = args.filename_answer is not None
    afile = resolve_data_file(
        args.filename_answer or "test_a", args.data_root, args.eval_dataset, required=explicit_answer
    )
    if task.name == "nextqa" and not explicit_answer:
        afile = None  # NExT-QA has no answer file; the slot is only for an explicit video-id map
    video_root = args.video_root
    if video_root is None:
        default = Path(args.data_root) / args.eval_dataset / "videos"
        video_root = str(default if default.is_dir() else qfile.parent)
    cfg = EvalConfig(
        task=task.name,
        question_file=str(qfile),
        answer_file=None if afile is None else str(afile),
        video_root=video_root,
        output_dir=args.output_dir,
        model_path=model.recorded_path,
        strategy=strategy,  # type: ignore[arg-type]
        max_new_tokens=args.max_new_tokens,
        num_chunks=args.num_chunks,
        chunk_idx=args.chunk_idx,
        max_skip_fraction=args.max_skip_fraction,
        limit=args.limit,
    )
    return model, cfg


def _add_judge_args(p: argparse.ArgumentParser, model_flag: str, default_judge: str) -> None:
    p.add_argument(
        "--judge",
        choices=("openai", "local", "match"),
        default=default_judge,
        help="openai: chat-completions endpoint; local: a local Hugging Face LM directory; "
        "match: exact match / token F1 only",
    )
    p.add_argument("--base_url", default="https://api.openai.com/v1", help="OpenAI-compatible API root")
    p.add_argument(model_flag, dest="judge_model", default=None, help="judge model name (openai) or directory (local)")
    p.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument(
        "--concurrency", "--num_tasks", dest="concurrency", type=int, default=4, help="parallel judge requests"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per judge request")
    p.add_argument("--max_retries", type=int, default=4, help="retries per item on 5xx, timeouts, malformed replies")
    p.add_argument("--cache_dir", default=None, help="judge cache folder (default: next to the output)")
    p.add_argument("--judge_device", default="cpu", help="device of the local judge model")


def _judge_config(p: argparse.ArgumentParser, args: argparse.Namespace) -> JudgeConfig:
    try:
        return JudgeConfig(
            kind=args.judge,
            model=args.judge_model,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            timeout=args.timeout,
            max_retries=args.max_retries,
            cache_dir=args.cache_dir,
            device=args.judge_device,
        )
    except ValueError as e:
        p.error(str(e))


def mcq_main(argv: Sequence[str] | None = None) -> str | None:
    """`scripts/eval_mcq.py`: predict one chunk of an MCQ benchmark; merge and report when all are done.

    Returns:
        The one-line summary when the report was written, else None (other chunks still running).
    """
    p = _run_parser("Evaluate a VideoLM on a multiple-choice video benchmark.", "mcq")
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="naive",
        help="naive: generate and parse the letter; loglik: pick the option with the lowest NLL",
    )
    args = p.parse_args(argv)
    model, cfg = _configs_from_args(args, args.strategy)
    if get_task(cfg.task).kind != "mcq":
        p.error(f"{args.eval_dataset} is an open-ended task: use scripts/eval_openended.py")
    report = run_benchmark(model, cfg, merge_only=args.merge_only)
    return None if report is None else summary_line(report)


def openended_main(argv: Sequence[str] | None = None) -> str | None:
    """`scripts/eval_openended.py`: predict one chunk of an open-ended benchmark; when all chunks are done,
    merge, score with string match and (optionally) a judge, and write the report."""
    p = _run_parser("Evaluate a VideoLM on an open-ended video QA benchmark.", "openended")
    _add_judge_args(p, "--judge_model", default_judge="match")
    args = p.parse_args(argv)
    judge = _judge_config(p, args)
    model, cfg = _configs_from_args(args)
    if get_task(cfg.task).kind != "openended":
        p.error(f"{args.eval_dataset} is a multiple-choice task: use scripts/eval_mcq.py")
    report = run_benchmark(model, cfg, judge, merge_only=args.merge_only)
    return None if report is None else summary_line(report)


def gpt_main(argv: Sequence[str] | None = None) -> str:
    """`scripts/eval_gpt.py`: judge a file of open-ended predictions and write a report."""
    p = argparse.ArgumentParser(
        description="Score open-ended predictions with an LLM judge or string match.", allow_abbrev=False
    )
    p.add_argument(
        "--pred_path", required=True, help="predictions: JSON lines or a JSON list with id, question, answer, pred"
    )
    p.add_argument("--output_file", required=True, help="report JSON to write")
    p.add_argument("--task", default=None, help="task whose question-type names to use (default: from the records)")
    _add_judge_args(p, "--model", default_judge="openai")
    args = p.parse_args(argv)
    if not Path(args.pred_path).is_file():
        p.error(f"--pred_path {args.pred_path} is not a file")
    try:
        report = run_judge(args.pred_path, args.output_file, _judge_config(p, args), args.task)
    except ValueError as e:  # a record without the fields a judge needs
        p.error(str(e))
    return summary_line(report)


def chunk_summary(summary: str | None) -> str:
    """What a chunked run prints: the report's summary line, or that other chunks are still to finish."""
    return summary if summary is not None else "chunk finished; the report is written once every chunk has finished"


def run_script(entry: Callable[[], Any], render: Callable[[Any], str] = str) -> int:
    """Body of the `scripts/eval_*.py` wrappers: log to stderr, run `entry`, print its rendered result."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(render(entry()))
    return 0
