"""Segmentation metrics from one confusion matrix: OA, mIoU, macro F1, Cohen's kappa, per class.

Everything is computed from a ``(K, K)`` integer confusion matrix whose rows are the ground truth
and whose columns are the prediction (docs/method.md §5).
:class:`ConfusionMatrix` accumulates it on the tensors' device with one ``torch.bincount`` per
batch; :func:`compute_metrics` turns it into numbers; :data:`PROTOCOLS` names the pixel/class
selections used by the paper (``stcln``) and by the PASTIS leaderboard (``utae``).

Semantics of :func:`compute_metrics` for an evaluated class subset ``E`` (documented once, here):

* **Scored pixels** are the pixels whose *truth* is in ``E`` (the rows of ``E``). Pixels are never
  dropped because of their *prediction*: a pixel predicted as a non-evaluated class (e.g.
  background or void on PASTIS) stays in the evaluation and is an error.
* ``TP_c = M[c, c]``; ``support_c = sum_j M[c, j]`` (row sum over **all** columns);
  ``FN_c = support_c - TP_c``, so predictions into non-evaluated classes are false negatives of the
  true class; ``predicted_c = sum_{r in E} M[r, c]`` and ``FP_c = predicted_c - TP_c`` (only scored
  pixels can be false positives; pixels whose truth is outside ``E`` are not scored at all).
* ``OA = sum_c TP_c / N`` with ``N`` the number of scored pixels (= sklearn ``accuracy_score`` on
  the pixels whose truth is in ``E``).
* ``IoU_c = TP/(TP+FP+FN)``, ``F1_c = 2TP/(2TP+FP+FN)``, ``precision_c = TP/predicted_c``,
  ``recall_c = TP/support_c``.
* A class absent from the ground truth (``support_c = 0``) has IoU, F1 and recall **NaN** (undefined)
  and is left out of the means; its precision is 0 if it was predicted (all its predictions are
  wrong) and NaN if it was never predicted. A class present but never predicted has precision NaN
  and IoU = F1 = recall = 0.
* ``mIoU``, ``mF1``, ``mPrecision``, ``mRecall`` are NaN-means over ``E`` (NaN if all are NaN).
* Cohen's kappa is computed on the scored rows with every column kept: ``p_o = OA`` and
  ``p_e = sum_j support_j * predicted_j / N^2`` over all classes ``j`` (``support_j = 0`` for
  ``j`` outside ``E``). This equals sklearn's ``cohen_kappa_score`` on the scored pixels.

The only difference from utae-paps' formula (IoU = TP/(TP+FP+FN), NaN only when 0/0) is the rule
for a class that is predicted but absent from the truth: utae-paps gives it IoU 0 and averages it
in, we give NaN and leave it out (as the authors' "labels present in y_true"). The output lists such
classes under ``absent_classes``; on full PASTIS test folds every class is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

# ---- class ids of the two datasets (docs/data_formats.md §1.2 and §2.3) ----------------------------
PASTIS_NUM_CLASSES = 20
PASTIS_BACKGROUND_INDEX = 0
PASTIS_VOID_INDEX = 19
MTLCC_NUM_CLASSES = 18
MTLCC_UNKNOWN_INDEX = 0



@dataclass(frozen=True)
class EvalProtocol:
    """A named pixel/class selection applied to a raw confusion matrix before scoring.

    Attributes:
        name: short name written into every result (``"stcln"``, ``"utae"``).
        dataset: dataset the class ids refer to (``"pastis"``, ``"mtlcc"``).
        num_classes: size ``K`` of the confusion matrix the protocol expects.
        eval_classes: classes whose ground-truth rows are scored (``E`` in the module docstring).
        zeroed_classes: classes whose row *and* column are set to 0 first (utae-paps' handling of
            void: pixels *predicted* as such a class vanish from the evaluation).
        description: one line for reports.
    """

    name: str
    dataset: str
    num_classes: int
    eval_classes: tuple[int, ...]
    zeroed_classes: tuple[int, ...] = ()
    description: str = ""

    def apply(self, cm: np.ndarray) -> np.ndarray:
        """Return a copy of ``cm`` with the rows and columns of ``zeroed_classes`` set to 0."""
        cm = _as_matrix(cm).copy()
        if cm.shape[0] != self.num_classes:
            raise ValueError(f"protocol {self.dataset}/{self.name} expects a {self.num_classes}x{self.num_classes} "
                             f"confusion matrix, got {cm.shape[0]}x{cm.shape[1]}")
        zeroed = list(self.zeroed_classes)
        cm[zeroed, :] = 0
        cm[:, zeroed] = 0
        return cm


def _range_without(num_classes: int, *excluded: int) -> tuple[int, ...]:
    return tuple(c for c in range(num_classes) if c not in excluded)


PROTOCOLS: dict[str, dict[str, EvalProtocol]] = {
    "pastis": {
        "stcln": EvalProtocol(
            "stcln", "pastis", PASTIS_NUM_CLASSES,
            eval_classes=_range_without(PASTIS_NUM_CLASSES, PASTIS_BACKGROUND_INDEX, PASTIS_VOID_INDEX),
            description="paper: pixels whose truth is a crop class 1-18; background and void excluded; "
                        "predictions of background/void count as errors"),
        "utae": EvalProtocol(
            "utae", "pastis", PASTIS_NUM_CLASSES,
            eval_classes=_range_without(PASTIS_NUM_CLASSES, PASTIS_VOID_INDEX),
            zeroed_classes=(PASTIS_VOID_INDEX,),
            description="PASTIS leaderboard (utae-paps): 19 classes 0-18 scored; void row and column zeroed, "
                        "so pixels predicted as void are not counted"),
    },
    "mtlcc": {
        "stcln": EvalProtocol(
            "stcln", "mtlcc", MTLCC_NUM_CLASSES,
            eval_classes=_range_without(MTLCC_NUM_CLASSES, MTLCC_UNKNOWN_INDEX),
            description="paper: pixels whose truth is a crop class 1-17; unknown excluded; "
                        "predictions are never filtered (predicted unknown is an error)"),
    },
}


def get_protocol(dataset: str, name: str) -> EvalProtocol:
    """Look up ``PROTOCOLS[dataset][name]`` with a readable error."""
    try:
        return PROTOCOLS[dataset.lower()][name]
    except KeyError:
        known = ", ".join(f"{d}/{p}" for d, protocols in PROTOCOLS.items() for p in protocols)
        raise ValueError(f"unknown evaluation protocol {dataset}/{name}; known: {known}") from None


class ConfusionMatrix:
    """Streaming ``(K, K)`` int64 confusion matrix (rows = truth, columns = prediction).

    Lives on ``device`` (default: the device of the first update) and is updated with one
    ``torch.bincount(target * K + pred)`` per call, so evaluation never gathers pixels.

    Args:
        num_classes: ``K``.
        ignore_index: pixels whose *target* equals it are dropped (never by prediction).
        device: where the matrix lives; moved to the inputs' device on the first update if None.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None,
                 device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._device_fixed = device is not None
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Set every count back to 0."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of integer predictions and targets of the same (any) shape."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError("ConfusionMatrix.update expects integer class indices (use logits.argmax(dim=1))")
        if not self._device_fixed:
            self.matrix = self.matrix.to(target.device)
            self._device_fixed = True
        pred = pred.reshape(-1).to(self.matrix.device, torch.int64)  # (N,)
        target = target.reshape(-1).to(self.matrix.device, torch.int64)  # (N,)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        outside = (target < 0) | (target >= self.num_classes) | (pred < 0) | (pred >= self.num_classes)
        if bool(outside.any()):
            raise ValueError(f"class index outside [0, {self.num_classes}) in pred or target "
                             f"(target range {int(target.min())}..{int(target.max())}, "
                             f"pred range {int(pred.min())}..{int(pred.max())})")
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)  # (K*K,) -> (K, K)

    def merge(self, other: ConfusionMatrix | torch.Tensor | np.ndarray) -> ConfusionMatrix:
        """Add another matrix (e.g. from another fold or process) in place; returns ``self``."""
        counts = other.matrix if isinstance(other, ConfusionMatrix) else torch.as_tensor(other)
        if tuple(counts.shape) != tuple(self.matrix.shape):
            raise ValueError(f"cannot merge a {tuple(counts.shape)} matrix into {tuple(self.matrix.shape)}")
        self.matrix += counts.to(self.matrix.device, torch.int64)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all DDP processes (no-op when torch.distributed is not initialised)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def numpy(self) -> np.ndarray:
        """The matrix as a CPU int64 array."""
        return self.matrix.cpu().numpy()


def _as_matrix(cm: np.ndarray | torch.Tensor | ConfusionMatrix) -> np.ndarray:
    if isinstance(cm, ConfusionMatrix):
        cm = cm.matrix
    if isinstance(cm, torch.Tensor):
        cm = cm.detach().cpu().numpy()
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("confusion matrix has negative counts")
    return cm.astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` with NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def compute_metrics(cm: np.ndarray | torch.Tensor, eval_classes: Sequence[int] | None = None,
                    class_names: Sequence[str] | None = None) -> dict:
    """OA, mIoU, mF1, kappa and per-class scores from a confusion matrix (see the module docstring).

    Args:
        cm: ``(K, K)`` counts, rows = truth, columns = prediction.
        eval_classes: evaluated classes ``E`` (default: all ``K``); pixels whose truth is outside
            ``E`` are not scored, predictions into classes outside ``E`` are errors.
        class_names: ``K`` names (default ``"class_<i>"``).

    Returns:
        Dict with floats ``OA``, ``mIoU``, ``mF1``, ``kappa``, ``mPrecision``, ``mRecall``, int
        ``n_pixels``, lists ``eval_classes`` and ``absent_classes`` (evaluated classes with support 0)
        and ``per_class``: one dict per evaluated class with ``index``, ``name``, ``IoU``, ``F1``,
        ``precision``, ``recall`` and ``support``.
    """
    cm = _as_matrix(cm)
    num_classes = cm.shape[0]
    classes = np.arange(num_classes) if eval_classes is None else np.unique(np.asarray(eval_classes, dtype=np.int64))
    if classes.size == 0 or classes.min() < 0 or classes.max() >= num_classes:
        raise ValueError(f"eval_classes must be non-empty indices in [0, {num_classes}), got {list(classes)}")
    names = [f"class_{i}" for i in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class confusion matrix")

    scored = cm[classes, :]  # (|E|, K): rows of the evaluated classes, every column kept
    n_pixels = int(scored.sum())
    tp = cm[classes, classes].astype(np.float64)
    support = scored.sum(axis=1).astype(np.float64)
    predicted = scored[:, classes].sum(axis=0).astype(np.float64)
    fp, fn = predicted - tp, support - tp
    present = support > 0

    iou = np.where(present, _ratio(tp, tp + fp + fn), np.nan)
    f1 = np.where(present, _ratio(2 * tp, 2 * tp + fp + fn), np.nan)
    recall = _ratio(tp, support)
    precision = _ratio(tp, predicted)

    support_all = np.zeros(num_classes, dtype=np.float64)
    support_all[classes] = support
    oa = float(tp.sum() / n_pixels) if n_pixels else float("nan")
    p_e = float((support_all * scored.sum(axis=0)).sum()) / n_pixels**2 if n_pixels else float("nan")
    kappa = float(_ratio(oa - p_e, 1.0 - p_e)) if n_pixels else float("nan")

    per_class = [
        {"index": int(c), "name": names[c], "IoU": float(iou[i]), "F1": float(f1[i]),
         "precision": float(precision[i]), "recall": float(recall[i]), "support": int(support[i])}
        for i, c in enumerate(classes)
    ]
    return {
        "OA": oa, "mIoU": _nanmean(iou), "mF1": _nanmean(f1), "kappa": kappa,
        "mPrecision": _nanmean(precision), "mRecall": _nanmean(recall), "n_pixels": n_pixels,
        "eval_classes": [int(c) for c in classes],
        "absent_classes": [int(c) for c in classes[~present]],
        "per_class": per_class,
    }


def evaluate_protocol(cm: np.ndarray | torch.Tensor, protocol: EvalProtocol,
                      class_names: Sequence[str] | None = None) -> dict:
    """Apply ``protocol`` to the raw matrix and score it; the result names the protocol.

    Args:
        cm: the raw ``(K, K)`` matrix accumulated by :class:`ConfusionMatrix`.
        protocol: e.g. ``PROTOCOLS["pastis"]["stcln"]`` (or :func:`get_protocol`).
        class_names: ``K`` names.

    Returns:
        :func:`compute_metrics`' dict plus ``protocol``, ``dataset``, ``protocol_description`` and
        ``zeroed_classes``.
    """
    metrics = compute_metrics(protocol.apply(cm), protocol.eval_classes, class_names)
    metrics.update(protocol=protocol.name, dataset=protocol.dataset, protocol_description=protocol.description,
                   zeroed_classes=list(protocol.zeroed_classes))
    return metrics


def authors_sklearn_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int], *,
                            drop_predicted_zero: bool = False) -> dict:
    """Reproduce the authors' sklearn test metrics (docs/method.md §4.1-4.2).

    FOR COMPARISON WITH THE PAPER'S PRINTED NUMBERS ONLY; the honest numbers are
    :func:`evaluate_protocol`'s. Differences from :func:`compute_metrics`: IoU and per-class F1 come
    from ``confusion_matrix(labels=classes present in y_true)``, which silently drops pixels predicted
    as any other class; ``mF1`` is sklearn's macro F1 over the union of true and predicted labels
    (predicted-only classes add F1 = 0); MTLCC's ``y_pred > 0`` filter drops pixels by prediction.

    Args:
        y_true, y_pred: pixel labels of any (equal) shape.
        labels: scored ground-truth classes (PASTIS 1..18, MTLCC 1..17); other truths are dropped.
        drop_predicted_zero: also drop pixels predicted as class 0 (the authors' MTLCC test).

    Returns:
        Dict with ``OA``, ``kappa``, ``mIoU``, ``mF1`` (sklearn macro), ``mF1_cm`` (the nan-mean of
        the confusion-matrix F1 the authors computed but did not print), ``per_class_IoU`` and
        ``per_class_F1`` (keyed by class index), ``n_pixels`` and ``variant``.
    """
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)  # any shape -> (N,)
    keep = np.isin(y_true, np.asarray(labels))
    if drop_predicted_zero:
        keep &= y_pred > 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    present = np.unique(y_true)
    cm = confusion_matrix(y_true, y_pred, labels=present)
    tp = np.diag(cm).astype(np.float64)
    iou = _ratio(tp, cm.sum(0) + cm.sum(1) - tp)
    f1 = _ratio(2 * tp, cm.sum(0) + cm.sum(1))
    return {
        "variant": "authors_sklearn" + ("_mtlcc_pred_gt0" if drop_predicted_zero else ""),
        "OA": float(accuracy_score(y_true, y_pred)),
        "kappa": float(cohen_kappa_score(y_true, y_pred)),
        "mIoU": _nanmean(iou),
        "mF1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "mF1_cm": _nanmean(f1),
        "per_class_IoU": {int(c): float(v) for c, v in zip(present, iou)},
        "per_class_F1": {int(c): float(v) for c, v in zip(present, f1)},
        "n_pixels": int(y_true.size),
    }
