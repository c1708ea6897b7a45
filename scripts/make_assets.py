"""Regenerate the README figures and sample video from a real quick-start run; nothing is drawn by hand.

    python scripts/make_assets.py --run outputs/quickstart/run/version_0 \\
        [--fall_report eval/action/loglik_report.json] [--data_dir data/synthetic] [--out assets]

Writes under `--out`:

* `architecture.png`: MERV's data flow drawn from `model_config("merv-full")` (encoder ids, frame counts,
  alignment grid, projector, fusion and LLM all read from the config);
* `demo_curves.png`: train and validation loss from the run's TensorBoard events, and the held-out
  NExT-QA-style accuracy (option log-likelihood) of every kept checkpoint plus the run's final report;
  checkpoint accuracies are cached in `demo_accuracy.json` (keyed by checkpoint and question-file sha256),
  so a rerun only evaluates checkpoints it has not seen;
* `fusion_weights.png`: the per-encoder fusion weights (`fusion/<encoder id>` scalars) over training;
* `confusion_matrix.png`: from an action/fall evaluation report (`merv.eval.action`), when one is given;
* `sample.mp4`: a deterministic clip of generated moving shapes for the quick start.

A JSON summary of what was written and the numbers plotted is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

logger = logging.getLogger("make_assets")

DPI = 100
"""Figures are 8 inches wide at this resolution: 800 px, the width the README shows them at."""
FIG_WIDTH = 8.0
MCQ_REPORT = "nextqa_loglik_report.json"
"""The held-out MCQ report `scripts/demo.py` writes under `<run>/eval/`."""
ACCURACY_CACHE = "demo_accuracy.json"
CACHE_VERSION = 1
SAMPLE_UPSCALE = 4
"""The generated clips are 64x64; nearest-neighbour upscaling keeps their hard edges at 256x256."""

Series = dict[str, list[float]]
"""`{"steps": [...], "values": [...]}` of one scalar tag."""


# ---------------------------------------------------------------------------------------------- TensorBoard


def read_scalars(run_dir: str | os.PathLike) -> dict[str, Series]:
    """Every scalar tag of a run directory's TensorBoard event files.

    A resumed run appends a second event file that repeats the steps after its checkpoint; for a step logged
    more than once the latest write wins, as TensorBoard itself shows it.

    Raises:
        FileNotFoundError: the directory holds no event files.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not any(run_dir.glob("events.out.tfevents.*")):
        raise FileNotFoundError(
            f"{run_dir}: no TensorBoard event files (events.out.tfevents.*); pass the run's version folder, "
            "e.g. outputs/quickstart/run/version_0"
        )
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[str, Series] = {}
    for tag in acc.Tags()["scalars"]:
        latest: dict[int, tuple[float, float]] = {}
        for event in acc.Scalars(tag):
            if event.step not in latest or event.wall_time >= latest[event.step][0]:
                latest[event.step] = (event.wall_time, float(event.value))
        steps = sorted(latest)
        out[tag] = {"steps": [float(s) for s in steps], "values": [latest[s][1] for s in steps]}
    return out


def _require(scalars: Mapping[str, Series], tag: str, run_dir: Path) -> Series:
    if tag not in scalars or not scalars[tag]["steps"]:
        raise ValueError(f"{run_dir}: the TensorBoard events have no {tag!r} scalar; tags present: {sorted(scalars)}")
    return scalars[tag]


def _last(series: Series | None) -> dict[str, float] | None:
    if not series or not series["steps"]:
        return None
    return {"step": series["steps"][-1], "value": series["values"][-1]}


# ---------------------------------------------------------------------------------------- figure plumbing


def _figure(height: float) -> Figure:
    fig = Figure(figsize=(FIG_WIDTH, height), dpi=DPI)
    FigureCanvasAgg(fig)  # Agg canvas: renders without a display or pyplot state
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": it would change the pixel width away from the 800 px the README expects.
    fig.savefig(path, format="png", dpi=DPI)
    logger.info("wrote %s", path)
    return path


# ------------------------------------------------------------------------------------------- architecture

_FUSION_TEXT = {
    "cross-attention": "learned query attends over one key per encoder (mean of its sequence);\n"
    "softmax weights {weights} mix the {n} full sequences",
    "sum": "static learned weights {weights} (softmax), the same for every video,\nmix the {n} sequences",
    "concat-channel": "the {n} sequences concatenated along channels,\nthen a linear layer back to the LLM width",
    "concat-sequence": "the {n} sequences concatenated one after another (no parameters)",
}
_WEIGHTED_FUSIONS = ("cross-attention", "sum")
_PROJECTOR_NAMES = {"linear": "linear", "mlp": "MLP"}


def architecture_labels(config: Any, name: str) -> dict[str, Any]:
    """Every text drawn in the architecture figure, computed from a `VideoLMConfig`.

    Args:
        config: the architecture (`merv.models.registry.model_config(name)`).
        name: the registered name, for the title.
    """
    from merv.models.fusion import build_fusion

    encoders = config.encoders
    n = len(encoders)
    side = math.isqrt(config.tokens_per_frame)
    temporal = str(config.temporal_tokens) if config.temporal_tokens else "min T'ₑ"
    per_encoder = (config.temporal_tokens or 0) * config.tokens_per_frame
    # The fused length is the fusion module's own answer; the width (8 here) does not change it.
    fused = build_fusion(config.fusion, 8, n).output_length(per_encoder) if per_encoder else None
    frames = [e.num_frames for e in encoders]
    weights = ", ".join(f"w{_subscript(i + 1)}" for i in range(n))
    return {
        "title": f'MERV architecture ("{name}"): {n} frozen encoders → {config.fusion} fusion → LLM',
        "video": f"video clip\ndecoded once at {max(f for f in frames if f)} frames, each encoder takes its own subset",
        "encoders": [(f"{e.id}\n{e.num_frames} frames · frozen", e.pretrained or "random init") for e in encoders],
        "align": f"align: pool to\nT × h·w = {temporal} × {side}×{side}",
        "projector": f"{_PROJECTOR_NAMES[config.projector]} projector\n→ LLM width",
        "fusion_title": f"{config.fusion} fusion",
        "fusion": _FUSION_TEXT[config.fusion].format(weights=weights, n=n)
        + (f"\n→ {fused} visual tokens" if fused else ""),
        "weights": [f"w{_subscript(i + 1)}" for i in range(n)] if config.fusion in _WEIGHTED_FUSIONS else [],
        "llm": f"{config.llm.name_or_path}\n(causal LM, {config.llm.dtype}); visual tokens spliced in at <video>",
        "prompt": "prompt text",
        "answer": "answer text",
    }


def _subscript(number: int) -> str:
    return str(number).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def _box(ax, cx: float, cy: float, w: float, h: float, text: str, colour: str, size: float = 9.5, **kw) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (cx - w / 2, cy - h / 2),
            w,
            h,
            boxstyle="round,pad=0.4,rounding_size=1.2",
            facecolor=colour,
            edgecolor="#333333",
            linewidth=1.0,
        )
    )
    ax.text(cx, cy, text, ha="center", va="center", fontsize=size, **kw)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], label: str | None = None) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#444444", linewidth=1.1))
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx + 1.2, my, label, fontsize=10, color="#8a2be2", ha="left", va="center", fontweight="bold")


def draw_architecture(config: Any, name: str, path: str | os.PathLike) -> dict[str, Any]:
    """Draw the model's data flow (boxes and arrows) and write it as a PNG; returns the labels drawn."""
    labels = architecture_labels(config, name)
    n = len(labels["encoders"])
    fig = _figure(7.6)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.94))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.axis("off")
    fig.suptitle(labels["title"], fontsize=11.5, fontweight="bold", y=0.975)

    column = 100 / n
    xs = [column * (i + 0.5) for i in range(n)]
    width = column - 4
    rows = {"video": 92, "encoder": 74, "align": 57, "projector": 43, "fusion": 25, "llm": 7}

    _box(ax, 50, rows["video"], 62, 6, labels["video"], "#e8e8e8")
    fusion_top = rows["fusion"] + 5.5
    for i, (x, (enc_text, source)) in enumerate(zip(xs, labels["encoders"])):
        _arrow(ax, (50 + (x - 50) * 0.55, rows["video"] - 4), (x, rows["encoder"] + 6.5))
        _box(ax, x, rows["encoder"] + 1.2, width, 7, enc_text, "#cfe2f3", size=9)
        ax.text(x, rows["encoder"] - 4.2, source, ha="center", va="center", fontsize=7, color="#555555", style="italic")
        _arrow(ax, (x, rows["encoder"] - 6), (x, rows["align"] + 4.5))
        _box(ax, x, rows["align"], width, 5.5, labels["align"], "#d9ead3", size=9)
        _arrow(ax, (x, rows["align"] - 4), (x, rows["projector"] + 4.5))
        _box(ax, x, rows["projector"], width, 5.5, labels["projector"], "#fff2cc", size=9)
        weight = labels["weights"][i] if labels["weights"] else None
        _arrow(ax, (x, rows["projector"] - 4), (50 + (x - 50) * 0.8, fusion_top + 1), weight)
    _box(
        ax,
        50,
        rows["fusion"],
        94,
        10,
        f"{labels['fusion_title']}\n{labels['fusion']}",
        "#f4cccc",
        size=9.5,
    )
    _arrow(ax, (50, rows["fusion"] - 6.5), (50, rows["llm"] + 5))
    _box(ax, 50, rows["llm"], 56, 6, labels["llm"], "#d9d2e9", size=9.5)
    _box(ax, 8, rows["llm"], 11, 3.5, labels["prompt"], "#ffffff", size=9)
    _arrow(ax, (15, rows["llm"]), (20.5, rows["llm"]))
    _arrow(ax, (79.5, rows["llm"]), (85, rows["llm"]))
    _box(ax, 92, rows["llm"], 11, 3.5, labels["answer"], "#ffffff", size=9)
    _save(fig, Path(path))
    return labels


# ------------------------------------------------------------------------------------- checkpoint accuracy


def _sha256(path: Path) -> str:
    from merv.eval.tasks import file_identity  # imported where used, like every merv import here

    return file_identity(path)["sha256"]


def _checkpoint_step(path: Path) -> int:
    """The global step a Lightning checkpoint was saved at (its `global_step`, else `step=N` in the name)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("global_step"), int):
        return ckpt["global_step"]
    found = re.search(r"step=(\d+)", path.name)
    if found:
        return int(found.group(1))
    raise ValueError(f"{path}: neither a `global_step` entry nor `step=N` in the file name")


def _read_cache(path: Path, question_sha: str) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        logger.warning("%s is not valid JSON; evaluating every checkpoint again", path)
        return {}
    if data.get("version") != CACHE_VERSION or data.get("question_file_sha256") != question_sha:
        logger.info("%s was made for other questions or another format; starting it afresh", path)
        return {}
    return dict(data.get("checkpoints", {}))


def _write_cache(path: Path, question_file: Path, question_sha: str, entries: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "version": CACHE_VERSION,
        "task": "nextqa",
        "strategy": "loglik",
        "question_file": question_file.name,
        "question_file_sha256": question_sha,
        "checkpoints": dict(sorted(entries.items(), key=lambda kv: kv[1]["step"])),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def evaluate_checkpoint(checkpoint: Path, question_file: Path, video_root: Path) -> dict[str, Any]:
    """Held-out MCQ accuracy of one Lightning checkpoint, scored by option log-likelihood."""
    from merv.eval import EvalConfig, evaluate
    from merv.lit.checkpoints import load_checkpoint_model

    model = load_checkpoint_model(checkpoint)
    with tempfile.TemporaryDirectory(prefix="make_assets_eval_") as tmp:
        outcome = evaluate(
            model,
            EvalConfig(
                task="nextqa",
                question_file=question_file,
                video_root=video_root,
                output_dir=tmp,
                model_path=str(checkpoint),
                strategy="loglik",
            ),
        )
    report = outcome.report
    return {"accuracy": report["accuracy"], "correct": report["counts"]["correct"], "total": report["counts"]["total"]}


def checkpoint_accuracies(
    run_dir: Path, question_file: Path, video_root: Path, cache_path: Path, skip_steps: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """Accuracy of every kept checkpoint of a run, one entry per global step, read from or added to the cache.

    Args:
        run_dir: the run's version folder (checkpoints are looked for under it).
        question_file: the NExT-QA CSV.
        video_root: folder its videos are found in.
        cache_path: JSON cache of earlier evaluations.
        skip_steps: steps whose accuracy is already known (the final report); not evaluated again.

    Returns:
        `{"step", "accuracy", "correct", "total", "checkpoint", "source": "checkpoint"}` sorted by step.
    """
    question_sha = _sha256(question_file)
    cache = _read_cache(cache_path, question_sha)
    entries: dict[str, dict[str, Any]] = {}
    seen_steps = set(skip_steps)
    # `last.ckpt` usually repeats the newest step checkpoint: take named step files first, then the rest.
    found = sorted(run_dir.rglob("*.ckpt"), key=lambda p: (p.name.startswith("last"), str(p)))
    for ckpt in found:
        sha = _sha256(ckpt)
        entry = cache.get(sha)
        if entry is None:
            step = _checkpoint_step(ckpt)
            if step in seen_steps:
                continue
            logger.info("evaluating %s (step %d) on %s", ckpt, step, question_file)
            entry = {
                "step": step,
                "checkpoint": str(ckpt.relative_to(run_dir)),
                **evaluate_checkpoint(ckpt, question_file, video_root),
            }
            cache[sha] = entry
            _write_cache(cache_path, question_file, question_sha, cache)  # a killed rerun keeps what it did
        if entry["step"] in seen_steps:
            continue
        seen_steps.add(entry["step"])
        entries[sha] = entry
    if not found:
        logger.info("%s holds no checkpoints: the accuracy curve has the final report only", run_dir)
    if entries or cache_path.exists():
        # Keep only this run's checkpoints so the committed cache matches the figure.
        _write_cache(cache_path, question_file, question_sha, entries)
    return [{**e, "source": "checkpoint"} for e in sorted(entries.values(), key=lambda e: e["step"])]


def final_step(run_dir: Path, scalars: Mapping[str, Series]) -> int:
    """The step the exported model (and so the final report) stands for: the newest checkpoint's step, else
    the last logged step."""
    last = sorted(run_dir.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if last:
        return _checkpoint_step(last[-1])
    return int(max(s["steps"][-1] for s in scalars.values() if s["steps"]))


def chance_level(question_file: Path | None, video_root: Path | None) -> tuple[float, str]:
    """Expected accuracy of a random pick: the mean of 1/(number of options) over the questions."""
    if question_file is not None and question_file.is_file():
        from merv.eval.tasks import get_task

        items = get_task("nextqa").load(question_file, None, video_root)
        counts = [len(it.options) for it in items if it.options]
        if counts:
            return float(np.mean([1 / c for c in counts])), "question file"
    # NExT-QA questions have five options.
    return 1 / 5, "NExT-QA default"


# ----------------------------------------------------------------------------------------------- curves


def plot_curves(
    train: Series,
    val: Series | None,
    accuracy: Sequence[Mapping[str, Any]],
    chance: float,
    path: Path,
    title: str = "Training run",
) -> None:
    """Loss curves on top; held-out MCQ accuracy over training (with the chance line) below, when known."""
    rows = 2 if accuracy else 1
    fig = _figure(6.2 if rows == 2 else 3.8)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(train["steps"], train["values"], color="#1f77b4", linewidth=1.2, label="train loss (per logged batch)")
    if val:
        ax.plot(val["steps"], val["values"], color="#d62728", marker="o", linewidth=1.8, label="validation loss")
    ax.set_yscale("log")
    # Plain numbers (0.2, 0.5, 1, 2, 5) read better than powers of ten over a range this short.
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("cross-entropy (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    if accuracy:
        acc_ax = axes[1]
        steps = [p["step"] for p in accuracy]
        values = [p["accuracy"] for p in accuracy]
        acc_ax.plot(steps, values, color="#2ca02c", marker="o", linewidth=1.8, label="held-out MCQ accuracy")
        for s, v in zip(steps, values):
            acc_ax.annotate(f"{v:.1%}", (s, v), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=9)
        acc_ax.axhline(chance, color="#7f7f7f", linestyle="--", linewidth=1.2, label=f"chance ({chance:.0%})")
        acc_ax.set_ylim(0, 1)
        acc_ax.set_ylabel("accuracy")
        acc_ax.set_title("NExT-QA-style multiple choice on held-out videos (option log-likelihood)", fontsize=10.5)
        acc_ax.grid(True, alpha=0.3)
        acc_ax.legend(loc="upper left", fontsize=9)
    axes[-1].set_xlabel("training step")
    fig.tight_layout()
    _save(fig, path)


def plot_fusion_weights(weights: Mapping[str, Series], path: Path) -> None:
    """One line per encoder: its mean fusion weight per logged training batch, with the uniform level."""
    fig = _figure(4.0)
    ax = fig.add_subplot(1, 1, 1)
    for encoder_id, series in weights.items():
        ax.plot(series["steps"], series["values"], linewidth=1.5, label=encoder_id)
    uniform = 1 / len(weights)
    ax.axhline(uniform, color="#7f7f7f", linestyle="--", linewidth=1.0, label=f"uniform (1/{len(weights)})")
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean fusion weight")
    ax.set_title("Fusion weight of each encoder during training (mean over each logged batch)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


# ------------------------------------------------------------------------------------------- confusion


def _field(report: Mapping[str, Any], dotted: str, path: Path) -> Any:
    value: Any = report
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise ValueError(
                f"{path}: field {dotted!r} is missing; expected an action evaluation report "
                "(`<mode>_report.json` written by merv.eval.action)"
            )
        value = value[key]
    return value


def plot_action_confusion(report_path: Path, path: Path) -> dict[str, Any]:
    """Confusion matrix of an action/fall evaluation report, drawn by `merv.eval.metrics`."""
    from merv.eval.metrics import plot_confusion_matrix

    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{report_path}: not valid JSON ({e.msg}, line {e.lineno})") from e
    classes = _field(report, "classes", report_path)
    counts = np.asarray(_field(report, "metrics.confusion_matrix.counts", report_path))
    if counts.ndim != 2 or counts.shape[0] != len(classes):
        raise ValueError(
            f"{report_path}: field 'metrics.confusion_matrix.counts' has shape {counts.shape}, "
            f"expected {len(classes)} rows (one per class)"
        )
    mode = (report.get("settings") or {}).get("mode", "?")
    clips = int(counts.sum())
    accuracy = report.get("accuracy")
    title = f"Fall/action recognition ({mode}, {clips} clips)"
    if accuracy is not None:
        title += f": accuracy {accuracy:.1%}"
    fig = plot_confusion_matrix(counts, classes, title=title, drop_empty=True)
    fig.savefig(path, format="png", dpi=DPI)
    logger.info("wrote %s", path)
    return {"mode": mode, "clips": clips, "accuracy": accuracy, "report": str(report_path)}


# ------------------------------------------------------------------------------------------ sample video


def sample_frames(seed: int = 0) -> np.ndarray:
    """One clip per direction, each with its own colour and shape, joined and upscaled: `(T, H, W, 3)` uint8."""
    from merv.data.synthetic import COLOURS, DIRECTIONS, SHAPES, render_shape_video

    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    clips = [
        render_shape_video(colours[i % len(colours)], SHAPES[i % len(SHAPES)], direction, 0.0, rng)
        for i, direction in enumerate(DIRECTIONS)
    ]
    frames = np.concatenate(clips)
    return frames.repeat(SAMPLE_UPSCALE, axis=1).repeat(SAMPLE_UPSCALE, axis=2)


def write_sample_video(path: Path, seed: int = 0) -> dict[str, Any]:
    """Encode `sample_frames(seed)`; the same seed writes the same bytes."""
    from merv.data.synthetic import FPS, write_video

    frames = sample_frames(seed)
    write_video(path, frames)
    logger.info("wrote %s", path)
    return {
        "frames": int(frames.shape[0]),
        "size": [int(frames.shape[2]), int(frames.shape[1])],
        "seconds": frames.shape[0] / FPS,
        "bytes": path.stat().st_size,
    }


# -------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run version folder, e.g. outputs/quickstart/run/version_0")
    p.add_argument("--fall_report", default=None, help="action/fall evaluation report JSON (merv.eval.action)")
    p.add_argument(
        "--data_dir",
        default=None,
        help="generated data holding nextqa.csv and videos/; default: the folder of the question file named in "
        "the run's eval report, else data/synthetic",
    )
    p.add_argument("--out", default="assets", help="output folder")
    p.add_argument("--model", default="merv-full", help="registered model drawn in architecture.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample video")
    p.add_argument(
        "--title",
        default="CPU quick start: tiny MERV model on generated shapes videos",
        help="title of demo_curves.png",
    )
    return p.parse_args(argv)


def _data_dir(arg: str | None, report: Mapping[str, Any] | None) -> Path:
    if arg is not None:
        return Path(arg)
    named = ((report or {}).get("data") or {}).get("question_file") or {}
    if named.get("path"):
        return Path(named["path"]).parent
    return Path("data/synthetic")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Write every asset; returns the summary, including the exact series plotted under `series`."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from merv.models.registry import model_config

    run_dir, out = Path(args.run), Path(args.out)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--run {run_dir}: no such folder")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    skipped: dict[str, str] = {}

    labels = draw_architecture(model_config(args.model), args.model, out / "architecture.png")
    written["architecture"] = str(out / "architecture.png")

    scalars = read_scalars(run_dir)
    train = _require(scalars, "train/loss", run_dir)
    val = scalars.get("val/loss")

    report_file = run_dir / "eval" / MCQ_REPORT
    report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.is_file() else None
    data_dir = _data_dir(args.data_dir, report)
    question_file, video_root = data_dir / "nextqa.csv", data_dir / "videos"
    have_questions = question_file.is_file()
    accuracy: list[dict[str, Any]] = []
    end_step = final_step(run_dir, scalars)
    if report is not None:
        reported_sha = ((report.get("data") or {}).get("question_file") or {}).get("sha256")
        if have_questions and reported_sha and reported_sha != _sha256(question_file):
            logger.warning("%s scored another question file than %s; left out", report_file, question_file)
            report = None
        else:
            accuracy.append(
                {
                    "step": end_step,
                    "accuracy": report["accuracy"],
                    "correct": report["counts"]["correct"],
                    "total": report["counts"]["total"],
                    "checkpoint": "model",
                    "source": "final report",
                }
            )
    else:
        logger.info("%s not found (scripts/demo.py writes it): no final accuracy", report_file)
    if have_questions:
        skip = [end_step] if report is not None else []
        accuracy += checkpoint_accuracies(run_dir, question_file, video_root, out / ACCURACY_CACHE, skip)
        accuracy.sort(key=lambda p: p["step"])
    else:
        logger.info("%s not found: kept checkpoints are not evaluated", question_file)
    chance, chance_source = chance_level(question_file if have_questions else None, video_root)
    plot_curves(train, val, accuracy, chance, out / "demo_curves.png", args.title)
    written["demo_curves"] = str(out / "demo_curves.png")

    fusion = {tag.removeprefix("fusion/"): s for tag, s in scalars.items() if tag.startswith("fusion/") and s["steps"]}
    if fusion:
        plot_fusion_weights(fusion, out / "fusion_weights.png")
        written["fusion_weights"] = str(out / "fusion_weights.png")
    else:
        skipped["fusion_weights"] = "the run logged no fusion/<encoder id> scalars"
        logger.info("fusion_weights.png skipped: %s", skipped["fusion_weights"])

    confusion = None
    if args.fall_report:
        confusion = plot_action_confusion(Path(args.fall_report), out / "confusion_matrix.png")
        written["confusion_matrix"] = str(out / "confusion_matrix.png")
    else:
        skipped["confusion_matrix"] = "no --fall_report given"
        logger.info("confusion_matrix.png skipped: %s", skipped["confusion_matrix"])

    sample = write_sample_video(out / "sample.mp4", args.seed)
    written["sample_video"] = str(out / "sample.mp4")

    summary: dict[str, Any] = {
        "run": str(run_dir),
        "written": written,
        "skipped": skipped,
        "architecture": {"model": args.model, "encoders": [e[0].replace("\n", ", ") for e in labels["encoders"]]},
        "final_train_loss": _last(train),
        "final_val_loss": _last(val),
        "final_accuracy": accuracy[-1] if accuracy else None,
        "accuracy": accuracy,
        "chance": chance,
        "chance_source": chance_source,
        "final_fusion_weights": {k: _last(s)["value"] for k, s in fusion.items()},
        "confusion_matrix": confusion,
        "sample_video": sample,
    }
    print(json.dumps(summary, indent=2))
    summary["series"] = {"train/loss": train, "val/loss": val, **{f"fusion/{k}": s for k, s in fusion.items()}}
    return summary


if __name__ == "__main__":
    main()
