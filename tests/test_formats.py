"""Annotation readers: every format to the normalised record, sniffing, errors that name file/record/field, and
the checked row and field access shared with the benchmark readers."""

import json
import os

import pytest

from merv.data.formats import (
    OMNIFALL_CLASSES,
    AnnotationError,
    RecordLocation,
    check_value,
    get_field,
    load_annotations,
    parse_number,
    read_json,
    read_rows,
)


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
        "video": "v_end.mp4",
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
    where = "line 1" if layout != "array" else "record 0"
    assert start["record_origin"] == f"{path}: {where}"  # for messages about the sample
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
    split = _write(tmp_path / "splits" / "cs" / "test.csv", "path\nadl/HopS1\n")
    assert [r["path"] for r in load_annotations(labels, split_file=split)] == ["adl/HopS1"]


def test_omnifall_default_video_roots_follow_the_hub_layout(tmp_path):
    """Label CSVs under `labels/`: videos in `ROOT/<dataset>/video` (WanFall: `ROOT/video`); a CSV elsewhere
    keeps its videos in `video/` beside it (the synthetic layout)."""
    labels = _write(tmp_path / "omnifall" / "labels" / "mixed.csv", OMNIFALL_CSV)
    videos = [r["video"] for r in load_annotations(labels)]
    assert videos[0] == str(tmp_path / "omnifall" / "GMDCSA24" / "video" / "Subject_3" / "Fall" / "07.mp4")
    assert videos[3] == str(tmp_path / "omnifall" / "le2i" / "video" / "adl" / "HopS1.mp4")
    wanfall = _write(tmp_path / "wanfall" / "labels" / "wanfall.csv", "path,label,start,end,subject,cam,dataset\n"
                     "fall/fall_el_1,1,1.8,3.1,-1,-1,wanfall\n")  # fmt: skip
    (tmp_path / "wanfall" / "video").mkdir()
    assert load_annotations(wanfall)[0]["video"] == str(tmp_path / "wanfall" / "video" / "fall" / "fall_el_1.mp4")
    beside = _write(tmp_path / "fall" / "labels.csv", OMNIFALL_CSV)
    assert load_annotations(beside)[3]["video"] == str(tmp_path / "fall" / "video" / "adl" / "HopS1.mp4")


def test_byte_order_marks_are_not_part_of_the_first_column(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + OMNIFALL_CSV.encode())
    assert [r["label"] for r in load_annotations(csv_path)] == ["standing", "fall", "fallen", "walk"]
    json_path = tmp_path / "train.json"
    json_path.write_bytes(b"\xef\xbb\xbf" + json.dumps([LLAVA[0]]).encode())
    assert load_annotations(json_path)[0]["id"] == "5"


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


def test_benchmark_files_are_not_training_formats(tmp_path):
    nextqa = _write(tmp_path / "val.csv", "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n")
    assert "cannot tell the format from the columns" in _error(nextqa)
    questions = _dump(tmp_path / "test_q.json", [{"video_name": "v", "question": "why?", "question_id": "q0"}])
    message = _error(questions)
    assert "record 0" in message and "['question', 'question_id', 'video_name']" in message
    for name in ("nextqa", "openended", "msvd"):
        with pytest.raises(ValueError, match="unknown annotation format"):
            load_annotations(questions, format=name)


# ---- shared row and field access ---------------------------------------------------------------------


def test_read_rows_locates_every_record(tmp_path):
    array = _dump(tmp_path / "a.json", [{"x": 1}, {"x": 2}])
    assert [(at.where, row) for at, row in read_rows(array)] == [("record 0", {"x": 1}), ("record 1", {"x": 2})]
    lines = _write(tmp_path / "b.json", '{"x": 1}\n\n{"x": 2}\n')  # JSON Lines under a .json name
    assert [at.where for at, _ in read_rows(lines)] == ["line 1", "line 3"]
    assert all(at.path == lines for at, _ in read_rows(lines))
    table = _write(tmp_path / "c.csv", " a , b\n 1 ,x\n2, \n")
    assert [(at.where, row) for at, row in read_rows(table, ("a",))] == [
        ("line 2", {"a": "1", "b": "x"}),
        ("line 3", {"a": "2", "b": ""}),
    ]
    assert "'c'" in _error_of(read_rows, table, ("c",)) and "line 1 (header)" in _error_of(read_rows, table, ("c",))
    extra_cells = _write(tmp_path / "d.csv", "a,b\n1,2\n1,2,3\n")
    assert "line 3: 3 cells, header has 2" in _error_of(read_rows, extra_cells)
    not_object = _dump(tmp_path / "e.json", [{"x": 1}, [1]])
    assert "record 1: expected a JSON object, got list" in _error_of(read_rows, not_object)
    document = _dump(tmp_path / "f.json", {"k": [1]})
    assert read_json(document) == {"k": [1]} and read_json(lines) == [{"x": 1}, {"x": 2}]
    assert "top level: expected a JSON array of records, got dict" in _error_of(read_rows, document)
    assert "line 2 column 1: invalid JSON" in _error_of(read_json, _write(tmp_path / "g.json", "[\n}"))


def _error_of(fn, *args) -> str:
    with pytest.raises(AnnotationError) as info:
        fn(*args)
    return str(info.value)


def test_get_field_types_alternatives_and_missing_values(tmp_path):
    at = RecordLocation(tmp_path / "f.json", "record 4")
    record = {"q": "", "n": 3, "f": 1.5, "flag": True, "t": " 12 ", "empty": "", "none": None, "items": [1]}
    assert get_field(at, record, "q", "str") == ""  # an empty string is a valid `str`
    assert get_field(at, record, "n", "text") == "3" and get_field(at, record, "t", "text") == "12"
    assert get_field(at, record, "f", "number") == 1.5 and get_field(at, record, "n", "int") == 3
    assert get_field(at, record, ("none", "empty", "items"), "list") == [1]  # first present alternative
    assert get_field(at, record, ("none", "empty"), required=False) is None
    message = _error_of(get_field, at, record, ("none", "empty", "gone"))
    assert message == f"{tmp_path / 'f.json'}: record 4, field 'none/empty/gone': missing required field"
    assert "field 'flag': expected an integer, got bool" in _error_of(get_field, at, record, "flag", "int")
    assert "field 'items': expected text, got list" in _error_of(get_field, at, record, ("none", "items"), "text")
    with pytest.raises(AnnotationError, match=r"record 4, field 'QA\[0\]\.a': expected a string, got int"):
        get_field(at, {"a": 1}, "a", "str", name="QA[0].a")
    assert check_value(at, 2.0, "text", "x") == "2.0"
    with pytest.raises(AnnotationError, match=r"field 'options\[1\]': expected text, got dict"):
        check_value(at, {}, "text", "options[1]")


def test_parse_number(tmp_path):
    at = RecordLocation(tmp_path / "f.csv", "line 2")
    assert parse_number(at, " 1.5 ", "start") == 1.5 and parse_number(at, 2, "start") == 2.0
    assert parse_number(at, "3.0", "cam", integer=True) == 3 and isinstance(
        parse_number(at, "3", "cam", integer=True), int
    )
    assert [parse_number(at, v, "ts", required=False) for v in (None, "", " ", "NaN", float("nan"))] == [None] * 5
    for value, integer, reason in [
        ("1.5", True, "expected an integer, got '1.5'"),
        ("soon", False, "expected a number, got 'soon'"),
        ("inf", False, "expected a number, got 'inf'"),
        ("nan", False, "expected a number, got 'nan'"),
        (True, False, "expected a number, got bool"),
        ("", False, "missing required field"),
    ]:
        with pytest.raises(AnnotationError) as info:
            parse_number(at, value, "start", integer=integer)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / 'f.csv'}: line 2, field 'start': ") and reason in message


def test_annotation_error_pickles_and_formats_whole_file_errors(tmp_path):
    import pickle

    error = AnnotationError(tmp_path / "a.json", "line 3", "video", "missing required field")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and (copy.where, copy.field, copy.reason) == ("line 3", "video", error.reason)
    assert (
        str(AnnotationError("a.json", None, None, "folder holds no .json files"))
        == "a.json: folder holds no .json files"
    )
    assert str(AnnotationError("a.json", None, "q_uid", "bad")) == "a.json: field 'q_uid': bad"


# ---- media: several files, frame folders, what is not a video ----------------------------------------


def test_video_llava_video_with_images_and_image_lists_become_clip_lists(tmp_path, caplog):
    """Every media file keeps its place: the list follows the placeholders, which all become `<video>`."""
    both = {
        "id": "both",
        "video": "v.mp4",
        "image": ["a.jpg", "b.png"],
        "conversations": [
            {"from": "human", "value": "<video>\n<image>\n<image>\nWhich image shows the video's scene?"},
            {"from": "gpt", "value": "The second."},
        ],
    }
    images_first = {
        "image": ["x.jpg", "y.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\nAnd this one?"},
            {"from": "gpt", "value": "A cat."},
            {"from": "human", "value": "<image>\nAnd this one?"},
            {"from": "gpt", "value": "A dog."},
        ],
    }
    path = _dump(tmp_path / "mixed.json", [both, images_first, LLAVA[0]])
    with caplog.at_level("WARNING", logger="merv.data.formats"):
        first, second, single = load_annotations(path)
    assert first["video"] == [str(tmp_path / name) for name in ("v.mp4", "a.jpg", "b.png")] and "image" not in first
    assert first["conversations"][0]["value"] == "<video>\n<video>\n<video>\nWhich image shows the video's scene?"
    assert second["video"] == [str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg")]
    assert [t["value"].count("<video>") for t in second["conversations"]] == [1, 0, 1, 0]
    assert isinstance(single["video"], str)
    assert "2 record(s) hold several media files" in caplog.text  # nothing changes shape silently
    reordered = [{"from": "human", "value": "<image>\n<video>\n<image>\nSame?"}, both["conversations"][1]]
    order = {**both, "conversations": reordered}
    video = load_annotations(_dump(tmp_path / "order.json", [order]))[0]["video"]
    assert [os.path.basename(v) for v in video] == ["a.jpg", "v.mp4", "b.png"]
    untagged = {**both, "conversations": [{"from": "human", "value": "<video>\nWhat?"}, both["conversations"][1]]}
    message = _error(_dump(tmp_path / "untagged.json", [untagged]))
    assert "record 0" in message and "'conversations'" in message and "1 <video> and 0 <image> placeholders" in message
    answer_tag = [*images_first["conversations"][:3], {"from": "gpt", "value": "<image>"}]
    message = _error(_dump(tmp_path / "g.json", [{**images_first, "conversations": answer_tag}]))
    assert "'conversations[3].value': media placeholder in a gpt turn" in message


def test_media_that_is_not_a_video_image_or_frame_folder_fails_at_load(tmp_path, caplog):
    frames = tmp_path / "frames" / "clip7"
    frames.mkdir(parents=True)
    ok = [
        {**LLAVA[0], "video": "frames/clip7"},  # a frame folder needs no suffix
        {**LLAVA[0], "video": "clip.MKV"},
    ]
    assert [r["video"] for r in load_annotations(_dump(tmp_path / "ok.json", ok))] == [
        str(frames),
        str(tmp_path / "clip.MKV"),
    ]
    for value, field, reason in [
        ("v_abc.pkl", "video", "feature file, not a video"),  # Video-ChatGPT's converted training file
        ("notes.txt", "video", "unknown suffix '.txt'"),
        ("videos/v_abc", "video", "no file suffix and is not a folder of extracted frames"),
        (["a.mp4", " "], "video[1]", "empty media path"),
        (7, "video", "expected a file path string, got int"),
    ]:
        path = _dump(tmp_path / "bad.json", [LLAVA[0], {**LLAVA[0], "video": value}])
        message = _error(path)
        assert f"record 1, field '{field}'" in message and reason in message, message
    meta = _jsonl(tmp_path / "metadata.jsonl", [{"video": "a.mp4"}, {"video": "", "caption": "x"}])
    assert "line 2, field 'video': empty media path" in _error(meta, format="metadata")
    qa = _dump(tmp_path / "qa.json", [{"video": "feats/1.npy", "QA": [{"q": "?", "a": "!"}]}])
    assert "record 0, field 'video'" in _error(qa)
    # An empty path in a conversation file reads as a text-only record, with a count in the log.
    blank = {**LLAVA[3], "image": ""}
    with caplog.at_level("WARNING", logger="merv.data.formats"):
        (record,) = load_annotations(_dump(tmp_path / "blank.json", [blank]))
    assert record["video"] is None and "1 record(s) have an empty 'image'" in caplog.text


def test_videochat2_instruction_opens_the_first_question(tmp_path):
    record = {
        "video": "clip.mp4",
        "QA": [
            {"i": "Answer with one word.", "q": "What falls?", "a": "Rain."},
            {"i": "Answer with one word.", "q": "Where?", "a": "Outside."},
        ],
    }
    (loaded,) = load_annotations(_dump(tmp_path / "videochat2.json", [record]))
    assert [t["value"] for t in loaded["conversations"] if t["from"] == "human"] == [
        "<video>\nAnswer with one word.\nWhat falls?",
        "Where?",
    ]


def test_folder_per_class_reads_frame_folders_as_one_clip(tmp_path):
    from PIL import Image

    root = tmp_path / "actions"
    for i in range(3):
        frame = root / "Fall Down" / "clip01" / f"{i + 1:05d}.jpg"
        frame.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(frame)
    _write(root / "Fall Down" / "clip02.mp4", "x")
    (root / "Walking").mkdir()
    Image.new("RGB", (4, 4)).save(root / "Walking" / "still.png")
    records = load_annotations(root)
    assert [(r["id"], r["label"]) for r in records] == [
        ("Fall Down/clip01", "fall_down"),
        ("Fall Down/clip02", "fall_down"),
        ("Walking/still", "walking"),  # an image right in a class folder is a sample of its own
    ]
    assert records[0]["video"] == str(root / "Fall Down" / "clip01")
    _write(root / "Walking" / "clip03" / "a.mp4", "x")
    Image.new("RGB", (4, 4)).save(root / "Walking" / "clip03" / "00001.jpg")
    with pytest.raises(AnnotationError, match=r"clip03: holds 1 video file\(s\) and 1 image\(s\)"):
        load_annotations(root)
