"""Readers for public video-text training annotation formats, all normalised to one record shape, and the
checked file and field access that every annotation reader (these and the benchmark readers of `merv.eval`)
builds on.

A record is `{"id": str, "video": str | list[str] | None, "conversations": [{"from": "human"|"gpt", "value":
str}, ...], "record_origin": str, **extra_fields}` with every media placeholder written `<video>`. `video` is
a video file, an image (a one-frame video) or a folder of extracted frames; a record with several media files
(Video-LLaVA's video plus images, LLaVA image lists) holds them as a list, in the order of their
placeholders. `record_origin` names the annotation file and the record (`train.json: record 3`) for
messages about the sample. Classification datasets add `label` and `label_id`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from merv.models.prompting import GPT, HUMAN, VIDEO_TOKEN, normalize_role
from merv.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
"""LLaVA's image placeholder; readers rewrite it to `VIDEO_TOKEN` (an image is a one-frame video)."""

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

_PLACEHOLDER = re.compile(f"{re.escape(IMAGE_TOKEN)}|{re.escape(VIDEO_TOKEN)}")
_SPLIT_DIRS = ("train", "val", "validation", "test")


class AnnotationError(ValueError):
    """A malformed annotation file: names the file, the record (index or line) and the field at fault.

    Args:
        path: the annotation file.
        where: the record, e.g. `"record 3"` or `"line 12"`; None when the file as a whole is at fault.
        field: the field at fault (None when the record as a whole is broken, e.g. invalid JSON).
        reason: what is wrong.
    """

    def __init__(self, path: str | os.PathLike, where: str | None, field: str | None, reason: str) -> None:
        self.path = os.fspath(path)
        self.where = where
        self.field = field
        self.reason = reason
        at = ", ".join(([where] if where else []) + ([f"field '{field}'"] if field else []))
        super().__init__(f"{self.path}: {at}: {reason}" if at else f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.where, self.field, self.reason))


@dataclass(frozen=True)
class RecordLocation:
    """Where one record sits: its file and its place in it (`record 3` in a JSON array, `line 12` in JSON
    Lines or CSV). Every checked access takes one, so that any error names the file, the record and the field.

    Attributes:
        path: the annotation file.
        where: the record's place in the file.
    """

    path: Path
    where: str

    def fail(self, field: str | None, reason: str) -> NoReturn:
        """Raise `AnnotationError` for this record and `field`."""
        raise AnnotationError(self.path, self.where, field, reason)


# ---- files ---------------------------------------------------------------------------------------


def _parse_json(path: Path) -> tuple[Any, list[int] | None]:
    """The JSON document, or for JSON Lines the list of values and the line number of each."""
    # utf-8-sig: a byte-order mark (Windows editors, Excel exports) is not part of the first key.
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() != ".jsonl":
        try:
            return json.loads(text), None
        except json.JSONDecodeError as e:
            # A `.json` file holding one object per line is JSON Lines under the wrong suffix.
            if not (e.msg == "Extra data" and text.lstrip().startswith("{")):
                raise AnnotationError(
                    path, f"line {e.lineno} column {e.colno}", None, f"invalid JSON: {e.msg}"
                ) from None
    values, numbers = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise AnnotationError(path, f"line {number} column {e.colno}", None, f"invalid JSON: {e.msg}") from None
        numbers.append(number)
    return values, numbers


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON document, or a JSON Lines file (`.jsonl`, or `.json` holding one object per line) as a list.

    Raises:
        AnnotationError: invalid JSON, naming the file, line and column.
    """
    return _parse_json(Path(path))[0]


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return [h.strip() for h in next(csv.reader(f), [])]


def _csv_rows(path: Path, columns: Iterable[str] = ()) -> list[tuple[RecordLocation, dict[str, str]]]:
    """Rows of a CSV file with a header line (`line n`); names and values stripped, `columns` required."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for column in columns:
            if column not in header:
                raise AnnotationError(path, "line 1 (header)", column, f"missing column; the header is {header}")
        rows = []
        for row in reader:
            at = RecordLocation(path, f"line {reader.line_num}")
            if None in row:  # more cells than header columns
                at.fail(None, f"{len(header) + len(row[None])} cells, header has {len(header)}")
            rows.append((at, {k: (v or "").strip() for k, v in row.items()}))
    return rows


def _json_rows(path: Path) -> list[tuple[RecordLocation, dict[str, Any]]]:
    """Objects of a JSON array (`record i`) or JSON Lines (`line n`) file."""
    data, numbers = _parse_json(path)
    if numbers is not None:
        located = [(f"line {n}", value) for n, value in zip(numbers, data, strict=True)]
    elif isinstance(data, list):
        located = [(f"record {i}", value) for i, value in enumerate(data)]
    else:
        raise AnnotationError(path, "top level", None, f"expected a JSON array of records, got {type(data).__name__}")
    rows = []
    for where, value in located:
        at = RecordLocation(path, where)
        if not isinstance(value, dict):
            at.fail(None, f"expected a JSON object, got {type(value).__name__}")
        rows.append((at, value))
    return rows


def read_rows(path: str | os.PathLike, columns: Iterable[str] = ()) -> list[tuple[RecordLocation, dict[str, Any]]]:
    """Read the records of a table-like annotation file, each with its location.

    Accepts a JSON array (`record i`), JSON Lines (`line n`; also under a `.json` name), CSV with a header
    line (`line n`; cells are stripped strings) and parquet (`record i`, needs pyarrow).

    Args:
        path: the file.
        columns: CSV columns that must be present in the header.

    Returns:
        `(location, record)` pairs in file order.

    Raises:
        AnnotationError: invalid JSON, a JSON document that is not an array, a record that is not an object, a
            missing CSV column or a row with more cells than the header.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path, columns)
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from e
        return [(RecordLocation(path, f"record {i}"), row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    return _json_rows(path)


# ---- fields --------------------------------------------------------------------------------------

FieldKind = Literal["str", "text", "int", "number", "list", "dict"]

_KINDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "str": (str, "a string"),
    "text": ((str, int, float), "text"),
    "int": (int, "an integer"),
    "number": ((int, float), "a number"),
    "list": (list, "a list"),
    "dict": (dict, "an object"),
}


def check_value(at: RecordLocation, value: Any, kind: FieldKind | None, field: str) -> Any:
    """Check a present value against `kind` (see `get_field`); `text` values come back as stripped strings.

    Raises:
        AnnotationError: the value has the wrong type, naming `field`.
    """
    if kind is None:
        return value
    types, label = _KINDS[kind]
    if not isinstance(value, types) or (kind != "str" and isinstance(value, bool)):
        at.fail(field, f"expected {label}, got {type(value).__name__} {value!r:.60}")
    return str(value).strip() if kind == "text" else value


def get_field(
    at: RecordLocation,
    record: Mapping[str, Any],
    keys: str | Sequence[str],
    kind: FieldKind | None = None,
    *,
    required: bool = True,
    name: str | None = None,
) -> Any:
    """A record's field, type-checked.

    A field is missing when it is absent or null; an empty string counts as missing too, except for `str`
    fields (an empty question is a valid string).

    Args:
        at: the record's location, for errors.
        record: the record.
        keys: the field's name, or alternative names tried in order (the first one present is used).
        kind: what the value must be: `str`, `text` (a string or a number, returned as a stripped string),
            `int`, `number` (int or float), `list`, `dict`; None accepts any value.
        required: a missing field is an error; otherwise it reads as None.
        name: the field's name in errors; default: the key holding a mistyped value, or all keys joined by `/`.

    Returns:
        The value (as text for `text`), or None for a missing optional field.

    Raises:
        AnnotationError: a required field is missing, or a value has the wrong type.
    """
    names = (keys,) if isinstance(keys, str) else tuple(keys)
    for key in names:
        value = record.get(key)
        if value is None or (value == "" and kind != "str"):
            continue
        return check_value(at, value, kind, name or key)
    if required:
        at.fail(name or "/".join(names), "missing required field")
    return None


def parse_number(
    at: RecordLocation, value: Any, field: str, *, integer: bool = False, required: bool = True
) -> float | int | None:
    """A finite number given as a JSON number or as text (CSV cells, `"1.5"`).

    Args:
        at: the record's location, for errors.
        value: the raw value.
        field: the field's name, for errors.
        integer: require an integral value (`3` and `3.0` both read as 3) and return an int.
        required: None, a blank string or NaN is an error; otherwise each reads as None.

    Raises:
        AnnotationError: a missing required value, or one that is not a finite number (or integer).
    """
    expected = "an integer" if integer else "a number"
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            at.fail(field, "missing required field")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        at.fail(field, f"expected {expected}, got {type(value).__name__} {value!r:.60}")
    try:
        number = float(value)
    except ValueError:
        at.fail(field, f"expected {expected}, got {value!r}")
    if math.isnan(number) and not required:
        return None
    if not math.isfinite(number) or (integer and not number.is_integer()):
        at.fail(field, f"expected {expected}, got {value!r}")
    return int(number) if integer else number


# ---- record parts --------------------------------------------------------------------------------


@dataclass
class _Context:
    """What a record converter needs: the file, where media live, the caller's options, rows already read."""

    path: Path
    video_root: Path
    options: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[RecordLocation, dict[str, Any]]] | None = None
    notes: Counter[str] = field(default_factory=Counter)
    """What was read differently from the file's face value, counted; logged once per file."""

    def resolve(self, media: str, root: Path | None = None) -> str:
        return str((root or self.video_root) / media) if not os.path.isabs(media) else media


def _record_id(ctx: _Context, at: RecordLocation, record: dict, index: int) -> str:
    value = record.get("id")
    if value is None:
        return f"{ctx.path.stem}-{index}"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        at.fail("id", f"expected a string or integer, got {type(value).__name__}")
    return str(value)


MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
"""File suffixes a media path may have; a path without one of them must be a folder of extracted frames."""

_FEATURE_SUFFIXES = frozenset({".pkl", ".pickle", ".npy", ".npz", ".pt", ".pth", ".h5", ".hdf5"})


def _media_path(ctx: _Context, at: RecordLocation, field: str, value: Any) -> str:
    """One media path, resolved against the video root: a video or image file, or a frame folder.

    Checked here, at load, so that a file of feature pickles or blank paths fails before training starts
    rather than as a skip storm. Only paths without a media suffix touch the filesystem (to find frame
    folders); a missing video file is left to the dataset, which skips it.
    """
    if not isinstance(value, str):
        at.fail(field, f"expected a file path string, got {type(value).__name__}")
    if not value.strip():
        at.fail(field, "empty media path")
    path = ctx.resolve(value)
    suffix = Path(value).suffix.lower()
    if suffix in MEDIA_SUFFIXES or os.path.isdir(path):
        return path
    if suffix in _FEATURE_SUFFIXES:
        reason = (
            f"{value!r} is a feature file, not a video ({suffix}; e.g. Video-ChatGPT's pre-extracted CLIP "
            "features): point the record at the video itself"
        )
    elif suffix:
        reason = f"{value!r} is not a video, image or frame folder (unknown suffix {suffix!r})"
    else:
        reason = f"{value!r} has no file suffix and is not a folder of extracted frames"
    at.fail(field, reason)


def _media(ctx: _Context, at: RecordLocation, record: dict) -> tuple[list[str], list[str]]:
    """The record's videos and images (each a string or a list), checked and resolved.

    An empty string reads as absent (a text-only record), counted in the file's notes.
    """
    found: dict[str, list[str]] = {}
    for key in ("video", "image"):
        value = record.get(key)
        if value == "":
            ctx.notes[f"have an empty {key!r} and were read without it"] += 1
            value = None
        if value is None:
            found[key] = []
        elif isinstance(value, list):
            found[key] = [_media_path(ctx, at, f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            found[key] = [_media_path(ctx, at, key, value)]
    return found["video"], found["image"]


def _conversations(
    ctx: _Context, at: RecordLocation, turns: list[Any], videos: list[str], images: list[str]
) -> tuple[list[dict[str, str]], str | list[str] | None]:
    """Validate turns, normalise role names and placeholders (all become `<video>`); returns the turns and the
    record's `video` field.

    One media file: at most one placeholder, in the first human turn (prepended when there is none);
    `<image>` or `<video>` both mark it (LLaVA-NeXT writes `<image>` for videos). Several (Video-LLaVA's
    video plus images, LLaVA image lists): every file needs its own placeholder of its kind in a human turn;
    `video` is then the list of files in placeholder order, each a clip of its own.
    """
    if not turns:
        at.fail("conversations", "no turns")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            at.fail(f"conversations[{i}]", f"expected an object, got {type(turn).__name__}")
        role = get_field(at, turn, "from", "str", name=f"conversations[{i}].from")
        try:
            role = normalize_role(role)
        except ValueError as e:
            at.fail(f"conversations[{i}].from", str(e))
        value = get_field(at, turn, "value", "str", name=f"conversations[{i}].value")
        out.append({"from": role, "value": value})
    first_human = next((i for i, t in enumerate(out) if t["from"] == HUMAN), None)
    if first_human is None:
        at.fail("conversations", "no human turn")
    total = len(videos) + len(images)
    tags: list[str] = []
    for i, turn in enumerate(out):
        found = _PLACEHOLDER.findall(turn["value"])
        if not found:
            continue
        if not total:
            at.fail(f"conversations[{i}].value", "has a media placeholder but the record has no video or image")
        if total == 1 and i != first_human:
            at.fail(f"conversations[{i}].value", "media placeholder outside the first human turn")
        if total == 1 and len(found) > 1:
            at.fail(f"conversations[{i}].value", f"{len(found)} media placeholders for one media file")
        if turn["from"] != HUMAN:
            at.fail(f"conversations[{i}].value", "media placeholder in a gpt turn")
        tags += found
    if not total:
        return out, None
    if total == 1:
        value = out[first_human]["value"]
        value = _PLACEHOLDER.sub(VIDEO_TOKEN, value) if tags else f"{VIDEO_TOKEN}\n{value}"
        out[first_human]["value"] = value
        return out, (videos or images)[0]
    counts = (tags.count(VIDEO_TOKEN), tags.count(IMAGE_TOKEN))
    if counts != (len(videos), len(images)):
        at.fail(
            "conversations",
            f"{counts[0]} {VIDEO_TOKEN} and {counts[1]} {IMAGE_TOKEN} placeholders for {len(videos)} video(s) and "
            f"{len(images)} image(s): with several media files each needs its own placeholder",
        )
    queues = {VIDEO_TOKEN: iter(videos), IMAGE_TOKEN: iter(images)}
    ordered = [next(queues[tag]) for tag in tags]
    for turn in out:
        turn["value"] = _PLACEHOLDER.sub(VIDEO_TOKEN, turn["value"])
    ctx.notes["hold several media files, read as one clip per placeholder"] += 1
    return out, ordered


def _segment(at: RecordLocation, record: dict) -> None:
    """Optional clip bounds in seconds must be numbers with end >= start."""
    start = get_field(at, record, "start", "number", required=False)
    end = get_field(at, record, "end", "number", required=False)
    if start is not None and end is not None and end < start:
        at.fail("end", f"segment end {end} is before its start {start}")


def _classification_conversation(label: str, classes: Iterable[str]) -> list[dict[str, str]]:
    allowed = ", ".join(classes)
    question = f"{VIDEO_TOKEN}\nWhich action does the person in the video perform? Answer with one of: {allowed}."
    return [{"from": HUMAN, "value": question}, {"from": GPT, "value": label}]


def normalize_label(name: str) -> str:
    """Class-name normalisation shared by all classification readers: lower-case, spaces/hyphens -> `_`."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


# ---- record converters (one per format) ----------------------------------------------------------


def _convert_conversation(ctx: _Context, at: RecordLocation, record: dict, index: int) -> dict:
    """LLaVA / Video-LLaVA / Video-ChatGPT / LLaVA-Video: `conversations` plus optional `video`/`image`."""
    videos, images = _media(ctx, at, record)
    turns = get_field(at, record, "conversations", "list")
    conversations, video = _conversations(ctx, at, turns, videos, images)
    _segment(at, record)
    extra = {k: v for k, v in record.items() if k not in ("id", "video", "image", "conversations")}
    return {"id": _record_id(ctx, at, record, index), "video": video, "conversations": conversations, **extra}


def _convert_qa(ctx: _Context, at: RecordLocation, record: dict, index: int) -> dict:
    """Video-LLaMA / VideoChat: `video` (or `image`) with `QA: [{q, a, i?}]`.

    VideoChat2's task instruction (`QA[0].i`, its system text) opens the first human turn, before the
    question; caption data leaves `q` empty, and the instruction alone is the request.
    """
    videos, images = _media(ctx, at, record)
    qa = get_field(at, record, "QA", "list")
    if not qa:
        at.fail("QA", "no question-answer pairs")
    turns = []
    for i, pair in enumerate(qa):
        if not isinstance(pair, dict):
            at.fail(f"QA[{i}]", f"expected an object, got {type(pair).__name__}")
        question = get_field(at, pair, "q", "str", name=f"QA[{i}].q")
        answer = get_field(at, pair, "a", "str", name=f"QA[{i}].a")
        instruction = get_field(at, pair, "i", "str", required=False, name=f"QA[{i}].i")
        if i == 0 and instruction and question:
            request = f"{instruction}\n{question}"
        else:
            request = question or instruction or "Describe the video."
        turns.append({"from": HUMAN, "value": request})
        turns.append({"from": GPT, "value": answer})
    _segment(at, record)
    extra = {k: v for k, v in record.items() if k not in ("id", "video", "image", "QA")}
    if qa[0].get("i"):
        extra.setdefault("instruction", qa[0]["i"])
    conversations, video = _conversations(ctx, at, turns, videos, images)
    return {"id": _record_id(ctx, at, record, index), "video": video, "conversations": conversations, **extra}


def structured_caption_prompt(keys: Iterable[str]) -> str:
    """The request paired with a `metadata.jsonl` answer: a JSON object with exactly these keys."""
    keys = list(keys)
    if not keys:
        return "Describe this video as a JSON object."
    return "Describe this video as a single-line JSON object with the keys: " + ", ".join(keys) + "."


def _convert_metadata(ctx: _Context, at: RecordLocation, record: dict, index: int) -> dict:
    """`metadata.jsonl` structured captions: the answer is the one-line JSON of every field but `video`."""
    video = _media_path(ctx, at, "video", get_field(at, record, "video", "str"))
    fields = {k: v for k, v in record.items() if k != "video"}
    conversations = [
        {"from": HUMAN, "value": f"{VIDEO_TOKEN}\n{structured_caption_prompt(fields)}"},
        {"from": GPT, "value": json.dumps(fields, ensure_ascii=False)},
    ]
    return {**fields, "id": f"{ctx.path.stem}-{index}", "video": video, "conversations": conversations}


def _omnifall_root(ctx: _Context, dataset: str) -> Path:
    """Folder a label row's `{path}.mp4` lives in.

    An explicit `video_root` serves every row. Label CSVs in a `labels/` folder follow the Hugging Face
    layout, whose videos sit per source dataset in `ROOT/<dataset>/video` (FORMATS §5a), or, for WanFall's
    single source, in `ROOT/video`; any other CSV keeps its videos in `video/` beside it.
    """
    if ctx.options.get("video_root_given") or ctx.path.parent.name != "labels":
        return ctx.video_root
    roots = ctx.options.setdefault("omnifall_roots", {})
    if dataset not in roots:
        base = ctx.path.parent.parent
        per_dataset = base / dataset / "video"
        shared = base / "video"
        use_shared = not dataset or (not per_dataset.is_dir() and shared.is_dir())
        roots[dataset] = shared if use_shared else per_dataset
    return roots[dataset]


def _convert_omnifall(ctx: _Context, at: RecordLocation, row: dict, index: int) -> dict:
    """OmniFall label CSV row: one temporal segment of `{video_root}/{path}.mp4` with an integer class id."""
    path = row["path"]
    if not path:
        at.fail("path", "empty video path")
    raw_label = row["label"]
    if raw_label.lstrip("-").isdigit():
        label_id = int(raw_label)
        if not 0 <= label_id < len(OMNIFALL_CLASSES):
            at.fail("label", f"label id {label_id} out of range 0-{len(OMNIFALL_CLASSES) - 1}")
    elif normalize_label(raw_label) in OMNIFALL_CLASSES:
        label_id = OMNIFALL_CLASSES.index(normalize_label(raw_label))
    else:
        at.fail("label", f"expected an integer class id or an OmniFall class name, got {raw_label!r}")
    # A few OmniFall segments start before 0 s; clamp both bounds to the video start.
    start = max(0.0, parse_number(at, row["start"], "start"))
    end = max(0.0, parse_number(at, row["end"], "end"))
    if end < start:
        at.fail("end", f"segment end {end:g} is before its start {start:g}")
    subject = parse_number(at, row["subject"] or "-1", "subject", integer=True)
    cam = parse_number(at, row["cam"] or "-1", "cam", integer=True)
    label = OMNIFALL_CLASSES[label_id]
    extra = {k: v for k, v in row.items() if k not in OMNIFALL_COLUMNS}
    return {
        "id": f"{path}@{start:g}-{end:g}",
        "video": ctx.resolve(f"{path}.mp4", _omnifall_root(ctx, row["dataset"])),
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


# ---- whole-file readers --------------------------------------------------------------------------


def _read_each(
    convert: Callable[..., dict], csv_columns: tuple[str, ...] | None = None
) -> Callable[[_Context], list[dict]]:
    """A reader converting every row with `convert`: rows of a CSV file with `csv_columns`, else JSON rows."""

    def read(ctx: _Context) -> list[dict]:
        rows = ctx.rows
        if rows is None:
            rows = _json_rows(ctx.path) if csv_columns is None else _csv_rows(ctx.path, csv_columns)
        records = []
        for index, (at, row) in enumerate(rows):
            record = convert(ctx, at, row, index)
            record["record_origin"] = f"{at.path}: {at.where}"
            records.append(record)
        return records

    return read


def _read_omnifall(ctx: _Context) -> list[dict]:
    records = _read_each(_convert_omnifall, OMNIFALL_COLUMNS)(ctx)
    split_file = ctx.options.get("split_file")
    if split_file is None:
        return records
    split_path = Path(split_file)
    keep = {row["path"] for _, row in _csv_rows(split_path, ("path",)) if row["path"]}
    selected = [r for r in records if r["path"] in keep]
    missing = keep - {r["path"] for r in selected}
    if missing:
        logger.warning("%s: %d split paths have no label rows in %s", split_path, len(missing), ctx.path)
    return selected


def _class_clips(class_dir: Path) -> list[Path]:
    """The clips of one class folder: video and image files at any depth, and every sub-folder holding
    images as one clip (a folder of extracted frames, `Class/clip01/00001.jpg ...`).

    Images directly in the class folder are samples of their own (ImageFolder style).

    Raises:
        AnnotationError: a sub-folder holds both video files and images, so it is unclear whether the
            images are the frames of one clip or samples of their own.
    """
    clips = []
    for folder, subfolders, names in os.walk(class_dir):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        here = Path(folder)
        files = sorted(here / n for n in names if not n.startswith("."))
        videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        if here == class_dir or not images:
            clips += videos + images
            continue
        if videos:
            raise AnnotationError(
                here,
                None,
                None,
                f"holds {len(videos)} video file(s) and {len(images)} image(s): a folder of extracted frames "
                "must hold only its frames; move the videos or the images elsewhere",
            )
        clips.append(here)
    return sorted(clips)


def _read_folder(ctx: _Context) -> list[dict]:
    """Folder-per-class: `root/[train|val|test/]<Class Name>/<clip>`; classes = sorted normalised dir names.

    A clip is a video file, an image, or a sub-folder of extracted frames (see `_class_clips`).
    """
    root = ctx.path

    def subdirs(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    splits = [d for d in subdirs(root) if d.name.lower() in _SPLIT_DIRS]
    levels = [(d.name.lower(), d) for d in splits] if splits else [(None, root)]
    class_dirs = [(split, d) for split, level in levels for d in subdirs(level)]
    classes = sorted({normalize_label(d.name) for _, d in class_dirs})
    if not classes:
        raise AnnotationError(root, "directory", "class folders", "no class sub-folders found")
    records = []
    for split, class_dir in class_dirs:
        label = normalize_label(class_dir.name)
        for clip in _class_clips(class_dir):
            relative = clip.relative_to(root)
            record = {
                "id": (relative if clip.is_dir() else relative.with_suffix("")).as_posix(),
                "video": str(clip),
                "conversations": _classification_conversation(label, classes),
                "label": label,
                "label_id": classes.index(label),
                "record_origin": f"{root}: {relative.as_posix()}",
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
        _read_each(_convert_conversation), "json", _beside, ("video-llava", "video-chatgpt", "conversations")
    ),
    "qa": _Format(_read_each(_convert_qa), "json", _beside, ("video-llama", "videochat")),
    "metadata": _Format(_read_each(_convert_metadata), "json", _beside, ("metadata-jsonl", "structured")),
    "folder": _Format(_read_folder, "dir", lambda p: p, ("folder-per-class",)),
    # The layout of `merv.data.synthetic` (and a label CSV kept beside its videos); see `_omnifall_root`
    # for the Hugging Face layout with label CSVs under `labels/`.
    "omnifall": _Format(_read_omnifall, "csv", lambda p: p.parent / "video", ("wanfall",)),
}
"""Reader table: format name -> reader, input kind, default video root (from the annotation path), aliases."""

_ALIASES = {alias: name for name, spec in FORMATS.items() for alias in (name, *spec.aliases)}


def _sniff_json(path: Path, rows: list[tuple[RecordLocation, dict[str, Any]]]) -> str:
    if not rows:
        return "llava"  # an empty file: the generic reader returns no records
    at, first = rows[0]
    if "conversations" in first:
        return "llava"
    if "QA" in first:
        return "qa"
    if "video" in first:
        return "metadata"
    at.fail(None, f"cannot tell the format from the keys {sorted(first)}; pass format=")


def _sniff_csv(path: Path) -> str:
    header = set(_csv_header(path))
    if set(OMNIFALL_COLUMNS[:4]) <= header:
        return "omnifall"
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
) -> list[dict]:
    """Read a training annotation file (or class-folder tree) into normalised records.

    Formats (`format=None` sniffs them from the suffix and the first record's keys):
    `llava` (LLaVA / Video-LLaVA / Video-ChatGPT conversations, `.json` array or `.jsonl`),
    `qa` (Video-LLaMA / VideoChat `{"video", "QA": [{"q", "a"}]}`), `metadata` (`metadata.jsonl`
    structured captions), `folder` (a directory of class folders, optionally under train/val/test),
    `omnifall` (OmniFall/WanFall label CSV). Benchmark files (NExT-QA, MSVD-QA, ...) are read by the
    tasks of `merv.eval`.

    Args:
        path: the annotation file, or the dataset root for `folder`.
        format: a format name or alias; None to sniff.
        video_root: folder that relative media paths are resolved against. Defaults per format: the
            annotation file's folder (`llava`, `qa`, `metadata`); for `omnifall`, with the label CSV in a
            `labels/` folder (the Hugging Face layout) `ROOT/<dataset column>/video` beside `labels/`
            (`ROOT/video` when that folder does not exist but `ROOT/video` does, as in WanFall), else
            `video/` beside the CSV. An explicit `video_root` serves every OmniFall row.
        split_file: OmniFall split CSV (a `path` column); keeps only the segments of those videos.

    Returns:
        Records `{"id", "video", "conversations", "record_origin", ...extra fields}`; classification records
        also carry `label` (class name) and `label_id`.

    Raises:
        AnnotationError: the file is malformed; the message names the file, the record and the field. Media
            that is not a video, image or frame folder (e.g. Video-ChatGPT's `.pkl` feature files) is
            malformed too.
        FileNotFoundError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation path does not exist: {path}")
    rows = None
    if format is None:
        if path.is_dir():
            format = "folder"
        elif path.suffix.lower() == ".csv":
            format = _sniff_csv(path)
        else:
            rows = _json_rows(path)
            format = _sniff_json(path, rows)
    name = _ALIASES.get(format.lower())
    if name is None:
        raise ValueError(f"unknown annotation format {format!r}; expected one of {sorted(_ALIASES)}")
    spec = FORMATS[name]
    if spec.source == "dir" and not path.is_dir():
        raise ValueError(f"format {name!r} reads a directory, got the file {path}")
    if spec.source != "dir" and path.is_dir():
        raise ValueError(f"format {name!r} reads a file, got the directory {path}")
    root = Path(video_root) if video_root is not None else spec.default_root(path)
    options: dict[str, Any] = {"video_root_given": video_root is not None}
    if split_file is not None:
        options["split_file"] = split_file
    ctx = _Context(path, root, options, rows)
    records = spec.reader(ctx)
    for note, count in sorted(ctx.notes.items()):
        logger.warning("%s: %d record(s) %s", path, count, note)
    if not records:
        logger.warning("%s: no records", path)
    logger.info("%s: %d %s records", path, len(records), name)
    return records


__all__ = [
    "FORMATS",
    "MEDIA_SUFFIXES",
    "IMAGE_TOKEN",
    "OMNIFALL_CLASSES",
    "AnnotationError",
    "FieldKind",
    "RecordLocation",
    "check_value",
    "get_field",
    "load_annotations",
    "normalize_label",
    "parse_number",
    "read_json",
    "read_rows",
    "structured_caption_prompt",
]
