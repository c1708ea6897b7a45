"""Turn a model's free-text reply to a multiple-choice question into an option index.

The parser is deterministic: when a reply names no option, or names several with equal weight, it is
reported as unparseable rather than guessed, so accuracy never depends on a random fallback.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

LETTERS = string.ascii_uppercase

# Punctuation that may wrap a reply or a bare letter ("(B)", "B.", "**B**", "'B'").
_WRAP_CHARS = " \t\r\n.,;:!?'\"`*()[]{}<>"

# Phrases that introduce the chosen letter: "the answer is B", "Best option: (C)", "I choose D".
_PHRASE = (
    r"(?:(?:the\s+)?(?:correct|best|right|final|most\s+likely)\s+(?:answer|option|choice)"
    r"|(?:the\s+)?answer"
    r"|i\s+(?:would\s+)?(?:choose|pick|select|go\s+with)(?:\s+option)?"
    r"|(?:the\s+)?(?:option|choice)\s+is)"
)
_PHRASE_RE = re.compile(
    _PHRASE + r"\s*(?:is|would\s+be|=|:|-)?\s*(?:option\s+|choice\s+|letter\s+)?[(\[]?\s*([A-Za-z])\b", re.I
)


@dataclass(frozen=True)
class ParsedAnswer:
    """Result of parsing one reply.

    Attributes:
        index: 0-based option index, or None when the reply is unparseable.
        method: which rule decided (`letter`, `start`, `phrase`, `marked`, `end`, `option_text`), or
            `empty` / `ambiguous` / `no_match` when unparseable.
        candidates: the option indices that were in contention when the reply was ambiguous.
    """

    index: int | None
    method: str
    candidates: tuple[int, ...] = field(default_factory=tuple)

    @property
    def parsed(self) -> bool:
        """Whether the reply was mapped to an option."""
        return self.index is not None

    @property
    def letter(self) -> str | None:
        """The option letter ("A" for index 0), or None when unparseable."""
        return None if self.index is None else LETTERS[self.index]


def option_letters(num_options: int) -> str:
    """Letters used to label `num_options` options ("ABCDE" for five)."""
    if not 1 <= num_options <= len(LETTERS):
        raise ValueError(f"num_options must be in 1..{len(LETTERS)}, got {num_options}")
    return LETTERS[:num_options]


# Words after which a letter is still a letter ("A because ...", "b or c"); any other lower-case word
# makes "A"/"I"/a lower-case letter read as ordinary English ("A man ...", "answer is a dog").
_CONNECTIVES = frozenset({"or", "and", "because", "since", "as", "but", "so", "is", "was", "seems", "would", "should"})


def _reads_as_word(letter: str, rest: str) -> bool:
    """Whether `letter`, followed by the text `rest`, is an English word rather than an option label."""
    if letter.isupper() and letter not in "AI":
        return False
    m = re.match(r"\s+([a-z]+)", rest)
    return m is not None and m.group(1) not in _CONNECTIVES


def _letter_index(letter: str, num_options: int) -> int | None:
    idx = LETTERS.find(letter.upper())
    return idx if 0 <= idx < num_options else None


def _decide(found: list[int]) -> tuple[int | None, tuple[int, ...]]:
    """One distinct index → that index; several distinct ones → ambiguous (None)."""
    distinct = tuple(sorted(set(found)))
    if len(distinct) == 1:
        return distinct[0], distinct
    return None, distinct


def _normalise_text(text: str) -> str:
    text = text.lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    return " ".join(text.split())


def _match_option_text(reply: str, options: list[str]) -> ParsedAnswer:
    """Find options whose text occurs in the reply as whole words.

    An option whose text lies inside a longer matching option ("red" in "red ball") gives way to it, so the
    longest option wins; two options mentioned separately ("red ... blue") leave the reply ambiguous.
    """
    norm_reply = f" {_normalise_text(reply)} "
    matched: list[tuple[int, str]] = []
    for idx, opt in enumerate(options):
        norm_opt = _normalise_text(opt)
        if norm_opt and f" {norm_opt} " in norm_reply:
            matched.append((idx, norm_opt))
    if not matched:
        return ParsedAnswer(None, "no_match")
    best = [
        idx
        for idx, text in matched
        if not any(len(other) > len(text) and f" {text} " in f" {other} " for _, other in matched)
    ]
    if len(best) == 1:
        return ParsedAnswer(best[0], "option_text", (best[0],))
    return ParsedAnswer(None, "ambiguous", tuple(best))


def parse_mcq_answer(reply: str, options: list[str]) -> ParsedAnswer:
    """Map a free-text reply to one of `options`.

    Rules, strongest first; the first rule that finds exactly one distinct letter decides, and a rule that
    finds several distinct letters makes the reply ambiguous (unparseable):

    1. the whole reply is a letter, possibly wrapped: "B", "(B)", "B.", "**B**";
    2. an answer phrase: "the answer is B", "Best option: (C)", "I choose D", "Answer: b";
    3. marked letters: a reply starting with "(B) ...", "B. ...", "B) ...", "B: ..." or a bare capital
       other than "A"/"I" ("C because ..."; a leading "A " is read as the article), together with "(B)"
       or a standing " B." / " B)" / " B:" anywhere; a reply listing several options is ambiguous;
    4. a lone capital letter ending the reply: "... so it is C.";
    5. option text: options whose text occurs in the reply (case-insensitive, whole words); the longest
       matching option wins over options contained in it, separately mentioned options are ambiguous.

    Only letters naming an existing option count (A-C for three options).

    Args:
        reply: the model's generated text.
        options: option texts in presentation order.

    Returns:
        A `ParsedAnswer`; `index` is None when nothing or more than one option was named.
    """
    n = len(options)
    if n == 0:
        raise ValueError("parse_mcq_answer needs at least one option")
    text = reply.strip()
    if not text.strip(_WRAP_CHARS):
        return ParsedAnswer(None, "empty")
    upper_bound = LETTERS[n - 1]
    letter_class = f"[A-{upper_bound}]"

    # 1. Bare letter, in either case ("b" alone is unambiguous).
    core = text.strip(_WRAP_CHARS)
    if len(core) == 1 and core.isalpha():
        idx = _letter_index(core, n)
        if idx is not None:
            return ParsedAnswer(idx, "letter", (idx,))

    # 2. Answer phrases. A lower-case letter counts only when nothing word-like follows it, so
    # "the answer is a dog" is not read as option A.
    found = []
    for m in _PHRASE_RE.finditer(text):
        letter = m.group(1)
        idx = _letter_index(letter, n)
        if idx is None:
            continue
        if _reads_as_word(letter, text[m.end() :]):
            continue
        found.append(idx)
    if found:
        # Phrases naming two different letters ("the answer is A or B") are ambiguous, not a pick.
        idx, cands = _decide(found)
        return ParsedAnswer(idx, "phrase" if idx is not None else "ambiguous", cands)

    # 3. Marked letters: at the start ("(B) ...", "B. ...", "B) ...", "C because ...") and anywhere
    # ("(B)", " B." standing alone). A reply that lists several options ("(A) red (B) blue") is ambiguous.
    # A leading bare "A" or "I" is read as a word, not a letter.
    bare = "".join(ch for ch in LETTERS[:n] if ch not in "AI")
    start_alts = [rf"\(({letter_class})\)", rf"({letter_class})\s*[.):,](?!\w)"]
    if bare:
        start_alts.append(rf"([{bare}])\s")
    # A leading "A because ..." is a letter too.
    start_alts.append(r"(A)(?=\s+(?:" + "|".join(sorted(_CONNECTIVES)) + r")\b)")
    m = re.match(r"[\s*\"'`]*(?:" + "|".join(start_alts) + ")", text)
    start_idx = None if m is None else _letter_index(next(g for g in m.groups() if g), n)
    found = [] if start_idx is None else [start_idx]
    found += [_letter_index(g, n) for g in re.findall(rf"\(({letter_class})\)", text)]
    found += [_letter_index(g, n) for g in re.findall(rf"(?:^|(?<=\s))({letter_class})[.):](?=\s|$)", text)]
    found = [i for i in found if i is not None]
    if found:
        idx, cands = _decide(found)
        if idx is None:
            return ParsedAnswer(None, "ambiguous", cands)
        return ParsedAnswer(idx, "start" if idx == start_idx else "marked", cands)

    # 4. Lone capital letter at the end, unless other standalone letters make it a list ("A or B").
    m = re.search(rf"(?:^|\s)({letter_class})[\s{re.escape(_WRAP_CHARS)}]*$", text)
    if m is not None:
        standalone = {
            _letter_index(hit.group(1), n)
            for hit in re.finditer(rf"(?<![\w'])({letter_class})(?![\w'])", text)
            if not _reads_as_word(hit.group(1), text[hit.end() :])
        }
        idx, cands = _decide(list(standalone))
        return ParsedAnswer(idx, "end" if idx is not None else "ambiguous", cands)

    # 5. Option text.
    return _match_option_text(text, options)
