"""Feature cache (keys, hits, misses, staleness, corruption, training from it), the build command, and the
video tensor and LRU caches."""

import copy
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader

from merv.data import load_annotations
from merv.data.dataset import SkippedSample, VideoTextDataset
from merv.data.features import (
    BuildStats,
    CachedFeatureDataset,
    EncoderKey,
    FeatureCache,
    FeatureCacheMissError,
    build_feature_cache,
    encoder_keys,
    fill_missing_features,
    weights_identity,
)
from merv.data.synthetic import generate
from merv.data.visual_inputs import VisualInputs
from merv.models import VideoLM, VideoLMConfig
from merv.models.encoders import build_encoder
from merv.models.vidlm import build_encoders
from merv.video import PixelMemory, VideoDecodeError, VideoIdentity, VideoTensorCache
from merv.video.cache import CorruptCacheEntryError, LRUCache

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT / "configs/model/tiny.yaml"
BATCH = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, num_videos=8, seed=0)
    return out


@pytest.fixture(scope="module")
def model() -> VideoLM:
    torch.manual_seed(0)
    return VideoLM(VideoLMConfig.tiny()).eval()


@pytest.fixture
def records(data_dir, tmp_path) -> list[dict]:
    """Caption records whose videos are private copies, so a test may touch or rewrite them."""
    videos = tmp_path / "videos"
    shutil.copytree(data_dir / "videos", videos)
    recs = load_annotations(data_dir / "captions.json")
    for r in recs:
        r["video"] = str(videos / Path(r["video"]).name)
    return recs


def build(records, model, root, **kwargs):
    return build_feature_cache(
        records,
        model.encoders,
        root,
        temporal_tokens=model.config.temporal_tokens,
        tokens_per_frame=model.config.tokens_per_frame,
        progress=False,
        **kwargs,
    )


def first_batch(dataset) -> dict:
    return dataset.collate([dataset[i] for i in range(BATCH)])


def loss(model, batch) -> torch.Tensor:
    keys = ("input_ids", "attention_mask", "video_mask", "pixel_values", "labels", "aligned_features")
    with torch.no_grad():
        return model(**{k: batch[k] for k in keys if k in batch}).loss


# ---- keys ------------------------------------------------------------------------------------------


def test_keys_follow_the_model_and_weights_identity():
    torch.manual_seed(0)
    a = build_encoder("siglip-tiny", num_frames=4)
    torch.manual_seed(0)
    same = build_encoder("siglip-tiny", num_frames=4)
    torch.manual_seed(1)
    other = build_encoder("siglip-tiny", num_frames=4)
    assert weights_identity(a) == weights_identity(same) != weights_identity(other)
    assert weights_identity(a).startswith("sha256:")
    a.pretrained = "google/siglip-base-patch16-224"  # named weights are identified by their source
    assert weights_identity(a).startswith("pretrained:google/siglip-base-patch16-224")

    base = EncoderKey.of(same, temporal_tokens=4, tokens_per_frame=4)
    assert base.shape == (4, 4, 32)
    variants = [
        EncoderKey.of(other, 4, 4),  # weights
        EncoderKey.of(same, 2, 4),  # temporal tokens of the alignment
        EncoderKey.of(same, 4, 1),  # tokens per frame
        EncoderKey.of(build_encoder("siglip-tiny", num_frames=8), 4, 4),  # frame count
    ]
    assert len({base.namespace, *(k.namespace for k in variants)}) == 5
    assert base.namespace.startswith("siglip-tiny-")
    torch.manual_seed(0)
    video_model = build_encoder("vivit-tiny", num_frames=8)  # T' = 4: the alignment T defaults to the smallest T'
    assert [k.temporal_tokens for k in encoder_keys([same, video_model], None, 4)] == [4, 4]


def test_random_encoders_depend_on_the_seed_not_on_randomness_drawn_before():
    """The cache builder builds the encoders alone, a run builds the whole model after other code drew random
    numbers: with the same seed their random encoders, hence their cache keys, are the same."""
    config = VideoLMConfig.tiny()
    torch.manual_seed(0)
    torch.rand(1000)  # e.g. a callback or a data module drew numbers first
    alone = build_encoders(config.encoders)
    after_encoders = torch.rand(3)
    torch.manual_seed(0)
    model = VideoLM(config)
    assert encoder_keys(alone, None, 4) == encoder_keys(model.encoders, model.config.temporal_tokens, 4)
    torch.manual_seed(0)
    torch.rand(1000)
    assert torch.equal(torch.rand(3), after_encoders)  # building the encoders drew nothing from the global stream
    torch.manual_seed(1)
    assert encoder_keys(build_encoders(config.encoders), None, 4) != encoder_keys(alone, None, 4)


def test_weights_identity_of_pretrained_sources_follows_the_files(tmp_path, monkeypatch):
    """A re-exported local checkpoint or a new hub snapshot gets a new identity (stale entries, not reuse)."""
    from huggingface_hub import constants

    encoder = build_encoder("siglip-tiny", num_frames=4)
    weights = tmp_path / "export"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"x" * 10)
    (weights / "README.md").write_text("notes")
    encoder.pretrained = str(weights)
    first = weights_identity(encoder)
    assert first.startswith(f"pretrained:{weights}@local:")
    (weights / "README.md").write_text("other notes")  # not weights: same identity
    assert weights_identity(encoder) == first
    (weights / "model.safetensors").write_bytes(b"y" * 11)  # re-exported weights
    assert weights_identity(encoder) != first

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder.pretrained = "org/vision-model"
    assert weights_identity(encoder) == "pretrained:org/vision-model"  # not cached: the name alone
    ref = tmp_path / "hub" / "models--org--vision-model" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("0123abcd\n")
    assert weights_identity(encoder) == "pretrained:org/vision-model@0123abcd"


def test_frame_folder_identity_follows_its_frames(tmp_path):
    from PIL import Image

    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(folder / f"{i:05d}.png")
    before = VideoIdentity.of(folder)
    frame = folder / "00001.png"
    Image.new("RGB", (4, 4), (255, 255, 255)).save(frame)
    st = frame.stat()
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert VideoIdentity.of(folder).mismatch(before.metadata()) is not None  # the folder's own mtime did not move


# ---- hits, misses, staleness -----------------------------------------------------------------------


def test_build_hit_miss_and_stale_detection(records, model, tmp_path):
    root = tmp_path / "cache"
    recs = records[:3] + records[:1]  # a repeated clip is encoded once
    stats = build(recs, model, root, batch_size=2)
    assert (stats.videos, stats.missing, stats.built, stats.hits, stats.entries_written) == (3, 3, 3, 0, 6)
    again = build(recs, model, root)
    assert (again.hits, again.misses, again.built) == (3, 0, 0)

    cache = FeatureCache.for_model(root, model)
    video = records[0]["video"]
    found = cache.lookup(VideoIdentity.of(video))
    assert found.status == "hit"
    expected = model.encode_aligned([p.unsqueeze(0) for p in model.normalized_pixels(video)])
    for got, want in zip(found.features, expected):
        assert got.dtype == torch.float32 and got.shape == want.shape[1:]
        torch.testing.assert_close(got, want[0], rtol=1e-5, atol=1e-6)
    assert cache.lookup(VideoIdentity.of(records[4]["video"])).status == "missing"
    assert cache.lookup(VideoIdentity.of(video, start=0.0, end=1.0)).status == "missing"  # another clip

    # Touching the file (new mtime) makes its entries stale; so does rewriting it with other bytes.
    st = os.stat(video)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = cache.lookup(VideoIdentity.of(video))
    assert touched.status == "stale" and "mtime_ns" in touched.reason
    assert "siglip-tiny: the video changed" in touched.reason and "vivit-tiny: the video changed" in touched.reason
    shutil.copyfile(records[5]["video"], records[1]["video"])
    assert cache.lookup(VideoIdentity.of(records[1]["video"])).status == "stale"

    rebuilt = build(recs, model, root)
    assert (rebuilt.hits, rebuilt.stale, rebuilt.built) == (1, 2, 2)
    assert cache.lookup(VideoIdentity.of(video)).status == "hit"
    # Other weights (another seed) read nothing from this cache.
    torch.manual_seed(1)
    other = VideoLM(VideoLMConfig.tiny())
    assert FeatureCache.for_model(root, other).lookup(VideoIdentity.of(video)).status == "missing"
    assert not list(root.rglob("*.tmp")), "atomic writes leave no temporary files behind"


def test_sharded_builds_split_the_videos(records, model, tmp_path):
    root = tmp_path / "cache"
    shards = [build(records, model, root, rank=r, world_size=2) for r in range(2)]
    assert [s.built for s in shards] == [3, 3]
    assert len(list(root.rglob("*.safetensors"))) == 2 * len(records)
    assert build(records, model, root).hits == len(records)
    with pytest.raises(ValueError, match="rank must be in"):
        build(records, model, root, rank=2, world_size=2)


# ---- training from the cache -----------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 0.0), (torch.float16, 1e-3)])
def test_training_from_cache_matches_live_encoding(records, model, tmp_path, dtype, tolerance):
    """First-batch loss from the cache equals live encoding: exactly in fp32 storage, within 1e-3 in fp16."""
    root = tmp_path / "cache"
    build(records, model, root, dtype=dtype, batch_size=3)
    live = first_batch(VideoTextDataset(records, model.processor))
    cached_ds = CachedFeatureDataset(records, model.processor, FeatureCache.for_model(root, model), on_miss="error")
    cached = first_batch(cached_ds)
    assert cached["pixel_values"] is None and cached["num_cache_misses"] == 0
    assert [a.dtype for a in cached["aligned_features"]] == [dtype, dtype]
    assert [tuple(a.shape) for a in cached["aligned_features"]] == [(BATCH, 4, 4, 32)] * 2
    live_loss, cached_loss = loss(model, live), loss(model, cached)
    torch.testing.assert_close(cached_loss, live_loss, rtol=tolerance, atol=tolerance)

    # A missing entry: that sample is decoded and encoded live, the others come from the cache.
    cache = FeatureCache.for_model(root, model)
    cache.entry_path(1, VideoIdentity.of(records[2]["video"])).unlink()
    partial_ds = CachedFeatureDataset(records, model.processor, cache)
    partial = first_batch(partial_ds)
    assert partial["cache_miss"].tolist() == [False, False, True, False]
    assert [tuple(p.shape) for p in partial["pixel_values"]] == [(1, 4, 3, 32, 32), (1, 8, 3, 32, 32)]
    with pytest.raises(ValueError, match="video positions"):
        loss(model, partial)  # unfilled, it fails loudly instead of training on zeros
    filled = fill_missing_features(partial, model)
    assert filled["pixel_values"] is None and "cache_miss" not in filled
    torch.testing.assert_close(loss(model, filled), live_loss, rtol=tolerance, atol=tolerance)


def two_clip_record(records) -> dict:
    """A record with two `<video>` tags (e.g. a few-shot exemplar and the query); the second is a segment."""
    return {
        "id": "pair",
        "video": [records[0]["video"], {"video": records[1]["video"], "start": 0.0, "end": 1.0}],
        "conversations": [
            {"from": "human", "value": "<video>\nThis is a red square. <video>\nWhat is this?"},
            {"from": "gpt", "value": "a blue circle"},
        ],
    }


def test_samples_with_several_videos(records, model, tmp_path):
    """A record with two `<video>` tags (e.g. a few-shot exemplar) reads one feature row per clip."""
    recs = [two_clip_record(records), records[2]]
    root = tmp_path / "cache"
    assert build(recs, model, root).built == 3  # the second video is cached as its first second only
    cache = FeatureCache.for_model(root, model)
    ds = CachedFeatureDataset(recs, model.processor, cache, on_miss="error")
    item = ds[0]
    assert [tuple(f.shape) for f in item["cached_features"]] == [(2, 4, 4, 32)] * 2
    assert int(item["video_mask"].sum()) == 2 * model.num_visual_tokens
    clip = cache.lookup(VideoIdentity.of(records[1]["video"], 0.0, 1.0)).features
    assert torch.equal(item["cached_features"][1][1], clip[1])
    batch = ds.collate([item, ds[1]])
    assert [tuple(a.shape) for a in batch["aligned_features"]] == [(3, 4, 4, 32)] * 2
    assert torch.isfinite(loss(model, batch))


def test_several_videos_missing_from_the_cache_are_encoded_live(records, model, tmp_path):
    """A multi-video sample without entries is decoded (every clip) and encoded live, matching live training."""
    recs = [two_clip_record(records), records[2]]
    root = tmp_path / "cache"
    build(recs[1:], model, root)  # only the single-video sample is cached
    ds = CachedFeatureDataset(recs, model.processor, FeatureCache.for_model(root, model))
    item = ds[0]
    assert item["cached_features"] is None
    assert [tuple(p.shape) for p in item["pixel_values"]] == [(2, 4, 3, 32, 32), (2, 8, 3, 32, 32)]
    batch = ds.collate([item, ds[1]])
    assert batch["cache_miss"].tolist() == [True, True, False]
    live = VideoTextDataset(recs, model.processor)
    live_loss = loss(model, live.collate([live[0], live[1]]))
    torch.testing.assert_close(loss(model, fill_missing_features(batch, model)), live_loss, rtol=1e-5, atol=1e-6)


def test_the_builder_reads_only_encoder_tensors_of_a_saved_model(model, tmp_path, monkeypatch):
    """`init_from` a `save_pretrained` directory: the encoders come from its safetensors file, the LLM stays shut."""
    from types import SimpleNamespace

    from merv.cli import cache as cache_cli
    from merv.lit import checkpoints

    saved = tmp_path / "saved"
    model.save_pretrained(saved)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole model was loaded")

    monkeypatch.setattr(VideoLM, "from_pretrained", refuse)
    monkeypatch.setattr(checkpoints, "read_state_dict", refuse)
    module = SimpleNamespace(config=model.config, hparams=SimpleNamespace(init_from=str(saved)))
    torch.manual_seed(123)  # other random weights than the saved model's, so loading is visible
    encoders = cache_cli.frozen_encoders(module)
    for built, saved_encoder in zip(encoders, model.encoders):
        assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), saved_encoder.state_dict().values()))
    assert all(k.startswith("encoders.") for k in cache_cli.encoder_state(saved))


def test_on_miss_error_names_the_record(records, model, tmp_path):
    root = tmp_path / "cache"
    build(records[:2], model, root)
    ds = CachedFeatureDataset(records, model.processor, FeatureCache.for_model(root, model), on_miss="error")
    assert ds[1]["cached_features"] is not None
    with pytest.raises(FeatureCacheMissError, match=r"sample 2 \(shape_0002_caption\).*missing.*siglip-tiny: no entry"):
        ds[2]
    os.utime(records[0]["video"], ns=(0, 10**18))
    with pytest.raises(FeatureCacheMissError, match="sample 0 .*stale.*the video changed"):
        ds[0]
    with pytest.raises(ValueError, match="on_miss"):
        CachedFeatureDataset(records, model.processor, FeatureCache.for_model(root, model), on_miss="skip")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_entry_is_skipped_like_a_bad_video(records, model, tmp_path, caplog, damage):
    root = tmp_path / "cache"
    build(records[:4], model, root)
    cache = FeatureCache.for_model(root, model)
    entry = cache.entry_path(0, VideoIdentity.of(records[1]["video"]))
    data = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(data[: len(data) - 17])
    elif damage == "garbage":
        entry.write_bytes(b"\x00garbage" * 64)
    else:  # a bit flip in the tensor data keeps the file parseable: the checksum catches it
        entry.write_bytes(data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:])
    with pytest.raises(CorruptCacheEntryError, match=entry.name):
        cache.lookup(VideoIdentity.of(records[1]["video"]))

    ds = CachedFeatureDataset(records[:4], model.processor, cache, on_miss="error")
    with caplog.at_level(logging.WARNING, logger="merv.data.features"):
        item = ds[1]
    assert isinstance(item, SkippedSample) and item.path == str(entry)
    assert any("skipping sample 1" in r.message and "corrupt cache entry" in r.message for r in caplog.records)
    loader = DataLoader(ds, batch_size=2, collate_fn=ds.collate)
    batches = list(loader)
    assert [b["num_skipped"] for b in batches] == [1, 0] and [b["num_samples"] for b in batches] == [1, 2]
    assert batches[0]["skipped_files"] == [str(entry)]
    assert tuple(batches[1]["aligned_features"][0].shape) == (2, 4, 4, 32)

    # The next build notices the damage and rebuilds the entry.
    stats = build(records[:4], model, root)
    assert (stats.corrupt, stats.built, stats.hits, stats.entries_written) == (1, 1, 3, 1)
    assert cache.lookup(VideoIdentity.of(records[1]["video"])).status == "hit"


def test_deleted_video_is_skipped(records, model, tmp_path):
    root = tmp_path / "cache"
    build(records[:2], model, root)
    os.unlink(records[0]["video"])
    item = CachedFeatureDataset(records[:2], model.processor, FeatureCache.for_model(root, model))[0]
    assert isinstance(item, SkippedSample) and "does not exist" in item.reason


# ---- the build command -----------------------------------------------------------------------------


def experiment_yaml(path: Path, data_dir: Path, *train_files: str, batch_size: int = 4) -> Path:
    """A small experiment config: the tiny model in the align stage on the generated videos."""
    path.write_text(
        json.dumps(
            {
                "seed_everything": 0,
                "model": {"vidlm": str(TINY_MODEL), "stage": "align"},
                "data": {
                    "train_files": [str(data_dir / f) for f in train_files],
                    "batch_size": batch_size,
                    "num_workers": 0,
                },
            }
        )
    )
    return path


def test_build_command_then_all_hits(data_dir, tmp_path, capsys):
    from merv.cli.cache import main

    experiment = experiment_yaml(tmp_path / "experiment.yaml", data_dir, "captions.json", "instruct.json")
    command = ["build", "--config", str(experiment), "--out", str(tmp_path / "features"), "--progress", "false"]
    assert main([*command, "--dtype", "float16"]) == 0
    # captions and instructions share their 6 training videos: each is encoded once.
    assert "6 videos, 0 hits, 6 misses (0 stale, 0 corrupt), 6 built, 0 failed" in capsys.readouterr().out
    assert len(list((tmp_path / "features").rglob("*.safetensors"))) == 12
    assert len(list((tmp_path / "features").glob("*/meta.json"))) == 2
    assert main([*command, "--dtype", "float16"]) == 0
    assert "6 videos, 6 hits, 0 misses (0 stale, 0 corrupt), 0 built, 0 failed" in capsys.readouterr().out
    # Asking for another storage dtype rebuilds.
    main(command)
    assert "6 misses (6 stale, 0 corrupt), 6 built" in capsys.readouterr().out


def test_build_command_options_and_experiment_overrides(data_dir, tmp_path, monkeypatch):
    """Snake-case options reach the build; `--data.*` / `--model.*` overrides reach the experiment parser."""
    from merv.cli import cache as cache_cli

    seen = {}

    def fake_build(records, encoders, root, **kwargs):
        seen.update(records=len(records), root=root, **kwargs)
        return BuildStats()

    monkeypatch.setattr(cache_cli, "build_feature_cache", fake_build)
    experiment = experiment_yaml(tmp_path / "experiment.yaml", data_dir, "captions.json")
    argv = ["build", "--config", str(experiment), "--batch_size", "3", "--data.train_files", f"[{data_dir / 'instruct.json'}]",
            "--num_workers", "1", "--world_size", "2", "--rank", "1", "--progress", "false", "--overwrite", "--dtype", "bfloat16",
            "--model.feature_cache", str(tmp_path / "from-config"), "--splits", "[train]", "--device", "cpu"]  # fmt: skip
    assert cache_cli.main(argv) == 0
    assert seen["records"] == len(load_annotations(data_dir / "instruct.json"))
    assert seen["root"] == str(tmp_path / "from-config")  # no --out: the model's feature cache
    assert (seen["batch_size"], seen["num_workers"], seen["rank"], seen["world_size"]) == (3, 1, 1, 2)
    assert (seen["progress"], seen["overwrite"], seen["dtype"], seen["device"]) == (False, True, torch.bfloat16, "cpu")
    with pytest.raises(SystemExit):
        cache_cli.main(["build", "--batch-size", "3", "--config", str(experiment)])  # one flag style: snake_case
    with pytest.raises(SystemExit, match="--config"):
        cache_cli.main(["build", "--out", str(tmp_path)])


def test_the_builder_encodes_with_the_runs_encoders_whatever_randomness_came_before(model):
    """A run's encoders come from its seed alone, so the builder's keys (built without the rest of the model,
    after other code drew random numbers) are the run's."""
    from types import SimpleNamespace

    from merv.cli.cache import frozen_encoders
    from merv.lit import MERVLitModule

    torch.manual_seed(0)
    lit = MERVLitModule(VideoLMConfig.tiny())
    lit.configure_model()
    torch.manual_seed(0)
    torch.rand(4096)  # e.g. the Trainer and callbacks of a run drew numbers the builder never draws
    built = frozen_encoders(SimpleNamespace(config=lit.config, hparams=SimpleNamespace(init_from=None)))
    keys = encoder_keys(built, lit.config.temporal_tokens, lit.config.tokens_per_frame)
    assert keys == FeatureCache.for_model("unused", lit.model).keys
    assert all(k.weights.startswith("sha256:") for k in keys)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two fresh interpreters building the cache: 200 s with both cores 4x oversubscribed
def test_python_m_merv_cli_cache_build(data_dir, tmp_path):
    """The module entry point in a fresh interpreter: a first build writes, a second reports all hits."""
    experiment = experiment_yaml(tmp_path / "experiment.yaml", data_dir, "captions.json")
    command = [
        sys.executable,
        "-m",
        "merv.cli.cache",
        "build",
        "--config",
        str(experiment),
        "--out",
        str(tmp_path / "f"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JSONARGPARSE_DEPRECATION_WARNINGS": "off"}
    outputs = [
        subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=True, timeout=600).stdout
        for _ in range(2)
    ]
    assert "6 videos, 0 hits, 6 misses (0 stale, 0 corrupt), 6 built, 0 failed" in outputs[0]
    assert "6 videos, 6 hits, 0 misses (0 stale, 0 corrupt), 0 built, 0 failed" in outputs[1]


class Losses(L.Callback):
    """Records every training step's loss."""

    def __init__(self) -> None:
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def test_fit_from_cache_matches_live_fit(data_dir, tmp_path, monkeypatch):
    """`fit --model.feature_cache` after `merv cache build` trains on the same losses as a live run; with
    `feature_cache_on_miss=error` any key mismatch between the build's encoders and the run's would fail.
    A partly deleted cache still gives the same losses (missing samples are encoded live)."""
    from merv.cli.cache import main as cache_main
    from merv.cli.train import main as cli_main
    from merv.data import visual_inputs

    experiment = experiment_yaml(tmp_path / "experiment.yaml", data_dir, "captions.json", batch_size=2)
    cache_main(["build", "--config", str(experiment), "--out", str(tmp_path / "features"), "--progress", "false"])

    def fit(*extra):
        cli = cli_main(
            ["fit", "--config", str(experiment), "--trainer.max_steps", "3", "--trainer.logger", "false",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
             "--trainer.default_root_dir", str(tmp_path / "run"), "--data.shuffle", "false", *extra]
        )  # fmt: skip
        return next(c for c in cli.trainer.callbacks if isinstance(c, Losses)).values

    callbacks = ["--trainer.callbacks", json.dumps([{"class_path": f"{__name__}.Losses"}])]
    live = fit(*callbacks)
    cache_flags = ["--model.feature_cache", str(tmp_path / "features")]
    cached = fit(*callbacks, *cache_flags, "--model.feature_cache_on_miss", "error")
    assert len(live) == 3 and cached == live

    # Without the second video's SigLIP entry the first batch is mixed: the module encodes that sample
    # live after the device transfer and merges it with the cached one.
    digest = VideoIdentity.of(data_dir / "videos/shape_0001.mp4").clip_digest
    (entry,) = (tmp_path / "features").glob(f"siglip-tiny-*/{digest[:2]}/{digest}.safetensors")
    entry.unlink()
    filled = []

    def counting_fill(batch, model):
        filled.append(batch["cache_miss"].tolist())
        return fill_missing_features(batch, model)

    monkeypatch.setattr(visual_inputs, "fill_missing_features", counting_fill)
    partly = fit(*callbacks, *cache_flags)
    assert filled == [[False, True]]
    torch.testing.assert_close(partly, live, rtol=1e-6, atol=1e-6)


# ---- pixels and exemplars --------------------------------------------------------------------------


def counting_decodes(monkeypatch) -> list[str]:
    """Record every video file the processor decodes."""
    import merv.models.processor as processor_module

    decoded, read = [], processor_module.read_frames

    def counted(path, *args, **kwargs):
        decoded.append(str(path))
        return read(path, *args, **kwargs)

    monkeypatch.setattr(processor_module, "read_frames", counted)
    return decoded


def test_video_tensor_cache_serves_a_processor(records, model, tmp_path, monkeypatch):
    decoded = counting_decodes(monkeypatch)
    video = records[0]["video"]
    processor = copy.copy(model.processor)  # the module's model is shared: give this test its own cache slot
    specs = processor.frame_specs
    processor.pixel_cache = VideoTensorCache(tmp_path, specs, "synthetic-captions")
    expected = processor.preprocess(video)
    assert processor.pixel_cache.misses == 1 and not list(tmp_path.rglob("*.safetensors"))  # read-only: no writes

    processor.pixel_cache = cache = VideoTensorCache(tmp_path, specs, "synthetic-captions", writable=True)
    first = processor.preprocess(video)  # miss: decoded and stored
    again = processor.preprocess(video)  # hit: not decoded
    assert (cache.misses, cache.hits) == (1, 1) and decoded == [video, video]
    for a, b, c in zip(expected, first, again):
        assert a.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(a, c)
    assert VideoTensorCache(tmp_path, specs, "another-dataset").get(video) is None  # namespaced by dataset
    assert VideoTensorCache(tmp_path, specs[:1], "synthetic-captions").get(video) is None  # and by frame specs
    st = os.stat(video)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache.get(video) is None  # stale
    with pytest.raises(ValueError, match="the cache has 2"):
        cache.put(video, None, None, first[:1])


def test_video_tensor_cache_stores_pixels_shared_by_encoders_once(records, model, tmp_path):
    """Like merv-full's three 16-frame 224 px encoders: the processor hands them one tensor."""
    processor = copy.copy(model.processor)
    spec = processor.frame_specs[0]
    processor.frame_specs = [spec, dataclasses.replace(spec, mean=(0.0,) * 3), processor.frame_specs[1]]
    processor.pixel_cache = VideoTensorCache(tmp_path, processor.frame_specs, "shared", writable=True)
    video = records[0]["video"]
    decoded = processor.preprocess(video)
    assert decoded[0] is decoded[1]
    cached = processor.pixel_cache.get(video)
    assert cached is not None and all(torch.equal(a, b) for a, b in zip(decoded, cached))
    (entry,) = tmp_path.rglob("*.safetensors")
    with safe_open(str(entry), framework="pt") as f:
        assert len(list(f.keys())) == 2


def test_a_failing_video_tensor_cache_costs_the_cache_not_the_run(records, model, tmp_path, monkeypatch, caplog):
    import merv.video.cache as cache_module

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    processor = copy.copy(model.processor)
    processor.pixel_cache = cache = VideoTensorCache(tmp_path, processor.frame_specs, "full-disk", writable=True)
    monkeypatch.setattr(cache_module, "write_entry", disk_full)
    monkeypatch.setattr(cache_module, "read_entry", disk_full)
    with caplog.at_level(logging.WARNING, logger="merv.video.cache"):
        first, second = (processor.preprocess(r["video"]) for r in records[:2])
    assert first[0].dtype == torch.uint8 and second[0].dtype == torch.uint8
    assert cache.misses == 2 and caplog.text.count("cannot store entries") == 1  # warned once


def test_training_datasets_read_the_video_cache_of_the_visual_inputs(records, model, tmp_path, monkeypatch):
    decoded = counting_decodes(monkeypatch)
    filled = VisualInputs(model, video_cache=tmp_path / "pixels", video_cache_writable=True).dataset(records[:2])
    first = [filled[i]["pixel_values"] for i in range(2)]
    assert len(decoded) == 2
    assert model.processor.pixel_cache is None  # the model's own processor (generation, evaluation) has none

    dataset = VisualInputs(model, video_cache=tmp_path / "pixels").dataset(records[:3])  # read, never write
    again = [dataset[i]["pixel_values"] for i in range(3)]
    assert len(decoded) == 3  # the two cached clips were read, the third decoded ...
    assert len(list((tmp_path / "pixels").rglob("*.safetensors"))) == 2  # ... and not stored
    for a, b in zip(first, again):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_data_module_builds_its_datasets_through_the_module(records, model, tmp_path):
    """The module's cache settings decide what samples carry; the data module only asks it for datasets."""
    from types import SimpleNamespace

    from merv.lit import MERVDataModule, MERVLitModule

    build(records[:2], model, tmp_path / "features")
    lit = MERVLitModule(VideoLMConfig.tiny(), feature_cache=str(tmp_path / "features"))
    lit.model = model
    data = MERVDataModule()
    data.trainer = SimpleNamespace(lightning_module=lit)
    dataset = data._dataset(records[:2])
    assert isinstance(dataset, CachedFeatureDataset) and dataset.cache.root == tmp_path / "features"
    assert dataset[0]["pixel_values"] is None and dataset[0]["cached_features"] is not None


def test_live_encoding_of_cache_misses_is_refused_when_encoders_are_sharded(model, tmp_path):
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    from merv.lit import MERVLitModule

    def visual_inputs(**settings) -> VisualInputs:
        lit = MERVLitModule(VideoLMConfig.tiny(), feature_cache=str(tmp_path / "features"), **settings)
        lit.model = model
        lit._trainer = SimpleNamespace(strategy=FSDPStrategy())
        return lit.visual_inputs

    with pytest.raises(ValueError, match="feature_cache_on_miss=error"):
        visual_inputs()
    assert visual_inputs(feature_cache_on_miss="error").on_miss == "error"


def test_pixel_memory_decodes_repeated_clips_once(records, model, monkeypatch):
    decoded = counting_decodes(monkeypatch)
    processor = copy.copy(model.processor)
    processor.pixel_cache = memory = PixelMemory(max_items=2)
    a, b, c = (r["video"] for r in records[:3])
    for video in (a, b, a, c, a, b):  # b was evicted by c (a stayed in use)
        processor.preprocess(video)
    assert decoded == [a, b, c, b] and len(memory.items) == 2
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    processor.preprocess(a)  # a rewritten file is decoded anew
    assert decoded[-1] == a
    with pytest.raises(VideoDecodeError):  # a missing file fails like it does without a cache
        processor.preprocess(str(Path(a).with_name("missing.mp4")))


def test_lru_cache_evicts_least_recently_used():
    lru = LRUCache(max_items=2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the least recently used
    lru.put("c", 3)
    assert "b" not in lru and len(lru) == 2 and lru.get("b") is None
    assert (lru.hits, lru.misses) == (1, 1)
    with pytest.raises(ValueError, match="max_items"):
        LRUCache(0)
