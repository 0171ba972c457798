"""Every figure of the project (one module): test-result PNGs (confusion matrix, prediction maps,
class maps), the patches a selection chose, pre-training reconstructions, and the experiments' curves.

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot and no global
backend switch), so this module is safe to import anywhere and a figure needs no closing.
:func:`save_figure` writes PNGs atomically (utils/atomic.py): a crash never leaves a half-written file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from utils.atomic import write_atomic

STRETCH_PERCENTILES = (2.0, 98.0)  # per-band stretch of RGB composites and reconstructions
RGB_CHANNELS = 3
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
MAX_DATES_SHOWN = 4
MASK_COLOUR = (1.0, 0.0, 1.0)


def save_figure(fig: Figure, path: str | Path, dpi: int = 100, bbox_inches: str | None = None) -> None:
    """Write ``fig`` as a PNG, atomically."""
    write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches=bbox_inches))


# ---------------------------------------------------------------------------------------------
# Test results (utils/finetune.py) and scene maps (predict_STCLN.py)
# ---------------------------------------------------------------------------------------------
def plot_confusion_matrix(
    cm, class_names: Sequence[str], path: str | Path, classes: Sequence[int] | None = None
) -> None:
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
                ax.text(
                    col, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=CM_CELL_FONTSIZE, color=colour
                )
    save_figure(fig, path, FIGURE_DPI, "tight")


def _colour_table(colormap: Sequence[Sequence[float]]) -> np.ndarray:
    """(K, 3) floats in [0, 1] from RGB tuples given either in [0, 1] or in [0, 255]."""
    table = np.asarray(colormap, dtype=np.float64)[:, :RGB_CHANNELS]
    return table / 255 if table.max() > 1.0 else table


def plot_prediction_maps(
    images_rgb: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    path: str | Path,
    colormap: Sequence[Sequence[float]],
    ignore_index: int | None = None,
) -> None:
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
        raise ValueError(
            f"need the same non-zero number of images, labels and predictions, got {n}, {len(labels)}, {len(preds)}"
        )
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
    save_figure(fig, path, FIGURE_DPI, "tight")


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


def plot_class_map(
    class_map: np.ndarray,
    class_names: Sequence[str],
    colormap: Sequence[Sequence[float]],
    path: str | Path,
    title: str = "",
    shares: Sequence[float] | None = None,
) -> None:
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
    fig = Figure(
        figsize=(MAP_FIGURE_INCHES * min(1.0, width / height) + 2.5, MAP_FIGURE_INCHES * min(1.0, height / width))
    )
    ax = fig.add_subplot()
    ax.imshow(
        shown, cmap=ListedColormap(colours), vmin=-HALF_BIN, vmax=len(colours) - HALF_BIN, interpolation="nearest"
    )
    ax.set_axis_off()
    ax.set_title(title + (f" (every {step}th pixel drawn)" if step > 1 else ""), fontsize=MAP_TITLE_FONTSIZE)
    present = (
        np.flatnonzero(np.bincount(shown.ravel(), minlength=len(colours)))
        if shares is None
        else [index for index, share in enumerate(shares) if share > 0]
    )
    handles = [
        Patch(
            facecolor=colours[index],
            edgecolor="black",
            linewidth=0.3,
            label=f"{index} {class_names[index]}" + (f" ({100 * shares[index]:.1f}%)" if shares else ""),
        )
        for index in present
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LEGEND_FONTSIZE, frameon=False)
    save_figure(fig, path, FIGURE_DPI, "tight")


SELECTION_STYLES = {  # patch status -> (legend label, face colour, edge colour) of selection.png
    "other": ("not a candidate (validation, test or other folds)", "white", "0.7"),
    "candidate": ("candidate (training folds)", "0.82", "0.45"),
    "excluded": ("already labelled (--exclude)", "tab:blue", "black"),
    "selected": ("selected", "tab:red", "black"),
}
SELECTION_RANKS_SHOWN = 60  # ranks are written on the selected patches up to this many


def plot_patch_selection(
    outlines: Sequence[Sequence[np.ndarray]],
    status: Sequence[str],
    ranks: Sequence[int | None],
    path: str | Path,
    title: str = "",
    axes_label: str = "",
    flip_y: bool = False,
) -> None:
    """The scene's patches coloured by selection status, with the selected ones' ranks (utils/select_labels.py).

    Args:
        outlines: per patch, its rings as (n, 2) arrays of x, y (a footprint's polygons, or a pixel square).
        status: per patch, a key of :data:`SELECTION_STYLES`.
        ranks: per patch, its rank in the selection (1 = first) or None.
        axes_label: what x and y are (e.g. "metadata.geojson coordinates").
        flip_y: y grows downwards (pixel rows).
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    if not len(outlines) == len(status) == len(ranks):
        raise ValueError(f"need one status and rank per patch, got {len(outlines)}, {len(status)}, {len(ranks)}")
    fig = Figure(figsize=(7.5, 6.0))
    ax = fig.add_subplot()
    handles = []
    for key, (label, face, edge) in SELECTION_STYLES.items():
        rings = [ring for patch, state in zip(outlines, status) if state == key for ring in patch]
        if rings:
            ax.add_collection(PolyCollection(rings, facecolors=face, edgecolors=edge, linewidths=0.5))
            handles.append(Patch(facecolor=face, edgecolor=edge, linewidth=0.5, label=label))
    n_ranked = sum(rank is not None for rank in ranks)
    if n_ranked <= SELECTION_RANKS_SHOWN:
        for patch, rank in zip(outlines, ranks):
            if rank is not None:
                centre = np.asarray(patch[0])[:-1].mean(axis=0)  # the first ring, its closing vertex left out
                ax.text(*centre, str(rank), ha="center", va="center", fontsize=6, color="white", weight="bold")
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.ticklabel_format(useOffset=False, style="plain")  # map coordinates as they are, not as offsets
    if flip_y:
        ax.invert_yaxis()
    ax.tick_params(labelsize=6)
    ax.set_xlabel(axes_label, fontsize=7)
    ax.set_title(title, fontsize=MAP_TITLE_FONTSIZE)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LEGEND_FONTSIZE, frameon=False)
    save_figure(fig, path, FIGURE_DPI, "tight")


# ---------------------------------------------------------------------------------------------
# Pre-training reconstructions (pretrain_STCLN.py) and the experiments' curves
# ---------------------------------------------------------------------------------------------
def to_rgb(frame: np.ndarray, rgb_indices: tuple[int, int, int], low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(C, H, W) frame -> (H, W, 3) floats in [0, 1] with a shared stretch."""
    rgb = frame[list(rgb_indices)].transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    return np.clip((rgb - low) / np.maximum(high - low, 1e-6), 0.0, 1.0)


def reconstruction_figure(
    image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, rgb_indices, title: str = ""
) -> Figure:
    """Rows: dates with masked cells (up to 4); columns: input, masked input, reconstruction.

    Args:
        image, pred: (T, C, H, W) one sample; mask: (T, H, W) bool.
    Returns the matplotlib Figure (caller saves or logs it).
    """
    image, pred, mask = image.float().cpu().numpy(), pred.float().cpu().numpy(), mask.cpu().numpy()
    masked_dates = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(masked_dates):
        dates = masked_dates[np.linspace(0, len(masked_dates) - 1, min(MAX_DATES_SHOWN, len(masked_dates))).astype(int)]
    else:
        dates = np.arange(min(MAX_DATES_SHOWN, image.shape[0]))
    rgb_values = image[:, list(rgb_indices)]  # (T, 3, H, W)
    low = np.percentile(rgb_values, STRETCH_PERCENTILES[0], axis=(0, 2, 3))
    high = np.percentile(rgb_values, STRETCH_PERCENTILES[1], axis=(0, 2, 3))
    fig = Figure(figsize=(7.5, 2.5 * len(dates)))
    axes = fig.subplots(len(dates), 3, squeeze=False)
    for row, t in enumerate(dates):
        original = to_rgb(image[t], rgb_indices, low, high)
        masked = original.copy()
        masked[mask[t]] = MASK_COLOUR
        panels = (original, masked, to_rgb(pred[t], rgb_indices, low, high))
        for col, (panel, name) in enumerate(zip(panels, ("input", "masked", "reconstruction"))):
            axes[row, col].imshow(panel, interpolation="nearest")
            axes[row, col].set_axis_off()
            axes[row, col].set_title(f"{name}, date {t}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


ARM_STYLES = {  # arm -> (label, colour, line style) of the label-efficiency figures
    "scratch": ("STCLN (scratch)", "tab:gray", "-"),
    "wp_cell": ("STCLN_wp, cell masking (paper)", "tab:blue", "-"),
    "wp_block": ("STCLN_wp, block masking", "tab:orange", "-"),
    "wp_frame": ("STCLN_wp, frame masking", "tab:green", "-"),
    "probe_wp": ("linear probe, pre-trained", "tab:purple", "--"),
    "probe_random": ("linear probe, random backbone", "tab:brown", "--"),
    "rf": ("per-pixel random forest", "black", ":"),
    "majority": ("majority class", "tab:red", ":"),
}


def label_efficiency_figure(runs: list[dict], budgets: list[float], arms: list[str], metric: str = "mIoU") -> Figure:
    """Test ``metric`` vs label budget (log x), one line per arm, error bars = std over seeds."""
    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    for arm in arms:
        xs, means, stds = [], [], []
        for budget in budgets:
            values = [r["test"][metric] for r in runs if r["arm"] == arm and r["budget"] == budget]
            if values:
                xs.append(budget)
                means.append(np.mean(values))
                stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        if xs:
            label, colour, style = ARM_STYLES.get(arm, (arm, None, "-"))
            ax.errorbar(xs, means, yerr=stds, label=label, color=colour, linestyle=style, marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled training crops (%)")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


SELECTION_COLOURS = {"random": "black", "kcenter": "C0", "entropy": "C1", "margin": "C2", "badge": "C3"}
SELECTION_BAND_ALPHA = 0.15


def selection_curves_figure(
    runs: list[dict], arms: list[str], strategies: list[str], titles: dict[str, str], metric: str = "mIoU"
) -> Figure:
    """Test ``metric`` vs labelled training samples, one panel per arm and one line per selection strategy:
    the mean over the units of each round, a band of +- one std (ddof 1) around it. ``runs``: records with
    arm, strategy, round, labelled (samples) and test; x is the mean label count of the round's units."""
    fig = Figure(figsize=(4.6 * len(arms), 4.0))
    axes = fig.subplots(1, len(arms), squeeze=False)[0]
    for ax, arm in zip(axes, arms):
        for strategy in strategies:
            rounds: dict[int, list[dict]] = {}
            for r in runs:
                if r["arm"] == arm and r["strategy"] == strategy:
                    rounds.setdefault(r["round"], []).append(r)
            if not rounds:
                continue
            xs = np.array([np.mean([r["labelled"] for r in rounds[k]]) for k in sorted(rounds)])
            values = [[r["test"][metric] for r in rounds[k]] for k in sorted(rounds)]
            means = np.array([np.mean(v) for v in values])
            stds = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values])
            colour = SELECTION_COLOURS.get(strategy)
            style = "--" if strategy == "random" else "-"
            ax.plot(xs, means, marker="o", color=colour, linestyle=style, label=strategy)
            ax.fill_between(xs, means - stds, means + stds, color=colour, alpha=SELECTION_BAND_ALPHA, linewidth=0)
        ax.set_title(titles.get(arm, arm), fontsize=9)
        ax.set_xlabel("labelled training samples")
        ax.set_ylabel(f"test {metric} (mean ± std)")
        ax.grid(alpha=0.3)
    legend_on_last_drawn_panel(axes)
    fig.tight_layout()
    return fig


def paired_differences_figure(rows: list[dict]) -> Figure:
    """A forest plot of paired differences: one line per setting (``label``), one marker per arm
    (``arm``), at the mean difference with its 95 % interval (``mean``, ``low``, ``high``); a line at 0.

    Settings are drawn top to bottom in the order of their first row; arms of one setting side by side.
    """
    settings = list(dict.fromkeys(r["label"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    fig = Figure(figsize=(9.0, 0.3 * len(settings) + 1.4))
    ax = fig.add_subplot()
    offset = {arm: (i - (len(arms) - 1) / 2) * 0.22 for i, arm in enumerate(arms)}
    for arm in arms:
        label, colour, _ = ARM_STYLES.get(arm, (arm, None, "-"))
        picked = [r for r in rows if r["arm"] == arm]
        y = np.array([settings.index(r["label"]) + offset[arm] for r in picked])
        mean = np.array([r["mean"] for r in picked])
        low = np.array([r["low"] for r in picked])
        high = np.array([r["high"] for r in picked])
        ax.errorbar(
            mean, y, xerr=[mean - low, high - mean], fmt="o", color=colour, label=label, capsize=2, markersize=4
        )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(settings)), settings, fontsize=7)
    ax.set_ylim(len(settings) - 0.5, -0.5)  # first setting on top
    ax.set_xlabel("test mIoU, pre-trained − scratch (mean over seeds, 95 % t interval)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(arms), frameon=False)
    fig.tight_layout()
    return fig


def legend_on_last_drawn_panel(axes) -> None:
    """The legend on the last panel that has a curve (a panel may be empty, e.g. in a partial report)."""
    for ax in axes[::-1]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
            return


def training_curves_figure(runs: list[dict], budgets: list[float]) -> Figure:
    """Validation mIoU vs optimiser steps, one panel per budget, one line per arm (one seed)."""
    fig = Figure(figsize=(3.2 * len(budgets), 3.2))
    axes = fig.subplots(1, len(budgets), squeeze=False, sharey=True)
    for ax, budget in zip(axes[0], budgets):
        for run in (r for r in runs if r["budget"] == budget):
            points = [(h["steps"], h["val_mIoU"]) for h in run["history"] if "val_mIoU" in h]
            if points:
                label, colour, style = ARM_STYLES.get(run["arm"], (run["arm"], None, "-"))
                ax.plot(*zip(*points), label=label, color=colour, linestyle=style, marker=".")
        ax.set_title(f"{budget:g} % labels", fontsize=9)
        ax.set_xlabel("steps")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("validation mIoU")
    legend_on_last_drawn_panel(axes[0])
    fig.tight_layout()
    return fig


def pretext_curves_figure(histories: dict[str, list[dict]]) -> Figure:
    """Masked-cell MSE vs pre-training epoch, one panel per masking mode: the model and the two
    non-learned baselines on the same masked cells (log y)."""
    modes = [mode for mode, epochs in histories.items() if epochs]
    fig = Figure(figsize=(3.4 * len(modes), 3.2))
    axes = fig.subplots(1, len(modes), squeeze=False)
    lines = (
        ("model", "model", "tab:blue", "-"),
        ("neighbour_mean", "same-date 3x3 neighbour mean", "tab:orange", "--"),
        ("temporal_interp", "temporal interpolation", "tab:green", ":"),
    )
    for ax, mode in zip(axes[0], modes):
        for key, label, colour, style in lines:
            points = [(e["epoch"], e[key]) for e in histories[mode] if key in e]
            if points:
                ax.plot(*zip(*points), label=label, color=colour, linestyle=style, marker=".")
        ax.set_yscale("log")
        ax.set_title(f"{mode} masking", fontsize=9)
        ax.set_xlabel("pre-training epoch")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("masked-cell MSE")
    legend_on_last_drawn_panel(axes[0])
    fig.tight_layout()
    return fig


def early_season_figure(rows: list[dict]) -> Figure:
    """Test mIoU against the cut-off month, STCLN and STCLN_wp (experiments/early_season.py)."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    for method, style in (("STCLN", "o--"), ("STCLN_wp", "s-")):
        ax.plot([r["cut-off month"] for r in rows], [r[f"{method} mIoU"] for r in rows], style, label=method)
    ax.set_xlabel("last month used (from February)")
    ax.set_ylabel("test mIoU")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
