"""Classification datasets as label-set tasks: reading the records and the label set, writing instruction files.

A label set (OmniFall's 16 classes, the classes of a folder-per-class dataset, or a user list) becomes a
question that lists the allowed labels; the answer is the label.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merv.data.formats import FORMATS, OMNIFALL_CLASSES, VIDEO_TOKEN, AnnotationError, load_annotations, normalize_label
from merv.eval.action.labels import LabelParser, ParsedLabel

logger = logging.getLogger(__name__)

ACTION_QUESTION = "Which action does the person in the video perform? Answer with one of: {labels}."
"""The classification question; with the OmniFall classes it is word for word the question of the training
conversations `load_annotations` writes for label CSVs and class folders, so a fine-tuned model is asked
what it was trained on."""

COT_INSTRUCTION = (
    "First describe step by step the person's posture and movement from the start to the end of the clip, "
    "then finish with the line 'The best answer is: <label>' using one of the labels above."
)
"""Appended to the question in `cot` mode."""


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
