"""Open-ended video QA in the Video-ChatGPT layout: MSVD-QA, MSRVTT-QA, TGIF-QA and ActivityNet-QA.

Each is a `test_q.json` / `test_a.json` pair joined by `question_id`; ActivityNet-QA names its videos
`v_<video_name>` and codes its question types as digits.
"""

from __future__ import annotations

from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import read_question_answer_pairs

ACTIVITYNET_TYPE_NAMES: dict[str, str] = {
    "0": "motion",
    "1": "spatial relation",
    "2": "temporal relation",
    "3": "yes/no",
    "4": "color",
    "5": "object",
    "6": "location",
    "7": "number",
    "8": "other",
}


def _register_pair_task(name: str, description: str, aliases: tuple[str, ...]) -> None:
    @register_task(name, "openended", description=description, aliases=aliases)
    def reader(source: TaskSource) -> list[EvalItem]:
        return read_question_answer_pairs(source)


_register_pair_task("msvd", "MSVD-QA (test_q.json + test_a.json joined by question_id)", ("msvd-qa", "msvd_qa"))
_register_pair_task("msrvtt", "MSRVTT-QA (test_q.json + test_a.json joined by question_id)", ("msrvtt-qa", "msrvtt_qa"))
_register_pair_task("tgif", "TGIF-QA FrameQA (test_q.json + test_a.json joined by question_id)", ("tgif-qa", "tgif_qa"))


@register_task(
    "activitynet",
    "openended",
    description="ActivityNet-QA (test_q.json + test_a.json; videos named v_<video_name>)",
    aliases=("activitynet-qa", "activitynet_qa", "anet"),
    type_names=ACTIVITYNET_TYPE_NAMES,
)
def read_activitynet(source: TaskSource) -> list[EvalItem]:
    """ActivityNet-QA: like MSVD-QA, with video files named `v_<video_name>` (the bare name is tried too)."""
    return read_question_answer_pairs(source, prefixes=("v_", ""))
