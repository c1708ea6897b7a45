"""The evaluation runner: predict a chunk of a run, resume after a kill, merge chunks, write reports.

A run of any task kind (multiple choice, open-ended, label classification) reaches the runner as an
`EvalJob`: its items, how to predict one, and what identifies it. Chunk k of n appends each prediction to its own JSON-lines file and flushes it at once, so a killed job
restarts where it stopped (finished ids are never recomputed). When every chunk has finished, the chunks
are merged by question id (duplicates and gaps are refused) and a report is written.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from merv.data.dataset import MAX_SKIP_FRACTION, SkipRateError
from merv.eval.judge import string_match_report, type_label
from merv.eval.loading import default_output_dir
from merv.eval.parsing import LETTERS, parse_mcq_answer
from merv.eval.tasks import (
    MCQ_PROMPT_VERSION,
    OPENENDED_PROMPT_VERSION,
    EvalItem,
    EvalTask,
    build_mcq_prompt,
    build_openended_prompt,
    file_identity,
    get_task,
)
from merv.video import VideoDecodeError

log = logging.getLogger(__name__)

Strategy = Literal["naive", "loglik"]
STRATEGIES: tuple[str, ...] = ("naive", "loglik")

# An unreadable video skips its item; any other error stops the run.
_VIDEO_ERRORS = (FileNotFoundError, VideoDecodeError)


class PromptBuilderLike(Protocol):
    def add_turn(self, role: str, message: str) -> Any: ...

    def get_prompt(self) -> str: ...


class EvaluableModel(Protocol):
    """What the runner needs from a model (`merv.models.VideoLM` provides it)."""

    def get_prompt_builder(self) -> PromptBuilderLike: ...

    def generate(
        self,
        video: Any,
        prompt_text: str,
        start: float | None = None,
        end: float | None = None,
        **kwargs: Any,
    ) -> str: ...

    def option_nll(
        self, video: Any, question: str, options: list[str], start: float | None = None, end: float | None = None
    ) -> list[float]: ...


class MergeError(RuntimeError):
    """Chunk files cannot be merged: a chunk is missing or unfinished, ids repeat, or settings differ."""


class ResumeMismatchError(RuntimeError):
    """An existing chunk file was produced with different settings or data than the current run."""


@dataclass
class EvalConfig:
    """One evaluation run (one chunk of one task).

    Attributes:
        task: registered task name or alias (`nextqa`, `msvd`, `mcq`, ...).
        question_file: annotation file (or folder for MVBench).
        answer_file: separate answer file, where the format has one.
        video_root: folder that video names are relative to.
        output_dir: where prediction chunks, the merged file and the report go; None = `eval_results/<model
            name>` (see `default_output_dir`), or `eval_results` when no `model_path` is given.
        model_path: recorded in the results (the runner receives the loaded model).
        strategy: MCQ strategy: `naive` (generate, parse a letter) or `loglik` (lowest option NLL).
        max_new_tokens: generation length; None = 16 for MCQ, 128 for open-ended.
        num_chunks: how many chunks the task is split into.
        chunk_idx: which chunk this run computes (0-based).
        max_skip_fraction: fraction of unreadable videos above which the run fails.
        limit: evaluate only the first `limit` items (quick checks); None = all.
    """

    task: str
    question_file: str | os.PathLike
    answer_file: str | os.PathLike | None = None
    video_root: str | os.PathLike | None = None
    output_dir: str | os.PathLike | None = None
    model_path: str | None = None
    strategy: Strategy = "naive"
    max_new_tokens: int | None = None
    num_chunks: int = 1
    chunk_idx: int = 0
    max_skip_fraction: float = MAX_SKIP_FRACTION
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.output_dir is None:
            self.output_dir = str(default_output_dir(self.model_path)) if self.model_path else "eval_results"
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.num_chunks < 1:
            raise ValueError(f"num_chunks must be at least 1, got {self.num_chunks}")
        if not 0 <= self.chunk_idx < self.num_chunks:
            raise ValueError(f"chunk_idx must be in 0..{self.num_chunks - 1}, got {self.chunk_idx}")
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be within [0, 1], got {self.max_skip_fraction}")


def prediction_settings(cfg: EvalConfig, task: EvalTask) -> dict[str, Any]:
    """The settings that determine predictions; recorded in results and checked when resuming or merging."""
    if task.kind == "mcq":
        settings: dict[str, Any] = {"strategy": cfg.strategy, "prompt_version": MCQ_PROMPT_VERSION}
        if cfg.strategy == "loglik":
            settings["scoring"] = "argmin mean token NLL of the option text"
            return settings
    else:
        settings = {"strategy": "generate", "prompt_version": OPENENDED_PROMPT_VERSION}
    settings.update(
        {
            "do_sample": False,
            "greedy": True,
            "max_new_tokens": cfg.max_new_tokens or (16 if task.kind == "mcq" else 128),
        }
    )
    return settings


def run_name(task: EvalTask, cfg: EvalConfig) -> str:
    """File-name stem shared by all chunks of one run: `<task>_<strategy>` for MCQ, `<task>` otherwise."""
    return f"{task.name}_{cfg.strategy}" if task.kind == "mcq" else task.name


def chunk_path(output_dir: str | os.PathLike, name: str, num_chunks: int, chunk_idx: int) -> Path:
    """Predictions file of one chunk."""
    return Path(output_dir) / f"{name}_pred_{num_chunks}_{chunk_idx}.jsonl"


def meta_path(output_dir: str | os.PathLike, name: str, num_chunks: int, chunk_idx: int) -> Path:
    """Sidecar with the chunk's ids, settings and data identity (written before the first prediction)."""
    return Path(output_dir) / f"{name}_pred_{num_chunks}_{chunk_idx}.meta.json"


def merged_path(output_dir: str | os.PathLike, name: str) -> Path:
    """Merged predictions of all chunks."""
    return Path(output_dir) / f"{name}_pred_merge.jsonl"


def report_path(output_dir: str | os.PathLike, name: str) -> Path:
    """Report JSON of the merged predictions."""
    return Path(output_dir) / f"{name}_report.json"


def chunk_bounds(num_items: int, num_chunks: int, chunk_idx: int) -> tuple[int, int]:
    """`[lo, hi)` of chunk `chunk_idx`: contiguous, sizes differing by at most one, every chunk defined."""
    if not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"chunk_idx must be in 0..{num_chunks - 1}, got {chunk_idx}")
    return num_items * chunk_idx // num_chunks, num_items * (chunk_idx + 1) // num_chunks


# ------------------------------------------------------------------------------------------------ file I/O


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_meta(path: Path) -> dict[str, Any]:
    """A `.meta.json` sidecar; a corrupt one is an error naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not valid JSON ({e.msg}, line {e.lineno}); delete it with its predictions file to recompute"
        ) from e


def read_predictions(path: str | os.PathLike, tolerate_truncated_tail: bool = False) -> list[dict[str, Any]]:
    """Read a predictions file: JSON lines, or one JSON array / `{id: record}` object.

    Args:
        path: the file.
        tolerate_truncated_tail: drop an unreadable last line (a job killed while writing it) instead of failing.

    Raises:
        ValueError: a line that is not JSON (other than a tolerated last line), naming the file and line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # JSON lines (or a truncated file): read line by line below
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if "id" in data:  # a JSON-lines file with a single record
            return [data]
        # Video-LLaVA-style {id: record} or {id: [verdict, record]} files.
        out = []
        for key, value in data.items():
            rec = value[-1] if isinstance(value, list) and value else value
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: entry {key!r} is not a prediction record")
            out.append({**rec, "id": rec.get("id", key)})
        return out
    lines = text.splitlines()
    records = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if tolerate_truncated_tail and lineno == len(lines):
                log.warning("%s: dropping the unfinished last line %d", path, lineno)
                continue
            raise ValueError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from e
    return records


# ----------------------------------------------------------------------------------------------- prediction


def _base_record(task: EvalTask, item: EvalItem) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": item.id,
        "task": task.name,
        "video": item.video,
        "question": item.question,
        "question_type": item.question_type,
    }
    if item.start is not None or item.end is not None:
        rec["start"], rec["end"] = item.start, item.end
    if item.extra:
        rec["extra"] = item.extra
    if task.kind == "mcq":
        rec.update({"options": item.options, "answer_index": item.answer_index, "answer": item.answer})
    else:
        rec["answer"] = item.answer
    return rec


def _video_input(item: EvalItem) -> tuple[str, dict[str, float | None]]:
    """What to hand the model: the video file or frame folder, with the item's segment bounds (if any).

    A path rather than frames, so the model's processor decodes it (a folder of frames too) and its pixel
    cache, if one is set, serves repeated runs."""
    path = Path(item.video)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    bounds = {"start": item.start, "end": item.end} if item.start is not None or item.end is not None else {}
    return str(path), bounds


def _generate(model: Any, item: EvalItem, message: str, settings: Mapping[str, Any]) -> str:
    video, bounds = _video_input(item)
    builder = model.get_prompt_builder()
    builder.add_turn(role="human", message=message)
    return model.generate(
        video,
        builder.get_prompt(),
        do_sample=False,
        max_new_tokens=settings["max_new_tokens"],
        **bounds,
    )


def predict_item(model: Any, task: EvalTask, item: EvalItem, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Run the model on one item and return its prediction record.

    An unreadable video gives a record with `status: "skipped"` and the reason; any other error propagates.
    """
    rec = _base_record(task, item)
    try:
        if task.kind == "mcq":
            if not item.options:
                raise ValueError(f"{task.name} item {item.id!r} has no options")
            if settings["strategy"] == "loglik":
                video, bounds = _video_input(item)
                nll = [float(x) for x in model.option_nll(video, item.question, list(item.options), **bounds)]
                if len(nll) != len(item.options):
                    raise ValueError(f"option_nll returned {len(nll)} scores for {len(item.options)} options")
                pred = min(range(len(nll)), key=nll.__getitem__)
                rec.update({"option_nll": nll, "parse_method": "loglik"})
            else:
                output = _generate(model, item, build_mcq_prompt(item), settings)
                parsed = parse_mcq_answer(output, item.options)
                pred = parsed.index
                rec.update({"output": output, "parse_method": parsed.method})
            rec.update(
                {
                    "status": "answered" if pred is not None else "unparseable",
                    "pred_index": pred,
                    "pred_letter": None if pred is None else LETTERS[pred],
                    "pred_text": None if pred is None else item.options[pred],
                    "correct": None if item.answer_index is None else pred == item.answer_index,
                }
            )
        else:
            rec["pred"] = _generate(model, item, build_openended_prompt(item), settings)
            rec["status"] = "answered"
    except _VIDEO_ERRORS as e:
        log.warning("skipping %s: %s", item.id, e)
        rec.update({"status": "skipped", "error": str(e)})
        if task.kind == "mcq":
            rec.update({"pred_index": None, "correct": None if item.answer_index is None else False})
        else:
            rec["pred"] = ""
    return rec


# -------------------------------------------------------------------------------------------------- running


@dataclass
class ChunkResult:
    """Outcome of `run_chunk`.

    Attributes:
        predictions_file: the chunk's JSON-lines file.
        records: all records of the chunk, in item order.
        computed: how many items were predicted by this call (the rest were resumed from the file).
        skipped: how many items have unreadable videos.
    """

    predictions_file: Path
    records: list[dict[str, Any]]
    computed: int
    skipped: int


@dataclass
class EvalJob:
    """One run of any task kind, as the runner sees it: the items, how to predict one, what identifies the run.

    Benchmarks (`mcq`, `openended`) and label classification (`action`) differ only here; chunking, resuming,
    merging, the skip limit and writing the report are the runner's.

    Attributes:
        name: file stem shared by all chunks of the run (`nextqa_naive`, `msvd`, `zero-shot`).
        task: the task name recorded in the results.
        kind: `mcq`, `openended` or `action`; picks the report (see `register_report`).
        items: every item of the run, in order (after `limit`); each chunk takes its contiguous share.
        item_id: an item's unique id.
        predict: `(model, item) -> record`; the record holds `id` and `status` (`skipped` when the video is
            unreadable, with the reason in `error`).
        settings: what determines the predictions; a resumed or merged chunk must have the same.
        data: identity of the data files (paths and hashes); likewise checked.
        output_dir: where chunk files, the merged file and the report go.
        model_path: recorded in the results and checked on resume.
        num_chunks: how many chunks the run is split into.
        chunk_idx: which chunk this process computes.
        max_skip_fraction: the run fails (after writing its files) when a larger fraction of a chunk is skipped.
        limit: recorded; the items are already cut to it.
        report_options: how the report reads the predictions (not checked on resume: they change no prediction).
    """

    name: str
    task: str
    kind: str
    items: Sequence[Any]
    item_id: Callable[[Any], str]
    predict: Callable[[Any, Any], dict[str, Any]]
    settings: Mapping[str, Any]
    data: Mapping[str, Any]
    output_dir: str | os.PathLike
    model_path: str | None = None
    num_chunks: int = 1
    chunk_idx: int = 0
    max_skip_fraction: float = MAX_SKIP_FRACTION
    limit: int | None = None
    report_options: Mapping[str, Any] = field(default_factory=dict)

    def chunk_items(self) -> list[Any]:
        """This job's chunk of the items."""
        lo, hi = chunk_bounds(len(self.items), self.num_chunks, self.chunk_idx)
        return list(self.items[lo:hi])

    def meta(self) -> dict[str, Any]:
        """The chunk's sidecar: ids, settings and data identity, checked when resuming and merging."""
        return {
            "task": self.task,
            "kind": self.kind,
            "num_chunks": self.num_chunks,
            "chunk_idx": self.chunk_idx,
            "model_path": self.model_path,
            "settings": dict(self.settings),
            "data": dict(self.data),
            "limit": self.limit,
            "report_options": dict(self.report_options),
            "ids": [self.item_id(it) for it in self.chunk_items()],
        }


def benchmark_job(cfg: EvalConfig, items: Sequence[EvalItem] | None = None) -> EvalJob:
    """The job of a registered benchmark task (`mcq` or `openended`)."""
    task = get_task(cfg.task)
    if items is None:
        items = task.load(cfg.question_file, cfg.answer_file, cfg.video_root)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    settings = prediction_settings(cfg, task)
    return EvalJob(
        name=run_name(task, cfg),
        task=task.name,
        kind=task.kind,
        items=list(items),
        item_id=lambda item: item.id,
        predict=lambda model, item: predict_item(model, task, item, settings),
        settings=settings,
        data={
            "question_file": file_identity(cfg.question_file),
            "answer_file": None if cfg.answer_file is None else file_identity(cfg.answer_file),
            "video_root": None if cfg.video_root is None else str(Path(cfg.video_root).resolve()),
        },
        output_dir=cfg.output_dir,
        model_path=cfg.model_path,
        num_chunks=cfg.num_chunks,
        chunk_idx=cfg.chunk_idx,
        max_skip_fraction=cfg.max_skip_fraction,
        limit=cfg.limit,
    )


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    return [k for k in keys if a.get(k) != b.get(k)]


def run_chunk(model: Any, cfg: EvalConfig | EvalJob, items: Sequence[EvalItem] | None = None) -> ChunkResult:
    """Predict one chunk, resuming from its predictions file if one exists.

    Each record is appended and flushed as soon as it is computed. Records already in the file are kept
    (a truncated last line from a killed job is dropped); items whose video was skipped are retried.

    Args:
        model: what the job predicts with (for benchmarks, see `EvaluableModel`).
        cfg: a benchmark run, or any job.
        items: a benchmark's items if already loaded; read from `cfg` otherwise.

    Raises:
        ResumeMismatchError: the existing chunk was made with other settings, data or model.
    """
    job = cfg if isinstance(cfg, EvalJob) else benchmark_job(cfg, items)
    chunk = job.chunk_items()
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_file = chunk_path(out, job.name, job.num_chunks, job.chunk_idx)
    meta_file = meta_path(out, job.name, job.num_chunks, job.chunk_idx)
    meta = job.meta()

    done: dict[str, dict[str, Any]] = {}
    if pred_file.exists():
        if meta_file.exists():
            old = read_meta(meta_file)
            diff = _differences(old, meta, ("task", "num_chunks", "chunk_idx", "model_path", "settings", "data", "ids"))
            if diff:
                raise ResumeMismatchError(
                    f"{pred_file} was produced with different {', '.join(diff)}; "
                    "delete it (and its .meta.json) or choose another --output_dir"
                )
        wanted = set(meta["ids"])
        existing = read_predictions(pred_file, tolerate_truncated_tail=True)
        kept = [r for r in existing if r.get("id") in wanted and r.get("status") != "skipped"]
        done = {r["id"]: r for r in kept}
        # Rewrite without skipped items (to retry them), a line cut off by a kill, or foreign ids, so that
        # appending continues on a clean line and the file holds each id once.
        write_jsonl_atomic(pred_file, done.values())
        log.info("%s: resuming with %d of %d items already done", pred_file, len(done), len(chunk))
    write_json_atomic(meta_file, meta)

    computed = 0
    with open(pred_file, "a", encoding="utf-8") as fh:
        for n, item in enumerate(chunk, start=1):
            if job.item_id(item) in done:
                continue
            rec = job.predict(model, item)
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fh.flush()
            done[rec["id"]] = rec
            computed += 1
            if n % 50 == 0:
                log.info("%s: %d/%d items", pred_file.name, n, len(chunk))
    records = [done[i] for i in meta["ids"]]
    skipped = sum(r["status"] == "skipped" for r in records)
    if skipped:
        log.warning("%s: %d of %d items skipped (unreadable videos)", pred_file, skipped, len(records))
    return ChunkResult(pred_file, records, computed, skipped)


def check_skip_rate(result: ChunkResult, max_skip_fraction: float, chunk_idx: int) -> None:
    """Fail when more than `max_skip_fraction` of a chunk's videos could not be read.

    Raises:
        SkipRateError: naming the counts, the limit and the file that holds the reasons.
    """
    total = len(result.records)
    if total and result.skipped / total > max_skip_fraction:
        first = next(r for r in result.records if r["status"] == "skipped")
        raise SkipRateError(
            f"{result.skipped} of {total} videos in chunk {chunk_idx} could not be read "
            f"(more than max_skip_fraction={max_skip_fraction}); check --video_root. First: {first.get('video')}; "
            f"reasons are in {result.predictions_file}"
        )


# -------------------------------------------------------------------------------------------------- merging


def _chunk_state(output_dir: Path, name: str, num_chunks: int, k: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    mfile, pfile = meta_path(output_dir, name, num_chunks, k), chunk_path(output_dir, name, num_chunks, k)
    if not mfile.exists() or not pfile.exists():
        raise MergeError(f"chunk {k} of {num_chunks} has not run: {pfile} is missing")
    return read_meta(mfile), read_predictions(pfile)


def merge_chunks(output_dir: str | os.PathLike, name: str, num_chunks: int) -> Path:
    """Join all chunks of a run by question id into `<name>_pred_merge.jsonl`.

    Args:
        output_dir: folder holding the chunk files.
        name: the run's file stem (`run_name`), e.g. "nextqa_naive" or "msvd".
        num_chunks: how many chunks the run was split into.

    Returns:
        Path of the merged file (records in original item order).

    Raises:
        MergeError: a chunk is missing or unfinished (gap), an id occurs twice (within or across chunks),
            a chunk holds ids it should not, or chunks disagree on settings, data or model.
    """
    out = Path(output_dir)
    metas, merged = [], []
    owner: dict[str, int] = {}
    for k in range(num_chunks):
        meta, records = _chunk_state(out, name, num_chunks, k)
        if metas:
            diff = _differences(metas[0], meta, ("task", "model_path", "settings", "data", "limit"))
            if diff:
                raise MergeError(
                    f"chunk {k} differs from chunk 0 in {', '.join(diff)}; rerun it with the same settings"
                )
        metas.append(meta)
        by_id: dict[str, dict[str, Any]] = {}
        for rec in records:
            rid = rec.get("id")
            if rid in by_id:
                raise MergeError(f"duplicate id {rid!r} in chunk {k} ({chunk_path(out, name, num_chunks, k)})")
            if rid in owner:
                raise MergeError(f"duplicate id {rid!r}: present in chunk {owner[rid]} and chunk {k}")
            by_id[rid] = rec
            owner[rid] = k
        expected = meta["ids"]
        missing = [i for i in expected if i not in by_id]
        if missing:
            raise MergeError(
                f"chunk {k} is unfinished: {len(missing)} of {len(expected)} ids missing (e.g. {missing[:3]}); "
                f"rerun --chunk_idx {k}"
            )
        foreign = sorted(set(by_id) - set(expected))
        if foreign:
            raise MergeError(f"chunk {k} holds {len(foreign)} id(s) outside its share (e.g. {foreign[:3]})")
        merged.extend(by_id[i] for i in expected)
    path = merged_path(out, name)
    write_jsonl_atomic(path, merged)
    write_json_atomic(
        path.with_suffix(".meta.json"),
        {
            **{k: v for k, v in metas[0].items() if k != "ids"},
            "num_chunks": num_chunks,
            "chunk_idx": None,
            "num_items": len(merged),
        },
    )
    log.info("merged %d chunks (%d items) into %s", num_chunks, len(merged), path)
    return path


def all_chunks_finished(output_dir: str | os.PathLike, name: str, num_chunks: int) -> bool:
    """Whether every chunk's file holds all of its ids (the condition for an automatic merge)."""
    out = Path(output_dir)
    for k in range(num_chunks):
        try:
            meta, records = _chunk_state(out, name, num_chunks, k)
        except (MergeError, ValueError):
            return False
        if not set(meta["ids"]) <= {r.get("id") for r in records}:
            return False
    return True


# -------------------------------------------------------------------------------------------------- reports


def _accuracy_block(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    labelled = [r for r in records if r.get("answer_index") is not None]
    answered = [r for r in labelled if r.get("status") == "answered"]
    correct = sum(bool(r.get("correct")) for r in labelled)
    return {
        "total": len(records),
        "labelled": len(labelled),
        "answered": sum(r.get("status") == "answered" for r in records),
        "unparseable": sum(r.get("status") == "unparseable" for r in records),
        "skipped": sum(r.get("status") == "skipped" for r in records),
        "correct": correct,
        # Unparseable and skipped items count as wrong: the model did not pick the right option.
        "accuracy": correct / len(labelled) if labelled else None,
        "accuracy_answered": correct / len(answered) if answered else None,
    }


def _group_by(records: Sequence[Mapping[str, Any]], key: Any) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        k = key(r)
        if k is not None:
            groups.setdefault(str(k), []).append(r)
    return dict(sorted(groups.items()))


def mcq_report(records: Sequence[Mapping[str, Any]], task: EvalTask, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy report: overall, per question type, per type group and per extra breakdown, with counts.

    Accuracy is over labelled items, counting unparseable and skipped items as wrong; `accuracy_answered`
    leaves them out.
    """
    overall = _accuracy_block(records)
    report: dict[str, Any] = {
        "task": task.name,
        "kind": task.kind,
        "model_path": meta.get("model_path"),
        "data": meta.get("data"),
        "settings": meta.get("settings"),
        "accuracy": overall["accuracy"],
        "counts": {k: v for k, v in overall.items() if not k.startswith("accuracy")},
        "accuracy_answered": overall["accuracy_answered"],
    }
    by_type = _group_by(records, lambda r: r.get("question_type"))
    if by_type:
        report["per_type"] = {type_label(k, task.type_names): _accuracy_block(v) for k, v in by_type.items()}
    if task.type_groups:
        report["per_group"] = {
            g: _accuracy_block([r for r in records if r.get("question_type") in codes])
            for g, codes in task.type_groups.items()
        }
    for key in task.breakdowns:
        groups = _group_by(records, lambda r, key=key: (r.get("extra") or {}).get(key))
        if groups:
            report.setdefault("breakdowns", {})[key] = {k: _accuracy_block(v) for k, v in groups.items()}
    return report


def openended_report(
    records: Sequence[Mapping[str, Any]],
    task: EvalTask,
    meta: Mapping[str, Any],
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Counts and the string-match metric (exact match, token F1) of open-ended predictions (read from `source`).

    The LLM-judge scores are added by `scripts/eval_gpt.py` / `merv.eval.judge`.
    """
    return {
        "task": task.name,
        "kind": task.kind,
        "model_path": meta.get("model_path"),
        "data": meta.get("data"),
        "settings": meta.get("settings"),
        "counts": {
            "total": len(records),
            "answered": sum(r.get("status") == "answered" for r in records),
            "skipped": sum(r.get("status") == "skipped" for r in records),
        },
        "string_match": string_match_report(records, task.type_names, source),
    }


def percent(x: float | None) -> str:
    """A fraction as a percentage for the console, `n/a` when undefined."""
    return "n/a" if x is None else f"{100 * x:.2f}%"


def summary_line(report: Mapping[str, Any]) -> str:
    """One line for the console: the headline metrics and the counts of a benchmark or action report."""
    counts = report.get("counts", {})
    settings = report.get("settings") or {}
    if report.get("kind") == "action":
        line = (
            f"{settings['mode']}: {counts['evaluated']} clips ({counts['unparsed']} unparsed, "
            f"{counts['skipped']} skipped) accuracy {percent(report['accuracy'])}, "
            f"balanced {percent(report['balanced_accuracy'])}, macro-F1 {percent(report['macro_f1'])}"
        )
        if report.get("fall_sensitivity") is not None or report.get("fall_specificity") is not None:
            line += (
                f"; fall sensitivity {percent(report['fall_sensitivity'])}, "
                f"specificity {percent(report['fall_specificity'])}, F1 {percent(report['fall_f1'])}"
            )
        return line
    head = f"{report.get('task')}"
    if settings.get("strategy"):
        head += f" [{settings['strategy']}]"
    if report.get("kind") == "mcq":
        return (
            f"{head}: accuracy {percent(report.get('accuracy'))} ({counts.get('correct')}/{counts.get('labelled')}) | "
            f"answered {counts.get('answered')}, unparseable {counts.get('unparseable')}, skipped {counts.get('skipped')}"
        )
    parts = [f"{head}:"]
    judge = report.get("judge")
    if judge:
        parts.append(
            f"judge accuracy {percent(judge.get('accuracy'))}, mean score "
            f"{'n/a' if judge.get('mean_score') is None else format(judge['mean_score'], '.3f')}, "
            f"judge failures {judge.get('failed')} |"
        )
    sm = report.get("string_match") or {}
    parts.append(f"exact match {percent(sm.get('exact_match'))}, F1 {percent(sm.get('f1'))} |")
    parts.append(f"total {counts.get('total', sm.get('total'))}, skipped {counts.get('skipped', sm.get('skipped'))}")
    return " ".join(parts)


ReportBuilder = Callable[[Sequence[Mapping[str, Any]], Mapping[str, Any], Path], dict[str, Any]]
"""`(records, meta, merged predictions file) -> report` of one task kind."""

_REPORTS: dict[str, ReportBuilder] = {}


def register_report(kind: str) -> Callable[[ReportBuilder], ReportBuilder]:
    """Decorator registering the report builder of a task kind; `write_report` picks it by the run's kind."""

    def wrap(builder: ReportBuilder) -> ReportBuilder:
        _REPORTS[kind] = builder
        return builder

    return wrap


@register_report("mcq")
def _benchmark_mcq_report(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], merged: Path) -> dict:
    return mcq_report(records, get_task(meta["task"]), meta)


@register_report("openended")
def _benchmark_openended_report(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], merged: Path) -> dict:
    return openended_report(records, get_task(meta["task"]), meta, merged)


def write_report(output_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """Build and write the report of a merged run; returns it (with `report_file` and `predictions_file`)."""
    path = merged_path(output_dir, name)
    meta = read_meta(path.with_suffix(".meta.json"))
    kind = meta.get("kind")
    if kind not in _REPORTS:
        raise ValueError(f"{path}: no report for task kind {kind!r}; known: {sorted(_REPORTS)}")
    report = _REPORTS[kind](read_predictions(path), meta, path)
    report["predictions_file"] = str(path.resolve())
    rpath = report_path(output_dir, name)
    report["report_file"] = str(rpath.resolve())
    write_json_atomic(rpath, report)
    return report


# ------------------------------------------------------------------------------------------------ top level


@dataclass
class EvalOutcome:
    """What `evaluate` did.

    Attributes:
        chunk: the chunk's result.
        merged_file: merged predictions, when every chunk has finished.
        report: the report, when merged.
    """

    chunk: ChunkResult
    merged_file: Path | None = None
    report: dict[str, Any] | None = field(default=None)


def run_job(model: Any, job: EvalJob) -> EvalOutcome:
    """Run one chunk of a job; if it was the last one to finish, merge all chunks and write the report.

    Raises:
        SkipRateError: the chunk skipped more than `job.max_skip_fraction` of its items; raised after the
            chunk (and, when it was the last, the merged file and the report) is written.
    """
    result = run_chunk(model, job)
    outcome = EvalOutcome(result)
    if all_chunks_finished(job.output_dir, job.name, job.num_chunks):
        outcome.merged_file = merge_chunks(job.output_dir, job.name, job.num_chunks)
        outcome.report = write_report(job.output_dir, job.name)
    else:
        log.info("chunk %d of %d done; merging waits for the other chunks", job.chunk_idx, job.num_chunks)
    check_skip_rate(result, job.max_skip_fraction, job.chunk_idx)
    return outcome


def evaluate(model: Any, cfg: EvalConfig, items: Sequence[EvalItem] | None = None) -> EvalOutcome:
    """Run one chunk of a benchmark; if it was the last one to finish, merge all chunks and write the report.

    Args:
        model: the model (see `EvaluableModel`).
        cfg: the run.
        items: preloaded items (else read from `cfg`).
    """
    return run_job(model, benchmark_job(cfg, items))
