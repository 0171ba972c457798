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
    dates = masked_dates[np.linspace(0, len(masked_dates) - 1, min(MAX_DATES_SHOWN, len(masked_dates))).astype(int)] if len(masked_dates) else np.arange(min(MAX_DATES_SHOWN, image.shape[0]))
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
