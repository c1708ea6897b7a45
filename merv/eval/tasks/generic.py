"""Any multiple-choice or open-ended file in the common field names (MERV's `test_q` / `test_a` pairs included)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merv.data.formats import RecordLocation, get_field, parse_number
from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import (
    OPTION_LIST_KEYS,
    QUESTION_KEYS,
    TYPE_KEYS,
    VIDEO_KEYS,
    VideoResolver,
    answer_option_index,
    joined_rows,
    load_answer_table,
    mcq_item,
    option_columns,
    options_list,
    read_question_answer_pairs,
    segment_bounds,
)


def _generic_options(at: RecordLocation, rec: Mapping[str, Any]) -> list[str]:
    for key in OPTION_LIST_KEYS:
        if rec.get(key) not in (None, "", []):
            return options_list(at, rec[key], key)
    for prefix in ("a", "option ", "option_"):
        opts = option_columns(at, rec, prefix, required=False)
        if len(opts) >= 2:
            return opts
    at.fail("/".join(OPTION_LIST_KEYS), "no options found")


def _generic_answer(at: RecordLocation, rec: Mapping[str, Any], options: list[str]) -> int | None:
    for key, kind in (("answer_id", "index"), ("answer_idx", "index"), ("label", "index"), ("answer", "auto")):
        if rec.get(key) not in (None, ""):
            return answer_option_index(rec[key], options, kind, at, key)
    return None


@register_task(
    "mcq",
    "mcq",
    description="any multiple-choice file: one file with options and answers, or a question file + answer file "
    "joined by question_id (MERV's test_q/test_a form)",
)
def read_generic_mcq(source: TaskSource) -> list[EvalItem]:
    """Generic MCQ reader: accepts the common field names (`question_id`/`id`, `video_name`/`video`,
    `options`/`candidates`/`a0..`, `answer_id`/`answer`) and joins a separate answer file by id."""
    answers = None if source.answer_file is None else load_answer_table(source.answer_file)
    resolver = VideoResolver(source.video_root)
    items = []
    for at, rec, qid, answer in joined_rows(source, answers):
        merged = dict(rec)
        if answer is not None:
            merged.update({k: v for k, v in answer[1].items() if k not in merged or k.startswith("answer")})
        options = _generic_options(at, merged)
        start = end = None
        time = merged.get("time")
        if isinstance(time, (list, tuple)) and len(time) == 2:
            start, end = segment_bounds(at, time, "time")
        if merged.get("start") is not None:
            start = parse_number(at, merged["start"], "start", required=False)
        if merged.get("end") is not None:
            end = parse_number(at, merged["end"], "end", required=False)
        qtype = get_field(at, merged, TYPE_KEYS, required=False)
        items.append(
            mcq_item(
                id=qid,
                video=resolver.resolve(get_field(at, merged, VIDEO_KEYS, "text")),
                question=get_field(at, merged, QUESTION_KEYS, "text"),
                options=options,
                answer_index=_generic_answer(at, merged, options),
                question_type=None if qtype is None else str(qtype),
                start=start,
                end=end,
            )
        )
    return items


@register_task(
    "openended", "openended", description="any open-ended QA file pair joined by question_id, or one file with answers"
)
def read_generic_openended(source: TaskSource) -> list[EvalItem]:
    """Generic open-ended reader: questions and answers joined by `question_id`, or one file with both."""
    return read_question_answer_pairs(source)
