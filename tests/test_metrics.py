"""Classification metrics against hand-computed values, the binary fall view, breakdowns, figures and logging."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score, multiclass_recall

from merv.eval.metrics import (
    UNPARSED,
    auto_breakdown_columns,
    binary_from_confusion,
    binary_metrics,
    breakdown,
    classification_metrics,
    confusion_matrix,
    figure_to_array,
    log_confusion_matrix,
    metrics_from_confusion,
    plot_confusion_matrix,
    save_confusion_matrix,
)

CLASSES = ["walk", "fall", "fallen"]
# walk: 3 right, 1 called fall; fall: 2 right, 1 called fallen; fallen: 1 right, 1 called walk, 1 unparsed.
Y_TRUE = ["walk"] * 4 + ["fall"] * 3 + ["fallen"] * 3
Y_PRED = ["walk", "walk", "walk", "fall", "fall", "fall", "fallen", "fallen", "walk", None]


def test_confusion_matrix_counts_with_an_unparsed_column():
    cm = confusion_matrix(Y_TRUE, Y_PRED, CLASSES)
    assert cm.tolist() == [[3, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 1]]


def test_metrics_match_hand_computed_values():
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    assert m["num_samples"] == 10 and m["num_unparsed"] == 1
    assert m["accuracy"] == pytest.approx(0.6)
    # recalls 3/4, 2/3, 1/3 (the unparsed reply is a miss of `fallen`)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 2 / 3 + 1 / 3) / 3)
    pc = m["per_class"]
    assert pc["walk"]["precision"] == pytest.approx(3 / 4)
    assert pc["fall"]["precision"] == pytest.approx(2 / 3)
    assert pc["fallen"]["precision"] == pytest.approx(1 / 2)
    assert [pc[c]["recall"] for c in CLASSES] == pytest.approx([3 / 4, 2 / 3, 1 / 3])
    # F1 = 2TP / (2TP + FP + FN): walk 6/8, fall 4/6, fallen 2/5
    assert [pc[c]["f1"] for c in CLASSES] == pytest.approx([0.75, 2 / 3, 0.4])
    assert m["macro_f1"] == pytest.approx((0.75 + 2 / 3 + 0.4) / 3)
    assert m["weighted_f1"] == pytest.approx((4 * 0.75 + 3 * 2 / 3 + 3 * 0.4) / 10)
    assert [pc[c]["support"] for c in CLASSES] == [4, 3, 3]
    assert [pc[c]["predicted"] for c in CLASSES] == [4, 3, 2]
    assert m["confusion_matrix"]["columns"] == [*CLASSES, UNPARSED]


def test_binary_fall_view_hand_computed():
    b = classification_metrics(Y_TRUE, Y_PRED, CLASSES)["binary"]
    # positives (fall, fallen): 6 clips, 4 predicted fall/fallen, 1 walk, 1 unparsed; negatives: 3 walk, 1 fall
    assert (b["tp"], b["fn"], b["fp"], b["tn"]) == (4, 2, 1, 3)
    assert b["sensitivity"] == pytest.approx(4 / 6)
    assert b["specificity"] == pytest.approx(3 / 4)
    assert b["precision"] == pytest.approx(4 / 5)
    assert b["npv"] == pytest.approx(3 / 5)
    assert b["f1"] == pytest.approx(8 / 11)
    assert b["positive"] == ["fall", "fallen"]


def test_unparsed_negatives_count_as_errors_or_as_no_alarm():
    y_true = ["walk", "walk", "fall"]
    y_pred = ["walk", None, "fall"]
    error = binary_metrics(y_true, y_pred, CLASSES, unparsed_as="error")
    negative = binary_metrics(y_true, y_pred, CLASSES, unparsed_as="negative")
    assert (error["tp"], error["fp"], error["tn"], error["fn"]) == (1, 1, 1, 0)
    assert (negative["tp"], negative["fp"], negative["tn"], negative["fn"]) == (1, 0, 2, 0)
    assert error["specificity"] == pytest.approx(0.5) and negative["specificity"] == pytest.approx(1.0)


def test_binary_view_with_a_configurable_positive_set():
    b = binary_metrics(Y_TRUE, Y_PRED, CLASSES, positive=["fall"])
    # positives: the 3 fall clips (2 right, 1 called fallen); negatives: 7 clips, of which one walk called
    # fall and one unparsed fallen clip are false alarms (unparsed counts as an error by default)
    assert (b["tp"], b["fn"], b["fp"], b["tn"]) == (2, 1, 2, 5)
    with pytest.raises(ValueError, match="none of the positive classes"):
        binary_metrics(Y_TRUE, Y_PRED, CLASSES, positive=["jump"])


def test_extra_binary_views_and_undefined_ratios_are_none():
    m = classification_metrics(
        ["walk", "walk"], ["walk", "fall"], CLASSES, binary_views={"fall": ["fall"], "jump": ["jump"]}
    )
    assert set(m["binary_views"]) == {"fall"}
    b = m["binary"]
    assert b["sensitivity"] is None  # no positive clip: undefined, not 0
    assert b["specificity"] == pytest.approx(0.5)


def test_macro_averages_run_over_present_classes_only():
    classes = ["walk", "fall", "fallen", "jump", "crawl"]
    m = classification_metrics(["walk", "fall", "fall"], ["walk", "fall", "walk"], classes)
    assert m["averaged_over"] == ["walk", "fall"]
    # walk F1 = 2/(2+1) , fall F1 = 2/(2+1)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["per_class"]["jump"]["f1"] is None and m["per_class"]["jump"]["precision"] is None
    # A class that is only predicted counts in macro-F1 (as scikit-learn does) but not in balanced accuracy.
    m2 = classification_metrics(["walk", "walk"], ["walk", "jump"], classes)
    assert m2["averaged_over"] == ["walk", "jump"]
    assert m2["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert m2["balanced_accuracy"] == pytest.approx(0.5)


def test_agrees_with_torchmetrics_when_everything_is_parsed():
    g = torch.Generator().manual_seed(0)
    n = 6
    true = torch.randint(0, n, (200,), generator=g)
    pred = torch.where(torch.rand(200, generator=g) < 0.6, true, torch.randint(0, n, (200,), generator=g))
    names = [f"c{i}" for i in range(n)]
    m = classification_metrics([names[i] for i in true], [names[i] for i in pred], names)
    assert m["accuracy"] == pytest.approx(float(multiclass_accuracy(pred, true, n, average="micro")))
    assert m["macro_f1"] == pytest.approx(float(multiclass_f1_score(pred, true, n, average="macro")))
    assert m["balanced_accuracy"] == pytest.approx(float(multiclass_recall(pred, true, n, average="macro")))
    per_class = multiclass_f1_score(pred, true, n, average=None).tolist()
    assert [m["per_class"][c]["f1"] for c in names] == pytest.approx(per_class)


def test_bad_input_names_the_sample():
    with pytest.raises(ValueError, match=r"sample 1: true label 'jump'"):
        confusion_matrix(["walk", "jump"], ["walk", "walk"], CLASSES)
    with pytest.raises(ValueError, match=r"sample 0: prediction 'run'"):
        confusion_matrix(["walk"], ["run"], CLASSES)
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        confusion_matrix(["walk", "fall"], ["walk"], CLASSES)
    with pytest.raises(ValueError, match="does not fit 3 classes"):
        metrics_from_confusion(np.zeros((2, 3)), CLASSES)


def test_square_matrix_is_read_as_fully_parsed():
    cm = np.array([[2, 0], [1, 1]])
    m = metrics_from_confusion(cm, ["walk", "fall"])
    assert m["num_unparsed"] == 0 and m["accuracy"] == pytest.approx(0.75)
    b = binary_from_confusion(cm, ["walk", "fall"], positive=["fall"])
    assert (b["tp"], b["fn"], b["fp"], b["tn"]) == (1, 1, 0, 2)


def test_empty_input_gives_undefined_metrics():
    m = classification_metrics([], [], CLASSES)
    assert m["num_samples"] == 0 and m["accuracy"] is None and m["macro_f1"] is None


ROWS = [
    {"label": "walk", "prediction": "walk", "cam": 1, "subject": 2, "dataset": "a"},
    {"label": "fall", "prediction": "fall", "cam": 1, "subject": 10, "dataset": "a"},
    {"label": "fall", "prediction": "walk", "cam": 2, "subject": 10, "dataset": "a"},
    {"label": "fallen", "prediction": None, "cam": 2, "subject": 2, "dataset": "a"},
    {"label": "walk", "prediction": "fall", "cam": 2, "subject": 2},
]


def test_breakdown_by_metadata_columns():
    out = breakdown(ROWS, ["cam", "subject", "dataset"], CLASSES)
    assert list(out["subject"]) == ["2", "10"]  # numeric ids sort as numbers
    cam1, cam2 = out["cam"]["1"], out["cam"]["2"]
    assert cam1["num_samples"] == 2 and cam1["accuracy"] == pytest.approx(1.0)
    assert cam2["num_samples"] == 3 and cam2["accuracy"] == pytest.approx(0.0) and cam2["num_unparsed"] == 1
    # cam 2: positives fall->walk (FN), fallen->unparsed (FN); negative walk->fall (FP)
    assert cam2["sensitivity"] == pytest.approx(0.0) and cam2["specificity"] == pytest.approx(0.0)
    assert out["dataset"]["(missing)"]["num_samples"] == 1


def test_auto_breakdown_columns_need_two_values():
    assert auto_breakdown_columns(ROWS) == ["cam", "subject"]  # dataset has one value (plus a missing one)
    assert auto_breakdown_columns([{"age_group": "elderly_65_plus"}, {"age_group": "children_5_12"}]) == ["age_group"]


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_confusion_matrix_figure_names_classes_on_both_axes_and_counts_in_cells():
    cm = confusion_matrix(Y_TRUE, Y_PRED, CLASSES)
    fig = plot_confusion_matrix(cm, CLASSES, title="zero-shot")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [*CLASSES, UNPARSED]
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert _texts(ax) == [str(v) for v in cm.flatten()]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true" and ax.get_title() == "zero-shot"


def test_confusion_matrix_figure_drops_empty_classes_and_the_empty_unparsed_column():
    classes = ["walk", "fall", "jump", "crawl"]
    cm = confusion_matrix(["walk", "fall", "fall"], ["walk", "fall", "walk"], classes)
    ax = plot_confusion_matrix(cm, classes, drop_empty=True).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["walk", "fall"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["walk", "fall"]
    assert _texts(ax) == ["1", "0", "1", "1"]


def test_saved_png_is_a_readable_image(tmp_path):
    from PIL import Image

    cm = confusion_matrix(Y_TRUE, Y_PRED, CLASSES)
    path = save_confusion_matrix(cm, CLASSES, tmp_path / "cm" / "confusion.png", title="test")
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
        pixels = np.asarray(img.convert("RGB"))
    assert width >= 400 and height >= 350
    assert pixels.std() > 10  # not a blank canvas
    # The darkest cell colour (walk row, 3 of 4 right) is drawn somewhere: a deep blue pixel exists.
    assert ((pixels[..., 2] > 100) & (pixels[..., 0] < 60)).any()


def test_log_confusion_matrix_writes_an_image_event(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    cm = confusion_matrix(Y_TRUE, Y_PRED, CLASSES)
    expected = figure_to_array(plot_confusion_matrix(cm, CLASSES))

    class FakeLightningLogger:
        def __init__(self, writer):
            self.experiment = writer

    with SummaryWriter(str(tmp_path)) as writer:
        log_confusion_matrix(FakeLightningLogger(writer), cm, CLASSES, tag="val/confusion_matrix", step=7)
    acc = EventAccumulator(str(tmp_path), size_guidance={IMAGES: 0})
    acc.Reload()
    assert acc.Tags()["images"] == ["val/confusion_matrix"]
    (event,) = acc.Images("val/confusion_matrix")
    assert event.step == 7
    assert (event.height, event.width) == expected.shape[:2]
    with pytest.raises(TypeError, match="no add_image"):
        log_confusion_matrix(object(), cm, CLASSES)
