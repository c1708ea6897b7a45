"""Annotation readers: every format to the normalised record, sniffing, and errors that name file/record/field."""

import json
import os

import pytest

from merv.data.formats import OMNIFALL_CLASSES, AnnotationError, load_annotations


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _dump(path, data):
    return _write(path, json.dumps(data))


def _jsonl(path, records):
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


LLAVA = [
    {
        "id": 5,
        "video": "tune/v_abc.mp4",
        "source": "VATEX",
        "conversations": [
            {"from": "human", "value": "<video>\nWhat is the man repairing?"},
            {"from": "gpt", "value": "A bicycle chain."},
            {"from": "human", "value": "Where is he?"},
            {"from": "gpt", "value": "In a garage."},
        ],
    },
    {
        "id": "v_end",
        "video": "v_end.pkl",
        "conversations": [
            {"from": "human", "value": "Describe the scene in detail.\n<video>"},
            {"from": "gpt", "value": "A man walks a dog."},
        ],
    },
    {
        "id": "img",
        "image": "coco/0001.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the kite?"},
            {"from": "gpt", "value": "Orange."},
        ],
    },
    {
        "id": "740001",
        "model": "",
        "conversations": [{"from": "human", "value": "Tell me a joke."}, {"from": "gpt", "value": "No."}],
    },
    {
        "id": "roles",
        "video": ["only.mp4"],
        "conversations": [{"from": "user", "value": "Summarise."}, {"from": "assistant", "value": "Done."}],
    },
]


@pytest.mark.parametrize("layout", ["array", "jsonl", "lines-in-json"])
def test_llava_conversations(tmp_path, layout):
    path = tmp_path / "ann" / ("train.jsonl" if layout == "jsonl" else "train.json")
    _dump(path, LLAVA) if layout == "array" else _jsonl(path, LLAVA)
    records = load_annotations(path)
    assert records == load_annotations(path, format="video-llava")
    start, end, image, text, roles = records
    assert start["id"] == "5" and start["source"] == "VATEX"
    assert start["video"] == str(tmp_path / "ann" / "tune" / "v_abc.mp4")
    assert start["conversations"][0] == {"from": "human", "value": "<video>\nWhat is the man repairing?"}
    assert [t["from"] for t in start["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert end["conversations"][0]["value"] == "Describe the scene in detail.\n<video>"  # position kept
    assert image["video"] == str(tmp_path / "ann" / "coco" / "0001.jpg") and "image" not in image
    assert image["conversations"][0]["value"] == "<video>\nWhat colour is the kite?"
    assert text["video"] is None and text["model"] == ""
    assert text["conversations"][0]["value"] == "Tell me a joke."  # no placeholder added to text-only
    assert roles["video"].endswith("only.mp4")
    assert roles["conversations"] == [
        {"from": "human", "value": "<video>\nSummarise."},  # missing placeholder is prepended
        {"from": "gpt", "value": "Done."},
    ]


def test_video_root_override_and_absolute_paths(tmp_path):
    path = _dump(tmp_path / "a.json", [{**LLAVA[0], "id": "x"}, {**LLAVA[1], "video": "/abs/clip.mp4"}])
    records = load_annotations(path, video_root=tmp_path / "media")
    assert records[0]["video"] == str(tmp_path / "media" / "tune" / "v_abc.mp4")
    assert records[1]["video"] == "/abs/clip.mp4"


def test_video_llama_qa(tmp_path):
    path = _dump(
        tmp_path / "videochat_instruct_11k.json",
        [
            {
                "video": "0007/123.mp4",
                "QA": [{"q": "What is happening?", "a": "Kids build a sandcastle."}, {"q": "Where?", "a": "A beach."}],
            },
            {
                "video": "webvid/9.mp4",
                "start": 1.5,
                "end": 4.0,
                "QA": [{"i": "Describe the video in detail.", "q": "", "a": "A surfer."}],
            },
        ],
    )
    first, caption = load_annotations(path)
    assert first["id"] == "videochat_instruct_11k-0"
    assert first["video"] == str(tmp_path / "0007" / "123.mp4")
    assert first["conversations"] == [
        {"from": "human", "value": "<video>\nWhat is happening?"},
        {"from": "gpt", "value": "Kids build a sandcastle."},
        {"from": "human", "value": "Where?"},
        {"from": "gpt", "value": "A beach."},
    ]
    assert caption["conversations"][0]["value"] == "<video>\nDescribe the video in detail."
    assert (
        caption["start"] == 1.5 and caption["end"] == 4.0 and caption["instruction"] == "Describe the video in detail."
    )


def test_metadata_jsonl_structured_captions(tmp_path):
    rows = [
        {
            "video": "videos/clip_0042.mp4",
            "caption": "The car slows. A cyclist crosses.",
            "event_type": "near_miss",
            "rule_violations": ["failure_to_yield"],
            "intended_action": "turn_right",
            "scene": "Urban",
        },
        {"video": "videos/b.mp4", "visibility": "bad", "caption": "Rain."},
        {"video": "videos/c.mp4"},
    ]
    records = load_annotations(_jsonl(tmp_path / "dataset" / "metadata.jsonl", rows))
    full, partial, bare = records
    assert full["video"] == str(tmp_path / "dataset" / "videos" / "clip_0042.mp4")
    answer = full["conversations"][1]["value"]
    assert "\n" not in answer and list(json.loads(answer)) == [
        "caption",
        "event_type",
        "rule_violations",
        "intended_action",
        "scene",
    ]
    assert json.loads(answer)["rule_violations"] == ["failure_to_yield"] and full["event_type"] == "near_miss"
    assert "caption, event_type, rule_violations, intended_action, scene" in full["conversations"][0]["value"]
    assert list(json.loads(partial["conversations"][1]["value"])) == ["visibility", "caption"]  # record's key order
    assert bare["conversations"][1]["value"] == "{}"


def test_folder_per_class_with_splits(tmp_path):
    root = tmp_path / "dataset" / "video"
    for split, cls, name in [
        ("train", "Fall Down", "a.mp4"),
        ("train", "Walking", "b.avi"),
        ("train", "Sit down", "c.mp4"),
        ("test", "Sit Down", "d.mp4"),
        ("test", "Walking", "e.mp4"),
    ]:
        _write(root / split / cls / name, "x")
    _write(root / "train" / "Walking" / "notes.txt", "not media")
    records = load_annotations(root)
    assert [(r["split"], r["label"], r["label_id"]) for r in records] == [
        ("test", "sit_down", 1),
        ("test", "walking", 2),
        ("train", "fall_down", 0),
        ("train", "sit_down", 1),
        ("train", "walking", 2),
    ]
    assert records[0]["id"] == "test/Sit Down/d" and records[0]["video"] == str(root / "test" / "Sit Down" / "d.mp4")
    assert records[0]["conversations"][0]["value"].endswith("Answer with one of: fall_down, sit_down, walking.")
    assert records[0]["conversations"][1] == {"from": "gpt", "value": "sit_down"}
    flat = load_annotations(root / "train", format="folder")
    assert [r["label"] for r in flat] == ["fall_down", "sit_down", "walking"] and "split" not in flat[0]


OMNIFALL_CSV = """path,label,start,end,subject,cam,dataset,age_group,bmi_band
Subject_3/Fall/07,8,-0.5,1.12,3,1,GMDCSA24,elderly_65_plus,normal
Subject_3/Fall/07,1,1.12,2.40,3,1,GMDCSA24,elderly_65_plus,normal
Subject_3/Fall/07,2,2.40,5.05,3,1,GMDCSA24,elderly_65_plus,normal
adl/HopS1,0,0.0,3.5,-1,-1,le2i,,
"""


def test_omnifall_labels_and_split_file(tmp_path):
    labels = _write(tmp_path / "labels" / "mixed.csv", OMNIFALL_CSV)
    records = load_annotations(labels, video_root=tmp_path / "videos")
    assert [r["label"] for r in records] == ["standing", "fall", "fallen", "walk"]
    assert [r["label_id"] for r in records] == [8, 1, 2, 0]
    first = records[0]
    assert first["start"] == 0.0 and first["end"] == 1.12  # negative start clamped
    assert first["video"] == str(tmp_path / "videos" / "Subject_3" / "Fall" / "07.mp4")
    assert first["subject"] == 3 and first["cam"] == 1 and first["dataset"] == "GMDCSA24"
    assert first["age_group"] == "elderly_65_plus" and first["bmi_band"] == "normal"  # extra columns kept
    assert first["conversations"][1] == {"from": "gpt", "value": "standing"}
    assert ", ".join(OMNIFALL_CLASSES) in first["conversations"][0]["value"]
    assert len({r["id"] for r in records}) == 4
    default_root = load_annotations(labels)[3]["video"]
    assert default_root == str(tmp_path / "labels" / "video" / "adl" / "HopS1.mp4")
    split = _write(tmp_path / "splits" / "cs" / "test.csv", "path\nadl/HopS1\n")
    assert [r["path"] for r in load_annotations(labels, split_file=split)] == ["adl/HopS1"]


def test_nextqa_mcq_with_video_map(tmp_path):
    _write(
        tmp_path / "nextqa.csv",
        "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
        "5551234567,1200,640,480,why did the dog run to the door,3,2,CW,bark at cat,chase ball,lie down,greet owner,eat food\n",
    )
    _dump(tmp_path / "map_vid_vidorID.json", {"5551234567": "0001/5551234567"})
    (record,) = load_annotations(tmp_path / "nextqa.csv")
    assert record["id"] == "5551234567_2" and record["answer"] == 3 and record["type"] == "CW"
    assert record["video"] == str(tmp_path / "0001" / "5551234567.mp4")
    assert record["options"][3] == "greet owner"
    prompt = record["conversations"][0]["value"]
    assert prompt.startswith("<video>\nwhy did the dog run to the door?\nA. bark at cat\n") and "E. eat food" in prompt
    assert record["conversations"][1] == {"from": "gpt", "value": "D"}


def test_open_ended_joined_by_question_id(tmp_path):
    folder = tmp_path / "MSVD_Zero_Shot_QA"
    _write(folder / "videos" / "clipA.avi", "x")
    _dump(
        folder / "test_q.json",
        [
            {"video_name": "clipA", "question": "what is the cat doing?", "question_id": "q0"},
            {"video_name": "clipB", "question": "who sings?", "question_id": "q1"},
        ],
    )
    # Answers in a different order: the join must use question_id, not position.
    _dump(
        folder / "test_a.json",
        [{"answer": "woman", "type": 3, "question_id": "q1"}, {"answer": "sleep", "type": 0, "question_id": "q0"}],
    )
    a, b = load_annotations(folder / "test_q.json")
    assert (a["answer"], b["answer"]) == ("sleep", "woman")
    assert a["video"] == str(folder / "videos" / "clipA.avi")  # found by trying suffixes
    assert b["video"] == str(folder / "videos" / "clipB.mp4")
    assert a["conversations"] == [
        {"from": "human", "value": "<video>\nwhat is the cat doing?"},
        {"from": "gpt", "value": "sleep"},
    ]
    assert a["type"] == 0 and a["id"] == "q0"


# ---- malformed input -------------------------------------------------------------------------------


def _error(path, **kwargs) -> str:
    with pytest.raises(AnnotationError) as info:
        load_annotations(path, **kwargs)
    message = str(info.value)
    assert os.fspath(path) in message or os.path.basename(path) in message
    return message


def test_bad_json_names_file_and_line(tmp_path):
    array = _write(tmp_path / "broken.json", '[\n {"id": 1, "conversations": []},\n {"id": 2 "video": "x"}\n]')
    assert "line 3" in _error(array) and "invalid JSON" in _error(array)
    lines = _write(
        tmp_path / "broken.jsonl", '{"conversations": [{"from": "human", "value": "hi"}]}\n\n{"video": oops}\n'
    )
    assert "line 3" in _error(lines, format="llava")


def test_missing_field(tmp_path):
    path = _dump(tmp_path / "missing.json", [LLAVA[0], {"id": "x", "video": "a.mp4"}])
    message = _error(path, format="llava")
    assert "record 1" in message and "'conversations'" in message and "missing" in message
    qa = _dump(tmp_path / "qa.json", [{"video": "a.mp4", "QA": [{"q": "why?"}]}])
    message = _error(qa)
    assert "record 0" in message and "'QA[0].a'" in message
    meta = _jsonl(tmp_path / "metadata.jsonl", [{"video": "a.mp4"}, {"caption": "no video"}])
    message = _error(meta, format="metadata")
    assert "line 2" in message and "'video'" in message


def test_wrong_type(tmp_path):
    record = {
        "id": "a",
        "video": "a.mp4",
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": 7}],
    }
    message = _error(_dump(tmp_path / "types.json", [LLAVA[3], record]))
    assert "record 1" in message and "'conversations[1].value'" in message and "expected a string, got int" in message
    message = _error(_dump(tmp_path / "conv.json", [{"conversations": "hello"}]))
    assert "record 0" in message and "'conversations'" in message and "expected a list" in message
    seg = _dump(tmp_path / "seg.json", [{**LLAVA[0], "start": "soon"}])
    assert "'start'" in _error(seg) and "expected a number" in _error(seg)


def test_unknown_role(tmp_path):
    record = {"video": "a.mp4", "conversations": [{"from": "robot", "value": "beep"}, {"from": "gpt", "value": "x"}]}
    message = _error(_jsonl(tmp_path / "roles.jsonl", [LLAVA[0], LLAVA[1], record]))
    assert "line 3" in message and "'conversations[0].from'" in message and "unknown role 'robot'" in message


def test_placeholder_errors(tmp_path):
    text_only = {"conversations": [{"from": "human", "value": "<video>\nhi"}, {"from": "gpt", "value": "x"}]}
    assert "no video or image" in _error(_dump(tmp_path / "t.json", [text_only]))
    later = {
        "video": "a.mp4",
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "x"},
            {"from": "human", "value": "<image>"},
        ],
    }
    message = _error(_dump(tmp_path / "l.json", [later]))
    assert "'conversations[2].value'" in message and "outside the first human turn" in message


def test_omnifall_errors(tmp_path):
    header = "path,label,start,end,subject,cam,dataset\n"
    bad_label = _write(tmp_path / "a.csv", header + "v/1,1,0,1,1,1,x\nv/1,16,1,2,1,1,x\n")
    message = _error(bad_label)
    assert "line 3" in message and "'label'" in message and "out of range" in message
    bad_number = _write(tmp_path / "b.csv", header + "v/1,1,zero,1,1,1,x\n")
    assert "'start'" in _error(bad_number) and "line 2" in _error(bad_number)
    reversed_segment = _write(tmp_path / "c.csv", header + "v/1,1,3,1,1,1,x\n")
    assert "'end'" in _error(reversed_segment)
    missing_column = _write(tmp_path / "d.csv", "path,label,start,end,subject,dataset\nv,1,0,1,1,x\n")
    assert "'cam'" in _error(missing_column, format="omnifall")
    split_only = _write(tmp_path / "train.csv", "path\nv/1\n")
    assert "split_file=" in _error(split_only)


def test_nextqa_and_open_ended_errors(tmp_path):
    header = "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
    csv_path = _write(tmp_path / "val.csv", header + "1,1,1,1,why,7,0,CW,a,b,c,d,e\n")
    message = _error(csv_path)
    assert "line 2" in message and "'answer'" in message
    folder = tmp_path / "qa"
    _dump(folder / "test_q.json", [{"video_name": "v", "question": "why?", "question_id": "q9"}])
    _dump(folder / "test_a.json", [{"answer": "because", "question_id": "q1"}])
    message = _error(folder / "test_q.json")
    assert "record 0" in message and "'question_id'" in message and "test_a.json" in message


def test_format_names_and_sniffing(tmp_path):
    path = _dump(tmp_path / "a.json", [LLAVA[0]])
    with pytest.raises(ValueError, match="unknown annotation format"):
        load_annotations(path, format="parquet")
    with pytest.raises(FileNotFoundError):
        load_annotations(tmp_path / "nope.json")
    weird = _dump(tmp_path / "w.json", [{"text": "no known keys"}])
    assert "pass format=" in _error(weird)
    not_array = _dump(tmp_path / "o.json", {"conversations": []})
    assert "top level" in _error(not_array, format="llava")
    assert load_annotations(_dump(tmp_path / "empty.json", [])) == []
