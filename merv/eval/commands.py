"""What each evaluation command does, given its typed configs; `merv eval` and the scripts in `scripts/` call these.

Each function loads what it needs, runs through `merv.eval.runner` and returns the report (None while other
chunks of the run are still to finish).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from merv.eval.action.evaluation import ActionEvalConfig, evaluate_action, log_report_to_tensorboard
from merv.eval.judge import JudgeCache, JudgeConfig, build_judge, judge_report
from merv.eval.loading import ModelConfig, load_model
from merv.eval.runner import (
    EvalConfig,
    evaluate,
    merge_chunks,
    percent,
    read_predictions,
    run_name,
    write_json_atomic,
    write_jsonl_atomic,
    write_report,
)
from merv.eval.tasks import file_identity, get_task
from merv.video import PixelMemory

log = logging.getLogger(__name__)


def _with_model(cfg: Any, model: ModelConfig) -> Any:
    """The run config recording the model it runs, when it does not name one already."""
    return cfg if cfg.model_path is not None else dataclasses.replace(cfg, model_path=model.recorded_path)


def score_openended(
    records: list[dict[str, Any]],
    judge: JudgeConfig,
    items_file: Path,
    type_names: Mapping[str, str],
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Judge and string-match section of a report; per-item verdicts go to `items_file`; `source` (the
    predictions file) is named in errors."""
    scorer = build_judge(judge)
    cache = None if scorer is None else JudgeCache(judge.cache_dir or items_file.parent / "judge_cache")
    section, items = judge_report(records, scorer, cache, judge.concurrency, dict(type_names), source)
    if items:
        write_jsonl_atomic(items_file, (it.to_dict() for it in items))
        section["items_file"] = str(items_file.resolve())
    return section


def run_benchmark(
    model: ModelConfig, cfg: EvalConfig, judge: JudgeConfig | None = None, *, merge_only: bool = False
) -> dict[str, Any] | None:
    """Predict one chunk of a registered benchmark; when every chunk has finished, merge, report and (for
    open-ended tasks with a judge) judge.

    Args:
        model: the model to load.
        cfg: the run; its `model_path` defaults to the model's.
        judge: how open-ended predictions are scored beyond string match; None = string match only.
        merge_only: only merge finished chunks and write the report (no model is loaded).
    """
    cfg = _with_model(cfg, model)
    task = get_task(cfg.task)
    name = run_name(task, cfg)
    if merge_only:
        merge_chunks(cfg.output_dir, name, cfg.num_chunks)
        report = write_report(cfg.output_dir, name)
    else:
        report = evaluate(load_model(model, task.name), cfg).report
    if report is None or task.kind != "openended" or judge is None or judge.kind == "match":
        return report
    records = read_predictions(report["predictions_file"])
    items_file = Path(cfg.output_dir) / f"{name}_judge_items.jsonl"
    report.update(score_openended(records, judge, items_file, task.type_names, report["predictions_file"]))
    write_json_atomic(Path(report["report_file"]), report)
    return report


def normalise_prediction_records(records: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Accept this runner's records and MERV / Video-LLaVA ones (`question_id`, `Q`/`A`).

    Raises:
        ValueError: a record lacks one of `id`, `question`, `answer`, `pred`.
    """
    out = []
    for i, rec in enumerate(records):
        r = dict(rec)
        for key, alts in (("id", ("question_id",)), ("question", ("Q", "q")), ("answer", ("A", "a"))):
            if r.get(key) is None:
                r[key] = next((rec[a] for a in alts if rec.get(a) is not None), None)
        missing = [k for k in ("id", "question", "answer", "pred") if r.get(k) is None]
        if missing:
            raise ValueError(f"{path}, record {i}: missing field(s) {missing}")
        out.append(r)
    return out


def run_judge(
    predictions: str | os.PathLike, output_file: str | os.PathLike, judge: JudgeConfig, task: str | None = None
) -> dict[str, Any]:
    """Score a file of open-ended predictions and write the report to `output_file`.

    Args:
        predictions: JSON lines or a JSON list with id, question, answer and pred (MERV's field names too).
        output_file: report JSON; per-item verdicts go beside it (`<stem>_items.jsonl`).
        judge: the judge (or `match`).
        task: task whose question-type names to use; None = the task the records name.
    """
    pred_path = Path(predictions)
    if not pred_path.is_file():
        raise FileNotFoundError(f"predictions file not found: {pred_path}")
    records = normalise_prediction_records(read_predictions(pred_path), pred_path)
    task_name = task or next((r["task"] for r in records if r.get("task")), None)
    type_names = dict(get_task(task_name).type_names) if task_name else {}
    output = Path(output_file)
    if judge.cache_dir is None:
        judge = dataclasses.replace(judge, cache_dir=str(output.parent / "judge_cache"))
    report: dict[str, Any] = {
        "task": task_name,
        "kind": "openended",
        "predictions_file": file_identity(pred_path),
        "counts": {"total": len(records), "skipped": sum(r.get("status") == "skipped" for r in records)},
    }
    report.update(
        score_openended(records, judge, output.with_name(f"{output.stem}_items.jsonl"), type_names, pred_path)
    )
    write_json_atomic(output, report)
    log.info("wrote %s", output)
    return report


def run_action(
    model: ModelConfig, cfg: ActionEvalConfig, tensorboard_dir: str | os.PathLike | None = None
) -> dict[str, Any] | None:
    """Predict one chunk of a classification dataset; when every chunk has finished, merge and report.

    Args:
        model: the model to load.
        cfg: the run; its `model_path` defaults to the model's.
        tensorboard_dir: also log the metrics and the confusion matrix there.
    """
    cfg = _with_model(cfg, model)
    vidlm = load_model(model, f"action-{Path(cfg.labels).stem}")
    if cfg.mode == "few-shot" and not model.video_cache:
        # Every query's prompt repeats exemplar clips: keep the recently decoded ones in memory.
        vidlm.processor.pixel_cache = PixelMemory(max_items=128)  # ~0.9 GB of merv-full clips
    report = evaluate_action(vidlm, cfg)
    if report is not None and tensorboard_dir:
        log_report_to_tensorboard(report, tensorboard_dir)
    return report


def merge_run(output_dir: str | os.PathLike, name: str, num_chunks: int) -> dict[str, Any]:
    """Merge a run's finished chunks and write its report (any task kind)."""
    merge_chunks(output_dir, name, num_chunks)
    return write_report(output_dir, name)


# ----------------------------------------------------------------------------------------------- tables

_KINDS = ("mcq", "openended", "action")


def find_reports(folders: Iterable[str | os.PathLike]) -> list[tuple[Path, dict[str, Any]]]:
    """Every report (benchmark, judge or action JSON) under the folders, in path order."""
    found = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"not a folder: {root}")
        for path in sorted(root.rglob("*.json")):
            if path.name.endswith(".meta.json"):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and data.get("kind") in _KINDS and isinstance(data.get("counts"), dict):
                found.append((path, data))
    return found


def headline_metrics(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The metrics a report is compared by: accuracy for MCQ; judge and string-match scores for open-ended
    answers; accuracy, balanced accuracy, macro-F1 and the fall view for classification."""
    kind = report.get("kind")
    if kind == "mcq":
        return {"accuracy": report.get("accuracy")}
    if kind == "action":
        keys = ("accuracy", "balanced_accuracy", "macro_f1", "fall_sensitivity", "fall_specificity")
        return {k: report.get(k) for k in keys if report.get(k) is not None}
    out: dict[str, float | None] = {}
    judge = report.get("judge") or {}
    if judge:
        out["judge_accuracy"] = judge.get("accuracy")
    match = report.get("string_match") or {}
    out.update(exact_match=match.get("exact_match"), f1=match.get("f1"))
    return out


def _setting(report: Mapping[str, Any]) -> str:
    settings = report.get("settings") or {}
    return str(settings.get("mode") or settings.get("strategy") or "")


def results_table(folders: Sequence[str | os.PathLike]) -> str:
    """A Markdown table of every report under the folders: one row per report, its headline metrics and counts.

    Raises:
        FileNotFoundError: a folder does not exist, or holds no report.
    """
    reports = find_reports(folders)
    if not reports:
        raise FileNotFoundError(f"no evaluation reports under {', '.join(map(str, folders))}")
    lines = ["| report | task | setting | metrics | items | skipped |", "|---|---|---|---|---:|---:|"]
    for path, report in reports:
        counts = report["counts"]
        metrics = ", ".join(f"{k} {percent(v)}" for k, v in headline_metrics(report).items())
        items = counts.get("labelled", counts.get("evaluated", counts.get("total")))
        lines.append(
            f"| {path} | {report.get('task')} | {_setting(report)} | {metrics} | {items} | {counts.get('skipped', 0)} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "find_reports",
    "headline_metrics",
    "merge_run",
    "normalise_prediction_records",
    "results_table",
    "run_action",
    "run_benchmark",
    "run_judge",
    "score_openended",
]
