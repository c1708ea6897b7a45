"""TVQA: five answers per question about a segment of a TV episode; question types are the shows."""

from __future__ import annotations

from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import RecordFields, read_record_fields

TVQA_FIELDS = RecordFields(
    id="qid",
    video="vid_name",
    question="q",
    options="a",
    numbered_options=True,
    answer="answer_idx",
    answer_kind="index",
    segment="ts",
    question_type="show_name",
)


@register_task(
    "tvqa",
    "mcq",
    description="TVQA (JSONL: qid, q, a0..a4, answer_idx, ts 'start-end', vid_name, show_name)",
)
def read_tvqa(source: TaskSource) -> list[EvalItem]:
    """TVQA JSONL; `ts` ("1.21-8.49", NaN bounds allowed) gives the clip segment; types are shows."""
    return read_record_fields(source, TVQA_FIELDS)
