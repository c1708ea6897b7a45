"""Perception Test multiple choice: the nested `all_valid.json` form and the flattened list form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merv.data.formats import RecordLocation, get_field
from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import VideoResolver, answer_option_index, mcq_item, object_or_rows, options_list


@register_task(
    "perceptiontest",
    "mcq",
    description="Perception Test MC (all_valid.json keyed by video id, or the flattened list form)",
    aliases=("perception", "perception_test"),
    breakdowns=("reasoning",),
)
def read_perceptiontest(source: TaskSource) -> list[EvalItem]:
    """Perception Test: `{video_id: {mc_question: [...]}}` or a flat list with `video_name`/`question_id`."""
    path = source.question_file
    data = object_or_rows(path)
    resolver = VideoResolver(source.video_root)
    flat: list[tuple[RecordLocation, str, str, Mapping[str, Any]]] = []  # (location, video, id, question record)
    if isinstance(data, dict):
        for vid, entry in data.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("mc_question", []), list):
                RecordLocation(path, f"record {vid}").fail(
                    "mc_question", "expected an object with a 'mc_question' list"
                )
            video_id = str((entry.get("metadata") or {}).get("video_id") or vid)
            for j, q in enumerate(entry.get("mc_question", [])):
                at = RecordLocation(path, f"record {vid}.mc_question[{j}]")
                if not isinstance(q, dict):
                    at.fail(None, f"expected an object, got {type(q).__name__}")
                flat.append((at, video_id, f"{video_id}_{q.get('id', j)}", q))
    else:
        for i, (at, rec) in enumerate(data):
            video_id = get_field(at, rec, ("video_name", "video_id", "video"), "text")
            qid = get_field(at, rec, ("question_id", "id"), "text", required=False)
            flat.append((at, video_id, f"{video_id}_{i}" if qid is None else qid, rec))
    items = []
    for at, video_id, qid, q in flat:
        options = options_list(at, get_field(at, q, "options"), "options")
        items.append(
            mcq_item(
                id=qid,
                video=resolver.resolve(video_id),
                question=get_field(at, q, "question", "text"),
                options=options,
                answer_index=answer_option_index(q.get("answer_id"), options, "index", at, "answer_id"),
                question_type=q.get("area") or None,
                extra={k: q[k] for k in ("reasoning", "tag") if k in q},
            )
        )
    return items
