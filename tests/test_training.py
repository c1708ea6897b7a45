"""Training through the CLI: artefacts and TensorBoard scalars, exact resume, stage hand-off, bad videos."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from merv.cli.train import main
from merv.data.synthetic import generate
from merv.lit.checkpoints import read_state_dict

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs/experiments/quickstart.yaml")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, num_videos=16, seed=0)
    return out


class StopAtStep(L.Callback):
    """Simulates an interrupted job: stops training after `step` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def trainer_yaml(path: Path, every_n_steps: int = 1, generation_every: int = 0, stop_at: int | None = None) -> str:
    """A trainer config for tests: checkpoint every step, no progress bar, all merv callbacks."""
    cfg = {
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "check_val_every_n_epoch": 1,
        "gradient_clip_val": 1.0,
        "default_root_dir": str(path),
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"name": "run", "version": 0},
        },
        "callbacks": [
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"save_last": True, "every_n_train_steps": every_n_steps, "save_top_k": -1},
            },
            {
                "class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
                "init_args": {"logging_interval": "step"},
            },
            {"class_path": "merv.lit.ThroughputMonitor"},
            {"class_path": "merv.lit.FusionWeightLogger"},
            {"class_path": "merv.lit.GenerationLogger", "init_args": {"every_n_steps": generation_every}},
            {"class_path": "merv.lit.ExportPretrained"},
        ],
    }
    if stop_at is not None:
        cfg["callbacks"].append({"class_path": "test_training.StopAtStep", "init_args": {"step": stop_at}})
    f = path / "trainer.yaml"
    path.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(cfg))
    return str(f)


def fit(
    run_dir: Path,
    data_dir: Path,
    *extra: str,
    train=("captions.json", "instruct.json"),
    stage="finetune",
    generation_every: int = 0,
    stop_at: int | None = None,
):
    args = [
        "fit",
        "--config",
        QUICKSTART,
        "--trainer",
        trainer_yaml(run_dir, generation_every=generation_every, stop_at=stop_at),
        "--data.train_files",
        json.dumps([str(data_dir / f) for f in train]),
        "--data.val_files",
        json.dumps([str(data_dir / "val.json")]),
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "4",
        "--model.stage",
        stage,
        *extra,
    ]
    return main(args)


def scalars(run_dir: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run_dir / "run/version_0"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    out = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    out["__text__"] = acc.Tags().get("tensors", [])
    return out


def trainable_state(source) -> dict[str, torch.Tensor]:
    state = read_state_dict(source)
    return {k: v for k, v in state.items() if not k.startswith("encoders.")}


def test_fit_writes_checkpoint_config_and_tensorboard_scalars(tmp_path, data_dir):
    cli = fit(tmp_path, data_dir, "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", generation_every=2)
    run = tmp_path / "run/version_0"
    assert (run / "checkpoints/last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    assert (run / "model/config.json").is_file()
    assert cli.trainer.global_step == 4
    logged = scalars(tmp_path)
    for tag in [
        "train/loss",
        "val/loss",
        "lr-AdamW/pg1",
        "train/grad_norm",
        "train/samples_per_sec",
        "train/tokens_per_sec",
        "data/skipped_videos",
        "fusion/siglip-tiny",
        "fusion/vivit-tiny",
    ]:
        assert tag in logged, f"{tag} missing from {sorted(logged)}"
    assert all(v > 0 for v in logged["train/samples_per_sec"])
    assert "samples/generations/text_summary" in logged["__text__"]
    # The per-encoder weights are a distribution.
    total = [a + b for a, b in zip(logged["fusion/siglip-tiny"], logged["fusion/vivit-tiny"])]
    assert total == pytest.approx([1.0] * len(total), abs=1e-5)


def test_resume_reaches_the_same_step_and_weights_as_an_uninterrupted_run(tmp_path, data_dir):
    # 24 training records / batch 4 = 6 batches per epoch: stop mid-epoch at step 4, finish at 9.
    full = fit(tmp_path / "full", data_dir, "--trainer.max_steps", "9")
    interrupted = fit(tmp_path / "part", data_dir, "--trainer.max_steps", "9", stop_at=4)
    assert interrupted.trainer.global_step == 4
    resumed = fit(tmp_path / "part", data_dir, "--trainer.max_steps", "9", "--ckpt_path", "last")
    assert resumed.trainer.global_step == full.trainer.global_step == 9
    a = full.model.model.state_dict()
    b = resumed.model.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_stage_hand_off_carries_projectors_fusion_and_llm(tmp_path, data_dir):
    fit(tmp_path / "s1", data_dir, "--trainer.max_steps", "2", stage="finetune")
    stage1 = trainable_state(tmp_path / "s1/run/version_0/checkpoints/last.ckpt")
    cli = fit(
        tmp_path / "s2",
        data_dir,
        "--trainer.max_steps",
        "1",
        "--trainer.limit_train_batches",
        "0",
        "--model.init_from",
        str(tmp_path / "s1/run/version_0/checkpoints/last.ckpt"),
        stage="align",
    )
    loaded = cli.model.model.state_dict()
    groups = {k.split(".")[0] for k in stage1}
    assert {"projectors", "fusion", "llm"} <= groups
    for key, value in stage1.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_lora_hand_off_merges_adapters_into_a_finetune_stage(tmp_path, data_dir):
    fit(tmp_path / "lora", data_dir, "--trainer.max_steps", "3", "--model.lr", "0.05", stage="lora")
    source = tmp_path / "lora/run/version_0/model"
    from merv.models import VideoLM

    lora_model = VideoLM.from_pretrained(source)
    assert hasattr(lora_model.llm, "peft_config")
    cli = fit(
        tmp_path / "ft",
        data_dir,
        "--trainer.max_steps",
        "1",
        "--trainer.limit_train_batches",
        "0",
        "--model.init_from",
        str(source),
        stage="finetune",
    )
    merged = cli.model.model
    assert not hasattr(merged.llm, "peft_config")
    batch = merged.prepare_batch(
        [
            {
                "video": torch.zeros(8, 32, 32, 3, dtype=torch.uint8),
                "conversations": [
                    {"from": "human", "value": "<video>\nDescribe the video."},
                    {"from": "gpt", "value": "a red circle"},
                ],
            }
        ]
    )
    merged.eval()
    torch.testing.assert_close(merged(**batch).logits, lora_model(**batch).logits, rtol=1e-4, atol=1e-4)


def test_training_through_corrupt_videos_completes_and_counts_skips(tmp_path, data_dir):
    records = json.loads((data_dir / "captions.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("not a video")
    truncated = (data_dir / records[0]["video"]).read_bytes()
    (bad / "truncated.mp4").write_bytes(truncated[: len(truncated) // 3])
    broken = [
        dict(records[i], id=f"bad{i}", video=str(bad / name))
        for i, name in enumerate(["empty.mp4", "text.mp4", "truncated.mp4", "missing.mp4"])
    ]
    good = [dict(r, video=str(data_dir / r["video"])) for r in records]
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps(good + broken))
    cli = fit(
        tmp_path / "run",
        data_dir,
        "--trainer.max_epochs",
        "1",
        "--trainer.max_steps",
        "-1",
        "--data.max_skip_fraction",
        "0.5",
        train=(str(mixed),),
    )
    logged = scalars(tmp_path / "run")
    assert cli.trainer.global_step > 0
    assert logged["data/skipped_videos"][-1] == 4
    assert cli.datamodule.skip_counter.seen == len(good) + len(broken)
