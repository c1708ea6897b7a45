"""NExT-QA multiple choice: the CSV reader, its video-id map, and the causal/temporal/descriptive groups."""

from __future__ import annotations

from merv.data.formats import AnnotationError, get_field, read_json, read_rows
from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import VideoResolver, answer_option_index, mcq_item, option_columns

#: Columns of the NExT-QA multiple-choice CSV files.
NEXTQA_COLUMNS: tuple[str, ...] = (
    "video",
    "frame_count",
    "width",
    "height",
    "question",
    "answer",
    "qid",
    "type",
    "a0",
    "a1",
    "a2",
    "a3",
    "a4",
)

NEXTQA_TYPE_GROUPS: dict[str, tuple[str, ...]] = {
    "causal": ("CW", "CH"),
    "temporal": ("TN", "TC", "TP"),
    "descriptive": ("DC", "DL", "DO"),
}


def _nextqa_video_map(source: TaskSource) -> dict[str, str]:
    """NExT-QA's `map_vid_vidorID.json` (video id → "<dir>/<id>"), from the answer file slot or next to the data."""
    candidates = [source.answer_file] if source.answer_file is not None else []
    for folder in (source.question_file.parent, source.video_root):
        if folder is not None:
            candidates.append(folder / "map_vid_vidorID.json")
    for c in candidates:
        if c is not None and c.is_file():
            data = read_json(c)
            if not isinstance(data, dict):
                raise AnnotationError(c, "top level", None, "expected an object mapping video id to '<dir>/<id>'")
            return {str(k): str(v) for k, v in data.items()}
    return {}


@register_task(
    "nextqa",
    "mcq",
    description=f"NExT-QA multiple choice (CSV: {','.join(NEXTQA_COLUMNS)})",
    aliases=("next-qa", "NExTQA"),
    type_groups=NEXTQA_TYPE_GROUPS,
)
def read_nextqa(source: TaskSource) -> list[EvalItem]:
    """NExT-QA CSV; the answer file slot may name `map_vid_vidorID.json` (found automatically otherwise)."""
    vmap = _nextqa_video_map(source)
    resolver = VideoResolver(source.video_root)
    items = []
    for at, rec in read_rows(source.question_file):
        video = get_field(at, rec, "video", "text")
        options = option_columns(at, rec, "a")
        items.append(
            mcq_item(
                id=f"{video}_{get_field(at, rec, 'qid', 'text')}",
                video=resolver.resolve(vmap.get(video, video)),
                question=get_field(at, rec, "question", "text"),
                options=options,
                answer_index=answer_option_index(rec.get("answer"), options, "index", at),
                question_type=rec.get("type") or None,
            )
        )
    return items
