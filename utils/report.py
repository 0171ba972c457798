"""Test-result files: metrics.json/.md, confusion-matrix and prediction-map PNGs, Markdown tables.

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot and no global
backend switch), so this module is safe to import anywhere. Every file is written to a temporary
name in the target folder and moved into place with ``os.replace``, so a crash never leaves a
half-written result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from utils.atomic import write_atomic, write_text_atomic

STRETCH_PERCENTILES = (2.0, 98.0)
RGB_CHANNELS = 3
FLOAT_FORMAT = ".4f"
MISSING_VALUE = "n/a"
FIGURE_DPI = 120
CM_CELL_INCHES = 0.42
CM_MIN_INCHES = 4.0
CM_ANNOTATE_MAX_CLASSES = 20
CM_TEXT_DARK_ABOVE = 0.5
MAP_PANEL_INCHES = 2.4
MAP_ROWS = ("RGB", "ground truth", "prediction")
MAP_TITLE_FONTSIZE = 8
HALF_BIN = 0.5  # centres each class index on its colour in the discrete colour map
CM_WIDTH_RATIO = 1.2  # room for the colour bar
CM_TICK_FONTSIZE = 7
CM_CELL_FONTSIZE = 5
COLORBAR_FRACTION = 0.046
COLORBAR_PAD = 0.04
SCALAR_KEYS = ("OA", "mIoU", "mF1", "kappa")
PER_CLASS_KEYS = ("IoU", "F1", "precision", "recall", "support")


write_file_atomic = write_atomic  # the name other modules import (utils/atomic.py is the one writer)


def write_json(path: str | Path, data) -> None:
    """Strict JSON (NaN/inf become ``null``), written atomically."""
    write_text_atomic(Path(path), json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def _save_figure(fig: Figure, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=FIGURE_DPI, bbox_inches="tight"))


def _json_safe(value):
    """Plain JSON types; NaN/inf become ``null`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _format_value(value, float_format: str = FLOAT_FORMAT) -> str:
    if value is None:
        return MISSING_VALUE
    if isinstance(value, (float, np.floating)):
        return MISSING_VALUE if math.isnan(value) else format(float(value), float_format)
    return str(value)


def format_table(rows: list[dict], columns: Sequence[str], float_format: str = FLOAT_FORMAT) -> str:
    """Markdown table of ``rows`` restricted to ``columns`` (floats formatted, NaN/None as ``n/a``).

    Example: ``format_table([{"model": "STCLN", "mIoU": 0.41}, {"model": "STCLN_wp", "mIoU": 0.45}],
    ["model", "mIoU"])``.
    """
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_format_value(row.get(c, ""), float_format) for c in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


def metrics_markdown(metrics: dict, protocol: str, run_info: dict) -> str:
    """The ``metrics.md`` text: run info, the four headline scores, then the per-class table."""
    lines = [f"# Test results ({protocol} protocol)", ""]
    if metrics.get("protocol_description"):
        lines += [metrics["protocol_description"], ""]
    lines += [f"- {key}: {value}" for key, value in run_info.items()]
    lines += [f"- scored pixels: {metrics.get('n_pixels', MISSING_VALUE)}", ""]
    lines.append(format_table([{key: metrics.get(key) for key in SCALAR_KEYS}], SCALAR_KEYS))
    lines.append(format_table(metrics.get("per_class", []), ("index", "name", *PER_CLASS_KEYS)))
    return "\n".join(lines)


def write_results(out_dir: str | Path, metrics: dict, cm, class_names: Sequence[str], protocol: str,
                  run_info: dict) -> tuple[Path, Path]:
    """Write ``metrics.json`` (every number + the raw confusion matrix) and ``metrics.md``.

    The JSON holds ``protocol``, ``run_info``, ``class_names``, ``metrics`` (NaN written as null) and
    ``confusion_matrix`` (the raw K x K counts, rows = truth), so the metrics can be recomputed with
    :func:`utils.metrics.evaluate_protocol` or :func:`utils.metrics.compute_metrics` (use the stored
    ``metrics.eval_classes`` after zeroing ``metrics.zeroed_classes``).

    Returns:
        The paths of ``metrics.json`` and ``metrics.md``.
    """
    out_dir = Path(out_dir)
    matrix = np.asarray(cm.detach().cpu().numpy() if hasattr(cm, "detach") else cm, dtype=np.int64)
    payload = {"protocol": protocol, "run_info": run_info, "class_names": list(class_names),
               "metrics": metrics, "confusion_matrix": matrix}
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    write_text_atomic(json_path, json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")
    write_text_atomic(md_path, metrics_markdown(metrics, protocol, _json_safe(run_info)))
    return json_path, md_path


def read_results(path: str | Path) -> dict:
    """Load a ``metrics.json``; ``confusion_matrix`` comes back as an int64 array."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    payload["confusion_matrix"] = np.asarray(payload["confusion_matrix"], dtype=np.int64)
    return payload


def plot_confusion_matrix(cm, class_names: Sequence[str], path: str | Path,
                          classes: Sequence[int] | None = None) -> None:
    """Row-normalised confusion matrix (each truth row sums to 1; empty rows stay 0) as a PNG.

    Args:
        classes: indices to show (rows and columns); default all classes.
    """
    matrix = np.asarray(cm.detach().cpu().numpy() if hasattr(cm, "detach") else cm, dtype=np.float64)
    shown = np.arange(matrix.shape[0]) if classes is None else np.asarray(classes)
    matrix = matrix[np.ix_(shown, shown)]
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    labels = [f"{i} {class_names[i]}" for i in shown]
    size = max(CM_MIN_INCHES, CM_CELL_INCHES * len(shown))
    fig = Figure(figsize=(size * CM_WIDTH_RATIO, size))
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=COLORBAR_FRACTION, pad=COLORBAR_PAD, label="fraction of the true class")
    ax.set_xticks(range(len(shown)), labels, rotation=90, fontsize=CM_TICK_FONTSIZE)
    ax.set_yticks(range(len(shown)), labels, fontsize=CM_TICK_FONTSIZE)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if len(shown) <= CM_ANNOTATE_MAX_CLASSES:
        for (row, col), value in np.ndenumerate(normalised):
            if value > 0:
                colour = "white" if value > CM_TEXT_DARK_ABOVE else "black"
                ax.text(col, row, f"{100 * value:.0f}", ha="center", va="center",
                        fontsize=CM_CELL_FONTSIZE, color=colour)
    _save_figure(fig, Path(path))


def _colour_table(colormap: Sequence[Sequence[float]]) -> np.ndarray:
    """(K, 3) floats in [0, 1] from RGB tuples given either in [0, 1] or in [0, 255]."""
    table = np.asarray(colormap, dtype=np.float64)[:, :RGB_CHANNELS]
    return table / 255 if table.max() > 1.0 else table


def plot_prediction_maps(images_rgb: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                         preds: Sequence[np.ndarray], path: str | Path, colormap: Sequence[Sequence[float]],
                         ignore_index: int | None = None) -> None:
    """Rows: RGB composite / ground truth / prediction; one column per patch.

    Args:
        images_rgb: (H, W, 3) uint8 composites (see :func:`rgb_composite`).
        labels, preds: (H, W) integer class maps.
        colormap: one RGB tuple per class (e.g. PASTIS: black for 0, white for void 19).
        ignore_index: pixels whose *truth* is this class are not scored, so the prediction panel
            paints them with the ignored class's colour too (unscored areas look alike).
    """
    colours = _colour_table(colormap)
    cmap = ListedColormap(colours)
    n = len(images_rgb)
    if not (n == len(labels) == len(preds)) or n == 0:
        raise ValueError("need the same non-zero number of images, labels and predictions, "
                         f"got {n}, {len(labels)}, {len(preds)}")
    fig = Figure(figsize=(MAP_PANEL_INCHES * n, MAP_PANEL_INCHES * len(MAP_ROWS)))
    axes = fig.subplots(len(MAP_ROWS), n, squeeze=False)
    for col, (image, label, pred) in enumerate(zip(images_rgb, labels, preds)):
        label, pred = np.asarray(label), np.asarray(pred)
        if max(label.max(), pred.max()) >= len(colours) or min(label.min(), pred.min()) < 0:
            raise ValueError(f"class index outside the {len(colours)}-colour map")
        if ignore_index is not None:
            pred = np.where(label == ignore_index, ignore_index, pred)
        for row, (title, panel) in enumerate(zip(MAP_ROWS, (np.asarray(image), label, pred))):
            ax = axes[row, col]
            if panel.ndim == 3:  # (H, W, 3) composite, else (H, W) class map
                ax.imshow(panel, interpolation="nearest")
            else:
                ax.imshow(panel, cmap=cmap, vmin=-HALF_BIN, vmax=len(colours) - HALF_BIN, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(title, fontsize=MAP_TITLE_FONTSIZE)
    _save_figure(fig, Path(path))


def rgb_composite(image: np.ndarray, rgb_indices: Sequence[int], pad_mask: np.ndarray | None = None) -> np.ndarray:
    """(T, C, H, W) series -> (H, W, 3) uint8: per-pixel median over valid dates, 2-98 % stretch per band.

    Args:
        rgb_indices: band indices of red, green, blue in ``C``.
        pad_mask: (T,) bool, True for padded dates (left out of the median).
    """
    image = np.asarray(image, dtype=np.float64)
    if pad_mask is not None:
        image = image[~np.asarray(pad_mask, dtype=bool)]
    if image.shape[0] == 0:
        raise ValueError("rgb_composite: no valid date")
    bands = image[:, list(rgb_indices)]  # (T, 3, H, W)
    median = np.median(bands, axis=0).transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    low, high = np.percentile(median, STRETCH_PERCENTILES, axis=(0, 1))  # (3,) each
    span = np.where(high > low, high - low, 1.0)
    stretched = np.clip((median - low) / span, 0.0, 1.0)
    return np.round(stretched * 255).astype(np.uint8)


MAP_MAX_SIDE = 2000  # class maps are drawn from a strided view of at most this many pixels a side
MAP_FIGURE_INCHES = 7.0
LEGEND_FONTSIZE = 7


def plot_class_map(class_map: np.ndarray, class_names: Sequence[str], colormap: Sequence[Sequence[float]],
                   path: str | Path, title: str = "", shares: Sequence[float] | None = None) -> None:
    """A whole-scene class map with a legend (one patch per class present, with its share).

    Large maps are drawn from every n-th pixel (nearest neighbour) so the figure stays small; the
    map file itself is full resolution.

    Args:
        class_map: (H, W) integer class indices.
        colormap: one RGB tuple per class, in [0, 1] or [0, 255].
        shares: fraction of the map per class, shown in the legend.
    """
    from matplotlib.patches import Patch

    colours = _colour_table(colormap)
    step = max(1, math.ceil(max(class_map.shape) / MAP_MAX_SIDE))
    shown = np.asarray(class_map[::step, ::step])
    height, width = shown.shape
    fig = Figure(figsize=(MAP_FIGURE_INCHES * min(1.0, width / height) + 2.5, MAP_FIGURE_INCHES * min(1.0, height / width)))
    ax = fig.add_subplot()
    ax.imshow(shown, cmap=ListedColormap(colours), vmin=-HALF_BIN, vmax=len(colours) - HALF_BIN, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title + (f" (every {step}th pixel drawn)" if step > 1 else ""), fontsize=MAP_TITLE_FONTSIZE)
    present = np.flatnonzero(np.bincount(shown.ravel(), minlength=len(colours))) if shares is None else \
        [index for index, share in enumerate(shares) if share > 0]
    handles = [Patch(facecolor=colours[index], edgecolor="black", linewidth=0.3,
                     label=f"{index} {class_names[index]}" + (f" ({100 * shares[index]:.1f}%)" if shares else ""))
               for index in present]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LEGEND_FONTSIZE, frameon=False)
    _save_figure(fig, Path(path))
