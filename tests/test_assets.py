"""scripts/make_assets.py on a tiny real run: every asset is written and the plotted numbers are the logged ones."""

import dataclasses
import json
import sys
from pathlib import Path

import av
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_training import fit

from merv.data.synthetic import generate
from merv.eval import EvalConfig, evaluate
from merv.eval.action import ActionEvalConfig, evaluate_action
from merv.models import VideoLM
from merv.models.registry import model_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_assets  # noqa: E402

STEPS = 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """Four training steps with a checkpoint each, the demo's final MCQ report and a fall report."""
    root = tmp_path_factory.mktemp("assets")
    data = root / "data"
    generate(data, num_videos=8, seed=0)
    # Validation inside the first epoch whatever the shipped trainer config says, so val/loss is logged.
    validate = ("--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "1")
    fit(root / "train", data, "--trainer.max_steps", str(STEPS), *validate)
    run = root / "train" / "run" / "version_0"
    model = VideoLM.from_pretrained(run / "model")
    evaluate(
        model,
        EvalConfig(
            task="nextqa",
            question_file=data / "nextqa.csv",
            video_root=data / "videos",
            output_dir=run / "eval",
            model_path=str(run / "model"),
            strategy="loglik",
        ),
    )
    fall = evaluate_action(
        model, ActionEvalConfig(labels=data / "fall" / "labels.csv", mode="loglik", output_dir=root / "action")
    )
    return {"root": root, "data": data, "run": run, "fall_report": Path(fall["files"]["report"])}


def tensorboard_series(run: Path, tag: str) -> tuple[list[float], list[float]]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars(tag)
    return [float(e.step) for e in events], [e.value for e in events]


def run_main(tiny_run: dict[str, Path], out: Path, *extra: str) -> dict:
    args = ["--run", str(tiny_run["run"]), "--data_dir", str(tiny_run["data"]), "--out", str(out), *extra]
    return make_assets.main(args)


def test_main_writes_every_asset_with_the_logged_values(tiny_run, tmp_path):
    out = tmp_path / "assets"
    summary = run_main(tiny_run, out, "--fall_report", str(tiny_run["fall_report"]))
    names = ["architecture.png", "demo_curves.png", "fusion_weights.png", "confusion_matrix.png", "sample.mp4"]
    for name in names:
        assert (out / name).is_file(), name
    assert summary["skipped"] == {}
    for name in names[:3]:  # the README shows these at 800 px
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width == 800 and 300 <= im.height <= 900, (name, im.size)
    with Image.open(out / "confusion_matrix.png") as im:
        assert 400 <= im.width <= 1200 and 300 <= im.height <= 1200

    run = tiny_run["run"]
    series = summary["series"]
    for tag in ("train/loss", "val/loss", "fusion/siglip-tiny", "fusion/vivit-tiny"):
        steps, values = tensorboard_series(run, tag)
        assert series[tag]["steps"] == steps and series[tag]["values"] == values, tag
    assert series["val/loss"]["steps"] and len(series["train/loss"]["steps"]) == STEPS
    assert summary["final_train_loss"]["value"] == tensorboard_series(run, "train/loss")[1][-1]

    # One accuracy point per kept checkpoint; the last step comes from the run's own report.
    report = json.loads((run / "eval" / "nextqa_loglik_report.json").read_text())
    accuracy = summary["accuracy"]
    assert [p["step"] for p in accuracy] == list(range(1, STEPS + 1))
    assert [p["source"] for p in accuracy] == ["checkpoint"] * (STEPS - 1) + ["final report"]
    assert summary["final_accuracy"]["accuracy"] == report["accuracy"]
    assert all(p["total"] == report["counts"]["total"] == 4 for p in accuracy)
    assert all(p["accuracy"] == p["correct"] / p["total"] for p in accuracy)
    assert summary["chance"] == pytest.approx(1 / 5)
    cache = json.loads((out / make_assets.ACCURACY_CACHE).read_text())
    assert sorted(e["step"] for e in cache["checkpoints"].values()) == [1, 2, 3]

    fall = json.loads(tiny_run["fall_report"].read_text())
    assert summary["confusion_matrix"]["clips"] == fall["counts"]["evaluated"]
    assert summary["confusion_matrix"]["accuracy"] == fall["accuracy"]
    encoders = [e.id for e in model_config("merv-full").encoders]
    assert [e.split(",")[0] for e in summary["architecture"]["encoders"]] == encoders


def test_rerun_reads_checkpoint_accuracies_from_the_cache(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "assets"
    first = run_main(tiny_run, out)

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a cached checkpoint was evaluated again")

    monkeypatch.setattr(make_assets, "evaluate_checkpoint", no_evaluation)
    second = run_main(tiny_run, out)
    assert second["accuracy"] == first["accuracy"]
    assert second["skipped"]["confusion_matrix"] == "no --fall_report given"
    assert not (out / "confusion_matrix.png").exists()


def test_a_run_without_checkpoints_or_questions_plots_the_final_report_only(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for f in tiny_run["run"].glob("events.out.tfevents.*"):
        (run / f.name).write_bytes(f.read_bytes())
    (run / "eval").mkdir()
    report = json.loads((tiny_run["run"] / "eval" / "nextqa_loglik_report.json").read_text())
    report["data"]["question_file"]["path"] = str(tmp_path / "gone" / "nextqa.csv")
    (run / "eval" / "nextqa_loglik_report.json").write_text(json.dumps(report))
    summary = make_assets.main(["--run", str(run), "--out", str(tmp_path / "assets")])
    # With no checkpoint to read the final step from, the report sits at the last logged step.
    last_logged = tensorboard_series(run, "train/loss")[0][-1]
    assert [(p["step"], p["source"]) for p in summary["accuracy"]] == [(last_logged, "final report")]
    assert not (tmp_path / "assets" / make_assets.ACCURACY_CACHE).exists()
    assert summary["chance"] == 1 / 5 and summary["chance_source"] == "NExT-QA default"


def test_architecture_labels_follow_the_config():
    config = model_config("merv-full")
    labels = make_assets.architecture_labels(config, "merv-full")
    assert [text for text, _ in labels["encoders"]] == [
        f"{e.id}\n{e.num_frames} frames · frozen" for e in config.encoders
    ]
    assert [source for _, source in labels["encoders"]] == [e.pretrained for e in config.encoders]
    side = int(config.tokens_per_frame**0.5)
    assert f"{config.temporal_tokens} × {side}×{side}" in labels["align"]
    assert f"{config.temporal_tokens * config.tokens_per_frame} visual tokens" in labels["fusion"]
    assert labels["weights"] == ["w₁", "w₂", "w₃", "w₄"]
    assert config.llm.name_or_path in labels["llm"]

    concat = make_assets.architecture_labels(dataclasses.replace(config, fusion="concat-sequence"), "x")
    assert (
        f"{len(config.encoders) * config.temporal_tokens * config.tokens_per_frame} visual tokens" in concat["fusion"]
    )
    assert concat["weights"] == []
    tiny = make_assets.architecture_labels(model_config("merv-tiny"), "merv-tiny")  # T left to the encoders
    assert "min T'" in tiny["align"] and "visual tokens" not in tiny["fusion"]


def test_sample_video_is_deterministic_and_small(tmp_path):
    a = make_assets.write_sample_video(tmp_path / "a.mp4", seed=0)
    make_assets.write_sample_video(tmp_path / "b.mp4", seed=0)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert a["bytes"] < 300_000
    with av.open(str(tmp_path / "a.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == a["frames"] == 64 and frames[0].shape == (256, 256, 3)


def test_bad_inputs_name_the_file_and_field(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps({"classes": ["walk", "fall"], "metrics": {}}))
    with pytest.raises(ValueError, match=r"report\.json: field 'metrics\.confusion_matrix\.counts' is missing"):
        make_assets.plot_action_confusion(bad, tmp_path / "cm.png")
    bad.write_text(json.dumps({"classes": ["walk", "fall"], "metrics": {"confusion_matrix": {"counts": [[1, 0, 0]]}}}))
    with pytest.raises(ValueError, match=r"has shape \(1, 3\), expected 2 rows"):
        make_assets.plot_action_confusion(bad, tmp_path / "cm.png")
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        make_assets.read_scalars(tmp_path)
