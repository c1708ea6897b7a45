"""Action recognition / fall detection: label parsing, task data, prediction modes, segments, evaluation, recipes."""

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from merv.data.formats import OMNIFALL_CLASSES, AnnotationError, load_annotations
from merv.data.synthetic import write_video
from merv.eval.action import (
    ACTION_QUESTION,
    ActionEvalConfig,
    ActionTask,
    ExemplarSelector,
    LabelParser,
    SkipRateError,
    evaluate_action,
    load_action_records,
    oversample_classes,
    parse_class_list,
    parse_label_map,
    predict_record,
    prepare_main,
    summary_line,
    write_instruction_file,
)
from merv.models.prompting import PromptBuilder, PromptFormat
from merv.video import VideoDecodeError


def parse_label(text, classes=OMNIFALL_CLASSES, *, synonyms=None, from_end=False):
    """One reply read against a label set, as `ActionTask.parse` reads it."""
    return LabelParser(classes, synonyms).parse(text, from_end=from_end)


ROOT = Path(__file__).resolve().parents[1]

# ---- label parsing ----------------------------------------------------------------------------------------

PARSE_CASES = [
    # exact labels, case and separators
    ("walk", "walk"),
    ("Walk", "walk"),
    ("FALLEN", "fallen"),
    ("sit_down", "sit_down"),
    ("sit-down", "sit_down"),
    ("Sit Down.", "sit_down"),
    ("stand_up</s>", "stand_up"),
    ("  kneel_down \n", "kneel_down"),
    ("squatting!", "squatting"),
    # answer phrases
    ("The best answer is: fall", "fall"),
    ("The best answer is: Lie_Down", "lie_down"),
    ("Answer: jump", "jump"),
    ("Final answer - crawl", "crawl"),
    ("The person walks in and then falls. The best answer is: fall", "fall"),
    ("The answer is walking", "walk"),
    ("label: standing", "standing"),
    # synonyms
    ("falling", "fall"),
    ("The person is falling.", "fall"),
    ("He fell over", "fall"),
    ("walking", "walk"),
    ("The woman is walking across the room", "walk"),
    ("sitting down", "sit_down"),
    ("She sits down on a chair", "sit_down"),
    ("sitting", "sitting"),
    ("lying down", "lie_down"),
    ("lying", "lying"),
    ("lying in bed", "lying"),
    ("on the floor", "fallen"),
    ("The person is lying on the floor", "fallen"),  # the longest phrase wins over `lying`
    ("he is on the ground after a fall", "fallen"),  # `after a fall` describes the fallen state too
    ("getting up", "stand_up"),
    ("standing up", "stand_up"),
    ("standing still", "standing"),
    ("crouching", "squatting"),
    ("jumping", "jump"),
    ("kneeling down", "kneel_down"),
    # negation, ordinary words, position
    ("not falling, just sitting", "sitting"),
    ("The person isn't falling; they are walking", "walk"),
    ("walk. Then the person trips", "walk"),  # a reply that starts with a label
    ("other", "other"),
    ("The answer is other", "other"),
    # unparseable: counted, never guessed
    ("", None),
    ("...", None),
    ("a red circle moves left", None),
    ("The person walks and then falls", None),
    ("Answer with one of: walk, fall, fallen", None),  # an echoed question names no answer
    ("walking on the other side", "walk"),  # `other` as an ordinary word
    ("no fall", None),
    ("walk, fall, fallen", None),  # a list is not a pick
    ("The answer is walk or fall", None),
    ("walk/fall", None),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_label_table(text, expected):
    parsed = parse_label(text, OMNIFALL_CLASSES)
    assert parsed.label == expected, parsed
    assert parsed.parsed == (expected is not None)


def test_parse_table_is_large_and_methods_are_reported():
    assert len(PARSE_CASES) >= 30
    assert parse_label("fall").method == "exact"
    assert parse_label("The best answer is: fall").method == "phrase"
    assert parse_label("The person is falling.").method == "mention"
    assert parse_label("walk. Then the person trips").method == "start"
    amb = parse_label("The person walks and then falls")
    assert amb.method == "ambiguous" and set(amb.candidates) == {"walk", "fall"}
    assert parse_label("").method == "empty"
    assert parse_label("a red circle").method == "no_match"


FOLDER_CLASSES = ("fall_down", "lying_down", "sit_down", "sitting", "stand_up", "standing", "walking")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fall Down", "fall_down"),
        ("falling", "fall_down"),
        ("lying down", "lying_down"),
        ("lying", "lying_down"),
        ("walk", "walking"),
        ("Walking.", "walking"),
        ("stand up", "stand_up"),
        ("on the floor", None),  # `fallen` has no counterpart in this label set
    ],
)
def test_synonyms_resolve_to_the_label_set_in_use(text, expected):
    assert parse_label(text, FOLDER_CLASSES).label == expected


def test_subset_label_set_falls_back_to_the_next_candidate():
    classes = ("walk", "fall", "fallen", "sit_down", "standing", "lying")
    assert parse_label("lying down", classes).label == "lying"  # lie_down is not in the set
    assert parse_label("kneeling", classes).label is None


def test_chain_of_thought_takes_the_last_label():
    reply = "At first the person is standing. Then the body tips over and ends lying on the floor"
    assert parse_label(reply).label is None  # without from_end: two labels, ambiguous
    parsed = parse_label(reply, from_end=True)
    assert (parsed.label, parsed.method) == ("fallen", "last")
    # An echoed label list at the end is not a conclusion.
    assert parse_label("I should answer with one of: walk, fall, fallen, crawl, jump", from_end=True).label is None
    # An explicit conclusion beats the last mention.
    assert parse_label("The best answer is: fall. Afterwards the person is lying", from_end=True).label == "fall"


def test_custom_synonyms_and_bad_label_sets():
    parser = LabelParser(["walk", "fall"], {"tumbles": "fall", "strides": ["run", "walk"]})
    assert parser.parse("he tumbles").label == "fall"
    assert parser.parse("she strides").label == "walk"
    assert parser.parse("falling").label is None  # the default table is not used
    with pytest.raises(ValueError, match="distinct class names"):
        LabelParser(["walk", "Walk"])


def test_class_list_and_label_map_arguments(tmp_path):
    assert parse_class_list("Walk, Fall Down ,sit-down") == ("walk", "fall_down", "sit_down")
    f = tmp_path / "classes.txt"
    f.write_text("walk\nfall\n")
    assert parse_class_list(str(f)) == ("walk", "fall")
    with pytest.raises(ValueError, match="repeats"):
        parse_class_list("walk,Walk")
    assert parse_label_map("Fall Down=fall,lying down=lie_down") == {"fall_down": "fall", "lying_down": "lie_down"}
    with pytest.raises(ValueError, match="source=target"):
        parse_label_map("fall_down")


# ---- data -------------------------------------------------------------------------------------------------

FPS = 8
NUM_FRAMES = 16


def indexed_frames(size: int = 32) -> np.ndarray:
    """Frame i is uniformly grey at level 8 + 15 i, so a decoded frame tells its own index."""
    levels = 8 + 15 * np.arange(NUM_FRAMES)
    return np.broadcast_to(levels[:, None, None, None], (NUM_FRAMES, size, size, 3)).astype(np.uint8).copy()


def frame_indices(frames: torch.Tensor) -> list[int]:
    return [round((float(f.float().mean()) - 8) / 15) for f in frames]


def write_rows(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def omnifall(tmp_path_factory):
    """Four indexed videos; `a` and `b` hold a fall (0-1 s) then fallen (1-2 s); `c`/`d` walk and sit."""
    root = tmp_path_factory.mktemp("omnifall")
    for name in ("s1/a", "s1/b", "s2/c", "s2/d"):
        write_video(root / "video" / f"{name}.mp4", indexed_frames(), fps=FPS)
    header = ["path", "label", "start", "end", "subject", "cam", "dataset", "age_group"]
    rows = [
        ["s1/a", 1, 0.0, 1.0, 1, 0, "syn", "young_adults_18_34"],
        ["s1/a", 2, 1.0, 2.0, 1, 0, "syn", "young_adults_18_34"],
        ["s1/b", 1, 0.0, 1.0, 1, 1, "syn", "elderly_65_plus"],
        ["s1/b", 2, 1.0, 2.0, 1, 1, "syn", "elderly_65_plus"],
        ["s2/c", 0, 0.5, 1.5, 2, 0, "syn", "elderly_65_plus"],
        ["s2/d", 3, 0.0, 2.0, 2, 1, "syn", "young_adults_18_34"],
    ]
    labels = write_rows(root / "labels.csv", header, rows)
    write_rows(root / "splits" / "train.csv", ["path"], [["s1/a"], ["s2/d"]])
    write_rows(root / "splits" / "test.csv", ["path"], [["s1/b"], ["s2/c"]])
    return labels


def test_task_question_matches_the_training_conversations(omnifall):
    record = load_annotations(omnifall)[0]
    task = ActionTask()
    assert task.prompt() == record["conversations"][0]["value"]
    assert task.conversation("fall") == record["conversations"]
    assert "{labels}" in ACTION_QUESTION
    assert task.prompt(cot=True).startswith(task.prompt()) and "The best answer is:" in task.prompt(cot=True)
    with pytest.raises(ValueError, match="not one of the classes"):
        task.conversation("run")


def test_omnifall_split_file_selects_videos_and_keeps_segments(omnifall):
    task, records = load_action_records(omnifall, split_file=omnifall.parent / "splits" / "test.csv")
    assert task.classes == OMNIFALL_CLASSES
    assert [(r["path"], r["label"], r["start"], r["end"]) for r in records] == [
        ("s1/b", "fall", 0.0, 1.0),
        ("s1/b", "fallen", 1.0, 2.0),
        ("s2/c", "walk", 0.5, 1.5),
    ]
    assert [r["label_id"] for r in records] == [1, 2, 0]
    assert records[0]["age_group"] == "elderly_65_plus" and records[0]["cam"] == 1


def test_user_label_set_and_label_map(omnifall, caplog):
    with caplog.at_level(logging.WARNING):
        task, records = load_action_records(omnifall, classes=["walk", "fall", "fallen"])
    assert task.classes == ("walk", "fall", "fallen")
    assert {r["label"] for r in records} == {"walk", "fall", "fallen"} and len(records) == 5
    assert [r["label_id"] for r in records[:2]] == [1, 2]
    assert "dropping 1 records" in caplog.text and "sit_down" in caplog.text
    task, records = load_action_records(omnifall, classes=["walk", "fall", "sit"], label_map={"sit_down": "sit"})
    assert [r["label"] for r in records] == ["fall", "fall", "walk", "sit"]


def test_folder_dataset_classes_and_split(tmp_path):
    for split, cls, name in [("train", "Fall Down", "a"), ("train", "Walking", "b"), ("test", "Walking", "c")]:
        f = tmp_path / split / cls / f"{name}.mp4"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
    task, records = load_action_records(tmp_path, split="test")
    assert task.classes == ("fall_down", "walking")
    assert [(r["label"], r["label_id"]) for r in records] == [("walking", 1)]
    with pytest.raises(ValueError, match="no records in split 'val'"):
        load_action_records(tmp_path, split="val")
    # Prepared files keep the whole label set although the test split holds one class only.
    written = prepare_main(["--labels", str(tmp_path), "--out", str(tmp_path / "inst")])
    assert sorted(p.name for p in written) == ["test.jsonl", "train.jsonl"]
    task, records = load_action_records(tmp_path / "inst" / "test.jsonl")
    assert task.classes == ("fall_down", "walking") and [r["label_id"] for r in records] == [1]


def test_records_without_labels_fail_naming_file_record_and_field(tmp_path):
    f = tmp_path / "conv.json"
    f.write_text(json.dumps([{"id": "x", "video": "x.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "walk"}]}]))  # fmt: skip
    with pytest.raises(AnnotationError, match=r"conv\.json: record 0, field 'label'"):
        load_action_records(f)


def test_instruction_files_round_trip_through_the_training_reader(omnifall, tmp_path):
    written = prepare_main(
        ["--labels", str(omnifall), "--split_dir", str(omnifall.parent / "splits"), "--out", str(tmp_path / "inst")]
    )
    assert [p.name for p in written] == ["train.jsonl", "test.jsonl"]
    train = load_annotations(tmp_path / "inst" / "train.jsonl")  # what MERVDataModule reads
    task, original = load_action_records(omnifall, split_file=omnifall.parent / "splits" / "train.csv")
    assert len(train) == len(original) == 3
    for got, want in zip(train, original):
        assert Path(got["video"]).resolve() == Path(want["video"]).resolve() and Path(got["video"]).is_file()
        assert (got["start"], got["end"], got["label"], got["label_id"]) == (
            want["start"], want["end"], want["label"], want["label_id"])  # fmt: skip
        assert got["conversations"] == task.conversation(want["label"])
    # The prepared test file evaluates like the label CSV with its split file.
    _, again = load_action_records(tmp_path / "inst" / "test.jsonl")
    assert [(r["label"], r["start"], r["end"], r["subject"]) for r in again] == [
        ("fall", 0.0, 1.0, 1), ("fallen", 1.0, 2.0, 1), ("walk", 0.5, 1.5, 2)]  # fmt: skip


def test_oversampling_balances_classes(omnifall, tmp_path):
    _, records = load_action_records(omnifall)  # fall 2, fallen 2, walk 1, sit_down 1
    balanced = oversample_classes(records, seed=0)
    counts = {c: sum(r["label"] == c for r in balanced) for c in ("fall", "fallen", "walk", "sit_down")}
    assert counts == {"fall": 2, "fallen": 2, "walk": 2, "sit_down": 2}
    assert len({r["id"] for r in balanced}) == len(balanced)
    path = write_instruction_file(records, ActionTask(), tmp_path / "train.jsonl", balance=True)
    assert len(path.read_text().splitlines()) == 8


# ---- prediction modes with a scripted model ---------------------------------------------------------------


class ScriptedModel:
    """Answers from a script; records every call. Features per video for similarity-based exemplars."""

    def __init__(self, reply="fall", nll=None, features=None, broken=()):
        self.reply, self.nll, self.features, self.broken = reply, nll, features or {}, set(broken)
        self.calls = []

    def get_prompt_builder(self):
        return PromptBuilder(PromptFormat("merv", "</s>"))

    def _check(self, video):
        for v in video if isinstance(video, list) else [video]:
            path = v["video"] if isinstance(v, dict) else v
            if path in self.broken:
                raise VideoDecodeError(path, "corrupt")

    def generate(self, video, prompt_text, **kwargs):
        self._check(video)
        self.calls.append({"video": video, "prompt": prompt_text, **kwargs})
        return self.reply(video) if callable(self.reply) else self.reply

    def option_nll(self, video, question, options, start=None, end=None):
        self._check(video)
        self.calls.append({"video": video, "question": question, "options": options, "start": start, "end": end})
        return [self.nll.get(o, 5.0) for o in options]

    def normalized_pixels(self, video, start=None, end=None):
        return [torch.tensor(self.features[video], dtype=torch.float32).view(1, 1, -1)]

    def encode_aligned(self, pixel_values):
        return pixel_values


def rec(i, label, video=None, start=0.0, end=1.0):
    return {"id": f"r{i}", "video": video or f"v{i}.mp4", "label": label, "start": start, "end": end}


def test_zero_shot_asks_the_question_on_the_segment_and_parses():
    model = ScriptedModel(reply="The best answer is: falling")
    out = predict_record(model, ActionTask(), rec(0, "fall", start=1.5, end=2.5))
    assert (out["prediction"], out["method"]) == ("fall", "phrase")
    (call,) = model.calls
    assert (call["start"], call["end"], call["max_new_tokens"], call["do_sample"]) == (1.5, 2.5, 16, False)
    assert call["prompt"] == "In: " + ActionTask().prompt() + "\nOut: "


def test_cot_asks_for_reasoning_and_reads_the_end():
    model = ScriptedModel(reply="The person stands, tips over and ends on the floor")
    out = predict_record(model, ActionTask(), rec(0, "fallen"), mode="cot")
    assert (out["prediction"], out["method"]) == ("fallen", "last")
    assert "step by step" in model.calls[0]["prompt"] and model.calls[0]["max_new_tokens"] == 256


def test_loglik_scores_every_label_without_parsing():
    model = ScriptedModel(nll={"fallen": 0.5, "fall": 0.9})
    out = predict_record(model, ActionTask(), rec(0, "fallen", start=0.25, end=0.75), mode="loglik")
    assert (out["prediction"], out["method"]) == ("fallen", "loglik")
    assert out["scores"]["fallen"] == 0.5 and len(out["scores"]) == 16
    (call,) = model.calls
    assert call["options"] == list(OMNIFALL_CLASSES) and (call["start"], call["end"]) == (0.25, 0.75)


def test_few_shot_puts_labelled_exemplars_before_the_query():
    model = ScriptedModel(reply="walk")
    exemplars = [rec(1, "fall", start=0.0, end=0.5), rec(2, "walk", start=1.0, end=2.0)]
    out = predict_record(model, ActionTask(), rec(0, "walk", start=3.0, end=4.0), "few-shot", exemplars=exemplars)
    assert out["prediction"] == "walk" and out["exemplars"] == ["r1", "r2"]
    (call,) = model.calls
    assert call["video"] == [
        {"video": "v1.mp4", "start": 0.0, "end": 0.5},
        {"video": "v2.mp4", "start": 1.0, "end": 2.0},
        {"video": "v0.mp4", "start": 3.0, "end": 4.0},
    ]
    prompt = call["prompt"]
    assert prompt.count("<video>") == 3
    assert prompt.index("Out: fall</s>") < prompt.index("Out: walk</s>") < prompt.rindex("In: <video>")
    assert prompt.endswith("Out: ")


def test_random_exemplars_are_seeded_per_query_and_never_from_the_query_video():
    pool = [rec(i, "walk" if i % 2 else "fall", video=f"v{i // 2}.mp4") for i in range(12)]
    sel = ExemplarSelector(pool, k=3, strategy="random", seed=1)
    query = {"id": "q", "video": "v0.mp4"}
    first = sel.select(query)
    assert first == sel.select(query) == ExemplarSelector(pool, k=3, seed=1).select(query)
    assert all(e["video"] != "v0.mp4" for e in first) and len(first) == 3
    others = [ExemplarSelector(pool, k=3, seed=s).select(query) for s in range(2, 8)]
    assert any(o != first for o in others)
    with pytest.raises(ValueError, match="fewer than k=20"):
        ExemplarSelector(pool, k=20)


def test_similar_exemplars_are_the_nearest_clips_most_similar_last():
    features = {"p0.mp4": [1, 0, 0], "p1.mp4": [0.9, 0.1, 0], "p2.mp4": [0, 1, 0], "p3.mp4": [0.6, 0.4, 0],
                "q.mp4": [1, 0.05, 0]}  # fmt: skip
    model = ScriptedModel(features=features)
    pool = [rec(i, "walk", video=f"p{i}.mp4") for i in range(4)]
    sel = ExemplarSelector(pool, k=2, strategy="similar", model=model)
    chosen = sel.select({"id": "q", "video": "q.mp4"})
    assert [e["video"] for e in chosen] == ["p1.mp4", "p0.mp4"]


# ---- segment decoding with the real model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    from merv.models import VideoLM, VideoLMConfig

    torch.manual_seed(0)
    return VideoLM(VideoLMConfig.tiny()).eval()


def test_every_mode_decodes_only_frames_inside_the_segments(tiny_model, omnifall, monkeypatch):
    import merv.models.processor as processor_module

    decoded = []
    real = processor_module.read_frames

    def spy(path, counts, *, start=None, end=None, **kwargs):
        frames = real(path, counts, start=start, end=end, **kwargs)
        decoded.append((Path(path).name, start, end, [frame_indices(f) for f in frames]))
        return frames

    monkeypatch.setattr(processor_module, "read_frames", spy)
    task, records = load_action_records(omnifall)
    query = next(r for r in records if r["path"] == "s2/c")  # walk, 0.5 s - 1.5 s = frames 4..11
    exemplars = [r for r in records if r["path"] == "s1/a"]  # fall 0-1 s (frames 0..7), fallen 1-2 s (8..15)
    predict_record(tiny_model, task, query, "zero-shot", max_new_tokens=2)
    predict_record(tiny_model, task, query, "loglik")
    predict_record(tiny_model, task, query, "few-shot", exemplars=exemplars, max_new_tokens=2)
    assert len(decoded) == 5
    bounds = {"c.mp4": (4, 12), "a.mp4": None}
    for name, start, end, per_encoder in decoded:
        lo, hi = bounds[name] or (round(start * FPS), round(end * FPS))
        for indices in per_encoder:
            assert all(lo <= i < hi for i in indices), (name, start, end, indices)
        # The 8-frame encoder sees the whole 8-frame segment, not a corner of it.
        assert per_encoder[1] == list(range(lo, hi))
    assert [(n, s, e) for n, s, e, _ in decoded[2:]] == [("a.mp4", 0.0, 1.0), ("a.mp4", 1.0, 2.0), ("c.mp4", 0.5, 1.5)]


def test_few_shot_prompt_longer_than_the_model_allows_is_refused(tiny_model, omnifall, monkeypatch):
    task, records = load_action_records(omnifall)
    exemplars = [r for r in records if r["path"] != "s2/c"][:2]
    predict_record(tiny_model, task, records[4], "few-shot", exemplars=exemplars, max_new_tokens=1)  # fits
    # Three videos of 16 visual tokens and three questions do not fit in 150 tokens: refused, never cut.
    monkeypatch.setattr(tiny_model.processor, "max_length", 150)
    with pytest.raises(ValueError, match="max_length=150"):
        predict_record(tiny_model, task, records[4], "few-shot", exemplars=exemplars, max_new_tokens=1)


# ---- evaluation loop --------------------------------------------------------------------------------------


def test_evaluate_writes_predictions_report_and_png(omnifall, tmp_path):
    answers = {"s1/b.mp4": "falling", "s2/c.mp4": "sitting down"}

    def reply(video):
        return answers[next(k for k in answers if str(video).endswith(k))]

    cfg = ActionEvalConfig(
        labels=omnifall, split_file=omnifall.parent / "splits" / "test.csv", output_dir=tmp_path, model_path="m"
    )
    report = evaluate_action(ScriptedModel(reply=reply), cfg)
    # fall -> fall (right), fallen -> fall (wrong), walk -> sit_down (wrong)
    counts = {"total": 3, "evaluated": 3, "skipped": 0, "unparsed": 0, "methods": {"exact": 3}}
    assert report["counts"] == counts
    assert report["accuracy"] == pytest.approx(1 / 3)
    # both fall clips raise the alarm; the walk clip (called sit_down) correctly does not
    assert report["fall_sensitivity"] == pytest.approx(1.0) and report["fall_specificity"] == pytest.approx(1.0)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0 + 0 + 0) / 4)  # fall, fallen, walk, sit_down present
    assert set(report["breakdown"]) == {"cam", "subject"}  # both test videos are of one age group
    assert report["breakdown"]["cam"]["1"]["accuracy"] == pytest.approx(0.5)
    assert report["data"]["split_file_sha256"] is not None and report["model_path"] == "m"
    rows = [json.loads(line) for line in Path(report["files"]["predictions"]).read_text().splitlines()]
    assert [(r["label"], r["prediction"], r["correct"]) for r in rows] == [
        ("fall", "fall", True), ("fallen", "fall", False), ("walk", "sit_down", False)]  # fmt: skip
    assert rows[0]["age_group"] == "elderly_65_plus"
    assert Path(report["files"]["confusion_matrix_png"]).stat().st_size > 5000
    assert json.loads(Path(report["files"]["report"]).read_text())["macro_f1"] == report["macro_f1"]
    assert "zero-shot: 3 clips" in summary_line(report)


def test_unreadable_clips_are_skipped_counted_and_fail_past_the_limit(omnifall, tmp_path):
    broken = str(omnifall.parent / "video" / "s2" / "c.mp4")
    cfg = ActionEvalConfig(labels=omnifall, output_dir=tmp_path, mode="loglik", max_skip_fraction=0.5)
    report = evaluate_action(ScriptedModel(nll={"fall": 0.1}, broken={broken}), cfg)
    assert report["counts"]["skipped"] == 1 and report["counts"]["evaluated"] == 5
    lines = Path(report["files"]["predictions"]).read_text().splitlines()
    assert sum(json.loads(x)["status"] == "skipped" for x in lines) == 1
    strict = ActionEvalConfig(labels=omnifall, output_dir=tmp_path / "strict", mode="loglik", max_skip_fraction=0.1)
    with pytest.raises(SkipRateError, match="1 of 6 videos"):
        evaluate_action(ScriptedModel(nll={"fall": 0.1}, broken={broken}), strict)
    assert (tmp_path / "strict" / "loglik_report.json").is_file()  # written before failing


def test_few_shot_evaluation_draws_exemplars_from_the_training_split(omnifall, tmp_path):
    model = ScriptedModel(reply="fall")
    cfg = ActionEvalConfig(
        labels=omnifall, split_file=omnifall.parent / "splits" / "test.csv", mode="few-shot", k=2, output_dir=tmp_path
    )
    report = evaluate_action(model, cfg)
    train_videos = {str(omnifall.parent / "video" / f"{p}.mp4") for p in ("s1/a", "s2/d")}
    for call in model.calls:
        assert {v["video"] for v in call["video"][:-1]} <= train_videos
    assert report["settings"]["exemplar_pool_size"] == 3 and report["settings"]["k"] == 2
    assert Path(report["files"]["report"]).name == "few-shot-random-k2_report.json"
    with pytest.raises(ValueError, match="training split"):
        evaluate_action(model, ActionEvalConfig(labels=omnifall, mode="few-shot", output_dir=tmp_path))


def test_eval_script_runs_a_saved_model(tiny_model, omnifall, tmp_path):
    from merv.eval.action import eval_main

    tiny_model.save_pretrained(tmp_path / "model")
    report = eval_main(
        ["--model_path", str(tmp_path / "model"), "--labels", str(omnifall), "--split_file",
         str(omnifall.parent / "splits" / "test.csv"), "--mode", "loglik", "--classes", "walk,fall,fallen",
         "--output_dir", str(tmp_path / "out"), "--device", "cpu", "--tensorboard_dir", str(tmp_path / "tb")]
    )  # fmt: skip
    assert report["classes"] == ["walk", "fall", "fallen"] and report["counts"]["evaluated"] == 3
    assert (tmp_path / "out" / "loglik_report.json").is_file() and (tmp_path / "out" / "loglik_confusion.png").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_few_shot_script_decodes_each_clip_once(tiny_model, omnifall, tmp_path, monkeypatch):
    import merv.models.processor as processor_module
    from merv.eval.action import eval_main

    decoded, read = [], processor_module.read_frames
    monkeypatch.setattr(
        processor_module, "read_frames", lambda path, *a, **kw: decoded.append(path) or read(path, *a, **kw)
    )
    tiny_model.save_pretrained(tmp_path / "model")
    report = eval_main(
        ["--model_path", str(tmp_path / "model"), "--labels", str(omnifall), "--split_file",
         str(omnifall.parent / "splits" / "test.csv"), "--mode", "few-shot", "--k", "2", "--classes", "walk,fall,fallen",
         "--max_new_tokens", "2", "--output_dir", str(tmp_path / "out"), "--device", "cpu"]
    )  # fmt: skip
    queries, pool = report["counts"]["evaluated"], report["settings"]["exemplar_pool_size"]
    assert queries == 3 and pool == 2
    # Every prompt holds 2 exemplars and the query (9 clips); exemplars repeat, and are decoded once.
    assert len(decoded) <= queries + pool < queries * 3


def test_eval_script_takes_a_training_run_and_names_its_default_output_dir_after_it(
    tiny_model, omnifall, tmp_path, monkeypatch
):
    from merv.eval.action import eval_main

    # A Lightning checkpoint as training writes it: the model's weights under `model.`, its config in hparams.
    ckpt = tmp_path / "outputs/fall/run/version_0/checkpoints/last.ckpt"
    ckpt.parent.mkdir(parents=True)
    state = {f"model.{k}": v for k, v in tiny_model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"vidlm": tiny_model.config.to_dict()}}, ckpt)
    monkeypatch.chdir(tmp_path)
    report = eval_main(
        ["--model_path", "outputs/fall/run/version_0", "--labels", str(omnifall), "--mode", "loglik",
         "--classes", "walk,fall,fallen", "--limit", "2", "--device", "cpu"]
    )  # fmt: skip
    assert report["counts"]["evaluated"] == 2
    assert Path(report["files"]["report"]) == Path("eval_results/fall-run-version_0/action/loglik_report.json")
    assert Path(report["files"]["report"]).is_file()


# ---- recipes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fall_synthetic", "fall_lora", "fall_finetune"])
def test_recipes_parse_with_the_cli(name, capsys, monkeypatch):
    from merv.cli import main

    monkeypatch.setattr("sys.argv", ["merv"])  # pytest's own flags are not the CLI's

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs" / "experiments" / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    stage = "finetune" if name == "fall_finetune" else "lora"
    assert f"stage: {stage}" in printed and "init_from:" in printed and "train.jsonl" in printed


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 400 training steps decoding every clip: 29 minutes with both cores oversubscribed
def test_lora_recipe_learns_the_generated_actions(tmp_path, monkeypatch):
    """`fall_synthetic.yaml` end to end on a few generated clips: prepare, LoRA fit, evaluate before and after."""
    from merv.cli.train import main as cli_main
    from merv.data.synthetic import generate
    from merv.models import VideoLM, VideoLMConfig

    monkeypatch.setattr("sys.argv", ["merv"])
    generate(tmp_path / "data", num_videos=30, seed=0)
    fall = tmp_path / "data" / "fall"
    prepare_main(
        ["--labels", str(fall / "labels.csv"), "--split_dir", str(fall / "splits"), "--out", str(fall / "inst")]
    )
    torch.manual_seed(0)
    VideoLM(VideoLMConfig.tiny()).save_pretrained(tmp_path / "base")
    cli = cli_main([
        "fit", "--config", str(ROOT / "configs/experiments/fall_synthetic.yaml"),
        "--model.init_from", str(tmp_path / "base"),
        "--data.train_files", json.dumps([str(fall / "inst" / "train.jsonl")]),
        "--data.val_files", json.dumps([str(fall / "inst" / "val.jsonl")]),
        "--data.test_files", json.dumps([str(fall / "inst" / "test.jsonl")]),
        "--data.num_workers", "0", "--trainer.max_steps", "400", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    tuned = Path(cli.trainer.log_dir) / "model"
    assert json.loads((tuned / "config.json").read_text())["lora"] is True

    def score(model_dir: Path) -> dict:
        cfg = ActionEvalConfig(
            labels=fall / "inst" / "train.jsonl", mode="loglik", output_dir=tmp_path / model_dir.name
        )
        return evaluate_action(VideoLM.from_pretrained(model_dir), cfg)

    before, after = score(tmp_path / "base"), score(tuned)
    assert after["macro_f1"] > before["macro_f1"] + 0.3, (before["macro_f1"], after["macro_f1"])


# ---- the runner: chunks and resume ---------------------------------------------------------------------


def _comparable(report):
    return {k: v for k, v in report.items() if k not in ("files", "predictions_file", "report_file")}


def test_action_evaluation_runs_in_chunks_that_merge_to_the_unchunked_result(omnifall, tmp_path):
    def cfg(out, **kw):
        return ActionEvalConfig(labels=omnifall, output_dir=tmp_path / out, mode="loglik", model_path="m", **kw)

    nll = {"fall": 0.1, "walk": 0.2}
    whole = evaluate_action(ScriptedModel(nll=nll), cfg("whole"))
    models = [ScriptedModel(nll=nll) for _ in range(3)]
    assert evaluate_action(models[0], cfg("chunks", num_chunks=3, chunk_idx=2)) is None  # others still to run
    assert evaluate_action(models[1], cfg("chunks", num_chunks=3, chunk_idx=0)) is None
    merged = evaluate_action(models[2], cfg("chunks", num_chunks=3, chunk_idx=1))
    assert [len(m.calls) for m in models] == [2, 2, 2]
    assert _comparable(merged) == _comparable(whole)
    assert Path(merged["files"]["confusion_matrix_png"]).is_file()
    assert sorted(p.name for p in (tmp_path / "chunks").glob("loglik_pred_3_*.jsonl")) == [
        f"loglik_pred_3_{k}.jsonl" for k in range(3)
    ]


class Killed(Exception):
    """Stands for the job being killed mid-run."""


def test_killed_action_run_resumes_without_recomputing(omnifall, tmp_path):
    class DiesAfter(ScriptedModel):
        def option_nll(self, video, question, options, start=None, end=None):
            if len(self.calls) == 4:
                raise Killed
            return super().option_nll(video, question, options, start, end)

    cfg = ActionEvalConfig(labels=omnifall, output_dir=tmp_path, mode="loglik", model_path="m")
    with pytest.raises(Killed):
        evaluate_action(DiesAfter(nll={"fall": 0.1}), cfg)
    chunk = tmp_path / "loglik_pred_1_0.jsonl"
    assert len(chunk.read_text().splitlines()) == 4
    with chunk.open("a") as fh:
        fh.write('{"id": "cut off by the ki')  # a line the kill interrupted
    rerun = ScriptedModel(nll={"fall": 0.1})
    report = evaluate_action(rerun, cfg)
    assert len(rerun.calls) == 2 and report["counts"]["evaluated"] == 6
    assert _comparable(report) == _comparable(evaluate_action(ScriptedModel(nll={"fall": 0.1}), cfg))


def test_action_resume_refuses_another_label_set_and_merge_command_rewrites_the_report(omnifall, tmp_path, capsys):
    from merv.eval.__main__ import main as merge_main
    from merv.eval.runner import ResumeMismatchError

    cfg = ActionEvalConfig(labels=omnifall, output_dir=tmp_path, mode="loglik", num_chunks=2, chunk_idx=0)
    evaluate_action(ScriptedModel(nll={"fall": 0.1}), cfg)
    other = ActionEvalConfig(
        labels=omnifall, output_dir=tmp_path, mode="loglik", num_chunks=2, chunk_idx=0, classes=["walk", "fall"]
    )
    with pytest.raises(ResumeMismatchError, match="settings"):
        evaluate_action(ScriptedModel(nll={"fall": 0.1}), other)
    report = evaluate_action(ScriptedModel(nll={"fall": 0.1}), cfg.__class__(**{**cfg.__dict__, "chunk_idx": 1}))
    (tmp_path / "loglik_report.json").unlink()
    (tmp_path / "loglik_confusion.png").unlink()
    assert merge_main(["merge", "--output_dir", str(tmp_path), "--name", "loglik", "--num_chunks", "2"]) == 0
    assert "loglik: 6 clips" in capsys.readouterr().out
    assert json.loads((tmp_path / "loglik_report.json").read_text())["accuracy"] == report["accuracy"]
    assert (tmp_path / "loglik_confusion.png").is_file()
