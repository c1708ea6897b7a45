"""Synthetic data: byte-identical for a seed, every file readable (training and validation files as annotations,
benchmark files by the eval tasks), held-out validation and eval videos, visible content."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from merv.data.formats import load_annotations
from merv.data.synthetic import COLOURS, NUM_FRAMES, SHAPE_SIZE, SIZE, caption, generate
from merv.eval import get_task
from merv.video import read_frames

NUM_VIDEOS, SEED = 10, 7


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "a"
    return out, generate(out, NUM_VIDEOS, SEED)


def test_cli_output_is_byte_identical_for_a_seed(generated, tmp_path):
    out, _ = generated
    cmd = [sys.executable, "-m", "merv.data.synthetic", "--out", str(tmp_path / "b"), "--num_videos", str(NUM_VIDEOS)]
    result = subprocess.run([*cmd, "--seed", str(SEED)], capture_output=True, text=True, timeout=300, check=True)
    assert "wrote" in result.stderr and '"captions.json": "llava"' in result.stderr  # summary is logged
    first, second = _hashes(out), _hashes(tmp_path / "b")
    assert len(first) == 2 * NUM_VIDEOS + 2 + 11  # videos, msvd copies, annotation files
    assert first == second
    generate(tmp_path / "c", NUM_VIDEOS, SEED + 1)
    assert _hashes(tmp_path / "c")["videos/shape_0000.mp4"] != first["videos/shape_0000.mp4"]


def _benchmarks(out: Path) -> dict[str, list]:
    return {
        "nextqa.csv": get_task("nextqa").load(out / "nextqa.csv", video_root=out),
        "msvd/test_q.json": get_task("msvd").load(
            out / "msvd" / "test_q.json", out / "msvd" / "test_a.json", out / "msvd" / "videos"
        ),
    }


def test_every_written_file_is_readable(generated):
    out, summary = generated
    expected = {
        "captions.json": summary["shapes"]["captions.json"],
        "instruct.json": summary["shapes"]["instruct.json"],
        "val.json": summary["shapes"]["val.json"],
        "fall/labels.csv": summary["actions"]["segments"],
    }
    assert summary["annotations"] == {
        **dict.fromkeys(["captions.json", "instruct.json", "val.json"], "llava"),
        "fall/labels.csv": "omnifall",
    }
    for name, fmt in summary["annotations"].items():
        records = load_annotations(out / name)
        assert records == load_annotations(out / name, format=fmt)
        assert len(records) == expected[name] > 0
        assert all(Path(r["video"]).is_file() for r in records), name
        assert all(r["conversations"][0]["value"].count("<video>") == 1 for r in records)
    for split in ("train", "val", "test"):
        assert load_annotations(out / "fall" / "labels.csv", split_file=out / "fall" / "splits" / f"{split}.csv")
    benchmarks = _benchmarks(out)
    assert summary["benchmarks"] == {"nextqa.csv": "nextqa", "msvd/test_q.json": "msvd"}
    for name, items in benchmarks.items():
        assert get_task(summary["benchmarks"][name]).kind == ("mcq" if name == "nextqa.csv" else "openended")
        assert len(items) == summary["shapes"][name] > 0
        assert all(Path(it.video).is_file() for it in items), name
        assert all(it.answer for it in items)
    # Every file on disk is a video, an annotation file named in the summary, or a file those read beside them.
    named = {*summary["annotations"], *summary["benchmarks"], "msvd/test_a.json", "map_vid_vidorID.json"}
    others = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.suffix != ".mp4"} - {
        f"fall/splits/{s}.csv" for s in ("train", "val", "test")
    }
    assert others == named


def test_val_conversations_cover_the_held_out_videos(generated):
    out, summary = generated
    val = load_annotations(out / "val.json")
    by_video: dict[str, list[dict]] = {}
    for record in val:
        by_video.setdefault(Path(record["video"]).stem, []).append(record)
    assert len(by_video) == summary["shapes"]["held_out_videos"]
    truth = {Path(it.video).stem: it.answer for it in _benchmarks(out)["nextqa.csv"] if it.question_type == "DC"}
    for name, records in by_video.items():
        assert sorted(r["id"] for r in records) == [f"{name}_caption", f"{name}_instruct"]
        described = next(r for r in records if r["id"].endswith("_caption"))["conversations"][1]["value"]
        colour, shape, direction = described.split()[1], described.split()[2], described.split()[4]
        assert described == caption(colour, shape, direction) == truth[name]
        qa = next(r for r in records if r["id"].endswith("_instruct"))["conversations"]
        assert 1 <= len(qa) // 2 <= 3 and all(t["value"] in (colour, shape, direction) for t in qa[1::2])


def test_held_out_videos_are_not_in_training_files(generated):
    out, _ = generated

    def names(name):
        return {Path(r["video"]).stem for r in load_annotations(out / name)}

    train = names("captions.json") | names("instruct.json")
    held_out = {Path(it.video).stem for items in _benchmarks(out).values() for it in items}
    assert train and held_out and not train & held_out
    assert names("val.json") == held_out
    fall = out / "fall"
    fall_train = {r["path"] for r in load_annotations(fall / "labels.csv", split_file=fall / "splits" / "train.csv")}
    fall_test = {r["path"] for r in load_annotations(fall / "labels.csv", split_file=fall / "splits" / "test.csv")}
    assert fall_train and fall_test and not fall_train & fall_test


def test_annotations_follow_the_spec(generated):
    out, _ = generated
    instruct = load_annotations(out / "instruct.json")
    assert {len(r["conversations"]) // 2 for r in instruct} <= {1, 2, 3}
    positions = {r["conversations"][0]["value"].startswith("<video>") for r in instruct}
    assert positions == {True, False}  # placeholder at the start and at the end
    mcq = _benchmarks(out)["nextqa.csv"]
    assert {it.question_type for it in mcq} == {"DC", "TN"} and len({it.answer_index for it in mcq}) > 1
    for it in mcq:
        truth = it.answer.split()
        assert len(it.options) == 5 and it.options.count(it.answer) == 1
        for option in it.options:
            if option != it.answer:
                assert sum(a != b for a, b in zip(truth, option.split())) == 1  # one attribute differs
    fall = load_annotations(out / "fall" / "labels.csv")
    assert {r["label_id"] for r in fall} == {0, 1, 2, 3, 6, 8}
    falls = [r for r in fall if r["label"] in ("fall", "fallen")]
    for fall_seg, fallen_seg in zip(falls[::2], falls[1::2]):
        assert (fall_seg["label"], fallen_seg["label"]) == ("fall", "fallen")
        assert fall_seg["path"] == fallen_seg["path"] and fall_seg["end"] == fallen_seg["start"]


def _foreground(frame: np.ndarray) -> np.ndarray:
    return np.abs(frame.astype(int) - np.median(frame.reshape(-1, 3), axis=0)).sum(-1) > 120


def test_shape_videos_show_the_caption(generated):
    out, _ = generated
    for record in load_annotations(out / "captions.json")[:6]:
        _, colour, shape, _, direction = record["conversations"][1]["value"].split()
        frames = read_frames(record["video"], [NUM_FRAMES])[0].numpy()
        assert frames.shape == (NUM_FRAMES, SIZE, SIZE, 3)
        masks = [_foreground(f) for f in frames]
        mean_colour = np.mean([f[m].mean(0) for f, m in zip(frames, masks)], axis=0)
        nearest = min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - mean_colour).sum())
        assert nearest == colour
        area = np.mean([m.sum() for m in masks])
        expected_area = {
            "circle": np.pi * (SHAPE_SIZE / 2) ** 2,
            "square": SHAPE_SIZE**2,
            "triangle": SHAPE_SIZE**2 / 2,
        }
        assert min(expected_area, key=lambda s: abs(expected_area[s] - area)) == shape
        assert area > 0.05 * SIZE * SIZE  # a large shape
        ys, xs = zip(*[np.argwhere(m).mean(0) for m in (masks[0], masks[-1])])
        motion = {"left": xs[0] - xs[1], "right": xs[1] - xs[0], "up": ys[0] - ys[1], "down": ys[1] - ys[0]}
        across = ys[1] - ys[0] if direction in ("left", "right") else xs[1] - xs[0]
        assert motion[direction] > 25 and abs(across) < 3


def test_action_videos_show_the_action(generated):
    out, _ = generated
    by_label = {r["label"]: r for r in load_annotations(out / "fall" / "labels.csv")}

    def box(label, frame_index):
        frame = read_frames(by_label[label]["video"], [NUM_FRAMES])[0].numpy()[frame_index]
        ys, xs = np.nonzero(_foreground(frame[:54]))  # above the floor
        return ys.max() - ys.min(), xs.max() - xs.min(), frame

    height, width, _ = box("standing", 0)
    assert height > 2 * width  # upright
    height, width, _ = box("fall", -1)
    assert width > 2 * height  # ends lying down
    first, last = box("sit_down", 0)[0], box("sit_down", -1)[0]
    assert last < 0.75 * first
    _, _, frame = box("lying", 0)
    assert (np.abs(frame.astype(int) - (150, 60, 170)).sum(-1) < 40).sum() > 100  # the bed is there
    walk = read_frames(by_label["walk"]["video"], [NUM_FRAMES])[0].numpy()
    xs = [np.nonzero(_foreground(f[:54]))[1].mean() for f in (walk[0], walk[-1])]
    assert abs(xs[1] - xs[0]) > 25


def test_generate_rejects_too_few_videos(tmp_path):
    with pytest.raises(ValueError, match="at least 5"):
        generate(tmp_path, 3, 0)
    assert json.loads(json.dumps(generate(tmp_path / "ok", 5, 1)))["actions"]["videos"] == 5
