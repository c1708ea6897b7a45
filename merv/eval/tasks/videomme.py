"""Video-MME: lettered options, letter answers, and accuracy per duration and domain."""

from __future__ import annotations

from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import RecordFields, read_record_fields

VIDEOMME_FIELDS = RecordFields(
    id="question_id",
    video=("videoID", "video_id"),
    question="question",
    options="options",
    answer="answer",
    answer_kind="letter",
    question_type="task_type",
    extra=("duration", "domain", "sub_category"),
    video_subdirs=("", "data"),
)


@register_task(
    "videomme",
    "mcq",
    description="Video-MME (parquet/JSON/JSONL: videoID, question_id, task_type, options 'A. ...', answer letter)",
    aliases=("video-mme",),
    breakdowns=("duration", "domain"),
)
def read_videomme(source: TaskSource) -> list[EvalItem]:
    """Video-MME; options lose their "A. " prefixes, letter answers become indices; videos `<videoID>.mp4`
    (also searched under `data/`)."""
    return read_record_fields(source, VIDEOMME_FIELDS)
