"""Scoring of open-ended answers: an LLM judge (yes/no + 0-5 score) and a deterministic string-match metric.

The judge follows the Video-ChatGPT protocol with its own prompt wording. Two back ends share it: any
OpenAI-compatible chat-completions endpoint (standard library HTTP only) and a local Hugging Face causal LM.
Every verdict is cached on disk under a key built from the judge model, the prompt version and the item's
content, so rerunning an evaluation never pays for the same judgement twice.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import logging
import math
import os
import re
import string
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

#: Identifies the wording below; it is part of every cache key and recorded in every report.
JUDGE_PROMPT_VERSION = "merv-qa-judge-v1"

JUDGE_SYSTEM_PROMPT = (
    "You grade answers to questions about videos. Decide whether a predicted answer conveys the same "
    "meaning as the reference answer. Synonyms, paraphrases and harmless extra detail are acceptable; "
    "answers that contradict the reference, or leave out what it asks for, are not."
)

JUDGE_USER_TEMPLATE = (
    "Question: {question}\n"
    "Reference answer: {answer}\n"
    "Predicted answer: {pred}\n\n"
    'Reply with a single JSON object and nothing else, of the form {{"pred": "yes", "score": 4}}. '
    '"pred" is "yes" if the predicted answer matches the reference answer and "no" otherwise; '
    '"score" is an integer from 0 (no match) to 5 (perfect match).'
)


class JudgeError(RuntimeError):
    """A judgement could not be obtained (after all retries, or for a reason retrying cannot fix)."""


class MalformedReplyError(JudgeError):
    """The judge's reply does not contain a usable verdict."""


@dataclass(frozen=True)
class Verdict:
    """A judge's decision on one item.

    Attributes:
        pred: "yes" when the prediction matches the reference, else "no".
        score: match quality, integer 0-5.
    """

    pred: str
    score: int


def judge_messages(question: str, answer: str, pred: str) -> list[dict[str, str]]:
    """The chat messages sent to the judge for one item."""
    return [
        {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
        {"role": "user", "content": JUDGE_USER_TEMPLATE.format(question=question, answer=answer, pred=pred)},
    ]


def parse_verdict(reply: str) -> Verdict:
    """Read `{"pred": "yes"|"no", "score": 0-5}` from a judge reply.

    The first `{...}` span is parsed as JSON, then as a Python literal (judges often answer with single
    quotes). A score given as a number or numeric string is truncated to an integer, as the original
    protocol does; anything outside 0-5 is rejected.

    Raises:
        MalformedReplyError: no object, missing keys, or values of the wrong kind.
    """
    m = re.search(r"\{.*?\}", reply, re.S)
    if m is None:
        raise MalformedReplyError(f"no {{...}} object in judge reply {reply[:200]!r}")
    span = m.group(0)
    try:
        obj = json.loads(span)
    except json.JSONDecodeError:
        try:
            obj = ast.literal_eval(span)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise MalformedReplyError(f"unreadable object in judge reply {span[:200]!r}") from e
    if not isinstance(obj, dict) or "pred" not in obj or "score" not in obj:
        raise MalformedReplyError(f"judge reply lacks 'pred' and 'score': {span[:200]!r}")
    pred = str(obj["pred"]).strip().strip(string.punctuation + " ").lower()
    if pred not in ("yes", "no"):
        raise MalformedReplyError(f"judge 'pred' must be yes or no, got {obj['pred']!r}")
    raw_score = obj["score"]
    try:
        if isinstance(raw_score, bool):
            raise ValueError
        score_f = float(raw_score)
    except (TypeError, ValueError) as e:
        raise MalformedReplyError(f"judge 'score' is not a number: {raw_score!r}") from e
    if not math.isfinite(score_f) or not 0 <= score_f <= 5:
        raise MalformedReplyError(f"judge 'score' must be within 0-5, got {raw_score!r}")
    return Verdict(pred=pred, score=int(score_f))


class Judge(Protocol):
    """What the judging loop needs from a back end."""

    #: Judge model identity (endpoint model name or local directory); part of the cache key.
    model: str
    #: How many items may be judged at once.
    max_concurrency: int

    def judge(self, question: str, answer: str, pred: str) -> Verdict:
        """Return a verdict or raise `JudgeError`."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings recorded in reports."""
        ...


@dataclass
class JudgeConfig:
    """How open-ended predictions are scored.

    Attributes:
        kind: `openai` (an OpenAI-compatible chat-completions endpoint), `local` (a local Hugging Face causal
            LM directory) or `match` (exact match and token F1 only, no judge).
        model: the judge model's name (`openai`) or directory (`local`).
        base_url: API root of the `openai` judge.
        api_key_env: environment variable holding the API key.
        concurrency: parallel judge requests.
        timeout: seconds per judge request.
        max_retries: retries per item on 5xx, timeouts and malformed replies.
        cache_dir: verdict cache folder; None = `judge_cache` next to the output, so a rerun only pays for new items.
        device: device of the `local` judge model.
    """

    kind: Literal["openai", "local", "match"] = "match"
    model: str | None = None
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    timeout: float = 30.0
    max_retries: int = 4
    cache_dir: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind != "match" and not self.model:
            raise ValueError(f"the {self.kind} judge needs its model name or directory")


def build_judge(cfg: JudgeConfig) -> Judge | None:
    """The judge a config names; None for string match only."""
    if cfg.kind == "match":
        return None
    if cfg.kind == "openai":
        return OpenAIChatJudge(
            cfg.base_url,
            cfg.model,
            api_key_env=cfg.api_key_env,
            timeout_s=cfg.timeout,
            max_retries=cfg.max_retries,
            concurrency=cfg.concurrency,
        )
    return LocalHFJudge(cfg.model, device=cfg.device)


class OpenAIChatJudge:
    """Judge through an OpenAI-compatible `POST {base_url}/chat/completions` endpoint.

    Temperature 0. Server errors (5xx, 429), connection failures, timeouts and malformed replies are retried
    with exponential backoff (`backoff_s * 2**attempt`); other 4xx errors fail the item at once.

    Args:
        base_url: API root, e.g. "https://api.openai.com/v1" or "http://127.0.0.1:8000/v1".
        model: model name sent in the request (and recorded in results).
        api_key_env: name of the environment variable holding the API key; when unset, no Authorization header
            is sent (local servers), with a warning.
        timeout_s: per-request timeout in seconds.
        max_retries: retries after the first attempt.
        backoff_s: first backoff delay in seconds.
        max_tokens: completion length limit.
        concurrency: how many requests may be in flight at once.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_tokens: int = 64,
        concurrency: int = 4,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.max_concurrency = max(1, concurrency)
        self._api_key = os.environ.get(api_key_env)
        if not self._api_key:
            log.warning("environment variable %s is not set: judge requests carry no API key", api_key_env)

    def describe(self) -> dict[str, Any]:
        """Settings recorded in reports (never the key itself)."""
        return {
            "kind": "openai",
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "prompt_version": JUDGE_PROMPT_VERSION,
        }

    def _post(self, payload: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            body = resp.read()
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
            raise MalformedReplyError(f"unexpected response body {body[:200]!r}") from e
        if not isinstance(content, str):
            raise MalformedReplyError(f"response content is not text: {content!r}")
        return content

    def judge(self, question: str, answer: str, pred: str) -> Verdict:
        """Ask the endpoint for a verdict, retrying transient failures."""
        payload = {
            "model": self.model,
            "messages": judge_messages(question, answer, pred),
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return parse_verdict(self._post(payload))
            except urllib.error.HTTPError as e:
                if e.code < 500 and e.code != 429:
                    raise JudgeError(f"judge endpoint refused the request: HTTP {e.code} {e.reason}") from e
                last = e
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                last = e
            except MalformedReplyError as e:
                last = e
            log.debug("judge attempt %d failed: %s", attempt + 1, last)
        raise JudgeError(f"judge failed after {self.max_retries + 1} attempts: {last}") from last


class LocalHFJudge:
    """Judge with a local Hugging Face causal LM directory, greedy decoding, same prompt and reply format.

    Generation is serialised (one item at a time) since a single model instance is shared.

    Args:
        model_dir: local directory with a tokenizer and an `AutoModelForCausalLM` checkpoint.
        device: torch device string.
        dtype: torch dtype name ("float32", "bfloat16", ...), or None for the checkpoint's.
        max_new_tokens: reply length limit.
    """

    def __init__(
        self, model_dir: str | os.PathLike, device: str = "cpu", dtype: str | None = None, max_new_tokens: int = 64
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = str(model_dir)
        self.max_concurrency = 1
        self.max_new_tokens = max_new_tokens
        self.device = device
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        kwargs: dict[str, Any] = {"local_files_only": True}
        if dtype is not None:
            kwargs["dtype"] = getattr(torch, dtype)
        self._lm = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).to(device).eval()
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """Settings recorded in reports."""
        return {
            "kind": "local",
            "model": self.model,
            "greedy": True,
            "max_new_tokens": self.max_new_tokens,
            "prompt_version": JUDGE_PROMPT_VERSION,
        }

    def _prompt_ids(self, question: str, answer: str, pred: str) -> Any:
        messages = judge_messages(question, answer, pred)
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{messages[0]['content']}\n\n{messages[1]['content']}\nReply: "
        return tok(text, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))

    def generate_reply(self, question: str, answer: str, pred: str) -> str:
        """The judge model's raw reply text for one item."""
        enc = self._prompt_ids(question, answer, pred).to(self.device)
        with self._lock, self._torch.inference_mode():
            out = self._lm.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
            )
        return self._tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def judge(self, question: str, answer: str, pred: str) -> Verdict:
        """Generate greedily and parse the verdict (no retries: greedy decoding would repeat itself)."""
        return parse_verdict(self.generate_reply(question, answer, pred))


# --------------------------------------------------------------------------------------------------- caching


class JudgeCache:
    """Verdicts on disk, one small JSON file per item, keyed by judge model + prompt version + item content.

    Only successful verdicts are stored, so items that failed are retried by the next run.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(model: str, question: str, answer: str, pred: str, prompt_version: str = JUDGE_PROMPT_VERSION) -> str:
        """Content hash identifying one judgement."""
        blob = json.dumps([model, prompt_version, question, answer, pred], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Verdict | None:
        """The stored verdict, or None (also for an unreadable entry, which is then recomputed)."""
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            return Verdict(pred=data["verdict"]["pred"], score=int(data["verdict"]["score"]))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring unreadable judge cache entry %s", p)
            return None

    def put(self, key: str, verdict: Verdict, item: Mapping[str, Any]) -> None:
        """Store a verdict atomically (write to a temporary file, then rename)."""
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"verdict": asdict(verdict), "item": dict(item)}, fh, ensure_ascii=False)
        os.replace(tmp, p)


# ---------------------------------------------------------------------------------------------- judging loop


@dataclass
class JudgedItem:
    """One prediction with its verdict (or the reason there is none)."""

    id: str
    question: str
    answer: str
    pred: str
    question_type: str | None
    verdict: Verdict | None
    error: str | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        d = asdict(self)
        d["verdict"] = None if self.verdict is None else asdict(self.verdict)
        return d


def _item_fields(
    rec: Mapping[str, Any], index: int, source: str | os.PathLike | None = None
) -> tuple[str, str, str, str, str | None]:
    missing = [k for k in ("id", "question", "answer", "pred") if k not in rec or rec[k] is None]
    if missing:
        rid = rec.get("id", rec.get("question_id"))
        where = f"{source}: " if source is not None else ""
        named = "" if rid is None else f" (id {rid!r})"
        raise ValueError(f"{where}prediction record {index}{named} lacks field(s) {missing}")
    qtype = rec.get("question_type", rec.get("type"))
    return (
        str(rec["id"]),
        str(rec["question"]),
        str(rec["answer"]),
        str(rec["pred"]),
        None if qtype is None else str(qtype),
    )


def judge_predictions(
    records: Sequence[Mapping[str, Any]],
    judge: Judge,
    cache: JudgeCache | None = None,
    concurrency: int | None = None,
    source: str | os.PathLike | None = None,
) -> list[JudgedItem]:
    """Judge every prediction once, in parallel, reusing cached verdicts.

    Args:
        records: predictions with `id`, `question`, `answer`, `pred` (and optionally `question_type`); records
            whose `status` is "skipped" are judged as failures without calling the judge.
        judge: the back end.
        cache: verdict cache; None disables caching.
        concurrency: worker threads; defaults to the judge's own limit, and never exceeds it.
        source: the predictions file, named in errors.

    Returns:
        One `JudgedItem` per record, in input order.

    Raises:
        ValueError: a record lacks a field or two records share an id.
    """
    fields = [_item_fields(r, i, source) for i, r in enumerate(records)]
    counts = Counter(f[0] for f in fields)
    dupes = sorted(k for k, c in counts.items() if c > 1)
    if dupes:
        where = f"{source}: " if source is not None else ""
        raise ValueError(f"{where}{len(dupes)} prediction id(s) occur more than once, e.g. {dupes[:3]}")
    workers = min(judge.max_concurrency, concurrency or judge.max_concurrency)

    def run_one(i: int) -> JudgedItem:
        qid, question, answer, pred, qtype = fields[i]
        item = JudgedItem(qid, question, answer, pred, qtype, None)
        if records[i].get("status") == "skipped":
            item.error = f"no prediction: {records[i].get('error', 'video skipped')}"
            return item
        key = JudgeCache.key(judge.model, question, answer, pred)
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                item.verdict, item.cached = hit, True
                return item
        try:
            item.verdict = judge.judge(question, answer, pred)
        except JudgeError as e:
            item.error = str(e)
            log.warning("judge failed on %s: %s", qid, e)
            return item
        if cache is not None:
            cache.put(key, item.verdict, {"id": qid, "question": question, "answer": answer, "pred": pred})
        return item

    if workers <= 1:
        return [run_one(i) for i in range(len(fields))]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_one, range(len(fields))))


def type_label(code: str | None, type_names: Mapping[str, str]) -> str:
    """How a question-type code is shown in reports: `"4: color"` when the task names it, else the code
    (`"unknown"` for None)."""
    if code is None:
        return "unknown"
    return f"{code}: {type_names[code]}" if code in type_names else code


def summarize_judgements(items: Iterable[JudgedItem], type_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Accuracy = yes / (yes + no), mean score over judged items, failures counted apart, overall and per type."""
    type_names = type_names or {}

    def summarize(group: list[JudgedItem]) -> dict[str, Any]:
        judged = [it for it in group if it.verdict is not None]
        yes = sum(it.verdict.pred == "yes" for it in judged)
        no = len(judged) - yes
        return {
            "total": len(group),
            "judged": len(judged),
            "failed": len(group) - len(judged),
            "yes": yes,
            "no": no,
            "accuracy": yes / (yes + no) if yes + no else None,
            "mean_score": sum(it.verdict.score for it in judged) / len(judged) if judged else None,
        }

    items = list(items)
    by_type: dict[str, list[JudgedItem]] = {}
    for it in items:
        by_type.setdefault(type_label(it.question_type, type_names), []).append(it)
    out = summarize(items)
    out["cached"] = sum(it.cached for it in items)
    if len(by_type) > 1 or (by_type and "unknown" not in by_type):
        out["per_type"] = {k: summarize(v) for k, v in sorted(by_type.items())}
    return out


# ------------------------------------------------------------------------------------------------ string match

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer_text(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(pred: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer_text(pred) == normalize_answer_text(reference))


def token_f1(pred: str, reference: str) -> float:
    """Harmonic mean of token precision and recall between the normalised strings (bag of words)."""
    p, r = normalize_answer_text(pred).split(), normalize_answer_text(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def string_match_report(
    records: Sequence[Mapping[str, Any]],
    type_names: Mapping[str, str] | None = None,
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Mean exact match and token F1 of `pred` against `answer`, overall and per question type.

    Skipped records (no prediction) score 0 and are counted under `skipped`; `source` (the predictions file)
    is named in errors.
    """
    type_names = type_names or {}
    rows = []
    for i, rec in enumerate(records):
        qid, _q, answer, pred, qtype = _item_fields(rec, i, source)
        skipped = rec.get("status") == "skipped"
        em = 0.0 if skipped else exact_match(pred, answer)
        f1 = 0.0 if skipped else token_f1(pred, answer)
        rows.append((type_label(qtype, type_names), em, f1, skipped))

    def summarize(group: list[tuple[str, float, float, bool]]) -> dict[str, Any]:
        n = len(group)
        return {
            "total": n,
            "skipped": sum(g[3] for g in group),
            "exact_match": sum(g[1] for g in group) / n if n else None,
            "f1": sum(g[2] for g in group) / n if n else None,
        }

    out = summarize(rows)
    types = sorted({r[0] for r in rows})
    if len(types) > 1 or (types and types != ["unknown"]):
        out["per_type"] = {t: summarize([r for r in rows if r[0] == t]) for t in types}
    return out


def judge_report(
    records: Sequence[Mapping[str, Any]],
    judge: Judge | None,
    cache: JudgeCache | None = None,
    concurrency: int | None = None,
    type_names: Mapping[str, str] | None = None,
    source: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], list[JudgedItem]]:
    """Score open-ended predictions: the string-match metric always, the judge when one is given.

    `source`, the predictions file, is named in errors.

    Returns:
        The report section (`string_match`, and `judge` with the judge's settings, prompt version, accuracy,
        mean score and failure count) and the per-item verdicts (empty without a judge).
    """
    report: dict[str, Any] = {"string_match": string_match_report(records, type_names, source)}
    items: list[JudgedItem] = []
    if judge is not None:
        items = judge_predictions(records, judge, cache, concurrency, source)
        report["judge"] = {**judge.describe(), **summarize_judgements(items, type_names)}
    return report, items
