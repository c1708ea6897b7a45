"""Action recognition and fall detection: the task, instruction samples, prediction modes and evaluation.

A label set (OmniFall's 16 classes, the classes of a folder-per-class dataset, or a user list) becomes a
question that lists the allowed labels; the answer is the label. Four prediction modes:

* `zero-shot`: ask, generate, parse the label from the reply;
* `few-shot`: `k` labelled clips from the training split as in-context turns before the query, chosen at
  random (seeded per query) or by visual similarity (cosine of mean-pooled frozen encoder features);
* `cot`: the model reasons first and ends with `The best answer is: <label>`; the label is read from the end;
* `loglik`: every allowed label is scored by its mean token NLL as the answer; no parsing.

Replies are parsed with synonyms, case and separator folding, longest phrase first; a reply that names no
label, or several with equal standing, is counted as unparsed and never guessed.

    python -m merv.eval.action prepare --labels fall/labels.csv --split_dir fall/splits --out fall/instruct
    python scripts/eval_action.py --model_path run/model --labels fall/labels.csv \\
        --split_file fall/splits/test.csv --mode zero-shot
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from merv.data.dataset import SkipRateError
from merv.data.formats import FORMATS, OMNIFALL_CLASSES, VIDEO_TOKEN, AnnotationError, load_annotations, normalize_label
from merv.eval.cli import default_output_dir, load_model
from merv.eval.metrics import (
    DEFAULT_POSITIVE,
    UNPARSED,
    auto_breakdown_columns,
    breakdown,
    classification_metrics,
    save_confusion_matrix,
)
from merv.eval.runner import summary_line, write_json_atomic
from merv.eval.tasks import file_identity
from merv.video import PixelMemory, VideoDecodeError

logger = logging.getLogger(__name__)

Mode = Literal["zero-shot", "few-shot", "cot", "loglik"]
MODES: tuple[str, ...] = ("zero-shot", "few-shot", "cot", "loglik")
ExemplarStrategy = Literal["random", "similar"]

ACTION_QUESTION = "Which action does the person in the video perform? Answer with one of: {labels}."
"""The classification question; with the OmniFall classes it is word for word the question of the training
conversations `load_annotations` writes for label CSVs and class folders, so a fine-tuned model is asked
what it was trained on."""

COT_INSTRUCTION = (
    "First describe step by step the person's posture and movement from the start to the end of the clip, "
    "then finish with the line 'The best answer is: <label>' using one of the labels above."
)
"""Appended to the question in `cot` mode."""

PROMPT_VERSION = "action-v1"
"""Changes whenever the question or the few-shot layout changes, so reports say which prompt they used."""

DEFAULT_MAX_NEW_TOKENS: dict[str, int | None] = {"zero-shot": 16, "few-shot": 16, "cot": 256, "loglik": None}
"""Generation length per mode (`loglik` generates nothing)."""

# Phrase -> classes it may stand for, in order of preference; the first one in the label set wins, so the
# same table serves OmniFall names (`fall`, `lie_down`) and folder-dataset names (`fall_down`, `lying_down`).
# OmniFall semantics: `fall` is the act of falling, `fallen` lying on the ground after it, `lie_down`/`lying`
# the intentional counterparts, `sit_down`/`stand_up` transitions and `sitting`/`standing` states.
_FALL = ("fall", "fall_down", "falling", "fall_floor")
_FALLEN = ("fallen", "fallen_down", "lying_on_floor")
_SIT_DOWN = ("sit_down", "sitting_down", "sit", "sitting")
_LIE_DOWN = ("lie_down", "lying_down", "lay_down", "lying")
_STAND_UP = ("stand_up", "standing_up", "get_up", "standing", "stand")
_KNEEL_DOWN = ("kneel_down", "kneeling")
_SQUAT_DOWN = ("squat_down", "squatting")
DEFAULT_SYNONYMS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("walk", "walks", "walking", "walked", "strolling", "walking around"), ("walk", "walking")),
    **dict.fromkeys(
        (
            "fall",
            "falls",
            "falling",
            "fell",
            "fall down",
            "falls down",
            "falling down",
            "fell down",
            "falling over",
            "falls over",
            "fell over",
            "collapse",
            "collapses",
            "collapsing",
            "trips",
            "tripping",
            "slips",
            "slipping",
        ),
        _FALL,
    ),
    **dict.fromkeys(
        (
            "fallen",
            "fallen down",
            "has fallen",
            "on the floor",
            "on the ground",
            "lying on the floor",
            "lying on the ground",
            "lies on the floor",
            "laying on the floor",
            "down on the floor",
            "collapsed",
            "after a fall",
            "after the fall",
            "after falling",
        ),
        _FALLEN,
    ),
    **dict.fromkeys(("sit down", "sits down", "sitting down", "sat down", "takes a seat", "taking a seat"), _SIT_DOWN),
    **dict.fromkeys(("sitting", "sits", "seated", "sitting still"), ("sitting", "sit")),
    **dict.fromkeys(("lie down", "lies down", "lying down", "lay down", "lays down", "laying down"), _LIE_DOWN),
    **dict.fromkeys(
        ("lying", "laying", "lying in bed", "lying on the bed", "lying on a bed", "in bed"), ("lying", "lying_down")
    ),
    **dict.fromkeys(
        ("stand up", "stands up", "standing up", "stood up", "get up", "gets up", "getting up", "rises"), _STAND_UP
    ),
    **dict.fromkeys(("standing", "stands", "standing still"), ("standing", "stand")),
    **dict.fromkeys(("kneel down", "kneels down", "kneeling down", "knelt down"), _KNEEL_DOWN),
    **dict.fromkeys(("kneeling", "kneels"), ("kneeling",)),
    **dict.fromkeys(("squat down", "squats down", "squatting down", "crouch down", "crouching down"), _SQUAT_DOWN),
    **dict.fromkeys(("squatting", "squats", "crouching", "crouches"), ("squatting",)),
    **dict.fromkeys(("crawl", "crawls", "crawling"), ("crawl", "crawling")),
    **dict.fromkeys(("jump", "jumps", "jumping", "jumped", "hopping", "hops"), ("jump", "jumping")),
    **dict.fromkeys(("other", "something else"), ("other",)),
}
"""Default synonym table: lower-case phrase (spaces between words) -> candidate classes, preferred first."""

# Words introducing the final answer ("The best answer is: X", "Label: X", "Prediction - X").
_MARKERS = frozenset({"answer", "label", "prediction", "classification"})
# Words allowed between a marker and the label ("answer would be the", "label is probably").
_FILLERS = frozenset(
    {"is", "would", "be", "will", "the", "a", "an", "final", "label", "class", "action", "option", "category",
     "probably", "likely", "most", "clearly", "therefore", "so", "here", "that", "this", "=", ":", "-"}
)  # fmt: skip
_NEGATIONS = frozenset({"not", "no", "never", "without", "nor", "t"})  # "isn't" tokenises to "isn", "t"
# Tokens that join labels into a list ("walk, fall", "walk or fall", "walk/fall"): a list is not a pick.
_LIST_GLUE = frozenset({",", "or", "and", "nor"})
_TOKEN_RE = re.compile(r"[a-z0-9]+|[.,;:!?=\-]")


def _tokens(text: str) -> list[str]:
    # `_` and `-` between letters join words in labels ("sit_down", "lie-down"); read them as spaces.
    text = re.sub(r"(?<=[a-z0-9])[_\-](?=[a-z0-9])", " ", text.lower().replace("’", "'"))
    return _TOKEN_RE.findall(text.replace("_", " "))


@dataclass(frozen=True)
class ParsedLabel:
    """Result of parsing one reply.

    Attributes:
        label: the class name, or None when the reply is unparseable.
        method: which rule decided (`phrase`, `exact`, `mention`, `start`, `last`), or `empty`, `no_match`,
            `ambiguous` when unparsed.
        candidates: the classes in contention (for ambiguous replies, every class mentioned).
    """

    label: str | None
    method: str
    candidates: tuple[str, ...] = ()

    @property
    def parsed(self) -> bool:
        return self.label is not None


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    label: str


class LabelParser:
    """Maps free-text replies to one class of a label set.

    Every class name is a phrase for itself (`sit_down` also reads as `sit down`, `Sit-Down`); synonyms add
    phrases whose first candidate in the label set they stand for. Phrases match whole words, longest first
    at each position, so `lying on the floor` reads as one phrase (fallen) rather than `lying`.

    Args:
        classes: the label set (normalised with `normalize_label`).
        synonyms: phrase -> candidate classes (or one class); None uses `DEFAULT_SYNONYMS`.
    """

    def __init__(self, classes: Sequence[str], synonyms: Mapping[str, str | Sequence[str]] | None = None) -> None:
        self.classes = tuple(normalize_label(c) for c in classes)
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"a label set needs distinct class names, got {list(classes)}")
        table: dict[tuple[str, ...], str] = {}
        for phrase, targets in (DEFAULT_SYNONYMS if synonyms is None else synonyms).items():
            targets = (targets,) if isinstance(targets, str) else tuple(targets)
            chosen = next((normalize_label(t) for t in targets if normalize_label(t) in self.classes), None)
            words = tuple(_tokens(phrase))
            if chosen is not None and words:
                table[words] = chosen
        for name in self.classes:  # class names outrank synonyms spelled the same
            table[tuple(_tokens(name))] = name
        self._table = table
        self._longest = max(len(k) for k in table)

    def _matches(self, tokens: list[str]) -> list[_Match]:
        """Non-overlapping phrase matches, left to right, longest phrase first at each position."""
        out = []
        i = 0
        while i < len(tokens):
            for length in range(min(self._longest, len(tokens) - i), 0, -1):
                label = self._table.get(tuple(tokens[i : i + length]))
                if label is not None and not self._discard(tokens, i, i + length, label):
                    out.append(_Match(i, i + length, label))
                    i += length
                    break
            else:
                i += 1
        return out

    @staticmethod
    def _discard(tokens: list[str], start: int, end: int, label: str) -> bool:
        """Negated mentions ("not falling", "isn't lying") and `other` as an ordinary word ("the other side")."""
        before = []
        for tok in reversed(tokens[max(0, start - 2) : start]):
            if not tok.isalnum():
                break
            before.append(tok)
        if _NEGATIONS.intersection(before):
            return True
        if label == "other" and tokens[start:end] == ["other"]:
            follows_word = end < len(tokens) and tokens[end].isalpha()
            return follows_word or bool(before and before[0] in {"the", "each", "any", "some", "an", "every"})
        return False

    @staticmethod
    def _listed(tokens: list[str], matches: list[_Match], i: int) -> bool:
        """Whether matches `i` and `i + 1` are joined only by commas or conjunctions (part of a list)."""
        if not 0 <= i < len(matches) - 1:
            return False
        return all(t in _LIST_GLUE for t in tokens[matches[i].end : matches[i + 1].start])

    def _after_marker(self, tokens: list[str], matches: list[_Match]) -> int | None:
        """Index (into `matches`) of the label that follows the last answer marker through filler words."""
        by_start = {m.start: i for i, m in enumerate(matches)}
        for pos in range(len(tokens) - 1, -1, -1):
            if tokens[pos] not in _MARKERS:
                continue
            j = pos + 1
            while j < len(tokens):
                if j in by_start:
                    return by_start[j]
                if tokens[j] not in _FILLERS:
                    break
                j += 1
        return None

    def parse(self, text: str, from_end: bool = False) -> ParsedLabel:
        """Parse one reply.

        Rules, strongest first: (1) the label after the last answer marker ("The best answer is: X",
        "Answer: X", "label - X"); (2) the labels mentioned anywhere (negated mentions ignored): one distinct
        label decides; several decide only by position, the last one when `from_end` (reasoning that ends
        with its conclusion) or the first one when the reply starts with it ("walk. Then ..."); otherwise the
        reply is ambiguous. A label that is part of a list ("walk, fall", "walk or fall", an echoed question)
        never decides.

        Args:
            text: the model's reply.
            from_end: prefer the last mentioned label (chain-of-thought replies).
        """
        tokens = _tokens(text or "")
        if not any(t.isalnum() for t in tokens):
            return ParsedLabel(None, "empty")
        matches = self._matches(tokens)
        distinct = tuple(dict.fromkeys(m.label for m in matches))
        picked = self._after_marker(tokens, matches)
        if picked is not None:
            if self._listed(tokens, matches, picked):
                return ParsedLabel(None, "ambiguous", distinct)
            return ParsedLabel(matches[picked].label, "phrase", (matches[picked].label,))
        if not distinct:
            return ParsedLabel(None, "no_match")
        if len(distinct) == 1:
            words = [t for t in tokens if t.isalnum()]
            whole = len(matches) == 1 and matches[0].end - matches[0].start == len(words)
            return ParsedLabel(distinct[0], "exact" if whole else "mention", distinct)
        last = len(matches) - 1
        if from_end and not self._listed(tokens, matches, last - 1):
            return ParsedLabel(matches[last].label, "last", distinct)
        if not from_end and matches[0].start == 0 and not self._listed(tokens, matches, 0):
            return ParsedLabel(matches[0].label, "start", distinct)
        return ParsedLabel(None, "ambiguous", distinct)


@lru_cache(maxsize=32)
def _cached_parser(classes: tuple[str, ...]) -> LabelParser:
    return LabelParser(classes)


def parse_label(
    text: str,
    classes: Sequence[str] = OMNIFALL_CLASSES,
    *,
    synonyms: Mapping[str, str | Sequence[str]] | None = None,
    from_end: bool = False,
) -> ParsedLabel:
    """Map a reply to one of `classes` (see `LabelParser.parse`); None label = unparsed, never a guess."""
    parser = _cached_parser(tuple(classes)) if synonyms is None else LabelParser(classes, synonyms)
    return parser.parse(text, from_end=from_end)


# ---- the task ------------------------------------------------------------------------------------------


@dataclass
class ActionTask:
    """A label set and how it is asked for and read back.

    Attributes:
        classes: the allowed labels, in the order the question lists them.
        question: template with `{labels}`; the default matches the training conversations.
        synonyms: phrase table for parsing; None = `DEFAULT_SYNONYMS`.
    """

    classes: tuple[str, ...] = OMNIFALL_CLASSES
    question: str = ACTION_QUESTION
    synonyms: Mapping[str, str | Sequence[str]] | None = None
    _parser: LabelParser | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.classes = tuple(normalize_label(c) for c in self.classes)
        if "{labels}" not in self.question:
            raise ValueError("the question template must contain {labels}")
        self._parser = LabelParser(self.classes, self.synonyms)

    def prompt(self, cot: bool = False) -> str:
        """The human turn: video placeholder, question listing the labels (and the reasoning request)."""
        text = self.question.format(labels=", ".join(self.classes))
        return f"{VIDEO_TOKEN}\n{text}" + (f"\n{COT_INSTRUCTION}" if cot else "")

    def conversation(self, label: str) -> list[dict[str, str]]:
        """A training conversation for a clip of class `label`."""
        if label not in self.classes:
            raise ValueError(f"label {label!r} is not one of the classes {list(self.classes)}")
        return [{"from": "human", "value": self.prompt()}, {"from": "gpt", "value": label}]

    def parse(self, text: str, from_end: bool = False) -> ParsedLabel:
        """Parse a reply against this label set."""
        return self._parser.parse(text, from_end=from_end)


def parse_class_list(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """`"a,b,c"`, a list, or a file with one class per line (or comma-separated) → normalised names."""
    if value is None:
        return None
    if isinstance(value, str):
        path = Path(value)
        text = path.read_text(encoding="utf-8") if path.is_file() else value
        value = [v for line in text.splitlines() for v in line.split(",")]
    names = tuple(normalize_label(v) for v in value if v.strip())
    if not names:
        raise ValueError("the class list is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"the class list repeats a name: {list(names)}")
    return names


def parse_label_map(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """`"fall_down=fall,lying_down=lie_down"` or a mapping → `{source label: target label}`, normalised."""
    if not value:
        return {}
    if isinstance(value, str):
        pairs = []
        for item in value.split(","):
            if "=" not in item:
                raise ValueError(f"label map entry {item!r} is not of the form source=target")
            pairs.append(item.split("=", 1))
        value = dict(pairs)
    return {normalize_label(k): normalize_label(v) for k, v in value.items()}


def _is_folder(path: Path, format: str | None) -> bool:
    if format is not None:
        return format.lower() in ("folder", *FORMATS["folder"].aliases)
    return path.is_dir()


_QUESTION_RE = re.compile(re.escape(ACTION_QUESTION).replace(re.escape("{labels}"), "(.+)"))


def _classes_from_questions(records: Sequence[Mapping[str, Any]]) -> tuple[str, ...] | None:
    """The label set every record's question lists, when they all ask the same classification question.

    The training question names the whole label set, so a split missing some class (or a prepared file of
    one split) still yields the classes, in the order the model was asked them.
    """
    found: set[str] = set()
    for r in records:
        turns = r.get("conversations") or []
        match = _QUESTION_RE.search(turns[0].get("value", "")) if turns else None
        if match is None:
            return None
        found.add(match.group(1))
        if len(found) > 1:
            return None
    if not found:
        return None
    names = tuple(normalize_label(c) for c in found.pop().split(","))
    return names if len(set(names)) == len(names) else None


def load_action_records(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    video_root: str | os.PathLike | None = None,
    split_file: str | os.PathLike | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    label_map: Mapping[str, str] | None = None,
) -> tuple[ActionTask, list[dict]]:
    """Read a classification dataset and its label set.

    Args:
        path: an OmniFall/WanFall label CSV, a folder-per-class root, or a conversation file whose records
            carry `label` (e.g. written by `prepare`).
        format: annotation format; None sniffs it.
        video_root: folder that video paths are relative to.
        split_file: OmniFall split CSV (cross-subject, cross-view, ...): keep only those videos.
        split: for folder datasets with `train/val/test` folders (or records with a `split` field): keep one.
        classes: the label set; None = the classes the records' question lists (label CSVs: OmniFall's 16;
            class folders: the sorted folder names; prepared files: what they were prepared with), else
            OmniFall's classes when every label is one, else the sorted labels found.
        label_map: renames labels before they are checked against the label set (`fall_down` -> `fall`).

    Returns:
        The task and the records (each with `label` in the label set and `label_id` its index there).
        Records whose label is outside a user-given label set are dropped with a warning.

    Raises:
        AnnotationError: a record has no `label` field.
        ValueError: the split selects nothing, or no record is left.
    """
    path = Path(path)
    records = load_annotations(path, format=format, video_root=video_root, split_file=split_file)
    label_map = dict(label_map or {})
    for i, r in enumerate(records):
        if not isinstance(r.get("label"), str) or not r["label"]:
            raise AnnotationError(path, f"record {i}", "label", "missing; an action dataset needs a class label")
        r["label"] = label_map.get(normalize_label(r["label"]), normalize_label(r["label"]))
    all_labels = sorted({r["label"] for r in records})
    asked = None if label_map else _classes_from_questions(records)
    if classes is not None:
        names = tuple(normalize_label(c) for c in classes)
    elif asked is not None and set(all_labels) <= set(asked):
        names = asked
    elif not _is_folder(path, format) and set(all_labels) <= set(OMNIFALL_CLASSES):
        names = OMNIFALL_CLASSES
    else:
        names = tuple(all_labels)
    if split is not None:
        with_split = [r for r in records if "split" in r]
        if not with_split:
            raise ValueError(f"{path}: split={split!r} given but the records have no split; pass a split file")
        records = [r for r in records if str(r.get("split", "")).lower() == split.lower()]
        if not records:
            found = sorted({str(r["split"]) for r in with_split})
            raise ValueError(f"{path}: no records in split {split!r}; splits found: {found}")
    outside = Counter(r["label"] for r in records if r["label"] not in names)
    if outside:
        logger.warning(
            "%s: dropping %d records whose labels are outside the label set: %s",
            path,
            sum(outside.values()),
            dict(outside),
        )
        records = [r for r in records if r["label"] in names]
    if not records:
        raise ValueError(f"{path}: no records left for the label set {list(names)}")
    index = {c: i for i, c in enumerate(names)}
    for r in records:
        r["label_id"] = index[r["label"]]
    return ActionTask(classes=names), records


# ---- instruction files for training ---------------------------------------------------------------------

# `record_origin` names the file a record was read from; the prepared file is its own origin.
_DROP_FIELDS = ("conversations", "video", "label_id", "record_origin")


def instruction_record(record: Mapping[str, Any], task: ActionTask, relative_to: Path | None = None) -> dict:
    """A LLaVA-style training record: the task's question, the label as answer, the segment bounds, metadata.

    Args:
        record: a record from `load_action_records`.
        task: the label set and question.
        relative_to: write the video path relative to this folder (the file's own folder keeps the files
            portable); None keeps it as is.
    """
    video = record.get("video")
    if video is not None and relative_to is not None:
        video_abs, folder = os.path.abspath(video), os.path.abspath(relative_to)
        # Relative when both share a folder below the top level (data/x/instruct -> ../video/...), else absolute.
        if os.path.dirname(os.path.commonpath([video_abs, folder])) != os.path.dirname(os.path.sep):
            video = os.path.relpath(video_abs, folder)
        else:
            video = video_abs
    out = {"id": record["id"], "video": video, "conversations": task.conversation(record["label"])}
    out.update({k: v for k, v in record.items() if k not in ("id", *_DROP_FIELDS)})
    out["label_id"] = task.classes.index(record["label"])
    return out


def oversample_classes(records: Sequence[dict], seed: int = 0) -> list[dict]:
    """Repeat records of the rarer classes until every class is as frequent as the most frequent one.

    Balancing in the written file (rather than in a sampler) keeps the training DataLoader's seeded,
    resumable, distributed sampling untouched. Copies are drawn without replacement round by round and
    get ids suffixed `#2`, `#3`, ...
    """
    by_class: dict[str, list[dict]] = {}
    for r in records:
        by_class.setdefault(r["label"], []).append(r)
    if not by_class:
        return []
    target = max(len(v) for v in by_class.values())
    rng = random.Random(seed)
    out = list(records)
    for label in sorted(by_class):
        members = by_class[label]
        copies = target - len(members)
        round_no = 1
        while copies > 0:
            round_no += 1
            draw = rng.sample(members, min(copies, len(members)))
            out.extend({**r, "id": f"{r['id']}#{round_no}"} for r in draw)
            copies -= len(draw)
    return out


def write_instruction_file(
    records: Sequence[Mapping[str, Any]],
    task: ActionTask,
    path: str | os.PathLike,
    *,
    balance: bool = False,
    seed: int = 0,
) -> Path:
    """Write records as a LLaVA-format JSON Lines file that `MERVDataModule` (and `load_action_records`) read.

    Args:
        records: records from `load_action_records`.
        task: the label set and question.
        path: output `.jsonl`; video paths are written relative to its folder.
        balance: oversample rarer classes (see `oversample_classes`).
        seed: oversampling seed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = oversample_classes(list(records), seed) if balance else list(records)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(instruction_record(r, task, path.parent), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    counts = Counter(r["label"] for r in rows)
    logger.info("%s: %d samples %s", path, len(rows), dict(sorted(counts.items())))
    return path


# ---- model interface and exemplars ---------------------------------------------------------------------


class ActionModel(Protocol):
    """What evaluation needs from a model (`merv.models.VideoLM` provides it)."""

    def get_prompt_builder(self) -> Any: ...

    def generate(self, video: Any, prompt_text: str, **kwargs: Any) -> str: ...

    def option_nll(self, video: Any, question: str, options: list[str], start=None, end=None) -> list[float]: ...

    def normalized_pixels(
        self, video: Any, start: float | None = None, end: float | None = None
    ) -> list[torch.Tensor]: ...

    def encode_aligned(self, pixel_values: list[torch.Tensor]) -> list[torch.Tensor]: ...


def _clip(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"video": record["video"], "start": record.get("start"), "end": record.get("end")}


@torch.no_grad()
def clip_embedding(model: ActionModel, record: Mapping[str, Any]) -> torch.Tensor:
    """Unit-norm visual descriptor of a clip (inside its segment) from the frozen encoders.

    Each encoder's aligned features `(1, T, N, D_e)` are mean-pooled over time and space and L2-normalised;
    the per-encoder vectors are concatenated and scaled by `1/sqrt(E)`, so the dot product of two
    descriptors is the mean over encoders of their cosine similarities (no encoder dominates by width).
    """
    pixels = [p.unsqueeze(0) for p in model.normalized_pixels(record["video"], record.get("start"), record.get("end"))]
    aligned = model.encode_aligned(pixels)
    parts = [torch.nn.functional.normalize(a.float().mean(dim=(1, 2)).reshape(-1), dim=0) for a in aligned]
    return torch.cat(parts).cpu() / len(parts) ** 0.5


class ExemplarSelector:
    """Picks `k` labelled clips from a pool (the training split) for each query.

    `random`: a seeded draw per query id (the same query gets the same exemplars in any order or chunk).
    `similar`: the `k` pool clips whose `clip_embedding` has the highest cosine similarity to the query's;
    pool features are computed once. Clips of the query's own video never serve as its exemplars. In the
    prompt the most similar exemplar comes last, next to the query.

    Args:
        pool: labelled records.
        k: exemplars per query.
        strategy: `random` or `similar`.
        seed: seed of the random draws (and of the pool subsample).
        max_pool: keep at most this many pool records (a seeded subsample); None keeps all.
        model: needed for `similar`.
    """

    def __init__(
        self,
        pool: Sequence[dict],
        k: int,
        strategy: ExemplarStrategy = "random",
        seed: int = 0,
        max_pool: int | None = None,
        model: ActionModel | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if strategy not in ("random", "similar"):
            raise ValueError(f"exemplar strategy must be 'random' or 'similar', got {strategy!r}")
        if strategy == "similar" and model is None:
            raise ValueError("similarity-based exemplars need the model's encoders")
        pool = list(pool)
        if max_pool is not None and len(pool) > max_pool:
            pool = random.Random(seed).sample(pool, max_pool)
        self.k, self.strategy, self.seed, self.model = k, strategy, seed, model
        self.pool = [r for r in pool if r.get("video") is not None]
        self._features: torch.Tensor | None = None
        if strategy == "similar":
            self._embed_pool()
        if len(self.pool) < k:
            raise ValueError(f"the exemplar pool has {len(self.pool)} usable clips, fewer than k={k}")

    def _embed_pool(self) -> None:
        kept, feats = [], []
        started = time.perf_counter()
        for r in self.pool:
            try:
                feats.append(clip_embedding(self.model, r))
            except (VideoDecodeError, FileNotFoundError) as e:
                logger.warning("exemplar pool: skipping %s: %s", r.get("id"), e)
                continue
            kept.append(r)
        self.pool = kept
        self._features = torch.stack(feats) if feats else torch.zeros(0, 1)
        logger.info("embedded %d exemplar clips in %.1f s", len(kept), time.perf_counter() - started)

    def drop(self, video: str) -> None:
        """Remove every pool clip of an unreadable video."""
        keep = [i for i, r in enumerate(self.pool) if r["video"] != video]
        self.pool = [self.pool[i] for i in keep]
        if self._features is not None:
            self._features = self._features[keep]

    def select(self, query: Mapping[str, Any], query_embedding: torch.Tensor | None = None) -> list[dict]:
        """The exemplars for one query, in prompt order."""
        allowed = [i for i, r in enumerate(self.pool) if r["video"] != query.get("video")]
        if len(allowed) < self.k:
            raise ValueError(f"only {len(allowed)} exemplar clips come from other videos than {query.get('video')}")
        if self.strategy == "random":
            rng = random.Random(f"{self.seed}:{query['id']}")
            return [self.pool[i] for i in rng.sample(allowed, self.k)]
        if query_embedding is None:
            query_embedding = clip_embedding(self.model, query)
        sims = self._features[allowed] @ query_embedding
        top = torch.topk(sims, self.k).indices.tolist()  # most similar first
        return [self.pool[allowed[i]] for i in reversed(top)]


# ---- prediction ------------------------------------------------------------------------------------------


def _check_prompt_fits(model: ActionModel, prompt: str, num_videos: int) -> None:
    """A generation prompt cut at the model's `max_length` loses its end (the query): refuse it instead."""
    processor = getattr(model, "processor", None)
    limit = getattr(processor, "max_length", None)
    if limit is None:
        return
    try:
        length = len(processor.encode_prompt(prompt, num_videos=num_videos)["input_ids"])
    except ValueError as e:
        raise ValueError(f"the prompt with {num_videos} video(s) does not fit max_length={limit}: {e}") from None
    if length >= limit:
        raise ValueError(
            f"the prompt with {num_videos} video(s) reaches max_length={limit} tokens and would be cut; "
            "use fewer few-shot exemplars or a model with a longer max_length"
        )


def _generate(model: ActionModel, video: Any, prompt: str, record: Mapping[str, Any], max_new_tokens: int) -> str:
    _check_prompt_fits(model, prompt, len(video) if isinstance(video, list) else 1)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if not isinstance(video, list):
        kwargs.update(start=record.get("start"), end=record.get("end"))
    return model.generate(video, prompt, **kwargs)


def predict_record(
    model: ActionModel,
    task: ActionTask,
    record: Mapping[str, Any],
    mode: Mode = "zero-shot",
    *,
    exemplars: Sequence[Mapping[str, Any]] = (),
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """Predict the class of one clip (its `start`/`end` segment only).

    Args:
        model: the video language model.
        task: label set, question and parser.
        record: a record with `video`, optional `start`/`end` and `id`.
        mode: `zero-shot`, `few-shot`, `cot` or `loglik`.
        exemplars: the in-context clips for `few-shot` (records with `label`).
        max_new_tokens: generation length; None = the mode's default.

    Returns:
        `prediction` (class name or None), `reply`, `method` and, for `loglik`, `scores` (NLL per class);
        for `few-shot`, `exemplars` (their ids).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    tokens = max_new_tokens if max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS[mode]
    if mode == "loglik":
        nll = model.option_nll(
            record["video"], task.prompt(), list(task.classes), start=record.get("start"), end=record.get("end")
        )
        best = min(range(len(nll)), key=nll.__getitem__)
        scores = {c: round(float(v), 5) for c, v in zip(task.classes, nll)}
        return {"prediction": task.classes[best], "reply": task.classes[best], "method": "loglik", "scores": scores}
    builder = model.get_prompt_builder()
    video: Any = record["video"]
    out: dict[str, Any] = {}
    if mode == "few-shot":
        if not exemplars:
            raise ValueError("few-shot prediction needs exemplars")
        for ex in exemplars:
            builder.add_turn("human", task.prompt())
            builder.add_turn("gpt", ex["label"])
        video = [*(_clip(ex) for ex in exemplars), _clip(record)]
        out["exemplars"] = [ex["id"] for ex in exemplars]
    builder.add_turn("human", task.prompt(cot=mode == "cot"))
    reply = _generate(model, video, builder.get_prompt(), record, tokens)
    parsed = task.parse(reply, from_end=mode == "cot")
    out.update(prediction=parsed.label, reply=reply, method=parsed.method)
    if parsed.method == "ambiguous":
        out["candidates"] = list(parsed.candidates)
    return out


# ---- evaluation ------------------------------------------------------------------------------------------


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
        exemplars: `random` or `similar`.
        train_labels: where exemplars come from; None = `labels`.
        train_split_file: split file of the exemplar pool; None = `train.csv` beside `split_file`.
        train_split: split of folder datasets for the pool; None = `train` when `split` is given.
        exemplar_pool: keep at most this many pool clips (seeded subsample); None = all.
        seed: exemplar seed.
        max_new_tokens: generation length; None = 16 (256 for `cot`).
        positive: the positive classes of the binary fall view.
        unparsed_as: how unparsed replies count in the binary view (`error` or `negative`).
        breakdown: metadata columns to break metrics down by; `("auto",)` = those present (dataset, cam,
            subject, demographics) with at least two values.
        output_dir: where predictions, the report and the confusion-matrix PNG go.
        model_path: recorded in the report.
        limit: evaluate only the first `limit` records.
        max_skip_rate: fail once more than this fraction of clips could not be decoded.
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
    exemplars: ExemplarStrategy = "random"
    train_labels: str | os.PathLike | None = None
    train_split_file: str | os.PathLike | None = None
    train_split: str | None = None
    exemplar_pool: int | None = 1000
    seed: int = 0
    max_new_tokens: int | None = None
    positive: Sequence[str] = DEFAULT_POSITIVE
    unparsed_as: Literal["error", "negative"] = "error"
    breakdown: Sequence[str] = ("auto",)
    output_dir: str | os.PathLike = "eval_results/action"
    model_path: str | None = None
    limit: int | None = None
    max_skip_rate: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.exemplars not in ("random", "similar"):
            raise ValueError(f"exemplars must be 'random' or 'similar', got {self.exemplars!r}")
        if self.mode == "few-shot" and self.k < 1:
            raise ValueError(f"few-shot needs k >= 1, got {self.k}")
        if not 0.0 <= self.max_skip_rate <= 1.0:
            raise ValueError(f"max_skip_rate must be within [0, 1], got {self.max_skip_rate}")

    @property
    def run_name(self) -> str:
        """File prefix of this run's outputs, e.g. `zero-shot` or `few-shot-similar-k4`."""
        return f"few-shot-{self.exemplars}-k{self.k}" if self.mode == "few-shot" else self.mode


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
    row["correct"] = row.get("prediction") == record["label"]
    row.update({k: v for k, v in record.items() if k not in _META_SKIP and k not in row})
    return row


def evaluate_action(
    model: ActionModel, cfg: ActionEvalConfig, *, task: ActionTask | None = None, records: Sequence[dict] | None = None
) -> dict[str, Any]:
    """Predict every clip, write `<run>_predictions.jsonl`, `<run>_report.json` and `<run>_confusion.png`.

    Predictions are written line by line as they are made (each run starts the file afresh). Clips whose
    video cannot be decoded are recorded as skipped and left out of the metrics; past `max_skip_rate` the
    run fails after writing its files.

    Args:
        model: the video language model (or anything with the `ActionModel` methods the mode uses).
        cfg: the run settings.
        task: the label set; None = read with the data.
        records: the clips to evaluate; None = read from `cfg.labels`.

    Returns:
        The report (also written as JSON): counts, metrics (accuracy, balanced accuracy, macro-F1,
        per-class, binary fall view, confusion matrix), breakdowns and output paths.
    """
    started = time.perf_counter()
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
    selector = None
    source = None
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
        selector = ExemplarSelector(pool, cfg.k, cfg.exemplars, cfg.seed, cfg.exemplar_pool, model)

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.run_name
    pred_path = out_dir / f"{name}_predictions.jsonl"
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    with pred_path.open("w", encoding="utf-8") as f:
        for n, record in enumerate(records, start=1):
            try:
                result = _predict_with_retries(model, task, record, cfg, selector)
            except (VideoDecodeError, FileNotFoundError) as e:
                logger.warning("skipping %s: %s", record["id"], e)
                row = {"id": record["id"], "video": record.get("video"), "label": record["label"], "skipped": str(e)}
                skipped.append(row)
            else:
                row = _prediction_row(record, result)
                rows.append(row)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            if n % 50 == 0 or n == len(records):
                logger.info("%s: %d/%d clips", name, n, len(records))

    report = action_report(rows, task, cfg, skipped=len(skipped))
    report["data"] = {
        "labels": str(cfg.labels),
        "labels_sha256": _sha256(cfg.labels),
        "split_file": _str(cfg.split_file),
        "split_file_sha256": _sha256(cfg.split_file) if cfg.split_file else None,
        "split": cfg.split,
        "video_root": _str(cfg.video_root),
        "format": cfg.format,
    }
    if source is not None:
        report["settings"]["exemplar_source"] = {k: _str(v) for k, v in source.items()}
        report["settings"]["exemplar_pool_size"] = len(selector.pool)
    png = save_confusion_matrix(
        report["metrics"]["confusion_matrix"]["counts"],
        task.classes,
        out_dir / f"{name}_confusion.png",
        title=f"{name} ({report['counts']['evaluated']} clips)",
        drop_empty=True,
    )
    report["files"] = {
        "predictions": str(pred_path),
        "confusion_matrix_png": str(png),
        "report": str(out_dir / f"{name}_report.json"),
    }
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    write_json_atomic(out_dir / f"{name}_report.json", report)
    total = len(records)
    if total and len(skipped) / total > cfg.max_skip_rate:
        raise SkipRateError(
            f"{len(skipped)} of {total} clips ({len(skipped) / total:.1%}) could not be decoded, more than "
            f"max_skip_rate={cfg.max_skip_rate:.1%}; first: {skipped[0]['video']}"
        )
    return report


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


def action_report(
    rows: Sequence[Mapping[str, Any]], task: ActionTask, cfg: ActionEvalConfig, *, skipped: int = 0
) -> dict[str, Any]:
    """Report of evaluated prediction rows (`label`, `prediction`, `method`, metadata)."""
    positive = [normalize_label(p) for p in cfg.positive]
    views = {p: [p] for p in positive} if len(positive) > 1 else {}
    metrics = classification_metrics(
        [r["label"] for r in rows],
        [r["prediction"] for r in rows],
        task.classes,
        positive=positive,
        unparsed_as=cfg.unparsed_as,
        binary_views=views,
    )
    columns = list(cfg.breakdown)
    if columns == ["auto"]:
        columns = auto_breakdown_columns(rows)
    elif columns in ([], ["none"]):
        columns = []
    binary = metrics.get("binary") or {}
    settings = {
        "mode": cfg.mode,
        "prompt_version": PROMPT_VERSION,
        "question": task.prompt(cot=cfg.mode == "cot"),
        "max_new_tokens": None
        if cfg.mode == "loglik"
        else (cfg.max_new_tokens if cfg.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS[cfg.mode]),
        "positive": positive,
        "unparsed_as": cfg.unparsed_as,
    }
    if cfg.mode == "few-shot":
        settings.update(k=cfg.k, exemplars=cfg.exemplars, seed=cfg.seed, exemplar_pool=cfg.exemplar_pool)
    if cfg.mode == "loglik":
        settings["scoring"] = "argmin over the classes of the mean token NLL of the class name as the answer"
    return {
        "task": "action",
        "kind": "action",
        "model_path": cfg.model_path,
        "settings": settings,
        "classes": list(task.classes),
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
        "breakdown": breakdown(rows, columns, task.classes, positive=positive, unparsed_as=cfg.unparsed_as)
        if columns
        else {},
    }


# ---- command line ----------------------------------------------------------------------------------------


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
    p.add_argument("--max_skip_rate", type=float, default=0.2)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    p.add_argument("--tensorboard_dir", default=None, help="also log the metrics and confusion matrix here")
    p.add_argument(
        "--video_cache", default=None, help="folder caching decoded, resized clips (exemplars too) for later runs"
    )
    return p


def eval_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, load the model, evaluate, write the files; returns the report."""
    args = build_eval_parser().parse_args(argv)
    model = load_model(args.model_path, args.device, args.dtype, args.video_cache, f"action-{Path(args.labels).stem}")
    if args.mode == "few-shot" and not args.video_cache:
        # Every query's prompt repeats exemplar clips: keep the recently decoded ones in memory.
        model.processor.pixel_cache = PixelMemory(max_items=128)  # ~0.9 GB of merv-full clips
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
        exemplars=args.exemplars,
        train_labels=args.train_labels,
        train_split_file=args.train_split_file,
        train_split=args.train_split,
        exemplar_pool=args.exemplar_pool or None,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        positive=_csv_arg(args.positive) or [],
        unparsed_as=args.unparsed_as,
        breakdown=_csv_arg(args.breakdown) or ["none"],
        output_dir=args.output_dir or default_output_dir(args.model_path) / "action",
        model_path=args.model_path,
        limit=args.limit,
        max_skip_rate=args.max_skip_rate,
    )
    report = evaluate_action(model, cfg)
    if args.tensorboard_dir:
        log_report_to_tensorboard(report, args.tensorboard_dir)
    return report


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
    logger.info("%s", summary_line(report))
    logger.info("report: %s", report["files"]["report"])
    return 0


__all__ = [
    "ACTION_QUESTION",
    "COT_INSTRUCTION",
    "DEFAULT_SYNONYMS",
    "MODES",
    "PROMPT_VERSION",
    "UNPARSED",
    "ActionEvalConfig",
    "ActionTask",
    "ExemplarSelector",
    "LabelParser",
    "ParsedLabel",
    "SkipRateError",
    "action_report",
    "clip_embedding",
    "eval_main",
    "evaluate_action",
    "instruction_record",
    "load_action_records",
    "log_report_to_tensorboard",
    "oversample_classes",
    "parse_class_list",
    "parse_label",
    "parse_label_map",
    "predict_record",
    "prepare_main",
    "summary_line",
    "write_instruction_file",
]


if __name__ == "__main__":
    raise SystemExit(main())
