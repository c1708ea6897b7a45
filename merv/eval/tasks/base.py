"""The benchmark registry: the uniform item, a task's description, and the prompts of each task kind.

A task is a reader (annotation files -> `EvalItem`s), a kind that decides how predictions are scored, and the
report settings of its benchmark (question-type names and groups, breakdowns). Each benchmark family registers
its tasks with `register_task` in its own module of `merv.eval.tasks`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from merv.data.formats import AnnotationError
from merv.eval.parsing import option_letters

log = logging.getLogger(__name__)

TaskKind = Literal["mcq", "openended"]

#: Instruction appended to every generative multiple-choice prompt.
MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
#: Bumped whenever the prompt wording changes, so results from different prompts are never mixed.
MCQ_PROMPT_VERSION = "mcq-v1"
#: Bumped whenever the open-ended prompt changes.
OPENENDED_PROMPT_VERSION = "openended-v1"


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


# --------------------------------------------------------------------------------------------------- prompts


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
