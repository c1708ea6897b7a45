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


def ddp_fit(tmp_path: Path, train_file: Path, trainer: dict, *flags: str, timeout: float = 300):
    """`merv.cli fit` of the quick-start model on two CPU processes with `trainer` settings."""
    trainer = {
        "accelerator": "cpu",
        "devices": 2,
        "strategy": "ddp",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path / "run"),
        **trainer,
    }
    (tmp_path / "trainer.yaml").write_text(json.dumps(trainer))
    cmd = [sys.executable, "-m", "merv.cli", "fit", "--config", str(ROOT / "configs/experiments/quickstart.yaml"),
           "--trainer", str(tmp_path / "trainer.yaml"), "--data.train_files", json.dumps([str(train_file)]),
           "--data.val_files", "[]", "--data.num_workers", "0", "--data.batch_size", "2", *flags]  # fmt: skip
    env = {**os.environ, "JSONARGPARSE_DEPRECATION_WARNINGS": "off"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_process_cpu_ddp_completes_and_shards_the_data(tmp_path):
    data = tmp_path / "data"
    generate(data, num_videos=8, seed=0)
    trainer = {
        "max_steps": 3,
        "log_every_n_steps": 1,
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"name": "run", "version": 0},
        },
        "callbacks": [
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
            {"class_path": "merv.lit.ExportPretrained"},
        ],
    }
    result = ddp_fit(tmp_path, data / "captions.json", trainer)
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
@pytest.mark.parametrize("odd", ["unreadable", "text-only"])
def test_ddp_rank_whose_batches_have_no_video_keeps_step_with_the_others(tmp_path, odd):
    # Unshuffled, rank 0 reads the even records and rank 1 the odd ones: no batch of rank 1 runs the visual
    # modules, yet it must join rank 0's gradient all-reduce of them at every step or rank 0 waits forever.
    data = tmp_path / "data"
    generate(data, num_videos=8, seed=0)
    good = [dict(r, video=str(data / r["video"])) for r in json.loads((data / "captions.json").read_text())][:6]
    mixed = []
    for i, r in enumerate(good):
        if odd == "unreadable":
            other = dict(r, id=f"bad{i}", video=str(tmp_path / f"missing{i}.mp4"))
        else:
            other = {"id": f"text{i}", "conversations": [{"from": "human", "value": "Name a colour."},
                                                          {"from": "gpt", "value": "red"}]}  # fmt: skip
        mixed += [r, other]
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    trainer = {"max_steps": 2, "logger": False, "callbacks": []}
    flags = ["--data.shuffle", "false", "--data.max_skip_fraction", "0.6"]
    result = ddp_fit(tmp_path, tmp_path / "mixed.json", trainer, *flags, timeout=240)
    if odd == "unreadable":
        assert "rank 1: every video of batch 0 was unreadable" in result.stderr
