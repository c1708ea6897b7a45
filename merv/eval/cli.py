"""Command-line front ends shared by `scripts/eval_mcq.py`, `scripts/eval_openended.py` and `scripts/eval_gpt.py`.

The flags follow MERV's evaluation scripts (`--model_path --eval_dataset --num_chunks --chunk_idx
--filename_question --filename_answer --strategy`, `--pred_path --output_file`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from merv.data.dataset import MAX_SKIP_FRACTION
from merv.eval.judge import JudgeCache, LocalHFJudge, OpenAIChatJudge, judge_report
from merv.eval.runner import (
    STRATEGIES,
    EvalConfig,
    evaluate,
    merge_chunks,
    read_predictions,
    run_name,
    summary_line,
    write_json_atomic,
    write_jsonl_atomic,
    write_report,
)
from merv.eval.tasks import file_identity, get_task, list_tasks

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


# Path parts that every run or export shares: they tell models apart only together with the parts above them.
_GENERIC_PART = re.compile(r"model|run|checkpoints|version_\d+|.*\.ckpt(\.consolidated)?")


def default_output_dir(model_path: str, root: str = "eval_results") -> Path:
    """Where a model's results go by default: `<root>/<name>`, `name` being the model's path from its last
    distinctive part, joined with `-`.

    Exported models are all called `model` and checkpoints `last.ckpt`, so the name reaches up to the
    first folder that is not a run, version or checkpoint folder: `outputs/tour/run/version_0/model` gives
    `eval_results/tour-run-version_0-model`, `models/merv-tiny` gives `eval_results/merv-tiny`, and a
    registered name stays itself.
    """
    path = Path(model_path)
    parts = (path.resolve() if path.exists() else path).parts
    name: list[str] = []
    for part in reversed(parts):
        if part in ("", "/", ".", ".."):
            continue
        name.insert(0, part)
        if not _GENERIC_PART.fullmatch(part):
            break
    return Path(root) / ("-".join(name) or "model")


def load_model(
    model_path: str,
    device: str | None = None,
    dtype: str | None = None,
    video_cache: str | None = None,
    dataset_id: str = "eval",
) -> Any:
    """Load a model for inference: a saved dir, a `.ckpt`, a run dir or a registered name (see `load_vid`).

    With `video_cache`, the model's processor reads decoded, resized clips from that folder and stores the
    ones it decodes (namespaced by `dataset_id` and the encoders' frame counts and sizes), so later runs on
    the same benchmark (other checkpoints, strategies or chunks) skip decoding.
    """
    import torch

    from merv.models.loading import load_vid
    from merv.video import VideoTensorCache

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_vid(model_path, dtype=None if dtype is None else getattr(torch, dtype), device=device)
    if video_cache:
        processor = model.processor
        processor.pixel_cache = VideoTensorCache(video_cache, processor.frame_specs, dataset_id, writable=True)
    return model


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


def _config_from_args(args: argparse.Namespace, strategy: str = "naive") -> EvalConfig:
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
    output_dir = args.output_dir or str(default_output_dir(args.model_path))
    return EvalConfig(
        task=task.name,
        question_file=str(qfile),
        answer_file=None if afile is None else str(afile),
        video_root=video_root,
        output_dir=output_dir,
        model_path=str(Path(args.model_path).resolve()) if Path(args.model_path).exists() else args.model_path,
        strategy=strategy,  # type: ignore[arg-type]
        max_new_tokens=args.max_new_tokens,
        num_chunks=args.num_chunks,
        chunk_idx=args.chunk_idx,
        max_skip_fraction=args.max_skip_fraction,
        limit=args.limit,
    )


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


def _build_judge(args: argparse.Namespace) -> Any:
    if args.judge == "match":
        return None
    if not args.judge_model:
        raise SystemExit(f"--judge {args.judge} needs the judge model name or directory")
    if args.judge == "openai":
        return OpenAIChatJudge(
            args.base_url,
            args.judge_model,
            api_key_env=args.api_key_env,
            timeout_s=args.timeout,
            max_retries=args.max_retries,
            concurrency=args.concurrency,
        )
    return LocalHFJudge(args.judge_model, device=args.judge_device)


def _normalise_prediction_records(records: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Accept this runner's records and MERV / Video-LLaVA ones (`question_id`, `Q`/`A`)."""
    out = []
    for i, rec in enumerate(records):
        r = dict(rec)
        for key, alts in (("id", ("question_id",)), ("question", ("Q", "q")), ("answer", ("A", "a"))):
            if r.get(key) is None:
                r[key] = next((rec[a] for a in alts if rec.get(a) is not None), None)
        missing = [k for k in ("id", "question", "answer", "pred") if r.get(k) is None]
        if missing:
            raise SystemExit(f"{path}, record {i}: missing field(s) {missing}")
        out.append(r)
    return out


def score_openended(
    records: list[dict[str, Any]],
    args: argparse.Namespace,
    items_file: Path,
    type_names: dict[str, str],
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Judge and string-match section of a report; per-item verdicts go to `items_file`; `source` (the
    predictions file) is named in errors."""
    judge = _build_judge(args)
    cache = None
    if judge is not None:
        cache = JudgeCache(args.cache_dir or items_file.parent / "judge_cache")
    section, items = judge_report(records, judge, cache, args.concurrency, type_names, source)
    if items:
        write_jsonl_atomic(items_file, (it.to_dict() for it in items))
        section["items_file"] = str(items_file.resolve())
    return section


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
    cfg = _config_from_args(args, args.strategy)
    if get_task(cfg.task).kind != "mcq":
        p.error(f"{args.eval_dataset} is an open-ended task: use scripts/eval_openended.py")
    if args.merge_only:
        name = run_name(get_task(cfg.task), cfg)
        merge_chunks(cfg.output_dir, name, cfg.num_chunks)
        return summary_line(write_report(cfg.output_dir, name))
    outcome = evaluate(load_model(args.model_path, args.device, args.dtype, args.video_cache, cfg.task), cfg)
    return None if outcome.report is None else summary_line(outcome.report)


def openended_main(argv: Sequence[str] | None = None) -> str | None:
    """`scripts/eval_openended.py`: predict one chunk of an open-ended benchmark; when all chunks are done,
    merge, score with string match and (optionally) a judge, and write the report."""
    p = _run_parser("Evaluate a VideoLM on an open-ended video QA benchmark.", "openended")
    _add_judge_args(p, "--judge_model", default_judge="match")
    args = p.parse_args(argv)
    cfg = _config_from_args(args)
    task = get_task(cfg.task)
    if task.kind != "openended":
        p.error(f"{args.eval_dataset} is a multiple-choice task: use scripts/eval_mcq.py")
    name = run_name(task, cfg)
    if args.merge_only:
        merge_chunks(cfg.output_dir, name, cfg.num_chunks)
        report = write_report(cfg.output_dir, name)
    else:
        report = evaluate(load_model(args.model_path, args.device, args.dtype, args.video_cache, cfg.task), cfg).report
    if report is None:
        return None
    if args.judge != "match":
        records = read_predictions(report["predictions_file"])
        items_file = Path(cfg.output_dir) / f"{name}_judge_items.jsonl"
        report.update(score_openended(records, args, items_file, dict(task.type_names), report["predictions_file"]))
        write_json_atomic(Path(report["report_file"]), report)
    return summary_line(report)


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
    pred_path = Path(args.pred_path)
    if not pred_path.is_file():
        p.error(f"--pred_path {pred_path} is not a file")
    records = _normalise_prediction_records(read_predictions(pred_path), pred_path)
    task_name = args.task or next((r["task"] for r in records if r.get("task")), None)
    type_names = dict(get_task(task_name).type_names) if task_name else {}
    output = Path(args.output_file)
    items_file = output.with_name(f"{output.stem}_items.jsonl")
    if args.cache_dir is None:
        args.cache_dir = str(output.parent / "judge_cache")
    report: dict[str, Any] = {
        "task": task_name,
        "kind": "openended",
        "predictions_file": file_identity(pred_path),
        "counts": {
            "total": len(records),
            "skipped": sum(r.get("status") == "skipped" for r in records),
        },
    }
    report.update(score_openended(records, args, items_file, type_names, pred_path))
    write_json_atomic(output, report)
    log.info("wrote %s", output)
    return summary_line(report)


def chunk_summary(summary: str | None) -> str:
    """What a chunked run prints: the report's summary line, or that other chunks are still to finish."""
    return summary if summary is not None else "chunk finished; the report is written once every chunk has finished"


def run_script(entry: Callable[[], Any], render: Callable[[Any], str] = str) -> int:
    """Body of the `scripts/eval_*.py` wrappers: log to stderr, run `entry`, print its rendered result."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(render(entry()))
    return 0
