"""Label classification as a task kind of the evaluation runner: settings, prediction records and the report.

`evaluate_action` builds an `EvalJob` for the runner, so a classification run is chunked, resumes after a
kill, merges and reports exactly as the benchmark runs do. Its report adds the clinical view (fall
sensitivity and specificity), per-metadata breakdowns and a confusion-matrix PNG.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from merv.data.dataset import MAX_SKIP_FRACTION
from merv.data.formats import normalize_label
from merv.eval.action.data import ActionTask, load_action_records
from merv.eval.action.exemplars import ActionModel, ExemplarSelector, ExemplarStrategy, clip_embedding
from merv.eval.action.predict import DEFAULT_MAX_NEW_TOKENS, MODES, PROMPT_VERSION, Mode, predict_record
from merv.eval.loading import default_output_dir
from merv.eval.metrics import (
    DEFAULT_POSITIVE,
    auto_breakdown_columns,
    breakdown,
    classification_metrics,
    save_confusion_matrix,
)
from merv.eval.runner import EvalJob, register_report, run_job
from merv.eval.tasks import file_identity
from merv.video import VideoDecodeError

logger = logging.getLogger(__name__)


@dataclass
class ActionEvalConfig:
    """One evaluation run of a classification dataset.

    Attributes:
        labels: label CSV, class-folder root, or conversation file with `label` fields.
        format: annotation format; None sniffs it.
        video_root: folder video paths are relative to.
        split_file: OmniFall split CSV of the evaluated videos (e.g. `splits/cs/le2i/test.csv`).
        split: split folder/field of folder datasets (`test`).
        classes: the label set; None = the data's default (see `load_action_records`).
        label_map: label renames applied before the label set is checked.
        mode: `zero-shot`, `few-shot`, `cot` or `loglik`.
        k: in-context exemplars for `few-shot`.
        exemplar_strategy: how exemplars are picked: `random` or `similar`.
        train_labels: where exemplars come from; None = `labels`.
        train_split_file: split file of the exemplar pool; None = `train.csv` beside `split_file`.
        train_split: split of folder datasets for the pool; None = `train` when `split` is given.
        max_exemplar_pool: keep at most this many pool clips (seeded subsample); None = all.
        seed: exemplar seed.
        max_new_tokens: generation length; None = 16 (256 for `cot`).
        positive: the positive classes of the binary fall view.
        unparsed_as: how unparsed replies count in the binary view (`error` or `negative`).
        breakdown: metadata columns to break metrics down by; `("auto",)` = those present (dataset, cam,
            subject, demographics) with at least two values.
        output_dir: where predictions, the report and the confusion-matrix PNG go; None =
            `eval_results/<model name>/action` (see `default_output_dir`), or `eval_results/action` without a
            `model_path`.
        model_path: recorded in the report.
        limit: evaluate only the first `limit` records.
        max_skip_fraction: fail (after writing the files) once more than this fraction of clips could not be decoded.
        num_chunks: how many chunks the clips are split into (each runs as its own process).
        chunk_idx: which chunk this run computes (0-based).
    """

    labels: str | os.PathLike
    format: str | None = None
    video_root: str | os.PathLike | None = None
    split_file: str | os.PathLike | None = None
    split: str | None = None
    classes: Sequence[str] | None = None
    label_map: Mapping[str, str] | None = None
    mode: Mode = "zero-shot"
    k: int = 4
    exemplar_strategy: ExemplarStrategy = "random"
    train_labels: str | os.PathLike | None = None
    train_split_file: str | os.PathLike | None = None
    train_split: str | None = None
    max_exemplar_pool: int | None = 1000
    seed: int = 0
    max_new_tokens: int | None = None
    positive: Sequence[str] = DEFAULT_POSITIVE
    unparsed_as: Literal["error", "negative"] = "error"
    breakdown: Sequence[str] = ("auto",)
    output_dir: str | os.PathLike | None = None
    model_path: str | None = None
    limit: int | None = None
    max_skip_fraction: float = MAX_SKIP_FRACTION
    num_chunks: int = 1
    chunk_idx: int = 0

    def __post_init__(self) -> None:
        if self.output_dir is None:
            root = default_output_dir(self.model_path) if self.model_path else Path("eval_results")
            self.output_dir = str(root / "action")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.exemplar_strategy not in ("random", "similar"):
            raise ValueError(f"exemplar_strategy must be 'random' or 'similar', got {self.exemplar_strategy!r}")
        if self.mode == "few-shot" and self.k < 1:
            raise ValueError(f"few-shot needs k >= 1, got {self.k}")
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be within [0, 1], got {self.max_skip_fraction}")
        if not 0 <= self.chunk_idx < self.num_chunks:
            raise ValueError(f"chunk_idx must be in 0..{self.num_chunks - 1}, got {self.chunk_idx}")

    @property
    def run_name(self) -> str:
        """File prefix of this run's outputs, e.g. `zero-shot` or `few-shot-similar-k4`."""
        return f"few-shot-{self.exemplar_strategy}-k{self.k}" if self.mode == "few-shot" else self.mode


def _exemplar_source(cfg: ActionEvalConfig) -> dict[str, Any]:
    """Where few-shot exemplars come from: the training split of the evaluated data unless told otherwise."""
    split_file = cfg.train_split_file
    if split_file is None and cfg.split_file is not None:
        sibling = Path(cfg.split_file).with_name("train.csv")
        if sibling.is_file() and sibling.resolve() != Path(cfg.split_file).resolve():
            split_file = sibling
    labels = cfg.train_labels
    if labels is None:
        own = Path(cfg.labels)
        sibling = own.with_name("train" + own.suffix)
        # A prepared `test.jsonl` has its `train.jsonl` beside it.
        labels = sibling if own.stem in ("test", "val") and sibling.is_file() else own
    split = cfg.train_split if cfg.train_split is not None else ("train" if cfg.split is not None else None)
    if Path(labels) == Path(cfg.labels) and split_file is None and split is None:
        raise ValueError(
            "few-shot needs a training split for its exemplars: pass train_split_file (or a split_file with a "
            "train.csv beside it), train_labels, or train_split"
        )
    return {"labels": labels, "split_file": split_file, "split": split}


def _sha256(path: str | os.PathLike) -> str | None:
    """sha256 of an annotation file; None for a folder-per-class root (hashing every video would take long)."""
    return file_identity(path)["sha256"] if Path(path).is_file() else None


_META_SKIP = ("conversations", "video", "label", "label_id", "id", "start", "end")


def _prediction_row(record: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    row = {
        "id": record["id"],
        "video": record.get("video"),
        "start": record.get("start"),
        "end": record.get("end"),
        "label": record["label"],
    }
    row.update(result)
    row["status"] = "answered" if row.get("prediction") is not None else "unparsed"
    row["correct"] = row.get("prediction") == record["label"]
    row.update({k: v for k, v in record.items() if k not in _META_SKIP and k not in row})
    return row


def prediction_settings(cfg: ActionEvalConfig, task: ActionTask) -> dict[str, Any]:
    """What determines the predictions of a run; recorded in its results and checked when resuming or merging."""
    settings: dict[str, Any] = {
        "mode": cfg.mode,
        "prompt_version": PROMPT_VERSION,
        "question": task.prompt(cot=cfg.mode == "cot"),
        "classes": list(task.classes),
        "max_new_tokens": None
        if cfg.mode == "loglik"
        else (cfg.max_new_tokens if cfg.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS[cfg.mode]),
    }
    if cfg.mode == "few-shot":
        settings.update(
            k=cfg.k,
            exemplar_strategy=cfg.exemplar_strategy,
            seed=cfg.seed,
            max_exemplar_pool=cfg.max_exemplar_pool,
        )
    if cfg.mode == "loglik":
        settings["scoring"] = "argmin over the classes of the mean token NLL of the class name as the answer"
    return settings


def action_job(
    model: ActionModel, cfg: ActionEvalConfig, *, task: ActionTask | None = None, records: Sequence[dict] | None = None
) -> EvalJob:
    """The runner's job for a classification run: the clips, the prediction of one, the run's identity.

    Few-shot runs load their exemplar pool here (and, for `similar`, embed it once per process).
    """
    if records is None or task is None:
        loaded_task, loaded = load_action_records(
            cfg.labels,
            format=cfg.format,
            video_root=cfg.video_root,
            split_file=cfg.split_file,
            split=cfg.split,
            classes=cfg.classes,
            label_map=cfg.label_map,
        )
        task = task or loaded_task
        records = loaded if records is None else records
    records = list(records)[: cfg.limit] if cfg.limit is not None else list(records)
    settings = prediction_settings(cfg, task)
    selector = None
    if cfg.mode == "few-shot":
        source = _exemplar_source(cfg)
        _, pool = load_action_records(
            source["labels"],
            format=cfg.format,
            video_root=cfg.video_root,
            split_file=source["split_file"],
            split=source["split"],
            classes=task.classes,
            label_map=cfg.label_map,
        )
        overlap = {r["video"] for r in pool} & {r["video"] for r in records}
        if overlap:
            logger.warning(
                "%d evaluated videos are also in the exemplar pool; their own clips are never used as their exemplars",
                len(overlap),
            )
        selector = ExemplarSelector(pool, cfg.k, cfg.exemplar_strategy, cfg.seed, cfg.max_exemplar_pool, model)
        settings["exemplar_source"] = {k: _str(v) for k, v in source.items()}
        settings["exemplar_pool_size"] = len(selector.pool)

    def predict(model: ActionModel, record: dict) -> dict[str, Any]:
        try:
            result = _predict_with_retries(model, task, record, cfg, selector)
        except (VideoDecodeError, FileNotFoundError) as e:
            logger.warning("skipping %s: %s", record["id"], e)
            return {
                "id": record["id"],
                "video": record.get("video"),
                "label": record["label"],
                "status": "skipped",
                "error": str(e),
            }
        return _prediction_row(record, result)

    positive = [normalize_label(p) for p in cfg.positive]
    return EvalJob(
        name=cfg.run_name,
        task="action",
        kind="action",
        items=records,
        item_id=lambda record: str(record["id"]),
        predict=predict,
        settings=settings,
        data={
            "labels": str(cfg.labels),
            "labels_sha256": _sha256(cfg.labels),
            "split_file": _str(cfg.split_file),
            "split_file_sha256": _sha256(cfg.split_file) if cfg.split_file else None,
            "split": cfg.split,
            "video_root": _str(cfg.video_root),
            "format": cfg.format,
        },
        output_dir=cfg.output_dir,
        model_path=cfg.model_path,
        num_chunks=cfg.num_chunks,
        chunk_idx=cfg.chunk_idx,
        max_skip_fraction=cfg.max_skip_fraction,
        limit=cfg.limit,
        report_options={"positive": positive, "unparsed_as": cfg.unparsed_as, "breakdown": list(cfg.breakdown)},
    )


def evaluate_action(
    model: ActionModel, cfg: ActionEvalConfig, *, task: ActionTask | None = None, records: Sequence[dict] | None = None
) -> dict[str, Any] | None:
    """Predict this run's chunk of the clips; when every chunk has finished, merge them and write the report.

    Writes `<run>_pred_<n>_<k>.jsonl` (one line per clip as it is predicted; a rerun resumes it), then
    `<run>_pred_merge.jsonl`, `<run>_report.json` and `<run>_confusion.png`. Clips whose video cannot be
    decoded are recorded as skipped and left out of the metrics; past `max_skip_fraction` the run fails
    after writing its files.

    Args:
        model: the video language model (or anything with the `ActionModel` methods the mode uses).
        cfg: the run settings.
        task: the label set; None = read with the data.
        records: the clips to evaluate; None = read from `cfg.labels`.

    Returns:
        The report (also written as JSON): counts, metrics (accuracy, balanced accuracy, macro-F1,
        per-class, binary fall view, confusion matrix), breakdowns and output paths; None while other chunks
        are still to finish.
    """
    return run_job(model, action_job(model, cfg, task=task, records=records)).report


@register_report("action")
def _action_report_of_run(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], merged: Path) -> dict:
    """The report of a merged classification run, with its confusion-matrix PNG beside it."""
    settings, options = dict(meta["settings"]), dict(meta.get("report_options") or {})
    classes = tuple(settings["classes"])
    rows = [r for r in records if r.get("status") != "skipped"]
    report = action_report(
        rows,
        classes,
        settings,
        positive=options.get("positive", list(DEFAULT_POSITIVE)),
        unparsed_as=options.get("unparsed_as", "error"),
        columns=options.get("breakdown", ["auto"]),
        skipped=len(records) - len(rows),
    )
    report["model_path"] = meta.get("model_path")
    report["data"] = meta.get("data")
    name = merged.name.removesuffix("_pred_merge.jsonl")
    png = save_confusion_matrix(
        report["metrics"]["confusion_matrix"]["counts"],
        classes,
        merged.parent / f"{name}_confusion.png",
        title=f"{name} ({report['counts']['evaluated']} clips)",
        drop_empty=True,
    )
    report["files"] = {
        "predictions": str(merged),
        "confusion_matrix_png": str(png),
        "report": str(merged.parent / f"{name}_report.json"),
    }
    return report


def action_report(
    rows: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    settings: Mapping[str, Any],
    *,
    positive: Sequence[str] = DEFAULT_POSITIVE,
    unparsed_as: Literal["error", "negative"] = "error",
    columns: Sequence[str] = ("auto",),
    skipped: int = 0,
) -> dict[str, Any]:
    """Report of evaluated prediction rows (`label`, `prediction`, `method`, metadata).

    Args:
        rows: the clips that were predicted (skipped ones left out).
        classes: the label set.
        settings: the run's prediction settings (recorded in the report).
        positive: the positive classes of the binary fall view.
        unparsed_as: how unparsed replies count in the binary view.
        columns: metadata columns to break the metrics down by; `("auto",)` picks them, `()` or `("none",)` none.
        skipped: how many clips were skipped.
    """
    positive = [normalize_label(p) for p in positive]
    views = {p: [p] for p in positive} if len(positive) > 1 else {}
    metrics = classification_metrics(
        [r["label"] for r in rows],
        [r["prediction"] for r in rows],
        classes,
        positive=positive,
        unparsed_as=unparsed_as,
        binary_views=views,
    )
    columns = list(columns)
    if columns == ["auto"]:
        columns = auto_breakdown_columns(rows)
    elif columns in ([], ["none"]):
        columns = []
    binary = metrics.get("binary") or {}
    return {
        "task": "action",
        "kind": "action",
        "settings": {**settings, "positive": positive, "unparsed_as": unparsed_as},
        "classes": list(classes),
        "counts": {
            "total": len(rows) + skipped,
            "evaluated": len(rows),
            "skipped": skipped,
            "unparsed": metrics["num_unparsed"],
            "methods": dict(Counter(r.get("method", "?") for r in rows).most_common()),
        },
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "fall_sensitivity": binary.get("sensitivity"),
        "fall_specificity": binary.get("specificity"),
        "fall_f1": binary.get("f1"),
        "metrics": metrics,
        "breakdown": breakdown(rows, columns, classes, positive=positive, unparsed_as=unparsed_as) if columns else {},
    }


def _predict_with_retries(
    model: ActionModel, task: ActionTask, record: dict, cfg: ActionEvalConfig, selector: ExemplarSelector | None
) -> dict[str, Any]:
    """One prediction; an unreadable exemplar is dropped from the pool and the exemplars drawn again."""
    if selector is None:
        return predict_record(model, task, record, cfg.mode, max_new_tokens=cfg.max_new_tokens)
    query_embedding = clip_embedding(model, record) if selector.strategy == "similar" else None
    for _ in range(5):
        exemplars = selector.select(record, query_embedding)
        try:
            return predict_record(model, task, record, cfg.mode, exemplars=exemplars, max_new_tokens=cfg.max_new_tokens)
        except VideoDecodeError as e:
            if os.fspath(e.path) == os.fspath(record["video"]):
                raise
            logger.warning("exemplar video %s is unreadable; dropped from the pool", e.path)
            selector.drop(e.path)
    raise VideoDecodeError(record["video"], "five exemplar draws in a row held unreadable videos")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def log_report_to_tensorboard(report: Mapping[str, Any], log_dir: str | os.PathLike, step: int = 0) -> None:
    """Write the headline metrics as scalars and the confusion matrix as an image under `action/<run>/`."""
    from torch.utils.tensorboard import SummaryWriter

    from merv.eval.metrics import log_confusion_matrix

    name = Path(report["files"]["report"]).name.removesuffix("_report.json")
    with SummaryWriter(str(log_dir)) as writer:
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "fall_sensitivity", "fall_specificity", "fall_f1"):
            if report.get(key) is not None:
                writer.add_scalar(f"action/{name}/{key}", report[key], step)
        log_confusion_matrix(
            writer,
            report["metrics"]["confusion_matrix"]["counts"],
            report["classes"],
            tag=f"action/{name}/confusion_matrix",
            step=step,
            drop_empty=True,
        )
