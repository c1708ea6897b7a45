"""The SLURM scripts as sbatch runs them (a spooled copy, started in the submission directory), with a
stand-in `srun` that records the command instead of starting processes."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train_single_node.sbatch", "train_multi_node.sbatch")


@pytest.fixture
def cluster(tmp_path) -> dict:
    """A submission directory holding the repository's scripts, and an environment with a recording `srun`."""
    submit = tmp_path / "repo"
    submit.mkdir()
    (submit / "scripts").symlink_to(ROOT / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "srun.args"
    srun = bin_dir / "srun"
    srun.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {shlex.quote(str(log))}\n')
    srun.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CONFIG": "configs/experiments/merv_stage1_align.yaml",
        "SLURM_JOB_NAME": "merv",
        "SLURM_JOB_ID": "1234",
        "SLURM_NTASKS_PER_NODE": "8",
        "SLURM_NNODES": "1",
        "SLURM_SUBMIT_DIR": str(submit),
    }
    return {"submit": submit, "env": env, "log": log, "spool": tmp_path / "spool"}


def sbatch(cluster: dict, script: str, *args: str, **env: str) -> list[str]:
    """Run `script` the way slurmd does: copied to a spool directory, cwd = the submission directory."""
    cluster["spool"].mkdir(exist_ok=True)
    spooled = cluster["spool"] / "slurm_script"
    shutil.copy(ROOT / "scripts/slurm" / script, spooled)
    result = subprocess.run(
        ["bash", str(spooled), *args],
        cwd=cluster["submit"],
        env={**cluster["env"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return cluster["log"].read_text().splitlines()


def ckpt_path(argv: list[str]) -> str | None:
    return argv[argv.index("--ckpt_path") + 1] if "--ckpt_path" in argv else None


@pytest.mark.parametrize("script", SCRIPTS)
def test_spooled_sbatch_script_finds_the_launcher_and_passes_extra_arguments(cluster, script):
    argv = sbatch(cluster, script, "--model.lr", "0.1")
    assert argv[argv.index("--config") + 1] == "configs/experiments/merv_stage1_align.yaml"
    assert argv[argv.index("--trainer.default_root_dir") + 1] == "outputs/merv-1234"
    assert argv[-2:] == ["--model.lr", "0.1"]
    assert ckpt_path(argv) is None  # a fresh run starts from scratch
    assert (cluster["submit"] / "outputs/merv-1234").is_dir()


def _touch(path: Path, mtime: float, folder: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:  # FSDP's sharded checkpoints are folders named *.ckpt
        path.mkdir()
        (path / "__0_0.distcp").write_bytes(b"")
    else:
        path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


@pytest.mark.parametrize("newest", ["last", "hpc", "sharded-last"])
def test_launch_resumes_from_the_newest_of_the_hpc_and_last_checkpoints(cluster, tmp_path, newest):
    run_dir = tmp_path / "run-dir"
    last_time = 1_500 if newest == "hpc" else 3_000
    _touch(run_dir / "hpc_ckpt_1.ckpt", 1_000)
    hpc = _touch(run_dir / "hpc_ckpt_2.ckpt", 2_000)
    last = _touch(run_dir / "run/version_0/checkpoints/last.ckpt", last_time, folder=newest == "sharded-last")
    argv = sbatch(cluster, "train_single_node.sbatch", RUN_DIR=str(run_dir))
    # Left to itself Lightning resumes from the hpc checkpoint even when last.ckpt is newer.
    assert ckpt_path(argv) == str(hpc if newest == "hpc" else last)
