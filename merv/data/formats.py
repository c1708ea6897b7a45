"""Readers for public video-text annotation formats, all normalised to one record shape.

A record is `{"id": str, "video": str | None, "conversations": [{"from": "human"|"gpt", "value": str}, ...],
**extra_fields}` with the media placeholder written `<video>` in the first human turn. Classification
datasets add `label` and `label_id`; MCQ and open-ended QA sets add their question fields.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from merv.data.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

logger = logging.getLogger(__name__)

VIDEO_TOKEN = "<video>"
"""The placeholder every reader writes where the video goes in the first human turn."""

OMNIFALL_CLASSES = (
    "walk",
    "fall",
    "fallen",
    "sit_down",
    "sitting",
    "lie_down",
    "lying",
    "stand_up",
    "standing",
    "other",
    "kneel_down",
    "kneeling",
    "squat_down",
    "squatting",
    "crawl",
    "jump",
)
"""OmniFall's 16 class names, indexed by the integer ids used in its label CSVs."""

OMNIFALL_COLUMNS = ("path", "label", "start", "end", "subject", "cam", "dataset")
NEXTQA_COLUMNS = ("video", "question", "answer", "a0", "a1", "a2", "a3", "a4")
MCQ_LETTERS = "ABCDEFGH"
MCQ_POST_PROMPT = "Answer with the option's letter from the given choices directly."

_PLACEHOLDER = re.compile(r"<image>|<video>")
# Role spellings accepted in conversation files (LLaVA uses human/gpt, chat-style exports user/assistant).
_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "model": "gpt"}
_SPLIT_DIRS = ("train", "val", "validation", "test")
_OPEN_ENDED_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class AnnotationError(ValueError):
    """A malformed annotation file: names the file, the record (index or line) and the field at fault.

    Args:
        path: the annotation file.
        where: the record, e.g. `"record 3"` or `"line 12"`.
        field: the field at fault (None when the record as a whole is broken, e.g. invalid JSON).
        reason: what is wrong.
    """

    def __init__(self, path: str | os.PathLike, where: str, field: str | None, reason: str) -> None:
        self.path = os.fspath(path)
        self.where = where
        self.field = field
        self.reason = reason
        at = f"{where}, field '{field}'" if field else where
        super().__init__(f"{self.path}: {at}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.where, self.field, self.reason))


# ---- reading context and field checks ------------------------------------------------------------


@dataclass
class _Context:
    """What a record converter needs: where the file is, where media live, and how to complain."""

    path: Path
    video_root: Path
    options: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    def fail(self, where: str, name: str | None, reason: str) -> NoReturn:
        raise AnnotationError(self.path, where, name, reason)

    def resolve(self, media: str) -> str:
        return str(self.video_root / media) if not os.path.isabs(media) else media


_KINDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "str": (str, "a string"),
    "int": (int, "an integer"),
    "number": ((int, float), "a number"),
    "list": (list, "a list"),
    "dict": (dict, "an object"),
}


def _get(ctx: _Context, where: str, record: dict, key: str, kind: str, *, required: bool = True, name: str = ""):
    """Typed field access; missing or mistyped fields raise AnnotationError naming `name` (or `key`)."""
    name = name or key
    if key not in record or record[key] is None:
        if required:
            ctx.fail(where, name, "missing required field")
        return None
    value = record[key]
    types, label = _KINDS[kind]
    if not isinstance(value, types) or (kind in ("int", "number") and isinstance(value, bool)):
        ctx.fail(where, name, f"expected {label}, got {type(value).__name__} {value!r:.60}")
    return value


def _parse_number(ctx: _Context, where: str, name: str, text: str, kind: type) -> Any:
    """A CSV cell as a finite float, or as an integer (`3` and `3.0` both read as 3)."""
    expected = "a number" if kind is float else "an integer"
    try:
        value = float(text)
    except ValueError:
        ctx.fail(where, name, f"expected {expected}, got {text!r}")
    if not math.isfinite(value) or (kind is int and not value.is_integer()):
        ctx.fail(where, name, f"expected {expected}, got {text!r}")
    return int(value) if kind is int else value


def _record_id(ctx: _Context, where: str, record: dict, index: int) -> str:
    value = record.get("id")
    if value is None:
        return f"{ctx.path.stem}-{index}"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        ctx.fail(where, "id", f"expected a string or integer, got {type(value).__name__}")
    return str(value)


def _media(ctx: _Context, where: str, record: dict) -> str | None:
    """The record's video (or image, a one-frame video) resolved against the video root; None if text-only."""
    found = [key for key in ("video", "image") if record.get(key) not in (None, "", [])]
    if len(found) > 1:
        ctx.fail(where, "image", "records with both a video and an image are not supported")
    if not found:
        return None
    key = found[0]
    value = record[key]
    if isinstance(value, list):
        if len(value) != 1:
            ctx.fail(where, key, f"expected one file, got a list of {len(value)}")
        value = value[0]
    if not isinstance(value, str):
        ctx.fail(where, key, f"expected a file path string, got {type(value).__name__}")
    return ctx.resolve(value)


def _conversations(ctx: _Context, where: str, turns: Any, has_media: bool) -> list[dict[str, str]]:
    """Validate turns, normalise role names and the placeholder (`<image>` -> `<video>`, first human turn)."""
    if not isinstance(turns, list):
        ctx.fail(where, "conversations", f"expected a list, got {type(turns).__name__}")
    if not turns:
        ctx.fail(where, "conversations", "no turns")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            ctx.fail(where, f"conversations[{i}]", f"expected an object, got {type(turn).__name__}")
        role = _get(ctx, where, turn, "from", "str", name=f"conversations[{i}].from")
        if role.lower() not in _ROLES:
            ctx.fail(where, f"conversations[{i}].from", f"unknown role {role!r}; expected one of {sorted(_ROLES)}")
        value = _get(ctx, where, turn, "value", "str", name=f"conversations[{i}].value")
        out.append({"from": _ROLES[role.lower()], "value": value})
    first_human = next((i for i, t in enumerate(out) if t["from"] == "human"), None)
    if first_human is None:
        ctx.fail(where, "conversations", "no human turn")
    for i, turn in enumerate(out):
        tags = len(_PLACEHOLDER.findall(turn["value"]))
        if tags and not has_media:
            ctx.fail(where, f"conversations[{i}].value", "has a media placeholder but the record has no video or image")
        if tags and i != first_human:
            ctx.fail(where, f"conversations[{i}].value", "media placeholder outside the first human turn")
        if tags > 1:
            ctx.fail(where, f"conversations[{i}].value", f"{tags} media placeholders; one video per record")
    if has_media:
        value = out[first_human]["value"]
        value = _PLACEHOLDER.sub(VIDEO_TOKEN, value) if _PLACEHOLDER.search(value) else f"{VIDEO_TOKEN}\n{value}"
        out[first_human]["value"] = value
    return out


def _segment(ctx: _Context, where: str, record: dict) -> None:
    """Optional clip bounds in seconds must be numbers with end >= start."""
    start = _get(ctx, where, record, "start", "number", required=False)
    end = _get(ctx, where, record, "end", "number", required=False)
    if start is not None and end is not None and end < start:
        ctx.fail(where, "end", f"segment end {end} is before its start {start}")


def _classification_conversation(label: str, classes: Iterable[str]) -> list[dict[str, str]]:
    allowed = ", ".join(classes)
    question = f"{VIDEO_TOKEN}\nWhich action does the person in the video perform? Answer with one of: {allowed}."
    return [{"from": "human", "value": question}, {"from": "gpt", "value": label}]


def normalize_label(name: str) -> str:
    """Class-name normalisation shared by all classification readers: lower-case, spaces/hyphens -> `_`."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


# ---- row sources ---------------------------------------------------------------------------------


def _json_rows(path: Path) -> list[tuple[str, Any]]:
    """`(where, object)` pairs from a JSON array (`record i`) or JSON Lines (`line n`) file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            # A `.json` file holding one object per line is JSON Lines under the wrong suffix.
            if not (e.msg == "Extra data" and text.lstrip().startswith("{")):
                raise AnnotationError(
                    path, f"line {e.lineno} column {e.colno}", None, f"invalid JSON: {e.msg}"
                ) from None
        else:
            if not isinstance(data, list):
                raise AnnotationError(
                    path, "top level", None, f"expected a JSON array of records, got {type(data).__name__}"
                )
            return [(f"record {i}", obj) for i, obj in enumerate(data)]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise AnnotationError(path, f"line {number} column {e.colno}", None, f"invalid JSON: {e.msg}") from None
    return rows


def _csv_rows(path: Path, required: Iterable[str] = ()) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """Header and `(where, row)` pairs of a CSV file with a header line; required columns are checked."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for column in required:
            if column not in header:
                raise AnnotationError(path, "line 1 (header)", column, f"missing column; the header is {header}")
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise AnnotationError(
                    path,
                    f"line {reader.line_num}",
                    None,
                    f"{len(header) + len(row[None])} cells, header has {len(header)}",
                )
            rows.append((f"line {reader.line_num}", {k: (v or "").strip() for k, v in row.items()}))
    return header, rows


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return [h.strip() for h in next(csv.reader(f), [])]


# ---- record converters (one per format) ----------------------------------------------------------


def _convert_conversation(ctx: _Context, where: str, record: dict, index: int) -> dict:
    """LLaVA / Video-LLaVA / Video-ChatGPT / LLaVA-Video: `conversations` plus optional `video`/`image`."""
    video = _media(ctx, where, record)
    conversations = _conversations(ctx, where, _get(ctx, where, record, "conversations", "list"), video is not None)
    _segment(ctx, where, record)
    extra = {k: v for k, v in record.items() if k not in ("id", "video", "image", "conversations")}
    return {"id": _record_id(ctx, where, record, index), "video": video, "conversations": conversations, **extra}


def _convert_qa(ctx: _Context, where: str, record: dict, index: int) -> dict:
    """Video-LLaMA / VideoChat: `video` (or `image`) with `QA: [{q, a, i?}]`; an empty `q` uses the instruction."""
    video = _media(ctx, where, record)
    qa = _get(ctx, where, record, "QA", "list")
    if not qa:
        ctx.fail(where, "QA", "no question-answer pairs")
    turns = []
    for i, pair in enumerate(qa):
        if not isinstance(pair, dict):
            ctx.fail(where, f"QA[{i}]", f"expected an object, got {type(pair).__name__}")
        question = _get(ctx, where, pair, "q", "str", name=f"QA[{i}].q")
        answer = _get(ctx, where, pair, "a", "str", name=f"QA[{i}].a")
        instruction = _get(ctx, where, pair, "i", "str", required=False, name=f"QA[{i}].i")
        # Caption data leaves `q` empty and puts the request in the instruction.
        turns.append({"from": "human", "value": question or instruction or "Describe the video."})
        turns.append({"from": "gpt", "value": answer})
    _segment(ctx, where, record)
    extra = {k: v for k, v in record.items() if k not in ("id", "video", "image", "QA")}
    if isinstance(qa[0], dict) and qa[0].get("i"):
        extra.setdefault("instruction", qa[0]["i"])
    conversations = _conversations(ctx, where, turns, video is not None)
    return {"id": _record_id(ctx, where, record, index), "video": video, "conversations": conversations, **extra}


def structured_caption_prompt(keys: Iterable[str]) -> str:
    """The request paired with a `metadata.jsonl` answer: a JSON object with exactly these keys."""
    keys = list(keys)
    if not keys:
        return "Describe this video as a JSON object."
    return "Describe this video as a single-line JSON object with the keys: " + ", ".join(keys) + "."


def _convert_metadata(ctx: _Context, where: str, record: dict, index: int) -> dict:
    """`metadata.jsonl` structured captions: the answer is the one-line JSON of every field but `video`."""
    video = ctx.resolve(_get(ctx, where, record, "video", "str"))
    fields = {k: v for k, v in record.items() if k != "video"}
    conversations = [
        {"from": "human", "value": f"{VIDEO_TOKEN}\n{structured_caption_prompt(fields)}"},
        {"from": "gpt", "value": json.dumps(fields, ensure_ascii=False)},
    ]
    return {**fields, "id": f"{ctx.path.stem}-{index}", "video": video, "conversations": conversations}


def _convert_omnifall(ctx: _Context, where: str, row: dict, index: int) -> dict:
    """OmniFall label CSV row: one temporal segment of `{video_root}/{path}.mp4` with an integer class id."""
    path = row["path"]
    if not path:
        ctx.fail(where, "path", "empty video path")
    raw_label = row["label"]
    if raw_label.lstrip("-").isdigit():
        label_id = int(raw_label)
        if not 0 <= label_id < len(OMNIFALL_CLASSES):
            ctx.fail(where, "label", f"label id {label_id} out of range 0-{len(OMNIFALL_CLASSES) - 1}")
    elif normalize_label(raw_label) in OMNIFALL_CLASSES:
        label_id = OMNIFALL_CLASSES.index(normalize_label(raw_label))
    else:
        ctx.fail(where, "label", f"expected an integer class id or an OmniFall class name, got {raw_label!r}")
    # A few OmniFall segments start before 0 s; clamp both bounds to the video start.
    start = max(0.0, _parse_number(ctx, where, "start", row["start"], float))
    end = max(0.0, _parse_number(ctx, where, "end", row["end"], float))
    if end < start:
        ctx.fail(where, "end", f"segment end {end:g} is before its start {start:g}")
    subject = _parse_number(ctx, where, "subject", row["subject"] or "-1", int)
    cam = _parse_number(ctx, where, "cam", row["cam"] or "-1", int)
    label = OMNIFALL_CLASSES[label_id]
    extra = {k: v for k, v in row.items() if k not in OMNIFALL_COLUMNS}
    return {
        "id": f"{path}@{start:g}-{end:g}",
        "video": ctx.resolve(f"{path}.mp4"),
        "conversations": _classification_conversation(label, OMNIFALL_CLASSES),
        "label": label,
        "label_id": label_id,
        "start": start,
        "end": end,
        "path": path,
        "subject": subject,
        "cam": cam,
        "dataset": row["dataset"],
        **extra,
    }


def mcq_prompt(question: str, options: list[str]) -> str:
    """Question, lettered options and the answer-format request (the MCQ prompt used for training and eval)."""
    lines = [question.rstrip() + ("" if question.rstrip().endswith("?") else "?")]
    lines += [f"{MCQ_LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join([*lines, MCQ_POST_PROMPT])


def _convert_nextqa(ctx: _Context, where: str, row: dict, index: int) -> dict:
    """NExT-QA CSV row: five options `a0..a4`, integer `answer`, video id mapped through `map_vid_vidorID.json`."""
    video_id = row["video"]
    mapping = ctx.shared.get("video_map")
    if mapping is not None:
        if video_id not in mapping:
            ctx.fail(where, "video", f"video {video_id!r} is not in {ctx.shared['video_map_file']}")
        relative = mapping[video_id]
    else:
        relative = video_id
    options = [row[f"a{i}"] for i in range(5)]
    answer = _parse_number(ctx, where, "answer", row["answer"], int)
    if not 0 <= answer < len(options):
        ctx.fail(where, "answer", f"answer index {answer} out of range 0-{len(options) - 1}")
    qid = row.get("qid") or str(index)
    extra = {k: v for k, v in row.items() if k not in (*NEXTQA_COLUMNS, "qid", "type")}
    return {
        "id": f"{video_id}_{qid}",
        "video": ctx.resolve(f"{relative}.mp4"),
        "conversations": [
            {"from": "human", "value": f"{VIDEO_TOKEN}\n{mcq_prompt(row['question'], options)}"},
            {"from": "gpt", "value": MCQ_LETTERS[answer]},
        ],
        "question": row["question"],
        "options": options,
        "answer": answer,
        "qid": qid,
        "type": row.get("type", ""),
        **extra,
    }


def _convert_open_ended(ctx: _Context, where: str, record: dict, index: int) -> dict:
    """Open-ended QA question (MSVD/MSRVTT/TGIF/ActivityNet-QA) joined to its answer by `question_id`."""
    name = _get(ctx, where, record, "video_name", "str")
    question = _get(ctx, where, record, "question", "str")
    qid = record.get("question_id")
    if qid is None or isinstance(qid, (bool, list, dict)):
        ctx.fail(where, "question_id", "missing required field" if qid is None else "expected a string or integer")
    answers = ctx.shared["answers"]
    if str(qid) not in answers:
        ctx.fail(where, "question_id", f"no answer with question_id {qid!r} in {ctx.shared['answers_file']}")
    answer = answers[str(qid)]
    extra = {k: v for k, v in record.items() if k not in ("video_name", "question", "question_id")}
    extra.update({k: v for k, v in answer.items() if k not in ("answer", "question_id")})
    return {
        "id": str(qid),
        "video": _find_open_ended_video(ctx, name),
        "conversations": [
            {"from": "human", "value": f"{VIDEO_TOKEN}\n{question}"},
            {"from": "gpt", "value": answer["answer"]},
        ],
        "question": question,
        "answer": answer["answer"],
        "video_name": name,
        **extra,
    }


def _find_open_ended_video(ctx: _Context, name: str) -> str:
    # Benchmarks store bare video names; files carry one of several suffixes, and ActivityNet adds `v_`.
    if Path(name).suffix.lower() in VIDEO_SUFFIXES:
        return ctx.resolve(name)
    for stem in (name, f"v_{name}"):
        for suffix in _OPEN_ENDED_SUFFIXES:
            candidate = ctx.resolve(stem + suffix)
            if os.path.exists(candidate):
                return candidate
    return ctx.resolve(name + ".mp4")


# ---- whole-file readers --------------------------------------------------------------------------


def _read_json_format(convert: Callable[..., dict]) -> Callable[[_Context], list[dict]]:
    def read(ctx: _Context) -> list[dict]:
        records = []
        for index, (where, obj) in enumerate(ctx.shared["rows"]):
            if not isinstance(obj, dict):
                ctx.fail(where, None, f"expected a JSON object, got {type(obj).__name__}")
            records.append(convert(ctx, where, obj, index))
        return records

    return read


def _read_csv_format(convert: Callable[..., dict], required: tuple[str, ...]) -> Callable[[_Context], list[dict]]:
    def read(ctx: _Context) -> list[dict]:
        _, rows = _csv_rows(ctx.path, required)
        return [convert(ctx, where, row, index) for index, (where, row) in enumerate(rows)]

    return read


def _read_omnifall(ctx: _Context) -> list[dict]:
    records = _read_csv_format(_convert_omnifall, OMNIFALL_COLUMNS)(ctx)
    split_file = ctx.options.get("split_file")
    if split_file is None:
        return records
    split_path = Path(split_file)
    _, rows = _csv_rows(split_path, ("path",))
    keep = {row["path"] for _, row in rows if row["path"]}
    selected = [r for r in records if r["path"] in keep]
    missing = keep - {r["path"] for r in selected}
    if missing:
        logger.warning("%s: %d split paths have no label rows in %s", split_path, len(missing), ctx.path)
    return selected


def _read_nextqa(ctx: _Context) -> list[dict]:
    map_file = ctx.options.get("map_file") or ctx.path.parent / "map_vid_vidorID.json"
    if Path(map_file).is_file():
        ctx.shared["video_map_file"] = Path(map_file).name
        mapping = json.loads(Path(map_file).read_text(encoding="utf-8"))
        if not isinstance(mapping, dict):
            raise AnnotationError(map_file, "top level", None, "expected an object mapping video ids to paths")
        ctx.shared["video_map"] = {str(k): str(v) for k, v in mapping.items()}
    return _read_csv_format(_convert_nextqa, NEXTQA_COLUMNS)(ctx)


def _read_open_ended(ctx: _Context) -> list[dict]:
    answers_file = ctx.options.get("answers_file")
    if answers_file is None:
        name = ctx.path.name.replace("_q.", "_a.") if "_q." in ctx.path.name else None
        if name is None:
            raise AnnotationError(ctx.path, "file name", None, "cannot derive the answer file name; pass answers_file=")
        answers_file = ctx.path.with_name(name)
    answers_file = Path(answers_file)
    answers: dict[str, dict] = {}
    answer_ctx = _Context(answers_file, ctx.video_root)
    for where, obj in _json_rows(answers_file):
        if not isinstance(obj, dict):
            answer_ctx.fail(where, None, f"expected a JSON object, got {type(obj).__name__}")
        qid = obj.get("question_id")
        if qid is None:
            answer_ctx.fail(where, "question_id", "missing required field")
        _get(answer_ctx, where, obj, "answer", "str")
        answers[str(qid)] = obj
    ctx.shared.update(answers=answers, answers_file=answers_file.name)
    return _read_json_format(_convert_open_ended)(ctx)


def _read_folder(ctx: _Context) -> list[dict]:
    """Folder-per-class: `root/[train|val|test/]<Class Name>/<clip>`; classes = sorted normalised dir names."""
    root = ctx.path

    def subdirs(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    splits = [d for d in subdirs(root) if d.name.lower() in _SPLIT_DIRS]
    levels = [(d.name.lower(), d) for d in splits] if splits else [(None, root)]
    class_dirs = [(split, d) for split, level in levels for d in subdirs(level)]
    classes = sorted({normalize_label(d.name) for _, d in class_dirs})
    if not classes:
        ctx.fail("directory", "class folders", "no class sub-folders found")
    media_suffixes = VIDEO_SUFFIXES | IMAGE_SUFFIXES
    records = []
    for split, class_dir in class_dirs:
        label = normalize_label(class_dir.name)
        for file in sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in media_suffixes):
            record = {
                "id": file.relative_to(root).with_suffix("").as_posix(),
                "video": str(file),
                "conversations": _classification_conversation(label, classes),
                "label": label,
                "label_id": classes.index(label),
            }
            if split is not None:
                record["split"] = split
            records.append(record)
    return records


@dataclass(frozen=True)
class _Format:
    reader: Callable[[_Context], list[dict]]
    source: str  # "json", "csv" or "dir": how the path is read (and sniffed)
    default_root: Callable[[Path], Path]
    aliases: tuple[str, ...] = ()


def _beside(path: Path) -> Path:
    return path.parent


FORMATS: dict[str, _Format] = {
    "llava": _Format(
        _read_json_format(_convert_conversation), "json", _beside, ("video-llava", "video-chatgpt", "conversations")
    ),
    "qa": _Format(_read_json_format(_convert_qa), "json", _beside, ("video-llama", "videochat")),
    "metadata": _Format(_read_json_format(_convert_metadata), "json", _beside, ("metadata-jsonl", "structured")),
    "folder": _Format(_read_folder, "dir", lambda p: p, ("folder-per-class",)),
    "omnifall": _Format(_read_omnifall, "csv", lambda p: p.parent / "video", ("wanfall",)),
    "nextqa": _Format(_read_nextqa, "csv", _beside, ("next-qa",)),
    "openended": _Format(
        _read_open_ended, "json", lambda p: p.parent / "videos", ("msvd", "msrvtt", "tgif", "activitynet-qa")
    ),
}
"""Reader table: format name -> reader, input kind, default video root (from the annotation path), aliases."""

_ALIASES = {alias: name for name, spec in FORMATS.items() for alias in (name, *spec.aliases)}


def _sniff_json(path: Path, rows: list[tuple[str, Any]]) -> str:
    first = next((obj for _, obj in rows if isinstance(obj, dict)), None)
    if first is None:
        return "llava"  # empty or broken: the generic reader reports it
    if "conversations" in first:
        return "llava"
    if "QA" in first:
        return "qa"
    if "question_id" in first and "video_name" in first:
        return "openended"
    if "video" in first:
        return "metadata"
    raise AnnotationError(path, rows[0][0], None, f"cannot tell the format from the keys {sorted(first)}; pass format=")


def _sniff_csv(path: Path) -> str:
    header = set(_csv_header(path))
    if set(OMNIFALL_COLUMNS[:4]) <= header:
        return "omnifall"
    if set(NEXTQA_COLUMNS) <= header:
        return "nextqa"
    if header == {"path"}:
        raise AnnotationError(
            path, "line 1 (header)", "path", "an OmniFall split file; pass it as split_file= with a label CSV"
        )
    raise AnnotationError(path, "line 1 (header)", None, f"cannot tell the format from the columns {sorted(header)}")


def load_annotations(
    path: str | os.PathLike,
    format: str | None = None,
    video_root: str | os.PathLike | None = None,
    *,
    split_file: str | os.PathLike | None = None,
    answers_file: str | os.PathLike | None = None,
    map_file: str | os.PathLike | None = None,
) -> list[dict]:
    """Read an annotation file (or class-folder tree) into normalised records.

    Formats (`format=None` sniffs them from the suffix and the first record's keys):
    `llava` (LLaVA / Video-LLaVA / Video-ChatGPT conversations, `.json` array or `.jsonl`),
    `qa` (Video-LLaMA / VideoChat `{"video", "QA": [{"q", "a"}]}`), `metadata` (`metadata.jsonl`
    structured captions), `folder` (a directory of class folders, optionally under train/val/test),
    `omnifall` (OmniFall/WanFall label CSV), `nextqa` (NExT-QA MCQ CSV), `openended` (MSVD-style
    `test_q.json` joined with `test_a.json` by `question_id`).

    Args:
        path: the annotation file, or the dataset root for `folder`.
        format: a format name or alias; None to sniff.
        video_root: folder that relative media paths are resolved against. Defaults per format: the
            annotation file's folder (`llava`, `qa`, `metadata`, `nextqa`), `<folder>/video` (`omnifall`),
            `<folder>/videos` (`openended`).
        split_file: OmniFall split CSV (a `path` column); keeps only the segments of those videos.
        answers_file: open-ended answers; default: the question file's name with `_q.` -> `_a.`.
        map_file: NExT-QA video-id map; default: `map_vid_vidorID.json` beside the CSV, if present.

    Returns:
        Records `{"id", "video", "conversations", ...extra fields}`; classification records also carry
        `label` (class name) and `label_id`.

    Raises:
        AnnotationError: the file is malformed; the message names the file, the record and the field.
        FileNotFoundError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation path does not exist: {path}")
    shared: dict[str, Any] = {}
    if format is None:
        if path.is_dir():
            format = "folder"
        elif path.suffix.lower() == ".csv":
            format = _sniff_csv(path)
        else:
            shared["rows"] = _json_rows(path)
            format = _sniff_json(path, shared["rows"])
    name = _ALIASES.get(format.lower())
    if name is None:
        raise ValueError(f"unknown annotation format {format!r}; expected one of {sorted(_ALIASES)}")
    spec = FORMATS[name]
    if spec.source == "dir" and not path.is_dir():
        raise ValueError(f"format {name!r} reads a directory, got the file {path}")
    if spec.source != "dir" and path.is_dir():
        raise ValueError(f"format {name!r} reads a file, got the directory {path}")
    if spec.source == "json" and "rows" not in shared:
        shared["rows"] = _json_rows(path)
    options = {"split_file": split_file, "answers_file": answers_file, "map_file": map_file}
    root = Path(video_root) if video_root is not None else spec.default_root(path)
    ctx = _Context(path, root, {k: v for k, v in options.items() if v is not None}, shared)
    records = spec.reader(ctx)
    if not records:
        logger.warning("%s: no records", path)
    logger.info("%s: %d %s records", path, len(records), name)
    return records


__all__ = [
    "FORMATS",
    "MCQ_LETTERS",
    "OMNIFALL_CLASSES",
    "VIDEO_TOKEN",
    "AnnotationError",
    "load_annotations",
    "mcq_prompt",
    "normalize_label",
    "structured_caption_prompt",
]
