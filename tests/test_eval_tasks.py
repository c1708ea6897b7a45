"""Benchmark readers on small files in the public shapes, answer normalisation and the task registry."""

import csv
import json
from pathlib import Path

import pytest

from merv.data.formats import RecordLocation
from merv.eval.tasks import (
    NEXTQA_COLUMNS,
    AnnotationError,
    answer_option_index,
    build_mcq_prompt,
    file_identity,
    get_task,
    list_tasks,
    strip_option_prefixes,
)


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    return path


def write_nextqa(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NEXTQA_COLUMNS)
        w.writerows(rows)
    return path


def test_registry_has_every_benchmark_and_aliases():
    assert set(list_tasks("mcq")) == {
        "nextqa",
        "perceptiontest",
        "mvbench",
        "egoschema",
        "vlep",
        "tvqa",
        "videomme",
        "mcq",
    }
    assert set(list_tasks("openended")) == {"msvd", "msrvtt", "tgif", "activitynet", "openended"}
    assert get_task("NExT-QA").name == "nextqa"
    assert get_task("Perception").name == "perceptiontest"
    assert get_task("Video-MME").name == "videomme"
    with pytest.raises(KeyError, match="unknown eval task 'nope'"):
        get_task("nope")


def test_nextqa_reader_with_video_map(tmp_path):
    rows = [
        [
            "5551234567",
            1200,
            640,
            480,
            "why did the dog run to the door",
            3,
            2,
            "CW",
            "bark at cat",
            "chase ball",
            "lie down",
            "greet owner",
            "eat food",
        ],
        ["5551234567", 1200, 640, 480, "what did the dog do after", 0, 3, "TN", "sit", "run", "jump", "eat", "sleep"],
    ]
    csv_path = write_nextqa(tmp_path / "val.csv", rows)
    write_json(tmp_path / "map_vid_vidorID.json", {"5551234567": "0001/5551234567"})
    video = touch(tmp_path / "videos" / "0001" / "5551234567.mp4")
    items = get_task("nextqa").load(csv_path, video_root=tmp_path / "videos")
    assert [it.id for it in items] == ["5551234567_2", "5551234567_3"]
    first = items[0]
    assert first.video == str(video)
    assert first.options == ["bark at cat", "chase ball", "lie down", "greet owner", "eat food"]
    assert first.answer_index == 3 and first.answer == "greet owner"
    assert first.question_type == "CW"
    assert items[1].answer_index == 0


def test_nextqa_finds_videos_without_map_by_searching_the_tree(tmp_path):
    csv_path = write_nextqa(tmp_path / "nextqa.csv", [["77", 10, 8, 8, "what", 1, 0, "DC", "x", "y", "z", "w", "v"]])
    video = touch(tmp_path / "vids" / "deep" / "77.mp4")
    items = get_task("nextqa").load(csv_path, video_root=tmp_path / "vids")
    assert items[0].video == str(video)


def test_nextqa_bad_answer_names_file_record_and_field(tmp_path):
    csv_path = write_nextqa(
        tmp_path / "val.csv", [["1", 10, 8, 8, "q", 1, 0, "CW", *"abcde"], ["1", 10, 8, 8, "q", 7, 1, "CW", *"abcde"]]
    )
    with pytest.raises(AnnotationError) as err:
        get_task("nextqa").load(csv_path)
    msg = str(err.value)
    assert msg.startswith(f"{csv_path}: line 3, field 'answer': ") and "out of range" in msg  # header is line 1


def test_perceptiontest_original_and_flat_forms(tmp_path):
    original = {
        "video_0042": {
            "metadata": {"video_id": "video_0042", "split": "valid", "num_frames": 900},
            "mc_question": [
                {
                    "id": 7,
                    "question": "How many objects were put in the bowl?",
                    "options": ["2", "3", "4"],
                    "answer_id": 1,
                    "area": "Memory",
                    "reasoning": "Descriptive",
                    "tag": ["counting"],
                },
            ],
        }
    }
    video = touch(tmp_path / "videos" / "video_0042.mp4")
    items = get_task("perceptiontest").load(
        write_json(tmp_path / "all_valid.json", original), video_root=tmp_path / "videos"
    )
    assert len(items) == 1
    it = items[0]
    assert it.id == "video_0042_7" and it.video == str(video)
    # The option "3" is option text; the index 1 selects it (answers are indices in this format).
    assert it.options == ["2", "3", "4"] and it.answer_index == 1 and it.answer == "3"
    assert it.question_type == "Memory" and it.extra["reasoning"] == "Descriptive"

    flat = [
        {
            "video_name": "video_0042",
            "question_id": "q-1",
            "question": "Which?",
            "options": ["a", "b", "c"],
            "answer_id": "2",
            "area": "Physics",
            "reasoning": "Predictive",
        }
    ]
    items = get_task("perceptiontest").load(write_json(tmp_path / "flat.json", flat), video_root=tmp_path / "videos")
    assert items[0].id == "q-1" and items[0].answer_index == 2 and items[0].question_type == "Physics"


def test_perceptiontest_error_names_nested_record(tmp_path):
    bad = {"video_1": {"mc_question": [{"id": 0, "question": "q", "answer_id": 0}]}}
    with pytest.raises(AnnotationError, match=r"record video_1\.mc_question\[0\], field 'options'"):
        get_task("perceptiontest").load(write_json(tmp_path / "bad.json", bad))


def test_mvbench_folder_with_text_answers_bounds_and_task_dirs(tmp_path):
    json_dir = tmp_path / "json"
    write_json(
        json_dir / "action_antonym.json",
        [
            {
                "video": "166583.mp4",
                "question": "What is the action?",
                "candidates": ["Pushing something left", "Pushing something right", "Not sure"],
                "answer": "Pushing something right",
            },
        ],
    )
    write_json(
        json_dir / "action_sequence.json",
        [
            {
                "video": "ABC12.mp4",
                "question": "What happened after?",
                "candidates": ["Opened door", "Closed door"],
                "answer": "Closed door",
                "start": 1.5,
                "end": 4.0,
            },
        ],
    )
    video = touch(tmp_path / "video" / "ssv2_video" / "166583.mp4")
    items = get_task("mvbench").load(json_dir, video_root=tmp_path / "video")
    by_type = {it.question_type: it for it in items}
    assert set(by_type) == {"action_antonym", "action_sequence"}
    assert by_type["action_antonym"].answer_index == 1
    assert by_type["action_antonym"].video == str(video)
    seq = by_type["action_sequence"]
    assert (seq.start, seq.end) == (1.5, 4.0) and seq.answer_index == 1
    assert seq.video.endswith("star/Charades_v1_480/ABC12.mp4")  # missing file: best guess, reported later
    assert [it.id for it in items] == ["action_antonym_0", "action_sequence_0"]


def test_mvbench_answer_not_among_candidates(tmp_path):
    path = write_json(
        tmp_path / "x.json", [{"video": "v.mp4", "question": "q", "candidates": ["a", "b"], "answer": "c"}]
    )
    with pytest.raises(AnnotationError, match=r"record 0, field 'answer'"):
        get_task("mvbench").load(path)


def test_egoschema_subset_answers_and_lmms_form(tmp_path):
    questions = [
        {
            "q_uid": "uid-1",
            "google_drive_id": "g",
            "question": "What is C doing?",
            **{f"option {k}": f"opt{k}" for k in range(5)},
        },
        {"q_uid": "uid-2", "google_drive_id": "g", "question": "Why?", **{f"option {k}": f"why{k}" for k in range(5)}},
    ]
    qpath = write_json(tmp_path / "questions.json", questions)
    apath = write_json(tmp_path / "subset_answers.json", {"uid-2": 4})
    items = get_task("egoschema").load(qpath, apath, tmp_path)
    assert [it.id for it in items] == ["uid-2"]
    assert items[0].answer_index == 4 and items[0].answer == "why4"
    assert items[0].video.endswith("uid-2.mp4")
    # Without answers every question is kept, unlabelled.
    assert [it.answer_index for it in get_task("egoschema").load(qpath)] == [None, None]
    lmms = [
        {
            "video_idx": "uid-3",
            "question": "Q?",
            "option": ["A. first", "B. second", "C. third", "D. fourth", "E. fifth"],
            "answer": 2,
        }
    ]
    items = get_task("egoschema").load(write_json(tmp_path / "lmms.json", lmms))
    assert items[0].options == ["first", "second", "third", "fourth", "fifth"] and items[0].answer_index == 2


def test_vlep_reader(tmp_path):
    rows = [
        {
            "example_id": 30001,
            "vid_name": "house_s02e03_seg01_clip_04_ep",
            "ts": [12.5, 15.0],
            "events": ["He drops the file.", "He hands her the file."],
            "answer": 1,
            "split": "dev",
        }
    ]
    items = get_task("vlep").load(write_jsonl(tmp_path / "vlep_dev_release.jsonl", rows), video_root=tmp_path)
    it = items[0]
    assert it.id == "30001" and it.options == ["He drops the file.", "He hands her the file."]
    assert it.answer_index == 1 and (it.start, it.end) == (12.5, 15.0)
    assert "next" in it.question


def test_tvqa_reader_parses_ts_strings(tmp_path):
    rows = [
        {
            "qid": 11,
            "q": "What does Sheldon hold?",
            **{f"a{k}": f"thing {k}" for k in range(5)},
            "answer_idx": 3,
            "ts": "1.21-8.49",
            "vid_name": "s01e02_seg01_clip_00",
            "show_name": "The Big Bang Theory",
        },
        {
            "qid": 12,
            "q": "Where?",
            **{f"a{k}": f"place {k}" for k in range(5)},
            "answer_idx": 0,
            "ts": "NaN-NaN",
            "vid_name": "friends_s01e01_seg02_clip_03",
            "show_name": "Friends",
        },
    ]
    frames = tmp_path / "frames" / "s01e02_seg01_clip_00"
    touch(frames / "00001.jpg")
    items = get_task("tvqa").load(write_jsonl(tmp_path / "tvqa_val.jsonl", rows), video_root=tmp_path / "frames")
    assert (items[0].start, items[0].end) == (1.21, 8.49)
    assert items[0].video == str(frames)  # frame folder
    assert items[0].answer_index == 3 and items[0].question_type == "The Big Bang Theory"
    assert (items[1].start, items[1].end) == (None, None)


def test_videomme_reader_strips_prefixes_and_maps_letters(tmp_path):
    rows = [
        {
            "video_id": "001",
            "duration": "short",
            "domain": "Knowledge",
            "sub_category": "Humanity",
            "url": "u",
            "videoID": "fFjv93ACGo8",
            "question_id": "001-1",
            "task_type": "Counting Problem",
            "question": "How many?",
            "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."],
            "answer": "C",
        }
    ]
    video = touch(tmp_path / "data" / "fFjv93ACGo8.mp4")
    items = get_task("videomme").load(write_jsonl(tmp_path / "videomme.jsonl", rows), video_root=tmp_path)
    it = items[0]
    assert it.options == ["One.", "Two.", "Three.", "Four."]
    assert it.answer_index == 2 and it.question_type == "Counting Problem"
    assert it.extra["duration"] == "short" and it.video == str(video)


def test_openended_joins_by_question_id_not_position(tmp_path):
    questions = [
        {"video_name": "vid1", "question_id": "q0", "question": "what is the man doing ?"},
        {"video_name": "vid2", "question_id": "q1", "question": "who is cooking ?"},
    ]
    answers = [  # deliberately in the other order
        {"answer": "woman", "type": 2, "question_id": "q1"},
        {"answer": "dancing", "type": 0, "question_id": "q0"},
    ]
    touch(tmp_path / "videos" / "vid1.avi")
    items = get_task("msvd").load(
        write_json(tmp_path / "test_q.json", questions),
        write_json(tmp_path / "test_a.json", answers),
        tmp_path / "videos",
    )
    assert [(it.id, it.answer) for it in items] == [("q0", "dancing"), ("q1", "woman")]
    assert items[0].video.endswith("vid1.avi") and items[0].options is None
    assert items[1].question_type == "2"


def test_openended_missing_answer_and_duplicate_ids(tmp_path):
    q = write_json(
        tmp_path / "q.json",
        [
            {"video_name": "v", "question_id": "a", "question": "?"},
            {"video_name": "v", "question_id": "b", "question": "?"},
        ],
    )
    a = write_json(tmp_path / "a.json", [{"answer": "x", "question_id": "a"}])
    with pytest.raises(AnnotationError, match=r"record 1, field 'question_id'.*no answer with question_id 'b'"):
        get_task("msrvtt").load(q, a)
    dup = write_json(tmp_path / "a2.json", [{"answer": "x", "question_id": "a"}, {"answer": "y", "question_id": "a"}])
    with pytest.raises(AnnotationError, match=r"a2.json: record 1, field 'question_id': duplicate question_id 'a'"):
        get_task("tgif").load(q, dup)


def test_activitynet_prefix_extension_search_and_type_names(tmp_path):
    q = write_json(
        tmp_path / "test_q.json",
        [
            {"video_name": "AbCdEf12345", "question_id": "v_AbCdEf12345_0", "question": "what color is the car"},
            {"video_name": "Zz9", "question_id": "v_Zz9_1", "question": "is it raining"},
        ],
    )
    a = write_json(
        tmp_path / "test_a.json",
        [
            {"answer": "red", "type": 4, "question_id": "v_AbCdEf12345_0"},
            {"answer": "no", "type": 3, "question_id": "v_Zz9_1"},
        ],
    )
    mkv = touch(tmp_path / "all_test" / "v_AbCdEf12345.mkv")
    gif = touch(tmp_path / "all_test" / "v_Zz9.gif")
    task = get_task("activitynet")
    items = task.load(q, a, tmp_path / "all_test")
    assert [it.video for it in items] == [str(mkv), str(gif)]
    assert task.type_names[items[0].question_type] == "color"
    assert task.type_names["3"] == "yes/no"


def test_generic_mcq_merv_form_and_single_file(tmp_path):
    q = write_json(
        tmp_path / "test_q.json",
        [
            {
                "question_id": "p1",
                "video_name": "clip",
                "question": "What moves?",
                "options": ["a cat", "a dog", "a car"],
                "num_option": 3,
                "time": [0.5, 2.0],
            },
        ],
    )
    a = write_json(tmp_path / "test_a.json", [{"question_id": "p1", "answer_id": 2}])
    items = get_task("mcq").load(q, a, tmp_path)
    assert items[0].answer_index == 2 and (items[0].start, items[0].end) == (0.5, 2.0)
    single = write_jsonl(
        tmp_path / "mine.jsonl",
        [{"id": 5, "video": "x.mp4", "question": "Which?", "candidates": ["A. up", "B. down"], "answer": "B"}],
    )
    items = get_task("mcq").load(single, video_root=tmp_path)
    assert items[0].id == "5" and items[0].options == ["up", "down"] and items[0].answer_index == 1


def test_generic_openended_single_file(tmp_path):
    path = write_json(
        tmp_path / "qa.json",
        [{"video_name": "v1", "Q": "What?", "A": "a ball"}, {"video_name": "v2", "Q": "Who?", "A": "a man"}],
    )
    items = get_task("openended").load(path, video_root=tmp_path)
    assert [(it.id, it.question, it.answer) for it in items] == [("0", "What?", "a ball"), ("1", "Who?", "a man")]


def test_duplicate_ids_are_refused(tmp_path):
    rows = [{"qid": 1, "q": "?", "a0": "x", "a1": "y", "answer_idx": 0, "vid_name": "v"}] * 2
    with pytest.raises(
        AnnotationError, match=r"t.jsonl: item 1, field 'id': duplicate question id '1' \(first at item 0\)"
    ):
        get_task("tvqa").load(write_jsonl(tmp_path / "t.jsonl", rows))


def test_missing_file_and_invalid_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        get_task("msvd").load(tmp_path / "nope.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": 1}\n{oops\n')
    with pytest.raises(AnnotationError, match=r"bad.jsonl: line 2 column 2: invalid JSON"):
        get_task("tvqa").load(bad)


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (2, "index", 2),
        ("2", "index", 2),
        (1.0, "auto", 1),
        ("C", "letter", 2),
        ("(b)", "letter", 1),
        ("chase ball", "text", 1),
        ("Chase Ball.", "text", 1),
        ("B. chase ball", "auto", 1),
        ("lie down", "auto", 2),
        (None, "index", None),
    ],
)
def test_answer_option_index_forms(value, kind, expected):
    options = ["bark at cat", "chase ball", "lie down"]
    assert answer_option_index(value, options, kind, RecordLocation(Path("f.json"), "record 0")) == expected


def test_answer_option_index_prefers_option_text_in_auto_mode_and_rejects_nonsense():
    at = RecordLocation(Path("f.json"), "line 4")
    assert answer_option_index("3", ["2", "3", "4"], "auto", at) == 1
    assert answer_option_index("3", ["2", "3", "4", "5"], "index", at) == 3
    with pytest.raises(AnnotationError, match="^f.json: line 4, field 'answer': answer 'maybe' is not a valid letter"):
        answer_option_index("maybe", ["x", "y"], "letter", at)
    with pytest.raises(AnnotationError, match="^f.json: line 4, field 'label': answer index 4 out of range"):
        answer_option_index("E", ["x", "y"], "letter", at, "label")


def test_strip_option_prefixes_only_when_all_are_consistent():
    assert strip_option_prefixes(["A. one", "B. two"]) == ["one", "two"]
    assert strip_option_prefixes(["(A) one", "(B) two"]) == ["one", "two"]
    assert strip_option_prefixes(["A. Lincoln", "George Washington"]) == ["A. Lincoln", "George Washington"]
    assert strip_option_prefixes(["B. one", "A. two"]) == ["B. one", "A. two"]


def test_mcq_prompt_lists_lettered_options(tmp_path):
    item = get_task("vlep").load(
        write_jsonl(tmp_path / "v.jsonl", [{"example_id": 1, "vid_name": "v", "events": ["x", "y"], "answer": 0}])
    )[0]
    prompt = build_mcq_prompt(item)
    assert prompt.startswith("<video>\n") and "\nA. x\nB. y\n" in prompt and prompt.rstrip().endswith("directly.")


def test_file_identity_changes_with_content(tmp_path):
    p = write_json(tmp_path / "a.json", [1])
    first = file_identity(p)
    assert first["path"] == str(p.resolve()) and len(first["sha256"]) == 64
    p.write_text("[2]")
    assert file_identity(p)["sha256"] != first["sha256"]


def test_reader_errors_are_the_data_layer_error_and_locate_the_answer_record(tmp_path):
    from merv.data import formats

    assert AnnotationError is formats.AnnotationError
    q = write_json(tmp_path / "test_q.json", [{"video_name": "v", "question_id": "a", "question": "?"}])
    a = write_jsonl(tmp_path / "test_a.jsonl", [{"question_id": "a", "type": 1}])
    with pytest.raises(AnnotationError, match=r"test_a.jsonl: line 1, field 'answer/A/a': missing required field"):
        get_task("msvd").load(q, a)
    video = write_json(
        tmp_path / "mme.json", [{"question_id": "1", "videoID": ["x"], "question": "?", "options": ["a", "b"]}]
    )
    with pytest.raises(AnnotationError, match=r"mme.json: record 0, field 'videoID': expected text, got list"):
        get_task("videomme").load(video)


@pytest.mark.parametrize("name", list_tasks())
def test_every_registered_task_has_its_own_family_module_and_loads_by_name(name, tmp_path):
    task = get_task(name)
    assert task.name == name and task.kind in ("mcq", "openended") and task.description
    module = task.reader.__module__
    assert module.startswith("merv.eval.tasks.") and module.rsplit(".", 1)[1] not in ("base", "reading")
    with pytest.raises(FileNotFoundError, match=name):
        task.load(tmp_path / "missing.json")


def readme_benchmark() -> str:
    """The example module of README's "Add a benchmark in one file"."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Add a benchmark in one file", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_a_task_registered_in_a_new_module_is_found_and_runs(tmp_path, monkeypatch):
    """Adding a benchmark is one file: importing it registers the task for the registry and the runner."""
    from merv.eval.runner import EvalConfig, evaluate
    from merv.eval.tasks import base

    (tmp_path / "my_benchmark.py").write_text(readme_benchmark())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_TASKS", dict(base._TASKS))
    monkeypatch.setattr(base, "_ALIASES", dict(base._ALIASES))
    import importlib

    importlib.import_module("my_benchmark")
    monkeypatch.delitem(__import__("sys").modules, "my_benchmark")
    assert "mybench" in list_tasks("mcq") and get_task("My-Bench").name == "mybench"

    row = {"id": "a", "video": "a", "question": "Which?", "options": ["A. cat", "B. dog"], "answer": "B"}
    questions = write_jsonl(tmp_path / "q.jsonl", [row])
    touch(tmp_path / "a.mp4")

    class AnswersB:
        def get_prompt_builder(self):
            class B:
                def add_turn(self, role, message):
                    self.message = message

                def get_prompt(self):
                    return self.message

            return B()

        def generate(self, video, prompt, **kwargs):
            assert prompt.endswith("A. cat\nB. dog\nAnswer with the option's letter from the given choices directly.")
            return "(B)"

    cfg = EvalConfig(task="mybench", question_file=questions, video_root=tmp_path, output_dir=tmp_path / "out")
    report = evaluate(AnswersB(), cfg).report
    assert report["task"] == "mybench" and report["accuracy"] == 1.0
