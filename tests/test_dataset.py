"""VideoTextDataset: worker decoding, text-only mixing, skipping unreadable videos and counting the skips."""

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from merv.data.dataset import SkipCounter, SkippedSample, SkipRateError, VideoTextDataset, track_skips
from merv.data.synthetic import write_video
from merv.models import processor as processor_mod
from merv.models.llm import build_tiny_tokenizer
from merv.models.processor import VideoLMProcessor
from merv.models.prompting import PromptFormat
from merv.video import FrameSpec

NUM_VISUAL_TOKENS = 3
SPECS = [FrameSpec(4, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), FrameSpec(8, 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))]


@pytest.fixture(scope="module")
def processor():
    tokenizer = build_tiny_tokenizer()
    return VideoLMProcessor(tokenizer, PromptFormat("merv", tokenizer.eos_token), SPECS, NUM_VISUAL_TOKENS)


def _conversation(answer: str, with_video: bool) -> list[dict]:
    prompt = "<video>\nWhat colour is the shape?" if with_video else "What colour is the sky?"
    return [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Six good videos, two text-only records and four unreadable videos, interleaved."""
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    good = []
    for i in range(6):
        path = root / f"good_{i}.mp4"
        write_video(path, rng.integers(0, 256, (10 + i, 64, 64, 3), dtype=np.uint8))
        good.append({"id": f"good_{i}", "video": str(path), "conversations": _conversation("red", True)})
    data = (root / "good_0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "zero.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video\n" * 100)
    bad = [
        {"id": name, "video": str(root / f"{name}.mp4"), "conversations": _conversation("blue", True)}
        for name in ("missing", "truncated", "zero", "notes")
    ]
    text = [{"id": f"text_{i}", "video": None, "conversations": _conversation("blue", False)} for i in range(2)]
    ordered = [good[0], bad[0], good[1], text[0], bad[1], good[2], good[3], bad[2], text[1], good[4], bad[3], good[5]]
    good_indices = [
        i for i, r in enumerate(ordered) if not r["id"].startswith(("missing", "truncated", "zero", "notes"))
    ]
    return ordered, good_indices


def test_dataloader_with_workers_skips_bad_videos_and_counts_them(processor, records):
    ordered, good_indices = records
    dataset = VideoTextDataset(ordered, processor, max_skip_fraction=0.5, min_samples=4)
    # Worker processes are the point here, started as training starts them; a stuck worker fails the test
    # after two minutes instead of hanging it (a batch takes well under a second).
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=dataset.collate, timeout=120)
    seen = []
    for batch in track_skips(loader, dataset.skip_counter):
        seen += batch["indices"].tolist()
        n = batch["num_samples"]
        assert batch["input_ids"].shape[0] == n == len(batch["indices"])
        with_video = sum(ordered[i]["video"] is not None for i in batch["indices"].tolist())
        if with_video:
            assert [tuple(p.shape) for p in batch["pixel_values"]] == [
                (with_video, 4, 3, 32, 32),
                (with_video, 8, 3, 16, 16),
            ]
            assert batch["video_mask"].sum() == with_video * NUM_VISUAL_TOKENS
        else:
            assert batch["pixel_values"] is None
    assert sorted(seen) == good_indices and len(seen) == len(set(seen))
    counter = dataset.skip_counter
    assert (counter.seen, counter.skipped) == (12, 4)
    assert sorted(p.rsplit("/", 1)[-1] for p in counter.skipped_files) == [
        "missing.mp4",
        "notes.mp4",
        "truncated.mp4",
        "zero.mp4",
    ]
    assert counter.summary() == "skipped 4 of 12 samples (33.33%) with unreadable videos"


def test_skip_rate_over_the_limit_fails_loudly(processor, records):
    ordered, _ = records
    dataset = VideoTextDataset(ordered, processor, max_skip_fraction=0.2, min_samples=6)
    loader = DataLoader(dataset, batch_size=3, collate_fn=dataset.collate)
    with pytest.raises(SkipRateError, match=r"2 of 6 samples \(33.3%\).*max_skip_fraction=20.0%.*missing.mp4"):
        for _ in track_skips(loader, dataset.skip_counter):
            pass


def test_skipped_sample_marker_and_warning(processor, records, caplog):
    ordered, _ = records
    dataset = VideoTextDataset(ordered, processor)
    with caplog.at_level(logging.WARNING, logger="merv.data.dataset"):
        marker = dataset[1]
    assert isinstance(marker, SkippedSample) and marker.index == 1 and marker.path.endswith("missing.mp4")
    assert "missing.mp4" in caplog.text and "does not exist" in caplog.text
    all_bad = dataset.collate([dataset[1], dataset[4]])
    assert set(all_bad) == {"indices", "num_samples", "num_skipped", "skipped_files"}
    assert (all_bad["num_samples"], all_bad["num_skipped"], all_bad["indices"].numel()) == (0, 2, 0)
    assert [p.rsplit("/", 1)[-1] for p in all_bad["skipped_files"]] == ["missing.mp4", "truncated.mp4"]
    counter = SkipCounter(max_skip_fraction=1.0, min_samples=1)
    assert list(track_skips([all_bad], counter)) == [] and counter.skipped == 2


def test_items_go_through_the_processor(processor, records):
    ordered, _ = records
    dataset = VideoTextDataset(ordered, processor)
    item = dataset[0]
    assert [tuple(p.shape) for p in item["pixel_values"]] == [(4, 3, 32, 32), (8, 3, 16, 16)]
    frames = processor.load_frames(ordered[0]["video"])
    assert all(torch.equal(a, b) for a, b in zip(item["pixel_values"], processor.pixels(frames)))
    expected = processor.encode(ordered[0]["conversations"], num_videos=1)
    assert torch.equal(item["input_ids"], expected["input_ids"]) and torch.equal(item["labels"], expected["labels"])
    text = dataset[3]
    assert text["pixel_values"] is None and not text["video_mask"].any()


def test_segment_bounds_reach_the_decoder(monkeypatch, processor):
    calls = []

    def fake_read_frames(path, counts, *, start, end, backend, timeout):
        calls.append((path, list(counts), start, end))
        return [torch.zeros(k, 8, 8, 3, dtype=torch.uint8) for k in counts]

    monkeypatch.setattr(processor_mod, "read_frames", fake_read_frames)
    record = {"id": "seg", "video": "clip.mp4", "start": 1.5, "end": 3.0, "conversations": _conversation("fall", True)}
    VideoTextDataset([record], processor)[0]
    assert calls == [("clip.mp4", [4, 8], 1.5, 3.0)]


def test_skip_counter_threshold_waits_for_min_samples():
    counter = SkipCounter(max_skip_fraction=0.1, min_samples=10)
    counter.update({"num_samples": 0, "num_skipped": 3, "skipped_files": ["a", "b", "c"]})  # 3 of 3, too early to judge
    counter.update({"num_samples": 4, "num_skipped": 0})
    with pytest.raises(SkipRateError, match="3 of 10 samples"):
        counter.update({"num_samples": 3, "num_skipped": 0})
    counter.reset()
    assert (counter.seen, counter.skipped, counter.fraction) == (0, 0, 0.0)
    with pytest.raises(ValueError, match="max_skip_fraction"):
        SkipCounter(max_skip_fraction=1.5)


def test_samples_with_several_videos_decode_every_clip(processor, records, caplog):
    """A list `video` (one clip per `<video>` tag) gives `(V, T_e, 3, S, S)` pixels; one bad clip skips the sample."""
    ordered, _ = records
    good_a, good_b = ordered[0]["video"], ordered[2]["video"]
    prompt = "<video>\nThis one is red. <video>\nAnd this one?"
    conversation = [{"from": "human", "value": prompt}, {"from": "gpt", "value": "blue"}]
    pair = {"id": "pair", "video": [good_a, {"video": good_b, "start": 0.0, "end": 0.5}], "conversations": conversation}
    broken = {**pair, "id": "broken", "video": [good_a, ordered[1]["video"]], "record_origin": "train.json: record 9"}
    dataset = VideoTextDataset([pair, broken, ordered[0]], processor)
    item = dataset[0]
    assert [tuple(p.shape) for p in item["pixel_values"]] == [(2, 4, 3, 32, 32), (2, 8, 3, 16, 16)]
    assert int(item["video_mask"].sum()) == 2 * NUM_VISUAL_TOKENS
    second = processor.pixels(processor.load_frames(good_b, 0.0, 0.5))
    assert all(torch.equal(p[1], q) for p, q in zip(item["pixel_values"], second))
    with caplog.at_level(logging.WARNING, logger="merv.data.dataset"):
        marker = dataset[1]
    assert isinstance(marker, SkippedSample) and marker.path.endswith("missing.mp4")
    assert "sample 1 (broken) from train.json: record 9, clip 2 of 2" in caplog.text
    batch = dataset.collate([item, dataset[2]])
    assert [tuple(p.shape) for p in batch["pixel_values"]] == [(3, 4, 3, 32, 32), (3, 8, 3, 16, 16)]


def test_a_sample_whose_visual_tokens_overflow_max_length_is_skipped_before_decoding(records, monkeypatch, caplog):
    """E.g. a record with many images: no cut of its text makes it fit, so it is counted, not fatal."""
    ordered, _ = records
    tokenizer = build_tiny_tokenizer()
    small = VideoLMProcessor(
        tokenizer, PromptFormat("merv", tokenizer.eos_token), SPECS, NUM_VISUAL_TOKENS, max_length=8
    )
    many = {"id": "album", "video": [ordered[0]["video"]] * 3, "conversations": _conversation("red", True)}
    many["conversations"][0]["value"] = "<video> <video> <video>\nWhat colour?"
    monkeypatch.setattr(processor_mod, "read_frames", lambda *a, **kw: pytest.fail("decoded a sample that cannot fit"))
    dataset = VideoTextDataset([many, {**ordered[3], "video": None}], small)
    with caplog.at_level(logging.WARNING, logger="merv.data.dataset"):
        marker = dataset[0]
    assert isinstance(marker, SkippedSample) and "9 visual tokens" in marker.reason
    assert "skipping sample 0 (album)" in caplog.text
    batch = dataset.collate([marker, dataset[1]])
    assert (batch["num_samples"], batch["num_skipped"]) == (1, 1)


def test_a_shared_skip_counter_replaces_the_own_one(processor, records):
    ordered, _ = records
    shared = SkipCounter(max_skip_fraction=0.5, min_samples=1)
    dataset = VideoTextDataset(ordered, processor, skip_counter=shared)
    assert dataset.skip_counter is shared
    assert VideoTextDataset(ordered, processor, min_samples=7).skip_counter.min_samples == 7


def test_one_rule_for_the_clip_axis(processor, tmp_path):
    """A sample naming one video keeps `(T_e, 3, S, S)` pixels, a list of clips (even of one) gets `(V, T_e, ...)`;
    the processor and the dataset give the same tensors, and a batch has one row per video."""
    from merv.video.clips import stack_clips, with_clip_axis

    a, b = torch.zeros(4, 3, 8, 8), torch.ones(4, 3, 8, 8)
    assert stack_clips([[a]], multi_clip=False)[0] is a
    assert [tuple(t.shape) for t in stack_clips([[a], [b]], multi_clip=True)] == [(2, 4, 3, 8, 8)]
    assert tuple(stack_clips([[a]], multi_clip=True)[0].shape) == (1, 4, 3, 8, 8)
    assert tuple(with_clip_axis(a).shape) == (1, 4, 3, 8, 8) and with_clip_axis(a[None]).shape == (1, 4, 3, 8, 8)

    path = tmp_path / "clip.mp4"
    write_video(path, np.zeros((8, 32, 32, 3), dtype=np.uint8), fps=4)
    path = str(path)
    pair = "<video>\nThis. <video>\nAnd this?"
    records = [
        {"video": path, "conversations": _conversation("one", True)},
        {"video": [path, path], "conversations": [{"from": "human", "value": pair}, {"from": "gpt", "value": "two"}]},
    ]
    dataset = VideoTextDataset(records, processor)
    for record, item in zip(records, (dataset[0], dataset[1])):
        direct = processor.videos_pixels(record["video"])
        assert all(torch.equal(x, y) for x, y in zip(item["pixel_values"], direct))
    assert [tuple(p.shape) for p in dataset[0]["pixel_values"]] == [(4, 3, 32, 32), (8, 3, 16, 16)]
    batch = dataset.collate([dataset[0], dataset[1]])
    assert [tuple(p.shape) for p in batch["pixel_values"]] == [(3, 4, 3, 32, 32), (3, 8, 3, 16, 16)]
