"""MVBench: one JSON file per sub-task; each sub-task keeps its videos in its own folder."""

from __future__ import annotations

from merv.data.formats import AnnotationError, get_field, parse_number, read_rows
from merv.eval.tasks.base import EvalItem, TaskSource, register_task
from merv.eval.tasks.reading import VideoResolver, answer_option_index, mcq_item, options_list

# Where each MVBench task keeps its videos, relative to the MVBench video root.
MVBENCH_VIDEO_DIRS: dict[str, str] = {
    "action_sequence": "star/Charades_v1_480",
    "action_prediction": "star/Charades_v1_480",
    "object_interaction": "star/Charades_v1_480",
    "action_antonym": "ssv2_video",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test",
    "object_existence": "clevrer/video_validation",
    "moving_direction": "clevrer/video_validation",
    "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation",
    "counterfactual_inference": "clevrer/video_validation",
    "object_shuffle": "perception/videos",
    "action_count": "perception/videos",
    "state_change": "perception/videos",
    "character_order": "perception/videos",
    "action_localization": "sta/sta_video",
    "scene_transition": "scene_qa/video",
    "fine_grained_pose": "nturgbd",
    "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/frames_fps3_hq",
}


@register_task(
    "mvbench",
    "mcq",
    description="MVBench (one JSON per sub-task, or a folder of them; answer = option text)",
    aliases=("mv-bench",),
)
def read_mvbench(source: TaskSource) -> list[EvalItem]:
    """MVBench: `json/<task>.json` arrays of `{video, question, candidates, answer, start?, end?}`.

    The question-type of each item is its sub-task (the file's stem). Videos are looked up under the
    sub-task's usual source folder inside the video root, then in the video root itself.
    """
    q = source.question_file
    files = sorted(q.glob("*.json")) if q.is_dir() else [q]
    if not files:
        raise AnnotationError(q, None, None, "folder holds no .json files")
    resolver = VideoResolver(source.video_root)
    items = []
    for path in files:
        subtask = path.stem
        subdirs = (MVBENCH_VIDEO_DIRS[subtask], "") if subtask in MVBENCH_VIDEO_DIRS else ("",)
        for i, (at, rec) in enumerate(read_rows(path)):
            options = options_list(at, get_field(at, rec, ("candidates", "options")), "candidates")
            items.append(
                mcq_item(
                    id=f"{subtask}_{i}",
                    video=resolver.resolve(get_field(at, rec, "video", "text"), subdirs),
                    question=get_field(at, rec, "question", "text"),
                    options=options,
                    answer_index=answer_option_index(rec.get("answer"), options, "text", at),
                    question_type=subtask,
                    start=parse_number(at, rec.get("start"), "start", required=False),
                    end=parse_number(at, rec.get("end"), "end", required=False),
                )
            )
    return items
