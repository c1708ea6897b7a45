"""Benchmark tasks: a registry of readers that turn annotation files into uniform evaluation items.

Each task is a reader (the file shapes of FORMATS.md §6-7), a prompt, and a kind (`mcq` or `openended`)
that decides how predictions are scored. Malformed annotations fail at load time with the file, the
record index and the field at fault.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from merv.data.formats import (
    AnnotationError,
    RecordLocation,
    check_value,
    get_field,
    parse_number,
    read_json,
    read_rows,
)
from merv.eval.parsing import LETTERS, option_letters

log = logging.getLogger(__name__)

TaskKind = Literal["mcq", "openended"]

#: Extensions tried, in order, when an annotation names a video without one.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".gif", ".webm")

#: Instruction appended to every generative multiple-choice prompt.
MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
#: Bumped whenever the prompt wording changes, so results from different prompts are never mixed.
MCQ_PROMPT_VERSION = "mcq-v1"

VLEP_QUESTION = "Which event is more likely to happen next in the video?"

#: Columns of the NExT-QA multiple-choice CSV files.
NEXTQA_COLUMNS: tuple[str, ...] = (
    "video",
    "frame_count",
    "width",
    "height",
    "question",
    "answer",
    "qid",
    "type",
    "a0",
    "a1",
    "a2",
    "a3",
    "a4",
)

NEXTQA_TYPE_GROUPS: dict[str, tuple[str, ...]] = {
    "causal": ("CW", "CH"),
    "temporal": ("TN", "TC", "TP"),
    "descriptive": ("DC", "DL", "DO"),
}

ACTIVITYNET_TYPE_NAMES: dict[str, str] = {
    "0": "motion",
    "1": "spatial relation",
    "2": "temporal relation",
    "3": "yes/no",
    "4": "color",
    "5": "object",
    "6": "location",
    "7": "number",
    "8": "other",
}

# Where each MVBench task keeps its videos, relative to the MVBench video root.
MVBENCH_VIDEO_DIRS: dict[str, str] = {
    "action_sequence": "star/Charades_v1_480",
    "action_prediction": "star/Charades_v1_480",
    "object_interaction": "star/Charades_v1_480",
    "action_antonym": "ssv2_video",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test",
    "object_existence": "clevrer/video_validation",
    "moving_direction": "clevrer/video_validation",
    "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation",
    "counterfactual_inference": "clevrer/video_validation",
    "object_shuffle": "perception/videos",
    "action_count": "perception/videos",
    "state_change": "perception/videos",
    "character_order": "perception/videos",
    "action_localization": "sta/sta_video",
    "scene_transition": "scene_qa/video",
    "fine_grained_pose": "nturgbd",
    "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/frames_fps3_hq",
}


@dataclass
class EvalItem:
    """One benchmark question, in the same shape for every task.

    Attributes:
        id: unique question id within the task (string).
        video: path to the video file (or frame folder); it may not exist, the runner then skips the item.
        question: question text, without options.
        options: option texts for multiple-choice items (prefixes such as "A. " removed), else None.
        answer_index: 0-based index of the correct option (MCQ), None when the split has no labels.
        answer: reference answer text (open-ended), or the correct option's text (MCQ).
        question_type: the benchmark's question category, if it has one.
        start: clip start in seconds, when the question is about a segment.
        end: clip end in seconds.
        extra: other per-item fields kept for reports (e.g. Video-MME duration).
    """

    id: str
    video: str
    question: str
    options: list[str] | None = None
    answer_index: int | None = None
    answer: str | None = None
    question_type: str | None = None
    start: float | None = None
    end: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSource:
    """Where a task's data lives.

    Attributes:
        question_file: the main annotation file (or folder, for MVBench's per-task JSON files).
        answer_file: the separate answer file for formats that split questions and answers.
        video_root: folder that video names in the annotations are relative to.
    """

    question_file: Path
    answer_file: Path | None = None
    video_root: Path | None = None


@dataclass(frozen=True)
class EvalTask:
    """A registered benchmark.

    Attributes:
        name: registry name (`nextqa`, `msvd`, ...).
        kind: `mcq` (scored by option accuracy) or `openended` (scored by a judge or string match).
        reader: builds the items from a `TaskSource`.
        description: one line for `--help`.
        type_names: display names for question-type codes in reports.
        type_groups: named groups of question types reported together (NExT-QA causal/temporal/descriptive).
        breakdowns: `EvalItem.extra` keys that also get per-value accuracy in reports.
    """

    name: str
    kind: TaskKind
    reader: Callable[[TaskSource], list[EvalItem]]
    description: str = ""
    type_names: Mapping[str, str] = field(default_factory=dict)
    type_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    breakdowns: tuple[str, ...] = ()

    def load(
        self,
        question_file: str | os.PathLike,
        answer_file: str | os.PathLike | None = None,
        video_root: str | os.PathLike | None = None,
    ) -> list[EvalItem]:
        """Read the task's items and check that their ids are unique.

        Args:
            question_file: annotation file (see the task's reader for accepted shapes).
            answer_file: separate answer file, where the format has one.
            video_root: folder the annotation's video names are relative to.

        Returns:
            The items in annotation order.
        """
        qpath = Path(question_file)
        if not qpath.exists():
            raise FileNotFoundError(f"{self.name}: annotation file not found: {qpath}")
        apath = None if answer_file is None else Path(answer_file)
        if apath is not None and not apath.exists():
            raise FileNotFoundError(f"{self.name}: answer file not found: {apath}")
        source = TaskSource(qpath, apath, None if video_root is None else Path(video_root))
        items = self.reader(source)
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                # Items are counted in reading order; a reader may skip records (EgoSchema's unlabelled ones).
                raise AnnotationError(
                    qpath, f"item {i}", "id", f"duplicate question id {item.id!r} (first at item {seen[item.id]})"
                )
            seen[item.id] = i
        log.info("%s: %d items from %s", self.name, len(items), qpath)
        return items


_TASKS: dict[str, EvalTask] = {}
_ALIASES: dict[str, str] = {}


def register_task(
    name: str,
    kind: TaskKind,
    *,
    description: str = "",
    aliases: Iterable[str] = (),
    type_names: Mapping[str, str] | None = None,
    type_groups: Mapping[str, tuple[str, ...]] | None = None,
    breakdowns: tuple[str, ...] = (),
) -> Callable[[Callable[[TaskSource], list[EvalItem]]], Callable[[TaskSource], list[EvalItem]]]:
    """Decorator registering a reader function as benchmark task `name`.

    Args:
        name: registry name.
        kind: `mcq` or `openended`.
        description: one-line description.
        aliases: other accepted spellings (case-insensitive), e.g. MERV's dataset names.
        type_names: display names for question-type codes.
        type_groups: named groups of question types.
        breakdowns: extra per-item fields reported per value.
    """

    def wrap(reader: Callable[[TaskSource], list[EvalItem]]) -> Callable[[TaskSource], list[EvalItem]]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = EvalTask(
            name=name,
            kind=kind,
            reader=reader,
            description=description,
            type_names=dict(type_names or {}),
            type_groups=dict(type_groups or {}),
            breakdowns=breakdowns,
        )
        for alias in (name, *aliases):
            _ALIASES[_alias_key(alias)] = name
        return reader

    return wrap


def _alias_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_task(name: str) -> EvalTask:
    """Look up a task by name or alias (case, `-` and `_` are ignored: "NExT-QA" finds `nextqa`)."""
    key = _ALIASES.get(_alias_key(name))
    if key is None:
        raise KeyError(f"unknown eval task {name!r}; registered: {', '.join(sorted(_TASKS))}")
    return _TASKS[key]


def list_tasks(kind: TaskKind | None = None) -> list[str]:
    """Names of the registered tasks, optionally only those of one kind."""
    return sorted(n for n, t in _TASKS.items() if kind is None or t.kind == kind)


# ----------------------------------------------------------------------------------------------- file reading


def file_identity(path: str | os.PathLike) -> dict[str, str]:
    """Path and sha256 of an annotation file (of every file, in sorted order, for a folder)."""
    p = Path(path)
    digest = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
    return {"path": str(p.resolve()), "sha256": digest.hexdigest()}


def _object_or_rows(path: Path) -> dict[str, Any] | list[tuple[RecordLocation, dict[str, Any]]]:
    """A JSON file holding one object keyed by id, as that object; any other file as its located rows."""
    data = read_json(path) if path.suffix.lower() == ".json" else None
    return data if isinstance(data, dict) else read_rows(path)


def _segment_bounds(at: RecordLocation, value: Any, field: str) -> tuple[float | None, float | None]:
    """Clip bounds in seconds from `[start, end]` or a `"start-end"` string; NaN or empty bounds read as None."""
    if value is None or value == "":
        return None, None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        bounds = value
    else:
        m = re.fullmatch(r"\s*([-+\w.]+)\s*-\s*([-+\w.]+)\s*", str(value))
        if m is None:
            at.fail(field, f"expected [start, end] or 'start-end' seconds, got {value!r}")
        bounds = m.groups()
    start, end = (parse_number(at, b, field, required=False) for b in bounds)
    return start, end


# ------------------------------------------------------------------------------------------------- answers

_PREFIX_RE = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*")


def strip_option_prefixes(options: list[str]) -> list[str]:
    """Remove "A. " / "(B) " / "C) " prefixes when every option carries the letter of its own position.

    Options are left alone unless all of them are prefixed consistently, so an option that merely starts
    with a capital ("A. Lincoln") in an unprefixed list keeps its text.
    """
    stripped = []
    for i, opt in enumerate(options):
        m = _PREFIX_RE.match(opt)
        if m is None or m.group(1) != LETTERS[i]:
            return list(options)
        stripped.append(opt[m.end() :].strip())
    return stripped


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


AnswerKind = Literal["index", "letter", "text", "auto"]


def normalize_answer(
    value: Any, options: list[str], kind: AnswerKind, at: RecordLocation, field: str = "answer"
) -> int | None:
    """Turn an answer given as an index, index string, letter or option text into a 0-based index.

    Args:
        value: the raw answer field (None when the split is unlabelled).
        options: option texts with prefixes already removed.
        kind: what the field holds; `auto` accepts all forms, preferring an exact option-text match for strings
            that are also valid indices or letters (an option literally "2" beats index 2).
        at: the record's location, for errors.
        field: the answer's field name, for errors.

    Returns:
        The option index, or None when `value` is None.

    Raises:
        AnnotationError: the answer names no option, or several.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    n = len(options)

    def check(i: int) -> int:
        if not 0 <= i < n:
            at.fail(field, f"answer index {i} out of range for {n} options")
        return i

    if isinstance(value, bool):
        at.fail(field, f"expected an answer, got {value!r}")
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        if kind in ("letter", "text"):
            at.fail(field, f"expected a {kind} answer, got the number {value!r}")
        return check(int(value))
    if not isinstance(value, str):
        at.fail(field, f"expected an answer, got {type(value).__name__}")
    raw = value.strip()
    text_hits = [i for i, o in enumerate(options) if o == raw] or [
        i for i, o in enumerate(options) if _norm(o) == _norm(raw)
    ]
    if kind == "auto" and len(text_hits) == 1:
        return text_hits[0]
    if kind in ("index", "auto") and re.fullmatch(r"[+-]?\d+", raw):
        return check(int(raw))
    letter = re.fullmatch(r"\(?([A-Za-z])\)?\.?", raw)
    if kind in ("letter", "auto") and letter is not None:
        return check(LETTERS.index(letter.group(1).upper()))
    if kind in ("letter", "auto"):
        # "B. chase ball" style: a letter prefix followed by that option's text.
        m = _PREFIX_RE.match(raw)
        if m is not None:
            i = check(LETTERS.index(m.group(1)))
            if _norm(options[i]) == _norm(raw[m.end() :]):
                return i
    if kind in ("text", "auto"):
        if len(text_hits) == 1:
            return text_hits[0]
        if len(text_hits) > 1:
            at.fail(field, f"answer {raw!r} matches several options {text_hits}")
    at.fail(field, f"answer {raw!r} is not a valid {kind} answer for options {options}")


# ------------------------------------------------------------------------------------------------ video paths


class VideoResolver:
    """Find the file (or frame folder) a video name refers to under a root folder.

    Tries the name as given, then the name with each known extension (and optional prefixes such as
    ActivityNet's `v_`); if none exists, falls back to an index of the whole tree by file stem, built once.
    An unresolvable name still yields a path (the most likely one) so the runner can report it as missing.
    """

    def __init__(
        self, root: Path | None, prefixes: tuple[str, ...] = ("",), extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    ):
        self.root = root
        self.prefixes = prefixes
        self.extensions = extensions
        self._index: dict[str, Path | None] | None = None

    def _candidates(self, name: str, subdirs: tuple[str, ...]) -> list[Path]:
        base = self.root if self.root is not None else Path()
        out = []
        for sub in subdirs:
            folder = base / sub if sub else base
            for prefix in self.prefixes:
                stem = name if name.startswith(prefix) else prefix + name
                p = folder / stem
                out.append(p)
                if p.suffix.lower() not in self.extensions:
                    out.extend(folder / (stem + ext) for ext in self.extensions)
        return out

    def _build_index(self) -> dict[str, Path | None]:
        index: dict[str, Path | None] = {}
        if self.root is None or not self.root.is_dir():
            return index
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for fn in filenames:
                p = Path(dirpath) / fn
                if p.suffix.lower() in self.extensions:
                    # Two files with one stem make the stem ambiguous: record None, never guess.
                    index[p.stem] = None if p.stem in index else p
        return index

    def resolve(self, name: str, subdirs: tuple[str, ...] = ("",)) -> str:
        """Path of video `name`, searched under `root/<subdir>` for each subdir."""
        candidates = self._candidates(name, subdirs)
        for p in candidates:
            if p.exists():
                return str(p)
        if self.root is not None:
            if self._index is None:
                self._index = self._build_index()
            stem = Path(name).stem if Path(name).suffix.lower() in self.extensions else Path(name).name
            for prefix in self.prefixes:
                key = stem if stem.startswith(prefix) else prefix + stem
                hit = self._index.get(key)
                if hit is not None:
                    return str(hit)
        first = next((p for p in candidates if p.suffix.lower() in self.extensions), candidates[0])
        return str(first)


# ------------------------------------------------------------------------------------------------ MCQ readers


def _option_columns(at: RecordLocation, rec: Mapping[str, Any], prefix: str, required: bool = True) -> list[str]:
    """Options stored one per field, `<prefix>0`, `<prefix>1`, ... up to the first missing one."""
    opts: list[str] = []
    while (option := get_field(at, rec, f"{prefix}{len(opts)}", "text", required=False)) is not None:
        opts.append(option)
    if required and len(opts) < 2:
        at.fail(f"{prefix}0", f"expected option fields {prefix}0, {prefix}1, ...")
    return opts


def _options_list(at: RecordLocation, value: Any, field: str) -> list[str]:
    """Options stored as one list (or a JSON string of one, as some CSV exports do), letter prefixes removed."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            at.fail(field, "expected a list of options")
    if not isinstance(value, list) or not value:
        at.fail(field, "expected a non-empty list of options")
    opts = [check_value(at, v, "text", f"{field}[{j}]") for j, v in enumerate(value)]
    if len(opts) > len(LETTERS):
        at.fail(field, f"{len(opts)} options is more than {len(LETTERS)}")
    return strip_option_prefixes(opts)


def _mcq_item(
    id: str, video: str, question: str, options: list[str], answer_index: int | None, **fields: Any
) -> EvalItem:
    """A multiple-choice item; the reference answer text is the correct option's."""
    answer = None if answer_index is None else options[answer_index]
    return EvalItem(id, video, question, options, answer_index, answer, **fields)


def _nextqa_video_map(source: TaskSource) -> dict[str, str]:
    """NExT-QA's `map_vid_vidorID.json` (video id → "<dir>/<id>"), from the answer file slot or next to the data."""
    candidates = [source.answer_file] if source.answer_file is not None else []
    for folder in (source.question_file.parent, source.video_root):
        if folder is not None:
            candidates.append(folder / "map_vid_vidorID.json")
    for c in candidates:
        if c is not None and c.is_file():
            data = read_json(c)
            if not isinstance(data, dict):
                raise AnnotationError(c, "top level", None, "expected an object mapping video id to '<dir>/<id>'")
            return {str(k): str(v) for k, v in data.items()}
    return {}


@register_task(
    "nextqa",
    "mcq",
    description=f"NExT-QA multiple choice (CSV: {','.join(NEXTQA_COLUMNS)})",
    aliases=("next-qa", "NExTQA"),
    type_groups=NEXTQA_TYPE_GROUPS,
)
def read_nextqa(source: TaskSource) -> list[EvalItem]:
    """NExT-QA CSV; the answer file slot may name `map_vid_vidorID.json` (found automatically otherwise)."""
    vmap = _nextqa_video_map(source)
    resolver = VideoResolver(source.video_root)
    items = []
    for at, rec in read_rows(source.question_file):
        video = get_field(at, rec, "video", "text")
        options = _option_columns(at, rec, "a")
        items.append(
            _mcq_item(
                id=f"{video}_{get_field(at, rec, 'qid', 'text')}",
                video=resolver.resolve(vmap.get(video, video)),
                question=get_field(at, rec, "question", "text"),
                options=options,
                answer_index=normalize_answer(rec.get("answer"), options, "index", at),
                question_type=rec.get("type") or None,
            )
        )
    return items


@register_task(
    "perceptiontest",
    "mcq",
    description="Perception Test MC (all_valid.json keyed by video id, or the flattened list form)",
    aliases=("perception", "perception_test"),
    breakdowns=("reasoning",),
)
def read_perceptiontest(source: TaskSource) -> list[EvalItem]:
    """Perception Test: `{video_id: {mc_question: [...]}}` or a flat list with `video_name`/`question_id`."""
    path = source.question_file
    data = _object_or_rows(path)
    resolver = VideoResolver(source.video_root)
    flat: list[tuple[RecordLocation, str, str, Mapping[str, Any]]] = []  # (location, video, id, question record)
    if isinstance(data, dict):
        for vid, entry in data.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("mc_question", []), list):
                RecordLocation(path, f"record {vid}").fail(
                    "mc_question", "expected an object with a 'mc_question' list"
                )
            video_id = str((entry.get("metadata") or {}).get("video_id") or vid)
            for j, q in enumerate(entry.get("mc_question", [])):
                at = RecordLocation(path, f"record {vid}.mc_question[{j}]")
                if not isinstance(q, dict):
                    at.fail(None, f"expected an object, got {type(q).__name__}")
                flat.append((at, video_id, f"{video_id}_{q.get('id', j)}", q))
    else:
        for i, (at, rec) in enumerate(data):
            video_id = get_field(at, rec, ("video_name", "video_id", "video"), "text")
            qid = get_field(at, rec, ("question_id", "id"), "text", required=False)
            flat.append((at, video_id, f"{video_id}_{i}" if qid is None else qid, rec))
    items = []
    for at, video_id, qid, q in flat:
        options = _options_list(at, get_field(at, q, "options"), "options")
        items.append(
            _mcq_item(
                id=qid,
                video=resolver.resolve(video_id),
                question=get_field(at, q, "question", "text"),
                options=options,
                answer_index=normalize_answer(q.get("answer_id"), options, "index", at, "answer_id"),
                question_type=q.get("area") or None,
                extra={k: q[k] for k in ("reasoning", "tag") if k in q},
            )
        )
    return items


@register_task(
    "mvbench",
    "mcq",
    description="MVBench (one JSON per sub-task, or a folder of them; answer = option text)",
    aliases=("mv-bench",),
)
def read_mvbench(source: TaskSource) -> list[EvalItem]:
    """MVBench: `json/<task>.json` arrays of `{video, question, candidates, answer, start?, end?}`.

    The question-type of each item is its sub-task (the file's stem). Videos are looked up under the
    sub-task's usual source folder inside the video root, then in the video root itself.
    """
    q = source.question_file
    files = sorted(q.glob("*.json")) if q.is_dir() else [q]
    if not files:
        raise AnnotationError(q, None, None, "folder holds no .json files")
    resolver = VideoResolver(source.video_root)
    items = []
    for path in files:
        subtask = path.stem
        subdirs = (MVBENCH_VIDEO_DIRS[subtask], "") if subtask in MVBENCH_VIDEO_DIRS else ("",)
        for i, (at, rec) in enumerate(read_rows(path)):
            options = _options_list(at, get_field(at, rec, ("candidates", "options")), "candidates")
            items.append(
                _mcq_item(
                    id=f"{subtask}_{i}",
                    video=resolver.resolve(get_field(at, rec, "video", "text"), subdirs),
                    question=get_field(at, rec, "question", "text"),
                    options=options,
                    answer_index=normalize_answer(rec.get("answer"), options, "text", at),
                    question_type=subtask,
                    start=parse_number(at, rec.get("start"), "start", required=False),
                    end=parse_number(at, rec.get("end"), "end", required=False),
                )
            )
    return items


@register_task(
    "egoschema",
    "mcq",
    description="EgoSchema (questions.json with 'option 0'..'option 4'; answers in subset_answers.json)",
)
def read_egoschema(source: TaskSource) -> list[EvalItem]:
    """EgoSchema `questions.json` (or the list form with `option` / `answer`); with an answer file
    (`{q_uid: int}`), only the questions it labels are kept, which is the public subset evaluation."""
    path = source.question_file
    answers: dict[str, tuple[RecordLocation, Any]] | None = None
    if source.answer_file is not None:
        raw = _object_or_rows(source.answer_file)
        if isinstance(raw, dict):
            answers = {str(k): (RecordLocation(source.answer_file, f"record {k}"), v) for k, v in raw.items()}
        else:  # tolerate [{"q_uid": ..., "answer": ...}]
            answers = {get_field(at, r, "q_uid", "text"): (at, r.get("answer")) for at, r in raw}
    resolver = VideoResolver(source.video_root)
    items = []
    for at, rec in read_rows(path):
        uid = get_field(at, rec, ("q_uid", "video_idx", "question_id"), "text")
        if answers is not None and uid not in answers:
            continue
        options = _options_list(at, rec["option"], "option") if "option" in rec else _option_columns(at, rec, "option ")
        if answers is not None:
            answer_at, answer = answers[uid]
            answer_index = normalize_answer(answer, options, "index", answer_at)
        else:
            answer_index = normalize_answer(rec.get("answer"), options, "auto", at)
        items.append(
            _mcq_item(
                id=uid,
                video=resolver.resolve(str(rec.get("video_idx") or uid)),
                question=get_field(at, rec, "question", "text"),
                options=options,
                answer_index=answer_index,
            )
        )
    if answers is not None and len(items) < len(answers):
        missing = sorted(set(answers) - {it.id for it in items})
        raise AnnotationError(
            source.answer_file,
            None,
            None,
            f"{len(missing)} answered q_uid(s) have no question in {path}, e.g. {missing[:3]}",
        )
    return items


@dataclass(frozen=True)
class _Fields:
    """Field names of an MCQ format whose records each hold one complete question."""

    id: str
    video: str | tuple[str, ...]
    options: str  # a list field, or the prefix of numbered fields when `numbered_options`
    answer: str
    answer_kind: AnswerKind
    question: str | None = None  # None: every item asks `fixed_question`
    fixed_question: str = ""
    numbered_options: bool = False
    segment: str | None = None  # clip bounds, `[start, end]` or "start-end"
    question_type: str | None = None
    extra: tuple[str, ...] = ()
    video_subdirs: tuple[str, ...] = ("",)


def _read_fields(source: TaskSource, fields: _Fields) -> list[EvalItem]:
    resolver = VideoResolver(source.video_root)
    items = []
    for at, rec in read_rows(source.question_file):
        if fields.numbered_options:
            options = _option_columns(at, rec, fields.options)
        else:
            options = _options_list(at, get_field(at, rec, fields.options), fields.options)
        start, end = _segment_bounds(at, rec.get(fields.segment), fields.segment) if fields.segment else (None, None)
        items.append(
            _mcq_item(
                id=get_field(at, rec, fields.id, "text"),
                video=resolver.resolve(get_field(at, rec, fields.video, "text"), fields.video_subdirs),
                question=get_field(at, rec, fields.question, "text") if fields.question else fields.fixed_question,
                options=options,
                answer_index=normalize_answer(rec.get(fields.answer), options, fields.answer_kind, at, fields.answer),
                question_type=(rec.get(fields.question_type) or None) if fields.question_type else None,
                start=start,
                end=end,
                extra={k: rec[k] for k in fields.extra if rec.get(k) is not None},
            )
        )
    return items


_VLEP_FIELDS = _Fields(
    id="example_id",
    video="vid_name",
    options="events",
    answer="answer",
    answer_kind="index",
    fixed_question=VLEP_QUESTION,
    segment="ts",
)
_TVQA_FIELDS = _Fields(
    id="qid",
    video="vid_name",
    question="q",
    options="a",
    numbered_options=True,
    answer="answer_idx",
    answer_kind="index",
    segment="ts",
    question_type="show_name",
)
_VIDEOMME_FIELDS = _Fields(
    id="question_id",
    video=("videoID", "video_id"),
    question="question",
    options="options",
    answer="answer",
    answer_kind="letter",
    question_type="task_type",
    extra=("duration", "domain", "sub_category"),
    video_subdirs=("", "data"),
)


@register_task(
    "vlep",
    "mcq",
    description="VLEP future-event prediction (JSONL: example_id, vid_name, ts, events, answer)",
)
def read_vlep(source: TaskSource) -> list[EvalItem]:
    """VLEP JSONL; the two `events` are the options and `ts` bounds the premise clip."""
    return _read_fields(source, _VLEP_FIELDS)


@register_task(
    "tvqa",
    "mcq",
    description="TVQA (JSONL: qid, q, a0..a4, answer_idx, ts 'start-end', vid_name, show_name)",
)
def read_tvqa(source: TaskSource) -> list[EvalItem]:
    """TVQA JSONL; `ts` ("1.21-8.49", NaN bounds allowed) gives the clip segment; types are shows."""
    return _read_fields(source, _TVQA_FIELDS)


@register_task(
    "videomme",
    "mcq",
    description="Video-MME (parquet/JSON/JSONL: videoID, question_id, task_type, options 'A. ...', answer letter)",
    aliases=("video-mme",),
    breakdowns=("duration", "domain"),
)
def read_videomme(source: TaskSource) -> list[EvalItem]:
    """Video-MME; options lose their "A. " prefixes, letter answers become indices; videos `<videoID>.mp4`
    (also searched under `data/`)."""
    return _read_fields(source, _VIDEOMME_FIELDS)


# Alternative field names accepted by the generic readers.
_ID_KEYS = ("question_id", "id", "qid", "q_uid", "example_id")
_VIDEO_KEYS = ("video_name", "video", "video_id", "vid_name", "videoID", "video_path")
_QUESTION_KEYS = ("question", "q", "Q")
_ANSWER_TEXT_KEYS = ("answer", "A", "a")
_OPTION_LIST_KEYS = ("options", "candidates", "choices", "option")
_TYPE_KEYS = ("type", "question_type", "task_type")


def _generic_options(at: RecordLocation, rec: Mapping[str, Any]) -> list[str]:
    for key in _OPTION_LIST_KEYS:
        if rec.get(key) not in (None, "", []):
            return _options_list(at, rec[key], key)
    for prefix in ("a", "option ", "option_"):
        opts = _option_columns(at, rec, prefix, required=False)
        if len(opts) >= 2:
            return opts
    at.fail("/".join(_OPTION_LIST_KEYS), "no options found")


def _generic_answer(at: RecordLocation, rec: Mapping[str, Any], options: list[str]) -> int | None:
    for key, kind in (("answer_id", "index"), ("answer_idx", "index"), ("label", "index"), ("answer", "auto")):
        if rec.get(key) not in (None, ""):
            return normalize_answer(rec[key], options, kind, at, key)
    return None


def _load_answer_table(path: Path) -> dict[str, tuple[RecordLocation, dict[str, Any]]]:
    """Answer records keyed by `question_id` (value: location, record); duplicates are an error."""
    table: dict[str, tuple[RecordLocation, dict[str, Any]]] = {}
    for at, rec in read_rows(path):
        qid = get_field(at, rec, _ID_KEYS, "text")
        if qid in table:
            at.fail("question_id", f"duplicate question_id {qid!r} (first at {table[qid][0].where})")
        table[qid] = (at, rec)
    return table


def _joined_rows(
    source: TaskSource, answers: Mapping[str, tuple[RecordLocation, dict[str, Any]]] | None
) -> Iterator[tuple[RecordLocation, dict[str, Any], str, tuple[RecordLocation, dict[str, Any]] | None]]:
    """Question rows with their id (the row index when the file has none) and the answer record with that
    `question_id`, when there is an answer table (joined by id, never by position)."""
    for i, (at, rec) in enumerate(read_rows(source.question_file)):
        qid = get_field(at, rec, _ID_KEYS, "text", required=answers is not None)
        qid = str(i) if qid is None else qid
        if answers is not None and qid not in answers:
            at.fail("question_id", f"no answer with question_id {qid!r} in {source.answer_file}")
        yield at, rec, qid, None if answers is None else answers[qid]


@register_task(
    "mcq",
    "mcq",
    description="any multiple-choice file: one file with options and answers, or a question file + answer file "
    "joined by question_id (MERV's test_q/test_a form)",
)
def read_generic_mcq(source: TaskSource) -> list[EvalItem]:
    """Generic MCQ reader: accepts the common field names (`question_id`/`id`, `video_name`/`video`,
    `options`/`candidates`/`a0..`, `answer_id`/`answer`) and joins a separate answer file by id."""
    answers = None if source.answer_file is None else _load_answer_table(source.answer_file)
    resolver = VideoResolver(source.video_root)
    items = []
    for at, rec, qid, answer in _joined_rows(source, answers):
        merged = dict(rec)
        if answer is not None:
            merged.update({k: v for k, v in answer[1].items() if k not in merged or k.startswith("answer")})
        options = _generic_options(at, merged)
        start = end = None
        time = merged.get("time")
        if isinstance(time, (list, tuple)) and len(time) == 2:
            start, end = _segment_bounds(at, time, "time")
        if merged.get("start") is not None:
            start = parse_number(at, merged["start"], "start", required=False)
        if merged.get("end") is not None:
            end = parse_number(at, merged["end"], "end", required=False)
        qtype = get_field(at, merged, _TYPE_KEYS, required=False)
        items.append(
            _mcq_item(
                id=qid,
                video=resolver.resolve(get_field(at, merged, _VIDEO_KEYS, "text")),
                question=get_field(at, merged, _QUESTION_KEYS, "text"),
                options=options,
                answer_index=_generic_answer(at, merged, options),
                question_type=None if qtype is None else str(qtype),
                start=start,
                end=end,
            )
        )
    return items


# ------------------------------------------------------------------------------------------ open-ended readers


def _read_openended(source: TaskSource, prefixes: tuple[str, ...] = ("",)) -> list[EvalItem]:
    """Questions and answers joined by `question_id` (never by position: the two lists may differ in order).

    With no answer file, the question file itself must carry the answers (`answer` or `A`).
    """
    answers = None if source.answer_file is None else _load_answer_table(source.answer_file)
    resolver = VideoResolver(source.video_root, prefixes=prefixes)
    items = []
    for at, rec, qid, joined in _joined_rows(source, answers):
        answer_at, answer_rec = joined if joined is not None else (at, rec)
        qtype = answer_rec.get("type", rec.get("type"))
        items.append(
            EvalItem(
                id=qid,
                video=resolver.resolve(get_field(at, rec, _VIDEO_KEYS, "text")),
                question=get_field(at, rec, _QUESTION_KEYS, "text"),
                answer=get_field(answer_at, answer_rec, _ANSWER_TEXT_KEYS, "text"),
                question_type=None if qtype is None or qtype == "" else str(qtype),
            )
        )
    if answers is not None:
        unused = sorted(set(answers) - {it.id for it in items})
        if unused:
            log.warning(
                "%s: %d answers have no question in %s (e.g. %s)",
                source.answer_file,
                len(unused),
                source.question_file,
                unused[:3],
            )
    return items


def _openended_task(name: str, description: str, aliases: tuple[str, ...] = ()) -> None:
    @register_task(name, "openended", description=description, aliases=aliases)
    def reader(source: TaskSource) -> list[EvalItem]:
        return _read_openended(source)


_openended_task("msvd", "MSVD-QA (test_q.json + test_a.json joined by question_id)", ("msvd-qa", "msvd_qa"))
_openended_task("msrvtt", "MSRVTT-QA (test_q.json + test_a.json joined by question_id)", ("msrvtt-qa", "msrvtt_qa"))
_openended_task("tgif", "TGIF-QA FrameQA (test_q.json + test_a.json joined by question_id)", ("tgif-qa", "tgif_qa"))
_openended_task("openended", "any open-ended QA file pair joined by question_id, or one file with answers")


@register_task(
    "activitynet",
    "openended",
    description="ActivityNet-QA (test_q.json + test_a.json; videos named v_<video_name>)",
    aliases=("activitynet-qa", "activitynet_qa", "anet"),
    type_names=ACTIVITYNET_TYPE_NAMES,
)
def read_activitynet(source: TaskSource) -> list[EvalItem]:
    """ActivityNet-QA: like MSVD-QA, with video files named `v_<video_name>` (the bare name is tried too)."""
    return _read_openended(source, prefixes=("v_", ""))


# --------------------------------------------------------------------------------------------------- prompts

OPENENDED_PROMPT_VERSION = "openended-v1"


def build_mcq_prompt(item: EvalItem, video_token: str = "<video>") -> str:
    """The human message for generative MCQ: the question, lettered options, and the answer instruction."""
    if not item.options:
        raise ValueError(f"item {item.id!r} has no options")
    letters = option_letters(len(item.options))
    lines = [f"{letter}. {opt}" for letter, opt in zip(letters, item.options, strict=True)]
    return f"{video_token}\n{item.question}\n" + "\n".join(lines) + f"\n{MCQ_INSTRUCTION}"


def build_openended_prompt(item: EvalItem, video_token: str = "<video>") -> str:
    """The human message for open-ended QA: the question after the video tag."""
    return f"{video_token}\n{item.question}"
