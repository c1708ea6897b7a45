"""EgoSchema: `questions.json` with five options; the public subset is the one `subset_answers.json` labels."""

from __future__ import annotations

from typing import Any

from merv.data.formats import AnnotationError, RecordLocation, get_field, read_rows
from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import (
    VideoResolver,
    answer_option_index,
    mcq_item,
    object_or_rows,
    option_columns,
    options_list,
)


@register_task(
    "egoschema",
    "mcq",
    description="EgoSchema (questions.json with 'option 0'..'option 4'; answers in subset_answers.json)",
)
def read_egoschema(source: TaskSource) -> list[EvalItem]:
    """EgoSchema `questions.json` (or the list form with `option` / `answer`); with an answer file
    (`{q_uid: int}`), only the questions it labels are kept, which is the public subset evaluation."""
    path = source.question_file
    answers: dict[str, tuple[RecordLocation, Any]] | None = None
    if source.answer_file is not None:
        raw = object_or_rows(source.answer_file)
        if isinstance(raw, dict):
            answers = {str(k): (RecordLocation(source.answer_file, f"record {k}"), v) for k, v in raw.items()}
        else:  # tolerate [{"q_uid": ..., "answer": ...}]
            answers = {get_field(at, r, "q_uid", "text"): (at, r.get("answer")) for at, r in raw}
    resolver = VideoResolver(source.video_root)
    items = []
    for at, rec in read_rows(path):
        uid = get_field(at, rec, ("q_uid", "video_idx", "question_id"), "text")
        if answers is not None and uid not in answers:
            continue
        options = options_list(at, rec["option"], "option") if "option" in rec else option_columns(at, rec, "option ")
        if answers is not None:
            answer_at, answer = answers[uid]
            answer_index = answer_option_index(answer, options, "index", answer_at)
        else:
            answer_index = answer_option_index(rec.get("answer"), options, "auto", at)
        items.append(
            mcq_item(
                id=uid,
                video=resolver.resolve(str(rec.get("video_idx") or uid)),
                question=get_field(at, rec, "question", "text"),
                options=options,
                answer_index=answer_index,
            )
        )
    if answers is not None and len(items) < len(answers):
        missing = sorted(set(answers) - {it.id for it in items})
        raise AnnotationError(
            source.answer_file,
            None,
            None,
            f"{len(missing)} answered q_uid(s) have no question in {path}, e.g. {missing[:3]}",
        )
    return items
