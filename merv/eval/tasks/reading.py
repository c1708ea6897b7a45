"""Reading helpers shared by the benchmark readers: file identity, option lists, answers, video paths, joins.

Every helper fails with the data layer's `AnnotationError` (file, record index, field) on malformed input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from merv.data.formats import (
    RecordLocation,
    check_value,
    get_field,
    parse_number,
    read_json,
    read_rows,
)
from merv.eval.parsing import LETTERS
from merv.eval.tasks.base import EvalItem, TaskSource

log = logging.getLogger(__name__)

#: Extensions tried, in order, when an annotation names a video without one.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".gif", ".webm")


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


def object_or_rows(path: Path) -> dict[str, Any] | list[tuple[RecordLocation, dict[str, Any]]]:
    """A JSON file holding one object keyed by id, as that object; any other file as its located rows."""
    data = read_json(path) if path.suffix.lower() == ".json" else None
    return data if isinstance(data, dict) else read_rows(path)


def segment_bounds(at: RecordLocation, value: Any, field: str) -> tuple[float | None, float | None]:
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


def answer_option_index(
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


def option_columns(at: RecordLocation, rec: Mapping[str, Any], prefix: str, required: bool = True) -> list[str]:
    """Options stored one per field, `<prefix>0`, `<prefix>1`, ... up to the first missing one."""
    opts: list[str] = []
    while (option := get_field(at, rec, f"{prefix}{len(opts)}", "text", required=False)) is not None:
        opts.append(option)
    if required and len(opts) < 2:
        at.fail(f"{prefix}0", f"expected option fields {prefix}0, {prefix}1, ...")
    return opts


def options_list(at: RecordLocation, value: Any, field: str) -> list[str]:
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


def mcq_item(
    id: str, video: str, question: str, options: list[str], answer_index: int | None, **fields: Any
) -> EvalItem:
    """A multiple-choice item; the reference answer text is the correct option's."""
    answer = None if answer_index is None else options[answer_index]
    return EvalItem(id, video, question, options, answer_index, answer, **fields)


@dataclass(frozen=True)
class RecordFields:
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


def read_record_fields(source: TaskSource, fields: RecordFields) -> list[EvalItem]:
    resolver = VideoResolver(source.video_root)
    items = []
    for at, rec in read_rows(source.question_file):
        if fields.numbered_options:
            options = option_columns(at, rec, fields.options)
        else:
            options = options_list(at, get_field(at, rec, fields.options), fields.options)
        start, end = segment_bounds(at, rec.get(fields.segment), fields.segment) if fields.segment else (None, None)
        items.append(
            mcq_item(
                id=get_field(at, rec, fields.id, "text"),
                video=resolver.resolve(get_field(at, rec, fields.video, "text"), fields.video_subdirs),
                question=get_field(at, rec, fields.question, "text") if fields.question else fields.fixed_question,
                options=options,
                answer_index=answer_option_index(
                    rec.get(fields.answer), options, fields.answer_kind, at, fields.answer
                ),
                question_type=(rec.get(fields.question_type) or None) if fields.question_type else None,
                start=start,
                end=end,
                extra={k: rec[k] for k in fields.extra if rec.get(k) is not None},
            )
        )
    return items


# Alternative field names accepted by the generic readers.
ID_KEYS = ("question_id", "id", "qid", "q_uid", "example_id")
VIDEO_KEYS = ("video_name", "video", "video_id", "vid_name", "videoID", "video_path")
QUESTION_KEYS = ("question", "q", "Q")
ANSWER_KEYS = ("answer", "A", "a")
OPTION_LIST_KEYS = ("options", "candidates", "choices", "option")
TYPE_KEYS = ("type", "question_type", "task_type")


def load_answer_table(path: Path) -> dict[str, tuple[RecordLocation, dict[str, Any]]]:
    """Answer records keyed by `question_id` (value: location, record); duplicates are an error."""
    table: dict[str, tuple[RecordLocation, dict[str, Any]]] = {}
    for at, rec in read_rows(path):
        qid = get_field(at, rec, ID_KEYS, "text")
        if qid in table:
            at.fail("question_id", f"duplicate question_id {qid!r} (first at {table[qid][0].where})")
        table[qid] = (at, rec)
    return table


def joined_rows(
    source: TaskSource, answers: Mapping[str, tuple[RecordLocation, dict[str, Any]]] | None
) -> Iterator[tuple[RecordLocation, dict[str, Any], str, tuple[RecordLocation, dict[str, Any]] | None]]:
    """Question rows with their id (the row index when the file has none) and the answer record with that
    `question_id`, when there is an answer table (joined by id, never by position)."""
    for i, (at, rec) in enumerate(read_rows(source.question_file)):
        qid = get_field(at, rec, ID_KEYS, "text", required=answers is not None)
        qid = str(i) if qid is None else qid
        if answers is not None and qid not in answers:
            at.fail("question_id", f"no answer with question_id {qid!r} in {source.answer_file}")
        yield at, rec, qid, None if answers is None else answers[qid]


def read_question_answer_pairs(source: TaskSource, prefixes: tuple[str, ...] = ("",)) -> list[EvalItem]:
    """Questions and answers joined by `question_id` (never by position: the two lists may differ in order).

    With no answer file, the question file itself must carry the answers (`answer` or `A`).
    """
    answers = None if source.answer_file is None else load_answer_table(source.answer_file)
    resolver = VideoResolver(source.video_root, prefixes=prefixes)
    items = []
    for at, rec, qid, joined in joined_rows(source, answers):
        answer_at, answer_rec = joined if joined is not None else (at, rec)
        qtype = answer_rec.get("type", rec.get("type"))
        items.append(
            EvalItem(
                id=qid,
                video=resolver.resolve(get_field(at, rec, VIDEO_KEYS, "text")),
                question=get_field(at, rec, QUESTION_KEYS, "text"),
                answer=get_field(answer_at, answer_rec, ANSWER_KEYS, "text"),
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
