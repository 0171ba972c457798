"""Figures: masked-reconstruction panels for pre-training (PNG and TensorBoard)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

STRETCH_PERCENTILES = (2, 98)
MAX_DATES_SHOWN = 4
MASK_COLOUR = (1.0, 0.0, 1.0)


def to_rgb(frame: np.ndarray, rgb_indices: tuple[int, int, int], low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(C, H, W) frame -> (H, W, 3) floats in [0, 1] with a shared stretch."""
    rgb = frame[list(rgb_indices)].transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    return np.clip((rgb - low) / np.maximum(high - low, 1e-6), 0.0, 1.0)


def reconstruction_figure(image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, rgb_indices, title: str = ""):
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
    fig, axes = plt.subplots(len(dates), 3, figsize=(7.5, 2.5 * len(dates)), squeeze=False)
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


def save_figure(fig, path) -> None:
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def label_efficiency_figure(runs: list[dict], budgets: list[float], arms: list[str], metric: str = "mIoU"):
    """Test ``metric`` vs label budget (log x), one line per arm, error bars = std over seeds."""
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
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
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("labelled training crops (%)")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_curves_figure(runs: list[dict], budgets: list[float]):
    """Validation mIoU vs optimiser steps, one panel per budget, one line per arm (one seed)."""
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.2 * len(budgets), 3.2), squeeze=False, sharey=True)
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
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    return fig
