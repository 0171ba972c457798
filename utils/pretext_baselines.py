"""Non-learned baselines of the masked-reconstruction pretext, on exactly the masked cells.

A pretext that a non-learned rule already solves teaches the model little. These baselines
predict every masked cell from the *visible* cells only (not masked, not a padded date) and are
scored in the units of the pre-training loss (``models.heads.masked_mse``): the squared error
averaged over the masked cells and all bands of the normalised input.

- :func:`neighbour_mean` (same-date spatial in-painting): the mean of the visible cells of the
  cell's 3x3 neighbourhood on the same date. A cell without a visible neighbour falls back to the
  per-band mean of the visible cells of that date (see :func:`frame_mean`), so the baseline stays
  purely same-date.
- :func:`temporal_interpolation` (per-pixel temporal in-filling): linear in the acquisition day
  between the nearest visible dates of the same pixel before and after; the nearest visible value
  at either end of the series; a pixel with no visible date falls back to :func:`frame_mean`.
- The best constant (the analogue of a learned mask token): the per-band mean of the masked
  values themselves, whose MSE is their per-band variance. It needs every masked value first, so
  it is accumulated with :class:`ConstantStats`.

All functions are vectorised and work on any device; inputs are (B, T, C, H, W) images,
(B, T, H, W) bool masks (True = masked), (B, T) acquisition days and (B, T) bool pad masks.
"""

import torch
import torch.nn.functional as F


def visible_cells(mask: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, H, W) bool: cells a baseline may look at (not masked, not on a padded date)."""
    visible = ~mask
    if pad_mask is not None:
        visible = visible & ~pad_mask[:, :, None, None]
    return visible


def frame_mean(x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Per-band mean of the visible cells of each date, broadcast to (B, T, C, H, W).

    A date with no visible cell takes the per-band mean of the visible cells of the whole
    sample, and a sample with none at all takes 0 (the normalised data's mean).
    """
    weight = visible[:, :, None].to(x.dtype)  # (B, T, H, W) -> (B, T, 1, H, W)
    frame_sum = (x * weight).sum(dim=(3, 4))  # (B, T, C)
    frame_count = weight.sum(dim=(3, 4))  # (B, T, 1)
    sample_mean = frame_sum.sum(dim=1, keepdim=True) / frame_count.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1, C)
    mean = torch.where(frame_count > 0, frame_sum / frame_count.clamp_min(1), sample_mean)  # (B, T, C)
    return mean[..., None, None].expand_as(x)  # (B, T, C) -> (B, T, C, H, W)


def neighbour_sums(x: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the visible 3x3 neighbours (the cell itself excluded) and their count.

    Returns (B, T, C, H, W) sums and (B, T, 1, H, W) counts.
    """
    B, T, C, H, W = x.shape
    weight = visible[:, :, None].to(x.dtype)  # (B, T, H, W) -> (B, T, 1, H, W)
    stacked = torch.cat([x * weight, weight], dim=2).reshape(B * T, C + 1, H, W)  # (B, T, C+1, H, W) -> (B*T, C+1, H, W)
    window = 9 * F.avg_pool2d(stacked, 3, stride=1, padding=1, count_include_pad=True)  # 3x3 sums, zero outside
    window = window.reshape(B, T, C + 1, H, W)  # (B*T, C+1, H, W) -> (B, T, C+1, H, W)
    sums = window[:, :, :C] - x * weight
    counts = window[:, :, C:] - weight
    return sums, counts


def neighbour_mean(x: torch.Tensor, mask: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Baseline (a): mean of the visible same-date 3x3 neighbours, else the date's visible mean.

    Returns the (B, T, C, H, W) prediction (meaningful on masked cells).
    """
    visible = visible_cells(mask, pad_mask)
    sums, counts = neighbour_sums(x, visible)
    return torch.where(counts > 0, sums / counts.clamp_min(1), frame_mean(x, visible))


def temporal_interpolation(
    x: torch.Tensor,
    mask: torch.Tensor,
    days: torch.Tensor,
    pad_mask: torch.Tensor | None = None,
    source_dates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Baseline (b): per-pixel linear interpolation in time between the nearest visible dates.

    Args:
        days: (B, T) acquisition day of each date (any origin; increasing along T on real dates).
        source_dates: optional (B, T) bool, the only dates whose visible cells may be used (e.g.
            the dates that pass the NDVI gate, i.e. clear and vegetated); default every date.

    Returns the (B, T, C, H, W) prediction (meaningful on masked cells): linear in the day between
    the previous and next visible date of the pixel, the nearest one's value where only one side
    has a visible date, the date's visible mean (:func:`frame_mean`) where the pixel has none.
    """
    B, T, C, H, W = x.shape
    visible = visible_cells(mask, pad_mask)
    if source_dates is not None:
        visible = visible & source_dates[:, :, None, None]
    steps = torch.arange(T, device=x.device).view(1, T, 1, 1)
    # index of the last visible date at or before t, -1 if none; of the first at or after t, T if none
    previous = torch.where(visible, steps, -1).cummax(dim=1).values  # (B, T, H, W)
    following = torch.where(visible, steps, T).flip(1).cummin(dim=1).values.flip(1)  # (B, T, H, W)
    has_prev, has_next = previous >= 0, following < T
    prev_idx, next_idx = previous.clamp(0, T - 1), following.clamp(0, T - 1)

    def at(index: torch.Tensor) -> torch.Tensor:  # (B, T, H, W) date index -> (B, T, C, H, W) values
        return x.gather(1, index[:, :, None].expand(B, T, C, H, W))

    x_prev, x_next = at(prev_idx), at(next_idx)
    day = days.to(x.dtype)[:, :, None, None].expand(B, T, H, W)  # (B, T) -> (B, T, H, W)
    day_prev, day_next = day.gather(1, prev_idx), day.gather(1, next_idx)
    span = day_next - day_prev
    weight = torch.where(span > 0, (day - day_prev) / span.where(span > 0, torch.ones_like(span)), 0.5)
    weight = weight[:, :, None]  # (B, T, H, W) -> (B, T, 1, H, W)
    between = x_prev + weight * (x_next - x_prev)
    pred = torch.where(has_next[:, :, None], x_next, frame_mean(x, visible))
    pred = torch.where(has_prev[:, :, None], x_prev, pred)
    return torch.where((has_prev & has_next)[:, :, None], between, pred)


def masked_sse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked cells of the band-averaged squared error (float32 scalar).

    Divided by ``mask.sum()`` it is ``models.heads.masked_mse``: the pre-training loss's units.
    """
    squared = (pred.float() - target.float()).square().mean(dim=2)  # (B, T, C, H, W) -> (B, T, H, W)
    return (squared * mask).sum()


@torch.no_grad()
def baseline_sse(
    x: torch.Tensor, mask: torch.Tensor, days: torch.Tensor, pad_mask: torch.Tensor | None = None,
    hidden: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Squared-error sums of baselines (a) and (b) on the masked cells of one batch (on device).

    ``hidden`` (B, T, H, W): cells the model does not see either (invalid cells with
    ``--hide_invalid``): the baselines do not look at them, and they are not scored."""
    x = x.float()
    unseen = mask if hidden is None else mask | hidden
    return {
        "neighbour_mean": masked_sse(neighbour_mean(x, unseen, pad_mask), x, mask),
        "temporal_interp": masked_sse(temporal_interpolation(x, unseen, days, pad_mask), x, mask),
    }


class ConstantStats:
    """Streaming per-band sums of the masked values: the best constant's MSE (baseline c).

    The best constant per band is the mean of the masked values; its MSE, averaged over bands in
    the loss's units, is the mean over bands of their (population) variance.
    """

    def __init__(self):
        self.count = 0.0
        self.sum = None
        self.sum_sq = None

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        values = x.float().permute(0, 1, 3, 4, 2)[mask].double()  # (B, T, C, H, W) -> (B, T, H, W, C) -> (N, C)
        if self.sum is None:
            self.sum = torch.zeros(x.shape[2], dtype=torch.float64, device=x.device)
            self.sum_sq = torch.zeros_like(self.sum)
        self.count += int(mask.sum())
        self.sum += values.sum(dim=0)
        self.sum_sq += values.square().sum(dim=0)

    def mse(self) -> float:
        """MSE of predicting each band's mean masked value (NaN before any masked cell)."""
        if not self.count:
            return float("nan")
        mean = self.sum / self.count
        return float((self.sum_sq / self.count - mean.square()).clamp_min(0).mean())
