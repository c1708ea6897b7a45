"""The commands in README.md and TRAINING.md, run as written in a scratch directory.

CPU commands run for real, shortened (fewer videos and steps). Commands that need GPUs or SLURM are
mirrored: `merv fit` on GPU configs resolves its full config (`--print_config`), and the sbatch
scripts run with a stand-in `srun` that does the same. `make` targets are what CI itself runs.
The `merv` console script runs as `python -m merv.cli`, the same entry point, so the commands exercise this
checkout's code whether or not its console script is installed.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "TRAINING.md"]
GPU_CONFIGS = ("merv_stage1", "merv_stage2", "merv_lora", "fall_lora", "fall_finetune", "gpu.yaml")
MERV = ("merv", ".venv/bin/merv")
TRAINING = ("fit", "validate", "test")


def is_training(argv: list[str]) -> bool:
    """`python -m merv.cli fit|validate|test ...`, the LightningCLI's part of the `merv` command."""
    return argv[1:3] == ["-m", "merv.cli"] and len(argv) > 3 and argv[3] in TRAINING


def doc_commands(name: str) -> list[str]:
    """Shell commands of the ```bash blocks, continuation lines joined, comments dropped."""
    text = (ROOT / name).read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def shorten(argv: list[str]) -> list[str]:
    """Keep each command's meaning, make it CPU-test sized."""
    if "--num_videos" in argv:
        argv[argv.index("--num_videos") + 1] = "8"
    if is_training(argv) and "--print_config" not in argv:
        steps = "5" if "--ckpt_path" in argv else "3"
        argv += ["--trainer.max_steps", steps, "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"]
    if argv[1:4] == ["-m", "merv.cli.cache", "build"]:
        argv += ["--num_workers", "0", "--progress", "false"]
    return argv


def fake_srun(bin_dir: Path) -> None:
    """`srun CMD...` → `CMD... --print_config`: the sbatch scripts' launch, checked without a cluster."""
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@" --print_config\n')
    srun.chmod(0o755)


def run(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    env = dict(env)
    # Leading VAR=value assignments, as in `CONFIG=... sbatch ...`.
    while re.match(r"^[A-Z_]+=\S+ ", command):
        assignment, command = command.split(" ", 1)
        key, value = assignment.split("=", 1)
        env[key] = value
    argv = [sys.executable if a in ("python", ".venv/bin/python") else a for a in shlex.split(command)]
    if argv[0] in MERV:
        argv = [sys.executable, "-m", "merv.cli", *argv[1:]]
    if argv[0] == "sbatch":
        script = next(a for a in argv[1:] if a.endswith(".sbatch"))
        sbatch_options = argv[1 : argv.index(script)]
        nodes = sbatch_options[sbatch_options.index("--nodes") + 1] if "--nodes" in sbatch_options else "1"
        env.update(
            SLURM_JOB_NAME="docs",
            SLURM_JOB_ID="42",
            SLURM_NTASKS_PER_NODE="8",
            SLURM_NNODES=nodes,
            PYTHON=sys.executable,
            SLURM_SUBMIT_DIR=str(cwd),
        )
        # slurmd runs a copy of the script from its spool directory, started in the submission directory.
        spooled = cwd.parent / "spool" / "slurm_script"
        spooled.parent.mkdir(exist_ok=True)
        shutil.copy(cwd / script, spooled)
        argv = ["bash", str(spooled), *argv[argv.index(script) + 1 :]]
    elif argv[0].endswith("tensorboard"):
        argv = [str(Path(sys.executable).parent / "tensorboard"), *argv[1:], "--inspect"]
    elif is_training(argv) and any(g in command for g in GPU_CONFIGS):
        argv = [*argv, "--print_config"]
    else:
        argv = shorten(argv)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_docs_have_commands():
    for name in DOCS:
        assert len(doc_commands(name)) >= 4, name


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two dozen fresh interpreters one after another (each bounded at 600 s itself)
def test_every_documented_command_runs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for shared in ("configs", "scripts", "assets"):
        (work / shared).symlink_to(ROOT / shared)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_srun(bin_dir)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "JSONARGPARSE_DEPRECATION_WARNINGS": "off",
        "HF_HUB_OFFLINE": "1",
        "MERV_CACHE": str(tmp_path / "cache"),
    }
    # The scratch directory is not the checkout: point Python at the code under test.
    env["PYTHONPATH"] = str(ROOT)
    ran = []
    for name in DOCS:
        for command in doc_commands(name):
            if command.startswith("make "):
                continue
            result = run(command, work, env)
            assert result.returncode == 0, f"{name}: {command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            ran.append(command)
    assert any("merv.data.synthetic" in c for c in ran) and any("eval_action.py" in c for c in ran)
    assert any(c.startswith(".venv/bin/merv chat") for c in ran) and any(c.startswith("merv export") for c in ran)
