"""Two-process CPU DDP through the CLI (gloo): the same config as one process, scaled out."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from merv.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]


def rendezvous_port() -> int:
    """A free port for rank 0's store, below the kernel's ephemeral range.

    Left to itself, Lightning binds an ephemeral port and releases it before rank 0 listens on it; any connection
    on the machine may take it in between, and rank 1 then waits for a store that never comes. Ports below the
    range are handed to no one who does not ask for that very port. Each test process starts its search at
    its own offset, so test runs side by side do not ask for the same one.
    """
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    start = max(1024, first_ephemeral - 10_000) + os.getpid() % 5_000
    for port in range(start, first_ephemeral):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port between {start} and {first_ephemeral}")


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
    env = {**os.environ, "JSONARGPARSE_DEPRECATION_WARNINGS": "off", "MASTER_PORT": str(rendezvous_port())}
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


FSDP_WORKER = """
import sys, torch, torch.distributed as dist
from types import SimpleNamespace
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel
from merv.lit import MERVLitModule
from merv.lit.strategies import merv_fsdp_policy
from merv.models import VideoLMConfig

rank, store = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"file://{store}")
torch.manual_seed(0)
lit = MERVLitModule(VideoLMConfig.tiny(), stage="finetune")
lit.configure_model()
lit._trainer = SimpleNamespace(world_size=2, global_rank=rank, datamodule=None)
lit.log = lambda *args, **kwargs: None


class Step(nn.Module):  # what Lightning's strategy wrapper does: forward runs training_step
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, batch):
        return self.module.training_step(batch, 0)


step = FullyShardedDataParallel(
    Step(lit), auto_wrap_policy=merv_fsdp_policy, use_orig_params=True, device_id=torch.device("cpu")
)
if rank == 0:
    sample = {"video": torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8),
              "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"}, {"from": "gpt", "value": "a ball rolls"}]}
else:
    sample = {"video": None, "conversations": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "red"}]}
batch = lit.model.prepare_batch([sample])
for _ in range(2):
    loss = step(batch)
    loss.backward()
print(f"rank {rank} done, loss {loss.item():.3f}")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_fsdp_ranks_with_and_without_video_run_the_same_collectives(tmp_path):
    """Two CPU processes under FSDP (gloo; Lightning's FSDP needs GPUs, torch's does not): rank 1 trains on a
    text-only batch, so it must gather the encoders, projectors and fusion in the order rank 0 does. Sharded
    weights also show that encoders are called through the FSDP wrapper, not around it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    store = tmp_path / "store"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", FSDP_WORKER, str(r), str(store)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=180) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    for r, (p, (out, err)) in enumerate(zip(ranks, outputs)):
        assert p.returncode == 0, err[-3000:]
        assert f"rank {r} done" in out
