"""Metrics against scikit-learn on many random cases; protocol semantics; result files and figures."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
)

from utils.metrics import (
    PROTOCOLS,
    ConfusionMatrix,
    EvalProtocol,
    authors_sklearn_metrics,
    compute_metrics,
    evaluate_protocol,
    get_protocol,
)
from utils.figures import plot_confusion_matrix, plot_prediction_maps, rgb_composite
from utils.report import (
    format_table,
    read_results,
    write_results,
)

N_CASES = 40
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PASTIS = PROTOCOLS["pastis"]
MTLCC = PROTOCOLS["mtlcc"]


def random_case(rng: np.random.Generator, num_classes: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Skewed truth with some classes absent; predictions right with a random rate, else drawn from a
    skewed distribution with some classes never predicted."""
    truth_p = rng.dirichlet(np.full(num_classes, 0.3))
    truth_p[rng.random(num_classes) < 0.25] = 0.0  # absent from the ground truth
    if truth_p.sum() == 0:
        truth_p[rng.integers(num_classes)] = 1.0
    pred_p = rng.dirichlet(np.full(num_classes, 0.5))
    pred_p[rng.random(num_classes) < 0.25] = 0.0  # never predicted (unless correct)
    if pred_p.sum() == 0:
        pred_p[0] = 1.0
    y_true = rng.choice(num_classes, size=n, p=truth_p / truth_p.sum())
    wrong = rng.choice(num_classes, size=n, p=pred_p / pred_p.sum())
    y_pred = np.where(rng.random(n) < rng.uniform(0.2, 0.95), y_true, wrong)
    return y_true, y_pred


def matrix_of(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_index=None) -> np.ndarray:
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    cm.update(torch.as_tensor(y_pred), torch.as_tensor(y_true))
    return cm.numpy()


def per_class(metrics: dict, key: str) -> np.ndarray:
    return np.array([row[key] for row in metrics["per_class"]], dtype=np.float64)


def close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=1e-10, atol=1e-12, equal_nan=True)


# ---- ConfusionMatrix ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(N_CASES))
def test_confusion_matrix_equals_sklearn_with_ignore_index(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 26))
    y_true, y_pred = random_case(rng, num_classes)
    ignore = int(rng.integers(num_classes)) if seed % 2 else None
    keep = y_true != ignore
    if not keep.any():  # only the ignored class in the truth: sklearn refuses empty input
        keep[0], y_true[0] = True, (ignore + 1) % num_classes
    expected = confusion_matrix(y_true[keep], y_pred[keep], labels=range(num_classes))
    close(matrix_of(y_true, y_pred, num_classes, ignore), expected)


def test_ignore_index_outside_the_classes_and_predictions_never_dropped():
    y_true = torch.tensor([[0, 1, -1], [2, -1, 1]])
    y_pred = torch.tensor([[0, 2, 1], [2, 0, 0]])
    cm = ConfusionMatrix(3, ignore_index=-1)
    cm.update(y_pred, y_true)
    assert cm.matrix.sum().item() == 4
    assert cm.matrix[1].tolist() == [1, 0, 1]  # truth 1 predicted 0 and 2: both kept


def test_accumulating_several_updates_equals_one_update():
    rng = np.random.default_rng(7)
    y_true, y_pred = random_case(rng, 9, n=3 * 4 * 16 * 16)
    y_true, y_pred = (torch.as_tensor(a).reshape(3, 4, 16, 16) for a in (y_true, y_pred))
    once = ConfusionMatrix(9, ignore_index=4)
    once.update(y_pred, y_true)
    streamed = ConfusionMatrix(9, ignore_index=4)
    for b in range(3):
        streamed.update(y_pred[b], y_true[b])  # (4, 16, 16) batches
    assert torch.equal(once.matrix, streamed.matrix)
    assert once.matrix.dtype == torch.int64
    merged = ConfusionMatrix(9).merge(once).merge(once.numpy())
    assert torch.equal(merged.matrix, 2 * once.matrix)
    assert merged.all_reduce() is merged  # not initialised: a no-op
    streamed.reset()
    assert streamed.matrix.sum().item() == 0


def test_update_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([0, 1]), torch.tensor([[0, 1]]))
    with pytest.raises(TypeError):
        cm.update(torch.tensor([0.0]), torch.tensor([0]))


# ---- compute_metrics against sklearn --------------------------------------------------------------

@pytest.mark.parametrize("seed", range(N_CASES))
def test_all_class_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(1000 + seed)
    num_classes = int(rng.integers(2, 21))
    y_true, y_pred = random_case(rng, num_classes)
    metrics = compute_metrics(matrix_of(y_true, y_pred, num_classes))
    labels = list(range(num_classes))
    present = np.isin(labels, y_true)
    close(metrics["OA"], accuracy_score(y_true, y_pred))
    close(metrics["kappa"], cohen_kappa_score(y_true, y_pred))
    f1 = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    iou = jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    close(per_class(metrics, "F1")[present], f1[present])
    close(per_class(metrics, "IoU")[present], iou[present])
    assert np.isnan(per_class(metrics, "IoU")[~present]).all()
    assert np.isnan(per_class(metrics, "F1")[~present]).all()
    close(metrics["mF1"], f1[present].mean())
    close(metrics["mIoU"], iou[present].mean())
    close(per_class(metrics, "precision"),
          precision_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan))
    close(per_class(metrics, "recall"), recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan))
    close(per_class(metrics, "support"), np.bincount(y_true, minlength=num_classes))
    assert metrics["absent_classes"] == [c for c in labels if not present[c]]


@pytest.mark.parametrize("seed", range(N_CASES))
def test_subset_eval_classes_count_predictions_outside_the_subset_as_errors(seed):
    rng = np.random.default_rng(2000 + seed)
    num_classes = int(rng.integers(3, 21))
    y_true, y_pred = random_case(rng, num_classes)
    eval_classes = sorted(rng.choice(num_classes, size=int(rng.integers(1, num_classes)), replace=False).tolist())
    if not np.isin(y_true, eval_classes).any():
        y_true[0] = eval_classes[0]
    metrics = compute_metrics(matrix_of(y_true, y_pred, num_classes), eval_classes)

    scored = np.isin(y_true, eval_classes)  # reference: mask by truth only, never by prediction
    t, p = y_true[scored], y_pred[scored]
    close(metrics["OA"], accuracy_score(t, p))
    close(metrics["kappa"], cohen_kappa_score(t, p))
    assert metrics["n_pixels"] == scored.sum()
    full = confusion_matrix(t, p, labels=range(num_classes))  # by hand, every column kept
    tp = np.diag(full)[eval_classes].astype(float)
    fp = full[:, eval_classes].sum(axis=0) - tp
    fn = full[eval_classes, :].sum(axis=1) - tp
    present = full[eval_classes, :].sum(axis=1) > 0
    hand_iou = np.where(present, tp / np.maximum(tp + fp + fn, 1), np.nan)
    close(per_class(metrics, "IoU"), hand_iou)
    close(per_class(metrics, "IoU")[present],
          jaccard_score(t, p, labels=eval_classes, average=None, zero_division=0)[present])
    close(per_class(metrics, "F1")[present],
          f1_score(t, p, labels=eval_classes, average=None, zero_division=0)[present])
    close(per_class(metrics, "recall"),
          recall_score(t, p, labels=eval_classes, average=None, zero_division=np.nan))
    close(per_class(metrics, "precision"),
          precision_score(t, p, labels=eval_classes, average=None, zero_division=np.nan))
    close(metrics["mIoU"], np.nanmean(hand_iou))


def test_degenerate_matrices_give_nan_not_errors():
    empty = compute_metrics(np.zeros((4, 4), dtype=np.int64))
    assert all(np.isnan(empty[k]) for k in ("OA", "mIoU", "mF1", "kappa"))
    single = np.zeros((3, 3), dtype=np.int64)
    single[1, 1] = 10
    metrics = compute_metrics(single)
    assert metrics["OA"] == 1.0 and metrics["mIoU"] == 1.0 and np.isnan(metrics["kappa"])
    with pytest.warns(Warning):  # sklearn: undefined for the same case
        assert np.isnan(cohen_kappa_score(np.ones(10), np.ones(10)))
    with pytest.raises(ValueError):
        compute_metrics(single, eval_classes=[3])
    with pytest.raises(ValueError):
        compute_metrics(single, class_names=["a"])


# ---- named protocols ------------------------------------------------------------------------------

def pastis_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3000 + seed)
    y_true = rng.integers(0, 20, size=5000)
    wrong = rng.integers(0, 20, size=5000)
    y_pred = np.where(rng.random(5000) < 0.6, y_true, wrong)
    return y_true, y_pred


@pytest.mark.parametrize("seed", range(5))
def test_utae_protocol_matches_utae_paps_formula(seed):
    y_true, y_pred = pastis_case(seed)
    cm = matrix_of(y_true, y_pred, 20, ignore_index=19)
    metrics = evaluate_protocol(cm, PASTIS["utae"])
    # independent utae-paps computation: zero void's row and column, then the usual formulas
    conf = confusion_matrix(y_true, y_pred, labels=range(20)).astype(float)
    conf[19, :] = 0
    conf[:, 19] = 0
    tp = np.diag(conf)
    iou = tp[:19] / (conf.sum(0) + conf.sum(1) - tp)[:19]
    close(per_class(metrics, "IoU"), iou[:19])
    close(metrics["mIoU"], np.nanmean(iou[:19]))
    close(metrics["OA"], tp.sum() / conf.sum())
    kept = (y_true != 19) & (y_pred != 19)  # what survives the zeroing
    close(metrics["OA"], accuracy_score(y_true[kept], y_pred[kept]))
    close(metrics["kappa"], cohen_kappa_score(y_true[kept], y_pred[kept]))
    assert metrics["protocol"] == "utae" and metrics["zeroed_classes"] == [19]


def test_utae_protocol_forgets_pixels_predicted_as_void_and_stcln_does_not():
    y_true = torch.tensor([1, 1, 0, 2])
    y_pred = torch.tensor([1, 19, 0, 0])
    cm = ConfusionMatrix(20, ignore_index=19)
    cm.update(y_pred, y_true)
    utae = evaluate_protocol(cm.matrix, PASTIS["utae"])
    stcln = evaluate_protocol(cm.matrix, PASTIS["stcln"])
    assert utae["n_pixels"] == 3 and utae["OA"] == pytest.approx(2 / 3)
    assert utae["per_class"][1]["IoU"] == 1.0  # the void prediction vanished from class 1's FN
    assert stcln["n_pixels"] == 3 and stcln["OA"] == pytest.approx(1 / 3)  # truths 1, 1, 2; background excluded
    assert stcln["eval_classes"] == list(range(1, 19))


@pytest.mark.parametrize("seed", range(5))
def test_pastis_stcln_protocol_equals_sklearn_on_crop_truth_pixels(seed):
    y_true, y_pred = pastis_case(seed)
    metrics = evaluate_protocol(matrix_of(y_true, y_pred, 20, ignore_index=19), PASTIS["stcln"])
    crops = (y_true >= 1) & (y_true <= 18)
    close(metrics["OA"], accuracy_score(y_true[crops], y_pred[crops]))
    close(metrics["kappa"], cohen_kappa_score(y_true[crops], y_pred[crops]))
    labels = list(range(1, 19))
    close(metrics["mF1"], f1_score(y_true[crops], y_pred[crops], labels=labels, average="macro"))
    close(metrics["mIoU"], jaccard_score(y_true[crops], y_pred[crops], labels=labels, average="macro"))


def test_mtlcc_protocol_keeps_predicted_unknown_and_authors_variant_drops_it():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 18, size=4000)
    y_pred = np.where(rng.random(4000) < 0.7, y_true, rng.integers(0, 18, size=4000))
    ours = evaluate_protocol(matrix_of(y_true, y_pred, 18, ignore_index=0), get_protocol("MTLCC", "stcln"))
    scored = y_true > 0
    close(ours["OA"], accuracy_score(y_true[scored], y_pred[scored]))
    authors = authors_sklearn_metrics(y_true, y_pred, range(1, 18), drop_predicted_zero=True)
    both = scored & (y_pred > 0)
    close(authors["OA"], accuracy_score(y_true[both], y_pred[both]))
    assert authors["OA"] > ours["OA"] and authors["n_pixels"] < ours["n_pixels"]
    with pytest.raises(ValueError, match="known"):
        get_protocol("mtlcc", "utae")
    with pytest.raises(ValueError, match="expects"):
        evaluate_protocol(np.zeros((20, 20)), MTLCC["stcln"])


def test_authors_variant_agrees_when_nothing_is_predicted_outside_the_labels():
    rng = np.random.default_rng(11)
    y_true = rng.integers(1, 6, size=3000)
    y_pred = np.where(rng.random(3000) < 0.5, y_true, rng.integers(1, 6, size=3000))
    ours = compute_metrics(matrix_of(y_true, y_pred, 6), eval_classes=range(1, 6))
    authors = authors_sklearn_metrics(y_true, y_pred, range(1, 6))
    for key in ("OA", "kappa", "mIoU", "mF1"):
        close(authors[key], ours[key])
    # once background predictions appear, the authors' IoU ignores them but their OA does not
    y_pred[:500] = 0
    ours = compute_metrics(matrix_of(y_true, y_pred, 6), eval_classes=range(1, 6))
    authors = authors_sklearn_metrics(y_true, y_pred, range(1, 6))
    close(authors["OA"], ours["OA"])
    assert authors["mIoU"] > ours["mIoU"]


def test_protocol_definitions():
    assert PASTIS["stcln"].eval_classes == tuple(range(1, 19))
    assert PASTIS["utae"].eval_classes == tuple(range(19)) and PASTIS["utae"].zeroed_classes == (19,)
    assert MTLCC["stcln"].eval_classes == tuple(range(1, 18))
    assert isinstance(PASTIS["stcln"], EvalProtocol)


# ---- result files and figures ---------------------------------------------------------------------

def test_metrics_json_recomputes_to_the_written_numbers(tmp_path):
    y_true, y_pred = pastis_case(0)
    y_true[y_true == 7] = 3  # class 7 absent from the truth: NaN entries must survive the round trip
    cm = matrix_of(y_true, y_pred, 20, ignore_index=19)
    names = [f"crop {i}" for i in range(20)]
    metrics = evaluate_protocol(cm, PASTIS["stcln"], names)
    json_path, md_path = write_results(tmp_path / "test_stcln", metrics, torch.as_tensor(cm), names, "stcln",
                                       {"checkpoint": "best.tar", "test_folds": [4]})
    json.loads(json_path.read_text())  # strict JSON (NaN written as null)
    stored = read_results(json_path)
    recomputed = compute_metrics(stored["confusion_matrix"], stored["metrics"]["eval_classes"], stored["class_names"])
    for key in ("OA", "mIoU", "mF1", "kappa", "n_pixels"):
        close(recomputed[key], stored["metrics"][key])
    for row, written in zip(recomputed["per_class"], stored["metrics"]["per_class"]):
        for key in ("IoU", "F1", "precision", "recall", "support"):
            close(row[key], np.nan if written[key] is None else written[key])
    assert stored["metrics"]["per_class"][6]["IoU"] is None
    text = md_path.read_text()
    assert "| OA | mIoU | mF1 | kappa |" in text and "crop 18" in text and "n/a" in text
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["metrics.json", "metrics.md"]  # no temp files


def test_png_writers_and_rgb_composite(tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 100, size=(20, 20))
    plot_confusion_matrix(cm, [f"c{i}" for i in range(20)], tmp_path / "cm.png")
    series = rng.normal(size=(6, 10, 16, 16))
    pad = np.array([False] * 4 + [True] * 2)
    padded = series.copy()
    padded[pad] = 1e6  # padding must not reach the composite
    rgb = rgb_composite(padded, (2, 1, 0), pad)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, rgb_composite(series[~pad], (2, 1, 0)))
    assert rgb.min() == 0 and rgb.max() == 255
    colormap = [(0, 0, 0)] + [tuple(rng.integers(0, 256, 3)) for _ in range(18)] + [(255, 255, 255)]
    labels = [rng.integers(0, 20, (16, 16)) for _ in range(2)]
    preds = [rng.integers(0, 19, (16, 16)) for _ in range(2)]
    plot_prediction_maps([rgb, rgb], labels, preds, tmp_path / "maps.png", colormap, ignore_index=19)
    for name in ("cm.png", "maps.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    with pytest.raises(ValueError):
        plot_prediction_maps([rgb], [labels[0] + 20], [preds[0]], tmp_path / "bad.png", colormap)


def test_format_table():
    text = format_table([{"model": "STCLN", "mIoU": 0.41234, "OA": float("nan")},
                         {"model": "STCLN_wp", "mIoU": 0.45, "OA": 0.8}], ["model", "mIoU", "OA"])
    assert text.splitlines() == ["| model | mIoU | OA |", "|---|---|---|",
                                 "| STCLN | 0.4123 | n/a |", "| STCLN_wp | 0.4500 | 0.8000 |"]


def test_paired_differences_figure_draws_each_setting_on_its_own_row_with_its_interval():
    from utils.figures import paired_differences_figure

    rows = [
        {"label": "1 %", "arm": "wp_cell", "mean": 0.03, "low": -0.01, "high": 0.07},
        {"label": "1 %", "arm": "wp_block", "mean": -0.02, "low": -0.05, "high": 0.01},
        {"label": "5 %", "arm": "wp_cell", "mean": 0.05, "low": 0.02, "high": 0.08},
    ]
    ax = paired_differences_figure(rows).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1 %", "5 %"]
    cell, block = ax.containers  # one error-bar container per arm, in order of first appearance
    x, y = cell.lines[0].get_data()
    assert np.allclose(x, [0.03, 0.05]) and y[0] < 0.5 < y[1]  # the 1 % row above the 5 % row's index
    segments = cell.lines[2][0].get_segments()  # the horizontal interval of each point
    assert np.allclose([s[:, 0] for s in segments], [[-0.01, 0.07], [0.02, 0.08]])
    assert np.allclose(block.lines[0].get_data()[0], [-0.02])
