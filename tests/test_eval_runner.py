"""The evaluation runner: strategies, chunking + merge, resume after a kill, skipped videos, reports and
the command-line scripts (with a counting fake model, and with a real tiny VideoLM checkpoint)."""

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from merv.eval.loading import default_output_dir
from merv.eval.merv_flags import gpt_main, mcq_main, openended_main
from merv.eval.runner import (
    EvalConfig,
    MergeError,
    ResumeMismatchError,
    SkipRateError,
    chunk_bounds,
    chunk_path,
    evaluate,
    merge_chunks,
    prediction_settings,
    read_predictions,
    run_chunk,
    summary_line,
)
from merv.eval.tasks import MCQ_PROMPT_VERSION, NEXTQA_COLUMNS, get_task

# -------------------------------------------------------------------------------------------- fixtures


class FakeBuilder:
    def __init__(self):
        self.turns = []

    def add_turn(self, role, message):
        self.turns.append((role, message))

    def get_prompt(self):
        return "".join(f"{r}: {m}\n" for r, m in self.turns) + "gpt: "


class FakeProcessor:
    frame_counts = [4, 8]


class FakeModel:
    """Deterministic stand-in for VideoLM that counts its calls and can die after a number of them."""

    processor = FakeProcessor()

    def __init__(self, fail_after=None, replies=None):
        self.calls = 0
        self.fail_after = fail_after
        self.replies = replies
        self.seen = []

    def _tick(self):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1

    def get_prompt_builder(self):
        return FakeBuilder()

    def generate(self, video, prompt_text, num_frames=None, **kwargs):
        self._tick()
        self.seen.append({"video": video, "prompt": prompt_text, "num_frames": num_frames, **kwargs})
        if self.replies is not None:
            return self.replies(prompt_text)
        digest = int(hashlib.sha256(prompt_text.encode()).hexdigest(), 16)
        if "Answer with the option's letter" not in prompt_text:
            return ["red", "A dog.", "walking"][digest % 3]
        choice = digest % 6
        return "I cannot tell" if choice == 5 else f"({'ABCDE'[choice]})"

    def option_nll(self, video, question, options, start=None, end=None):
        self._tick()
        self.seen.append({"video": video, "question": question, "start": start, "end": end})
        # A function of the option text only: invariant to option order by construction.
        return [int(hashlib.sha256(o.encode()).hexdigest()[:6], 16) / 1e6 for o in options]


def write_nextqa(root: Path, n: int = 10, missing_videos: int = 0) -> tuple[Path, Path]:
    types = ["CW", "CH", "TN", "TC", "TP", "DC", "DL", "DO"]
    csv_path = root / "nextqa.csv"
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NEXTQA_COLUMNS)
        for i in range(n):
            vid = f"{1000 + i // 2}"
            w.writerow(
                [
                    vid,
                    30,
                    32,
                    32,
                    f"what happens in clip {i}",
                    i % 5,
                    i % 2,
                    types[i % len(types)],
                    *[f"option {i}-{k}" for k in range(5)],
                ]
            )
            if i < n - missing_videos * 2:
                (videos / f"{vid}.mp4").write_bytes(b"\x00")
    return csv_path, videos


def cfg_for(root: Path, out: str, **kw) -> EvalConfig:
    csv_path, videos = root / "nextqa.csv", root / "videos"
    return EvalConfig(
        task="nextqa", question_file=csv_path, video_root=videos, output_dir=root / out, model_path="fake-model", **kw
    )


def write_mp4(path: Path, frames: int = 16, size: int = 32, fps: int = 8) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((size, size, 3), (i * 16) % 256, dtype=np.uint8)
            img[:, : size // 2, 0] = 255 - img[:, : size // 2, 0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ------------------------------------------------------------------------------------------ strategies


def test_naive_strategy_parses_letters_and_reports(tmp_path):
    write_nextqa(tmp_path, n=10)
    model = FakeModel()
    outcome = evaluate(model, cfg_for(tmp_path, "out", max_new_tokens=12))
    assert model.calls == 10
    records = outcome.chunk.records
    assert [r["id"] for r in records] == [f"{1000 + i // 2}_{i % 2}" for i in range(10)]
    for r in records:
        assert r["output"] and r["parse_method"]
        if r["status"] == "answered":
            assert r["pred_letter"] == "ABCDE"[r["pred_index"]] and r["correct"] == (
                r["pred_index"] == r["answer_index"]
            )
        else:
            assert r["output"] == "I cannot tell" and r["pred_index"] is None and r["correct"] is False
    # Prompts carry the video tag, the lettered options and the instruction; decoding is greedy.
    first = model.seen[0]
    assert "<video>" in first["prompt"] and "A. option 0-0" in first["prompt"] and "E. option 0-4" in first["prompt"]
    assert first["do_sample"] is False and first["max_new_tokens"] == 12

    report = outcome.report
    counts = report["counts"]
    assert counts["total"] == 10 and counts["answered"] + counts["unparseable"] == 10 and counts["skipped"] == 0
    assert counts["correct"] == sum(bool(r["correct"]) for r in records)
    assert report["accuracy"] == pytest.approx(counts["correct"] / 10)
    assert report["settings"]["strategy"] == "naive" and report["settings"]["greedy"] is True
    assert report["settings"]["max_new_tokens"] == 12
    assert report["model_path"] == "fake-model"
    expected_sha = hashlib.sha256((tmp_path / "nextqa.csv").read_bytes()).hexdigest()
    assert report["data"]["question_file"]["sha256"] == expected_sha
    assert set(report["per_group"]) == {"causal", "temporal", "descriptive"}
    assert sum(g["total"] for g in report["per_group"].values()) == 10
    assert report["per_type"]["CW"]["total"] == 2
    on_disk = json.loads(Path(report["report_file"]).read_text())
    assert on_disk["accuracy"] == report["accuracy"]
    line = summary_line(report)
    assert line.startswith("nextqa [naive]: accuracy") and f"unparseable {counts['unparseable']}" in line


def test_loglik_picks_lowest_nll_and_is_invariant_to_option_order(tmp_path):
    rows = [
        {
            "question_id": "q1",
            "video_name": "v",
            "question": "What moves?",
            "options": ["a cat", "a dog", "a car", "a bird"],
            "answer_id": 1,
        }
    ]
    (tmp_path / "v.mp4").write_bytes(b"\x00")
    q = tmp_path / "q.json"
    q.write_text(json.dumps(rows))
    model = FakeModel()
    rec = run_chunk(
        model, EvalConfig("mcq", q, video_root=tmp_path, output_dir=tmp_path / "a", strategy="loglik")
    ).records[0]
    nll = model.option_nll(None, "", rows[0]["options"])
    assert rec["option_nll"] == pytest.approx(nll)
    assert rec["pred_index"] == int(np.argmin(nll)) and rec["parse_method"] == "loglik"
    assert model.seen[0]["question"] == "What moves?"  # options are never listed in the scored question
    chosen = rec["pred_text"]
    for k, perm in enumerate([[3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]]):
        permuted = [{**rows[0], "options": [rows[0]["options"][i] for i in perm], "answer_id": perm.index(1)}]
        q.write_text(json.dumps(permuted))
        r = run_chunk(
            FakeModel(), EvalConfig("mcq", q, video_root=tmp_path, output_dir=tmp_path / f"p{k}", strategy="loglik")
        ).records[0]
        assert r["pred_text"] == chosen
        assert r["correct"] == rec["correct"]


# ------------------------------------------------------------------------------------- chunks and merge


def test_chunked_run_merges_to_the_unchunked_result(tmp_path):
    write_nextqa(tmp_path, n=11)
    whole = evaluate(FakeModel(), cfg_for(tmp_path, "whole"))
    outcomes = [evaluate(FakeModel(), cfg_for(tmp_path, "chunked", num_chunks=3, chunk_idx=k)) for k in (2, 0, 1)]
    assert [o.report is None for o in outcomes] == [True, True, False]  # merged when the last one finished
    assert [len(o.chunk.records) for o in outcomes] == [4, 3, 4]
    merged = read_predictions(outcomes[-1].merged_file)
    assert merged == read_predictions(whole.merged_file)
    assert outcomes[-1].report["accuracy"] == whole.report["accuracy"]
    assert outcomes[-1].report["counts"] == whole.report["counts"]


def test_chunk_bounds_cover_every_item_once():
    for n in range(0, 12):
        for chunks in range(1, 6):
            spans = [chunk_bounds(n, chunks, k) for k in range(chunks)]
            assert [i for lo, hi in spans for i in range(lo, hi)] == list(range(n))


def test_killed_run_resumes_without_recomputing(tmp_path):
    write_nextqa(tmp_path, n=10)
    cfg = cfg_for(tmp_path, "out")
    dying = FakeModel(fail_after=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(dying, cfg)
    pred_file = chunk_path(cfg.output_dir, "nextqa_naive", 1, 0)
    assert len(read_predictions(pred_file)) == 4  # flushed as produced
    # A write cut off mid-line by the kill is dropped and recomputed.
    with open(pred_file, "a") as fh:
        fh.write('{"id": "1002_0", "status": "ans')
    fresh = FakeModel()
    outcome = evaluate(fresh, cfg)
    assert fresh.calls == 6
    assert read_predictions(outcome.merged_file) == read_predictions(
        evaluate(FakeModel(), cfg_for(tmp_path, "clean")).merged_file
    )
    again = FakeModel()
    evaluate(again, cfg)
    assert again.calls == 0


def test_resume_refuses_other_settings(tmp_path):
    write_nextqa(tmp_path, n=4)
    with pytest.raises(RuntimeError):
        run_chunk(FakeModel(fail_after=2), cfg_for(tmp_path, "out"))
    with pytest.raises(ResumeMismatchError, match="different settings"):
        run_chunk(FakeModel(), cfg_for(tmp_path, "out", max_new_tokens=99))


def test_merge_refuses_gaps_duplicates_and_missing_chunks(tmp_path):
    write_nextqa(tmp_path, n=9)
    out = tmp_path / "out"
    for k in range(3):
        evaluate(FakeModel(), cfg_for(tmp_path, "out", num_chunks=3, chunk_idx=k))
    merge_chunks(out, "nextqa_naive", 3)  # consistent: fine

    f1, f2 = chunk_path(out, "nextqa_naive", 3, 1), chunk_path(out, "nextqa_naive", 3, 2)
    lines1, lines2 = f1.read_text().splitlines(), f2.read_text().splitlines()
    f2.write_text("\n".join([*lines2, lines1[0]]) + "\n")  # an id of chunk 1 repeated in chunk 2
    with pytest.raises(MergeError, match=r"duplicate id '.+': present in chunk 1 and chunk 2"):
        merge_chunks(out, "nextqa_naive", 3)
    f2.write_text("\n".join(lines2) + "\n")
    f1.write_text("\n".join([*lines1, lines2[0]]) + "\n")  # an id that belongs to chunk 2
    with pytest.raises(MergeError, match=r"chunk 1 holds 1 id\(s\) outside its share"):
        merge_chunks(out, "nextqa_naive", 3)
    f1.write_text("\n".join([*lines1, lines1[0]]) + "\n")
    with pytest.raises(MergeError, match="duplicate id .* in chunk 1"):
        merge_chunks(out, "nextqa_naive", 3)
    f1.write_text("\n".join(lines1) + "\n")
    f2.write_text("\n".join(lines2[:-1]) + "\n")
    with pytest.raises(MergeError, match=r"chunk 2 is unfinished: 1 of 3 ids missing .* rerun --chunk_idx 2"):
        merge_chunks(out, "nextqa_naive", 3)
    f2.unlink()
    with pytest.raises(MergeError, match="chunk 2 of 3 has not run"):
        merge_chunks(out, "nextqa_naive", 3)


# --------------------------------------------------------------------------------------- video handling


def test_missing_videos_are_skipped_and_counted_and_a_high_rate_fails(tmp_path):
    write_nextqa(tmp_path, n=10, missing_videos=1)  # last video (2 questions) missing
    outcome = evaluate(FakeModel(), cfg_for(tmp_path, "ok", max_skip_fraction=0.25))
    skipped = [r for r in outcome.chunk.records if r["status"] == "skipped"]
    assert len(skipped) == 2 and "video not found" in skipped[0]["error"]
    assert outcome.report["counts"]["skipped"] == 2
    assert all(r["correct"] is False for r in skipped)
    with pytest.raises(SkipRateError, match="2 of 10 videos"):
        evaluate(FakeModel(), cfg_for(tmp_path, "strict", max_skip_fraction=0.1))
    # Once the videos exist, a rerun retries only the skipped items.
    (tmp_path / "videos" / "1004.mp4").write_bytes(b"\x00")
    model = FakeModel()
    outcome = evaluate(model, cfg_for(tmp_path, "ok", max_skip_fraction=0.25))
    assert model.calls == 2 and outcome.report["counts"]["skipped"] == 0


def test_frame_folders_and_files_reach_the_model_as_paths_with_segment_bounds(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames" / "clip1"
    folder.mkdir(parents=True)
    for i in range(30):  # 10 s at 3 fps
        Image.fromarray(np.full((6, 8, 3), i, np.uint8)).save(folder / f"{i + 1:05d}.jpg")
    write_mp4(tmp_path / "frames" / "clip2.mp4")
    rows = [
        {"qid": 1, "q": "?", "a0": "x", "a1": "y", "answer_idx": 0, "ts": "2-4", "vid_name": "clip1"},
        {"qid": 2, "q": "?", "a0": "x", "a1": "y", "answer_idx": 1, "ts": "0.5-1.5", "vid_name": "clip2"},
    ]
    path = tmp_path / "tvqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for strategy in ("naive", "loglik"):
        model = FakeModel()
        cfg = EvalConfig(
            "tvqa", path, video_root=tmp_path / "frames", output_dir=tmp_path / strategy, strategy=strategy
        )
        run_chunk(model, cfg)
        folder, clip = model.seen
        # The processor decodes both kinds (and its pixel cache can serve both).
        assert folder["video"] == str(tmp_path / "frames" / "clip1") and (folder["start"], folder["end"]) == (2, 4)
        assert clip["video"] == str(tmp_path / "frames" / "clip2.mp4") and (clip["start"], clip["end"]) == (0.5, 1.5)


# ------------------------------------------------------------------------------------------ open-ended


def write_msvd(root: Path) -> tuple[Path, Path]:
    qs = [{"video_name": f"vid{i}", "question_id": f"q{i}", "question": f"what is shown {i}"} for i in range(5)]
    ans = [{"answer": ["red", "a dog", "walking", "red", "cat"][i], "question_id": f"q{i}"} for i in reversed(range(5))]
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for i in range(5):
        (root / "videos" / f"vid{i}.avi").write_bytes(b"\x00")
    (root / "test_q.json").write_text(json.dumps(qs))
    (root / "test_a.json").write_text(json.dumps(ans))
    return root / "test_q.json", root / "test_a.json"


def test_openended_run_writes_video_llava_style_records_and_string_match(tmp_path):
    q, a = write_msvd(tmp_path)
    cfg = EvalConfig("msvd", q, a, tmp_path / "videos", output_dir=tmp_path / "out", model_path="m")
    model = FakeModel()
    outcome = evaluate(model, cfg)
    recs = read_predictions(outcome.merged_file)
    assert [set(r) >= {"id", "question", "answer", "pred"} for r in recs] == [True] * 5
    assert recs[1]["answer"] == "a dog"  # joined by id although the answer file is reversed
    assert model.seen[0]["max_new_tokens"] == 128 and model.seen[0]["prompt"].startswith(
        "human: <video>\nwhat is shown 0"
    )
    sm = outcome.report["string_match"]
    expected = np.mean([r["pred"].lower().strip(".") == r["answer"].lower() for r in recs])
    assert 0 < expected < 1
    assert sm["exact_match"] == pytest.approx(expected)
    assert "exact match" in summary_line(outcome.report)


# --------------------------------------------------------------------------------------------- scripts


def test_scripts_with_fake_model_and_match_judge(tmp_path, monkeypatch):
    q, a = write_msvd(tmp_path / "data" / "msvd")
    monkeypatch.setattr("merv.eval.commands.load_model", lambda *args, **kw: FakeModel())
    out = tmp_path / "res"
    common = [
        "--model_path",
        "some/model",
        "--eval_dataset",
        "msvd",
        "--data_root",
        str(tmp_path / "data"),
        "--output_dir",
        str(out),
        "--num_chunks",
        "2",
    ]
    assert openended_main([*common, "--chunk_idx", "0"]) is None
    line = openended_main([*common, "--chunk_idx", "1"])
    assert line.startswith("msvd [generate]:") and "exact match" in line
    report = json.loads((out / "msvd_report.json").read_text())
    assert report["data"]["question_file"]["path"] == str(q.resolve())
    assert report["data"]["answer_file"]["path"] == str(a.resolve())
    assert report["data"]["video_root"] == str((tmp_path / "data" / "msvd" / "videos").resolve())

    gpt_line = gpt_main(
        ["--pred_path", str(out / "msvd_pred_merge.jsonl"), "--output_file", str(out / "gpt.json"), "--judge", "match"]
    )
    gpt = json.loads((out / "gpt.json").read_text())
    assert gpt["string_match"] == report["string_match"] and gpt["counts"]["total"] == 5 and "judge" not in gpt
    assert "exact match" in gpt_line
    with pytest.raises(SystemExit):
        gpt_main(
            [
                "--pred_path",
                str(out / "msvd_pred_merge.jsonl"),
                "--output_file",
                str(out / "g2.json"),
                "--judge",
                "openai",
            ]
        )


def test_mcq_script_merge_only_and_wrong_kind(tmp_path, monkeypatch):
    write_nextqa(tmp_path, n=6)
    monkeypatch.setattr("merv.eval.commands.load_model", lambda *args, **kw: FakeModel())
    base = [
        "--model_path",
        "m",
        "--eval_dataset",
        "NExT-QA",
        "--filename_question",
        str(tmp_path / "nextqa.csv"),
        "--video_root",
        str(tmp_path / "videos"),
        "--output_dir",
        str(tmp_path / "o"),
        "--num_chunks",
        "2",
    ]
    assert mcq_main([*base, "--chunk_idx", "0"]) is None
    with pytest.raises(MergeError, match="chunk 1 of 2 has not run"):
        mcq_main([*base, "--merge_only"])
    assert mcq_main([*base, "--chunk_idx", "1"]).startswith("nextqa [naive]: accuracy")
    assert mcq_main([*base, "--merge_only"]).startswith("nextqa [naive]: accuracy")
    with pytest.raises(SystemExit):
        mcq_main(["--model_path", "m", "--eval_dataset", "msvd", "--filename_question", str(tmp_path / "nextqa.csv")])


def test_models_get_distinct_default_output_dirs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for run in ("a", "b"):
        (tmp_path / "outputs" / run / "run/version_0/model").mkdir(parents=True)
    a = default_output_dir("outputs/a/run/version_0/model")
    b = default_output_dir("outputs/b/run/version_0/model/")
    assert a == Path("eval_results/a-run-version_0-model") and b == Path("eval_results/b-run-version_0-model")
    assert default_output_dir("outputs/a/run/version_0/checkpoints/last.ckpt.consolidated") == Path(
        "eval_results/a-run-version_0-checkpoints-last.ckpt.consolidated"
    )
    assert default_output_dir("models/merv-tiny") == Path("eval_results/merv-tiny")
    assert default_output_dir("merv-full") == Path("eval_results/merv-full")  # a registered name

    # Two exported models, both named `model`, evaluated with the default output dir: no collision.
    write_nextqa(tmp_path, n=4)
    monkeypatch.setattr("merv.eval.commands.load_model", lambda *args, **kw: FakeModel())
    question = ["--eval_dataset", "nextqa", "--filename_question", str(tmp_path / "nextqa.csv"),
                "--video_root", str(tmp_path / "videos")]  # fmt: skip
    for run in ("a", "b"):
        line = mcq_main(["--model_path", f"outputs/{run}/run/version_0/model", *question])
        assert line.startswith("nextqa [naive]: accuracy")
        report = json.loads((tmp_path / f"eval_results/{run}-run-version_0-model/nextqa_naive_report.json").read_text())
        assert report["model_path"] == str((tmp_path / f"outputs/{run}/run/version_0/model").resolve())


def test_frame_counts_are_the_models_own(tmp_path):
    write_nextqa(tmp_path, n=2)
    with pytest.raises(SystemExit):  # the encoders' frame counts are fixed by the model
        mcq_main(["--model_path", "m", "--eval_dataset", "nextqa", "--filename_question", str(tmp_path / "nextqa.csv"),
                  "--num_frames", "4", "8"])  # fmt: skip
    assert "num_frames" not in prediction_settings(cfg_for(tmp_path, "o", strategy="loglik"), get_task("nextqa"))


def test_a_corrupt_meta_file_is_named(tmp_path):
    write_nextqa(tmp_path, n=4)
    cfg = cfg_for(tmp_path, "out")
    run_chunk(FakeModel(), cfg)
    meta = next((tmp_path / "out").glob("*.meta.json"))
    meta.write_text('{"task": "nextqa", ')
    with pytest.raises(ValueError, match=re.escape(str(meta))):
        run_chunk(FakeModel(), cfg)
    with pytest.raises(ValueError, match=re.escape(str(meta))):
        merge_chunks(tmp_path / "out", "nextqa_naive", 1)


# ------------------------------------------------------------------------------------ real tiny VideoLM


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from merv.models import VideoLM, VideoLMConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-videolm"
    VideoLM(VideoLMConfig.tiny()).save_pretrained(path)
    return path


def test_loglik_matches_direct_loss_of_a_real_videolm(tmp_path, tiny_checkpoint):
    from merv.models import VideoLM

    model = VideoLM.from_pretrained(tiny_checkpoint)
    video = write_mp4(tmp_path / "v.mp4")
    options = ["a red circle moves left", "a blue square moves up", "nothing happens", "two dogs"]
    rows = [{"question_id": "q", "video_name": "v", "question": "What happens?", "options": options, "answer_id": 0}]
    (tmp_path / "q.json").write_text(json.dumps(rows))
    rec = run_chunk(
        model, EvalConfig("mcq", tmp_path / "q.json", video_root=tmp_path, output_dir=tmp_path / "o", strategy="loglik")
    ).records[0]

    pixels = [p.unsqueeze(0) for p in model.normalized_pixels(str(video))]
    direct = []
    with torch.no_grad():
        for opt in options:
            enc = model.processor.encode(
                [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": opt}], num_videos=1
            )
            out = model(
                input_ids=enc["input_ids"][None],
                attention_mask=torch.ones_like(enc["input_ids"])[None],
                video_mask=enc["video_mask"][None],
                pixel_values=pixels,
                labels=enc["labels"][None],
            )
            direct.append(out.loss.item())
    assert rec["option_nll"] == pytest.approx(direct, rel=1e-4, abs=1e-5)
    assert rec["pred_index"] == int(np.argmin(direct))
    chosen = rec["pred_text"]
    perm = [2, 0, 3, 1]
    (tmp_path / "q.json").write_text(
        json.dumps([{**rows[0], "options": [options[i] for i in perm], "answer_id": perm.index(0)}])
    )
    rec2 = run_chunk(
        model,
        EvalConfig("mcq", tmp_path / "q.json", video_root=tmp_path, output_dir=tmp_path / "o2", strategy="loglik"),
    ).records[0]
    assert rec2["pred_text"] == chosen


def test_loglik_scores_the_segment_of_a_real_videolm(tmp_path, tiny_checkpoint):
    from merv.models import VideoLM

    model = VideoLM.from_pretrained(tiny_checkpoint)
    video = str(write_mp4(tmp_path / "v.mp4"))
    options = ["a red circle moves left", "two dogs"]
    rows = [
        {"id": "s", "video": "v", "question": "What happens?", "options": options, "answer_id": 1, "time": [0.5, 1.0]}
    ]
    (tmp_path / "q.json").write_text(json.dumps(rows))
    cfg = EvalConfig("mcq", tmp_path / "q.json", video_root=tmp_path, output_dir=tmp_path / "o", strategy="loglik")
    rec = run_chunk(model, cfg).records[0]
    assert (rec["start"], rec["end"]) == (0.5, 1.0)
    segment = model.option_nll(video, "What happens?", options, start=0.5, end=1.0)
    whole = model.option_nll(video, "What happens?", options)
    assert rec["option_nll"] == pytest.approx(segment, rel=1e-5)
    assert rec["option_nll"] != pytest.approx(whole, rel=1e-5)  # the bounds reached the model


def test_eval_mcq_script_on_a_saved_videolm(tmp_path, tiny_checkpoint):
    csv_path, videos = write_nextqa(tmp_path, n=4)
    for vid in ("1000", "1001"):
        write_mp4(videos / f"{vid}.mp4")
    out = tmp_path / "res"
    line = mcq_main(
        [
            "--model_path",
            str(tiny_checkpoint),
            "--eval_dataset",
            "nextqa",
            "--filename_question",
            str(csv_path),
            "--video_root",
            str(videos),
            "--output_dir",
            str(out),
            "--max_new_tokens",
            "4",
            "--device",
            "cpu",
        ]
    )
    assert line.startswith("nextqa [naive]: accuracy")
    report = json.loads((out / "nextqa_naive_report.json").read_text())
    assert report["counts"]["total"] == 4 and report["counts"]["skipped"] == 0
    assert report["model_path"] == str(tiny_checkpoint.resolve())
    assert report["settings"] == {
        "strategy": "naive",
        "prompt_version": MCQ_PROMPT_VERSION,
        "do_sample": False,
        "greedy": True,
        "max_new_tokens": 4,
    }
    recs = read_predictions(out / "nextqa_naive_pred_merge.jsonl")
    assert all(isinstance(r["output"], str) for r in recs)


def test_video_cache_decodes_each_benchmark_clip_once_across_runs(tmp_path, tiny_checkpoint, monkeypatch):
    import merv.models.processor as processor_module

    csv_path, videos = write_nextqa(tmp_path, n=4)  # 4 questions on 2 videos
    for vid in ("1000", "1001"):
        write_mp4(videos / f"{vid}.mp4")
    decoded, read = [], processor_module.read_frames
    monkeypatch.setattr(
        processor_module, "read_frames", lambda path, *a, **kw: decoded.append(path) or read(path, *a, **kw)
    )
    common = ["--model_path", str(tiny_checkpoint), "--eval_dataset", "nextqa", "--filename_question", str(csv_path),
              "--video_root", str(videos), "--device", "cpu", "--video_cache", str(tmp_path / "pixels")]  # fmt: skip

    mcq_main([*common, "--output_dir", str(tmp_path / "first"), "--strategy", "loglik"])
    assert len(decoded) == 2  # the second question of each video reads the first one's pixels
    mcq_main([*common, "--output_dir", str(tmp_path / "second"), "--strategy", "loglik"])
    assert len(decoded) == 2  # a later run decodes nothing ...
    first, second = (read_predictions(tmp_path / d / "nextqa_loglik_pred_merge.jsonl") for d in ("first", "second"))
    assert [r["option_nll"] for r in first] == [r["option_nll"] for r in second]  # ... and scores the same


def test_merge_command(tmp_path, capsys):
    from merv.eval.__main__ import main

    write_nextqa(tmp_path, n=5)
    for k in range(2):
        run_chunk(FakeModel(), cfg_for(tmp_path, "out", num_chunks=2, chunk_idx=k))
    assert main(["merge", "--output_dir", str(tmp_path / "out"), "--name", "nextqa_naive", "--num_chunks", "3"]) == 1
    assert "chunk 0 of 3 has not run" in capsys.readouterr().err
    assert main(["merge", "--output_dir", str(tmp_path / "out"), "--name", "nextqa_naive", "--num_chunks", "2"]) == 0
    assert capsys.readouterr().out.startswith("nextqa [naive]: accuracy")
    assert len(read_predictions(tmp_path / "out" / "nextqa_naive_pred_merge.jsonl")) == 5


def test_eval_package_does_not_import_lightning():
    import subprocess
    import sys

    code = (
        "import sys, merv.eval, merv.eval.merv_flags, merv.eval.commands, merv.eval.__main__; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_training_and_evaluation_share_one_skip_limit():
    import inspect

    from merv.data.dataset import MAX_SKIP_FRACTION, SkipCounter, VideoTextDataset
    from merv.eval.action import ActionEvalConfig
    from merv.lit.data import MERVDataModule

    defaults = {
        "counter": SkipCounter().max_skip_fraction,
        "dataset": inspect.signature(VideoTextDataset).parameters["max_skip_fraction"].default,
        "data module": inspect.signature(MERVDataModule).parameters["max_skip_fraction"].default,
        "eval": EvalConfig(task="nextqa", question_file="q.csv").max_skip_fraction,
        "action eval": ActionEvalConfig(labels="labels.csv").max_skip_fraction,
    }
    assert set(defaults.values()) == {MAX_SKIP_FRACTION}, defaults
