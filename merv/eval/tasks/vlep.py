"""VLEP future-event prediction: two candidate events after a premise clip."""

from __future__ import annotations

from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import RecordFields, read_record_fields

VLEP_QUESTION = "Which event is more likely to happen next in the video?"


VLEP_FIELDS = RecordFields(
    id="example_id",
    video="vid_name",
    options="events",
    answer="answer",
    answer_kind="index",
    fixed_question=VLEP_QUESTION,
    segment="ts",
)


@register_task(
    "vlep",
    "mcq",
    description="VLEP future-event prediction (JSONL: example_id, vid_name, ts, events, answer)",
)
def read_vlep(source: TaskSource) -> list[EvalItem]:
    """VLEP JSONL; the two `events` are the options and `ts` bounds the premise clip."""
    return read_record_fields(source, VLEP_FIELDS)
