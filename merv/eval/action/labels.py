"""Reading a label from a free-text reply: synonyms, case and separator folding, longest phrase first.

A reply that names no label, or several with equal standing, is unparsed and never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from merv.data.formats import normalize_label

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
