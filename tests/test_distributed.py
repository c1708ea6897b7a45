"""Two-process CPU DDP through the CLI (gloo): the same config as one process, scaled out."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from merv.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_cpu_ddp_completes_and_shards_the_data(tmp_path):
    data = tmp_path / "data"
    generate(data, num_videos=8, seed=0)
    trainer = {
        "accelerator": "cpu",
        "devices": 2,
        "strategy": "ddp",
        "max_steps": 3,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "default_root_dir": str(tmp_path / "run"),
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"name": "run", "version": 0},
        },
        "callbacks": [
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
            {"class_path": "merv.lit.ExportPretrained"},
        ],
    }
    (tmp_path / "trainer.yaml").write_text(json.dumps(trainer))
    cmd = [
        sys.executable,
        "-m",
        "merv.cli",
        "fit",
        "--config",
        str(ROOT / "configs/experiments/quickstart.yaml"),
        "--trainer",
        str(tmp_path / "trainer.yaml"),
        "--data.train_files",
        json.dumps([str(data / "captions.json")]),
        "--data.val_files",
        "[]",
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "2",
    ]
    env = {**os.environ, "JSONARGPARSE_DEPRECATION_WARNINGS": "off"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    run = tmp_path / "run/run/version_0"
    ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    # Each rank draws a disjoint half of the records per epoch, so an epoch is ceil(ceil(n / 2) / 2) steps;
    # the data module's saved position tells where the 3rd step fell.
    records = len(json.loads((data / "captions.json").read_text()))
    steps_per_epoch = math.ceil(math.ceil(records / 2) / 2)
    assert steps_per_epoch < math.ceil(records / 2)  # sharding is visible at this size
    assert ckpt["MERVDataModule"] == {"epoch": 2 // steps_per_epoch, "batches_done": 2 % steps_per_epoch + 1}
    assert (run / "model/config.json").is_file()


@pytest.mark.slow
def test_ddp_rank_whose_batches_are_all_unreadable_keeps_step_with_the_others(tmp_path):
    # Unshuffled, rank 0 reads the even records and rank 1 the odd ones: every batch of rank 1 is unreadable,
    # yet it must join rank 0's gradient all-reduce at every step or rank 0 waits forever.
    data = tmp_path / "data"
    generate(data, num_videos=8, seed=0)
    good = [dict(r, video=str(data / r["video"])) for r in json.loads((data / "captions.json").read_text())][:6]
    mixed = []
    for i, r in enumerate(good):
        mixed += [r, dict(r, id=f"bad{i}", video=str(tmp_path / f"missing{i}.mp4"))]
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    trainer = {
        "accelerator": "cpu",
        "devices": 2,
        "strategy": "ddp",
        "max_steps": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "callbacks": [],
        "default_root_dir": str(tmp_path / "run"),
    }
    (tmp_path / "trainer.yaml").write_text(json.dumps(trainer))
    cmd = [
        sys.executable,
        "-m",
        "merv.cli",
        "fit",
        "--config",
        str(ROOT / "configs/experiments/quickstart.yaml"),
        "--trainer",
        str(tmp_path / "trainer.yaml"),
        "--data.train_files",
        json.dumps([str(tmp_path / "mixed.json")]),
        "--data.val_files",
        "[]",
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "2",
        "--data.shuffle",
        "false",
        "--data.max_skip_fraction",
        "0.6",
    ]
    env = {**os.environ, "JSONARGPARSE_DEPRECATION_WARNINGS": "off"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1: every video of batch 0 was unreadable" in result.stderr
