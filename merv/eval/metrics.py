"""Classification metrics for action recognition and fall detection, confusion-matrix figures, breakdowns.

Everything derives from one confusion matrix whose last column counts unparseable predictions: an answer
the parser could not map to a class is never guessed, it is a miss of its true class (and, in the
binary fall view, an error by default). Macro averages run over the classes that occur in the ground
truth or the predictions, as scikit-learn does, so a 16-class label set evaluated on data holding six of
them is not dragged down by ten empty classes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

logger = logging.getLogger(__name__)

UNPARSED = "(unparsed)"
"""Column name of the confusion matrix for predictions that named no class."""

DEFAULT_POSITIVE = ("fall", "fallen")
"""Classes that count as a fall in the binary view: the act of falling and lying on the ground after it."""

METADATA_COLUMNS = (
    "dataset",
    "cam",
    "subject",
    "age_group",
    "gender_presentation",
    "monk_skin_tone",
    "race_ethnicity_omb",
    "bmi_band",
    "height_band",
)
"""Columns `auto` breakdowns look for (OmniFall core metadata and OF-Syn demographics)."""

UnparsedAs = Literal["error", "negative"]


def _ratio(num: float, den: float) -> float | None:
    """`num / den`, or None when the ratio is undefined (an empty denominator)."""
    return float(num) / float(den) if den else None


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


# ---- confusion matrix --------------------------------------------------------------------------------


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str | None], classes: Sequence[str]) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        y_true: true class names.
        y_pred: predicted class names, None for an unparseable prediction.
        classes: the label set; fixes the row and column order.

    Returns:
        An `(C, C + 1)` int64 array: rows are true classes, columns predicted classes followed by the
        `UNPARSED` column.

    Raises:
        ValueError: lengths differ, or a true or predicted name is not in `classes` (the message names the
            sample index and the value).
    """
    classes = list(classes)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes must be a non-empty list of distinct names, got {classes}")
    index = {c: i for i, c in enumerate(classes)}
    true_ids, pred_ids = [], []
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if t not in index:
            raise ValueError(f"sample {i}: true label {t!r} is not one of the classes {classes}")
        if p is not None and p not in index:
            raise ValueError(f"sample {i}: prediction {p!r} is not one of the classes {classes}")
        true_ids.append(index[t])
        pred_ids.append(len(classes) if p is None else index[p])
    n = len(classes)
    if not true_ids:
        return np.zeros((n, n + 1), dtype=np.int64)
    # One extra class for the unparsed column; its (empty) row is dropped.
    cm = multiclass_confusion_matrix(
        torch.tensor(pred_ids), torch.tensor(true_ids), num_classes=n + 1, validate_args=False
    )
    return cm[:n].numpy().astype(np.int64)


def _check_cm(cm: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.int64)
    n = len(classes)
    if cm.shape == (n, n):  # no unparsed column given: none were unparsed
        cm = np.concatenate([cm, np.zeros((n, 1), dtype=np.int64)], axis=1)
    if cm.shape != (n, n + 1):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not fit {n} classes; expected ({n}, {n + 1})")
    return cm


def metrics_from_confusion(cm: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Multi-class metrics from a confusion matrix (see `confusion_matrix`).

    Args:
        cm: `(C, C + 1)` counts with the unparsed column last (a `(C, C)` matrix means none were unparsed).
        classes: class names in row order.

    Returns:
        `num_samples`, `num_unparsed`, `accuracy`, `balanced_accuracy` (mean recall over classes with
        support), `macro_precision`, `macro_recall`, `macro_f1`, `weighted_f1` (support-weighted),
        `averaged_over` (the classes in the macro averages: present in truth or predictions) and
        `per_class` (`precision`, `recall`, `f1`, `support`, `predicted` per class; precision is 0 for a
        present class never predicted, None for a class absent from truth and predictions).
    """
    classes = list(classes)
    cm = _check_cm(cm, classes)
    n = len(classes)
    square = cm[:, :n]
    tp = np.diag(square).astype(float)
    support = cm.sum(axis=1)  # includes unparsed predictions: they are misses of their true class
    predicted = square.sum(axis=0)
    fp = predicted - tp
    fn = support - tp
    total = int(cm.sum())
    per_class: dict[str, dict[str, Any]] = {}
    present = []
    for i, name in enumerate(classes):
        is_present = bool(support[i] or predicted[i])
        if is_present:
            present.append(name)
        precision = _ratio(tp[i], predicted[i])
        per_class[name] = {
            "precision": precision if precision is not None or not is_present else 0.0,
            "recall": _ratio(tp[i], support[i]),
            # 2TP / (2TP + FP + FN) is defined whenever the class occurs, unlike 2PR / (P + R).
            "f1": _ratio(2 * tp[i], 2 * tp[i] + fp[i] + fn[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
    f1s = [per_class[c]["f1"] for c in present]
    weights = [per_class[c]["support"] for c in present]
    return {
        "num_samples": total,
        "num_unparsed": int(cm[:, n].sum()),
        "accuracy": _ratio(tp.sum(), total),
        "balanced_accuracy": _mean(per_class[c]["recall"] for c in classes if per_class[c]["support"]),
        "macro_precision": _mean(per_class[c]["precision"] for c in present),
        "macro_recall": _mean((per_class[c]["recall"] or 0.0) for c in present),
        "macro_f1": _mean(f1s),
        "weighted_f1": _ratio(sum(f * w for f, w in zip(f1s, weights)), sum(weights)) if present else None,
        "averaged_over": present,
        "per_class": per_class,
    }


def binary_from_confusion(
    cm: np.ndarray,
    classes: Sequence[str],
    positive: Iterable[str] = DEFAULT_POSITIVE,
    unparsed_as: UnparsedAs = "error",
) -> dict[str, Any]:
    """Collapse a confusion matrix to positive (e.g. fall ∪ fallen) versus everything else.

    Args:
        cm: `(C, C + 1)` counts with the unparsed column last.
        classes: class names in row order.
        positive: the positive classes; at least one must be in `classes`.
        unparsed_as: how an unparseable prediction counts. `error` (default): always wrong, a false
            negative for a positive sample and a false positive for a negative one, so garbage never earns
            credit. `negative`: no alarm raised, as a deployed detector that acts only on a parsed fall.

    Returns:
        `positive`, `tp`, `fp`, `tn`, `fn`, `sensitivity` (recall of the positive class), `specificity`,
        `precision` (PPV), `npv`, `f1`, `balanced_accuracy` and `num_unparsed`; a ratio with an empty
        denominator is None.
    """
    classes = list(classes)
    cm = _check_cm(cm, classes)
    positive = [p for p in dict.fromkeys(positive)]
    if unparsed_as not in ("error", "negative"):
        raise ValueError(f"unparsed_as must be 'error' or 'negative', got {unparsed_as!r}")
    unknown = [p for p in positive if p not in classes]
    if len(unknown) == len(positive):
        raise ValueError(f"none of the positive classes {positive} is in the label set {classes}")
    n = len(classes)
    pos = np.array([c in positive for c in classes])
    unparsed = cm[:, n]
    tp = int(cm[pos][:, :n][:, pos].sum())
    fn = int(cm[pos][:, :n][:, ~pos].sum() + unparsed[pos].sum())
    fp = int(cm[~pos][:, :n][:, pos].sum())
    tn = int(cm[~pos][:, :n][:, ~pos].sum())
    if unparsed_as == "error":
        fp += int(unparsed[~pos].sum())
    else:
        tn += int(unparsed[~pos].sum())
    sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {
        "positive": [p for p in positive if p in classes],
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": _mean([sensitivity, specificity]) if None not in (sensitivity, specificity) else None,
        "num_unparsed": int(unparsed.sum()),
        "unparsed_as": unparsed_as,
    }


def binary_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    classes: Sequence[str],
    positive: Iterable[str] = DEFAULT_POSITIVE,
    unparsed_as: UnparsedAs = "error",
) -> dict[str, Any]:
    """Binary (e.g. fall) view of class-name predictions; see `binary_from_confusion`."""
    return binary_from_confusion(confusion_matrix(y_true, y_pred, classes), classes, positive, unparsed_as)


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    classes: Sequence[str],
    *,
    positive: Iterable[str] | None = DEFAULT_POSITIVE,
    unparsed_as: UnparsedAs = "error",
    binary_views: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """Everything a report needs from true and predicted class names.

    Args:
        y_true: true class names.
        y_pred: predicted class names, None where the reply was unparseable.
        classes: the label set.
        positive: positive classes of the main binary view (`binary`); None, or no positive class in the
            label set, leaves it out.
        unparsed_as: how unparsed predictions count in binary views (see `binary_from_confusion`).
        binary_views: further named binary views, e.g. `{"fall": ["fall"], "fallen": ["fallen"]}`; views
            whose classes are not in the label set are left out.

    Returns:
        The `metrics_from_confusion` keys, plus `confusion_matrix` (`rows`, `columns`, `counts`),
        `binary` (when a positive class is in the label set) and `binary_views`.
    """
    classes = list(classes)
    cm = confusion_matrix(y_true, y_pred, classes)
    out = metrics_from_confusion(cm, classes)
    out["confusion_matrix"] = {"rows": classes, "columns": [*classes, UNPARSED], "counts": cm.tolist()}
    if positive is not None and any(p in classes for p in positive):
        out["binary"] = binary_from_confusion(cm, classes, positive, unparsed_as)
    views = {}
    for name, members in (binary_views or {}).items():
        members = list(members)
        if any(m in classes for m in members):
            views[name] = binary_from_confusion(cm, classes, members, unparsed_as)
    if views:
        out["binary_views"] = views
    return out


# ---- breakdowns by metadata --------------------------------------------------------------------------


def auto_breakdown_columns(
    rows: Sequence[Mapping[str, Any]], candidates: Sequence[str] = METADATA_COLUMNS
) -> list[str]:
    """Metadata columns worth a breakdown: present in the rows and taking at least two values."""
    found = []
    for column in candidates:
        values = {str(r[column]) for r in rows if r.get(column) not in (None, "")}
        if len(values) >= 2:
            found.append(column)
    return found


def breakdown(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    classes: Sequence[str],
    *,
    true_key: str = "label",
    pred_key: str = "prediction",
    positive: Iterable[str] | None = DEFAULT_POSITIVE,
    unparsed_as: UnparsedAs = "error",
) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics per value of each metadata column (dataset, camera, subject, demographic group, ...).

    Args:
        rows: prediction records holding the true label, the prediction (None = unparsed) and metadata.
        columns: metadata columns to group by; rows lacking a column fall in the group `(missing)`.
        classes: the label set.
        true_key: key of the true class name.
        pred_key: key of the predicted class name.
        positive: positive classes of the binary view, or None.
        unparsed_as: see `binary_from_confusion`.

    Returns:
        `{column: {value: {"num_samples", "num_unparsed", "accuracy", "balanced_accuracy", "macro_f1",
        and "sensitivity"/"specificity"/"f1" of the binary view}}}`, values sorted.
    """
    positive = list(positive) if positive is not None else None
    with_binary = positive is not None and any(p in classes for p in positive)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for column in columns:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            value = r.get(column)
            groups.setdefault("(missing)" if value in (None, "") else str(value), []).append(r)
        per_value = {}
        for value in sorted(groups, key=_natural_key):
            members = groups[value]
            cm = confusion_matrix([m[true_key] for m in members], [m[pred_key] for m in members], classes)
            m = metrics_from_confusion(cm, classes)
            entry = {k: m[k] for k in ("num_samples", "num_unparsed", "accuracy", "balanced_accuracy", "macro_f1")}
            if with_binary:
                b = binary_from_confusion(cm, classes, positive, unparsed_as)
                entry.update(sensitivity=b["sensitivity"], specificity=b["specificity"], fall_f1=b["f1"])
            per_value[value] = entry
        out[column] = per_value
    return out


def _natural_key(value: str) -> tuple:
    # Numeric ids (subjects, cameras) sort as numbers: 2 before 10.
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# ---- figures -----------------------------------------------------------------------------------------


def plot_confusion_matrix(
    cm: np.ndarray,
    classes: Sequence[str],
    *,
    title: str | None = None,
    show_unparsed: bool | None = None,
    drop_empty: bool = False,
):
    """A confusion-matrix figure: class names on both axes, the count in every cell.

    Colours show the row-normalised rate (recall along the diagonal), so rare classes stay visible; the
    text is the raw count. Built on matplotlib's object API with the Agg canvas: no pyplot state and no
    display needed.

    Args:
        cm: `(C, C + 1)` counts (unparsed column last) or `(C, C)`.
        classes: class names in row order.
        title: figure title.
        show_unparsed: draw the unparsed column; None draws it only when it holds any count.
        drop_empty: leave out classes that are neither true nor predicted anywhere (a 16-class label set
            on data holding six classes stays readable).

    Returns:
        A `matplotlib.figure.Figure` (save it with `savefig` or `save_confusion_matrix`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = list(classes)
    cm = _check_cm(cm, classes)
    if drop_empty:
        keep = [i for i in range(len(classes)) if cm[i].sum() or cm[:, i].sum()] or list(range(len(classes)))
        cm = np.concatenate([cm[keep][:, keep], cm[keep][:, -1:]], axis=1)
        classes = [classes[i] for i in keep]
    n = len(classes)
    if show_unparsed is None:
        show_unparsed = bool(cm[:, n].sum())
    shown = cm if show_unparsed else cm[:, :n]
    columns = [*classes, UNPARSED] if show_unparsed else classes
    rows_total = cm.sum(axis=1, keepdims=True)
    rates = np.divide(shown, rows_total, out=np.zeros(shown.shape, dtype=float), where=rows_total > 0)

    width = max(4.5, 0.55 * len(columns) + 2.5)
    height = max(4.0, 0.5 * n + 2.2)
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(len(columns)), labels=columns, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    font = 10 if len(columns) <= 10 else 8
    for i in range(n):
        for j in range(len(columns)):
            ax.text(
                j,
                i,
                str(int(shown[i, j])),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save_confusion_matrix(
    cm: np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    drop_empty: bool = False,
) -> Path:
    """Render `plot_confusion_matrix` and write it as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_confusion_matrix(cm, classes, title=title, drop_empty=drop_empty)
    fig.savefig(path, format="png")
    logger.info("wrote the confusion matrix to %s", path)
    return path


def figure_to_array(fig) -> np.ndarray:
    """Rasterise a matplotlib figure to an `(H, W, 3)` uint8 RGB array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_confusion_matrix(
    logger_or_writer: Any,
    cm: np.ndarray,
    classes: Sequence[str],
    *,
    tag: str = "test/confusion_matrix",
    step: int = 0,
    title: str | None = None,
    drop_empty: bool = False,
) -> None:
    """Log a confusion-matrix image to TensorBoard.

    Args:
        logger_or_writer: a Lightning `TensorBoardLogger` (its `experiment` is used) or a
            `torch.utils.tensorboard.SummaryWriter` (anything with `add_image`).
        cm: counts as for `plot_confusion_matrix`.
        classes: class names in row order.
        tag: image tag, e.g. `val/confusion_matrix`.
        step: global step.
        title: figure title.
        drop_empty: leave out classes with no true and no predicted sample.
    """
    writer = getattr(logger_or_writer, "experiment", logger_or_writer)
    if not hasattr(writer, "add_image"):
        raise TypeError(f"cannot log an image to {type(logger_or_writer).__name__}: it has no add_image")
    image = figure_to_array(plot_confusion_matrix(cm, classes, title=title, drop_empty=drop_empty))
    writer.add_image(tag, image, global_step=step, dataformats="HWC")


__all__ = [
    "DEFAULT_POSITIVE",
    "METADATA_COLUMNS",
    "UNPARSED",
    "auto_breakdown_columns",
    "binary_from_confusion",
    "binary_metrics",
    "breakdown",
    "classification_metrics",
    "confusion_matrix",
    "figure_to_array",
    "log_confusion_matrix",
    "metrics_from_confusion",
    "plot_confusion_matrix",
    "save_confusion_matrix",
]
