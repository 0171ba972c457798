"""Non-learned pretext baselines against slow, obviously-correct loops (independent computation)."""

import numpy as np
import pytest
import torch

from models.heads import masked_mse
from utils.pretext_baselines import ConstantStats, baseline_sse, masked_sse, neighbour_mean, temporal_interpolation


def random_case(seed: int, B=2, T=6, C=3, H=5, W=4, ratio=0.5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, H, W, generator=gen)
    mask = torch.rand(B, T, H, W, generator=gen) < ratio
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, T - 2:] = True  # the second sample has two padded dates
    mask &= ~pad[:, :, None, None]
    mask[0, 2] = True  # a fully masked date: its fallback is the sample's visible mean
    mask[0, :, 0, 0] = True  # a pixel with no visible date
    days = torch.sort(torch.randint(0, 365, (B, T), generator=gen), dim=1).values
    days[:, 1:3] = days[:, :1]  # repeated days (a masked date between two visible ones on the same day)
    days[1, T - 2:] = 0  # padded days are garbage
    return x, mask, days, pad


def visible_of(mask, pad):
    return ~mask.numpy() & ~pad.numpy()[:, :, None, None]


def slow_frame_mean(x, visible, b, t):
    cells = [x[b, t, :, i, j] for i in range(x.shape[3]) for j in range(x.shape[4]) if visible[b, t, i, j]]
    if cells:
        return np.mean(cells, axis=0)
    cells = [x[b, s, :, i, j] for s in range(x.shape[1]) for i in range(x.shape[3]) for j in range(x.shape[4])
             if visible[b, s, i, j]]
    return np.mean(cells, axis=0) if cells else np.zeros(x.shape[2])


def slow_neighbour(x, visible, b, t, i, j):
    H, W = x.shape[3:]
    cells = [x[b, t, :, i + di, j + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)
             if (di, dj) != (0, 0) and 0 <= i + di < H and 0 <= j + dj < W and visible[b, t, i + di, j + dj]]
    return np.mean(cells, axis=0) if cells else slow_frame_mean(x, visible, b, t)


def slow_interp(x, visible, days, b, t, i, j):
    T = x.shape[1]
    before = [s for s in range(t) if visible[b, s, i, j]]
    after = [s for s in range(t + 1, T) if visible[b, s, i, j]]
    if before and after:
        p, n = before[-1], after[0]
        if days[b, n] == days[b, p]:
            return (x[b, p, :, i, j] + x[b, n, :, i, j]) / 2
        w = (days[b, t] - days[b, p]) / (days[b, n] - days[b, p])
        return (1 - w) * x[b, p, :, i, j] + w * x[b, n, :, i, j]
    if before:
        return x[b, before[-1], :, i, j]
    if after:
        return x[b, after[0], :, i, j]
    return slow_frame_mean(x, visible, b, t)


def masked_cells(mask):
    return [tuple(int(v) for v in idx) for idx in torch.nonzero(mask)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neighbour_mean_matches_loop(seed):
    x, mask, days, pad = random_case(seed)
    pred = neighbour_mean(x, mask, pad).numpy()
    xn, visible = x.double().numpy(), visible_of(mask, pad)
    for b, t, i, j in masked_cells(mask):
        np.testing.assert_allclose(pred[b, t, :, i, j], slow_neighbour(xn, visible, b, t, i, j), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,restricted", [(0, False), (1, False), (2, False), (3, True), (4, True)])
def test_temporal_interpolation_matches_loop(seed, restricted):
    x, mask, days, pad = random_case(seed)
    sources = torch.rand(pad.shape, generator=torch.Generator().manual_seed(seed)) < 0.6 if restricted else None
    pred = temporal_interpolation(x, mask, days, pad, sources).numpy()
    xn, visible, dn = x.double().numpy(), visible_of(mask, pad), days.double().numpy()
    if restricted:
        visible &= sources.numpy()[:, :, None, None]  # only those dates' visible cells are ever read
    for b, t, i, j in masked_cells(mask):
        np.testing.assert_allclose(pred[b, t, :, i, j], slow_interp(xn, visible, dn, b, t, i, j), rtol=1e-5, atol=1e-5)


def test_interpolation_is_exact_on_a_linear_series_and_uses_days_not_indices():
    days = torch.tensor([[0, 10, 40, 50]])
    x = (2.0 * days.float() + 1)[:, :, None, None, None].expand(1, 4, 2, 1, 1).clone()  # linear in the day
    mask = torch.tensor([False, True, True, False]).view(1, 4, 1, 1)
    pred = temporal_interpolation(x, mask, days)
    torch.testing.assert_close(pred[0, 1:3, :, 0, 0], x[0, 1:3, :, 0, 0])
    # by index the middle dates would be 1/3 and 2/3 of the way: 34.33 and 67.67, not 21 and 81
    assert abs(pred[0, 1, 0, 0, 0].item() - 21.0) < 1e-4


def test_sse_is_the_training_loss_units_and_sums_match_the_loop():
    x, mask, days, pad = random_case(5)
    pred = torch.randn_like(x)
    torch.testing.assert_close(masked_sse(pred, x, mask) / mask.sum(), masked_mse(pred, x, mask))
    sums = baseline_sse(x, mask, days, pad)
    xn, visible, dn = x.double().numpy(), visible_of(mask, pad), days.double().numpy()
    cells = masked_cells(mask)
    slow_a = sum(np.mean((slow_neighbour(xn, visible, b, t, i, j) - xn[b, t, :, i, j]) ** 2) for b, t, i, j in cells)
    slow_b = sum(np.mean((slow_interp(xn, visible, dn, b, t, i, j) - xn[b, t, :, i, j]) ** 2) for b, t, i, j in cells)
    assert abs(sums["neighbour_mean"].item() - slow_a) < 1e-4 * slow_a
    assert abs(sums["temporal_interp"].item() - slow_b) < 1e-4 * slow_b


def test_best_constant_is_the_per_band_variance_of_masked_values():
    stats = ConstantStats()
    values = []
    for seed in range(3):
        x, mask, _, _ = random_case(seed)
        stats.update(x, mask)
        values += [x[b, t, :, i, j].double().numpy() for b, t, i, j in masked_cells(mask)]
    values = np.stack(values)  # (N, C)
    expected = np.mean([np.mean((values[:, c] - values[:, c].mean()) ** 2) for c in range(values.shape[1])])
    assert abs(stats.mse() - expected) < 1e-9
    # no other constant does better
    shifted = np.mean((values - values.mean(axis=0) - 0.05) ** 2)
    assert stats.mse() < shifted
    assert np.isnan(ConstantStats().mse())


def test_neighbour_baseline_is_exact_on_a_spatially_constant_date_and_never_reads_masked_values():
    x = torch.randn(1, 3, 2, 1, 1).expand(1, 3, 2, 6, 6).clone()  # each date is spatially constant
    mask = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0)) < 0.5
    corrupted = torch.where(mask[:, :, None], torch.full_like(x, 1e6), x)  # masked values must not leak
    pred = neighbour_mean(corrupted, mask)
    torch.testing.assert_close(pred[mask[:, :, None].expand_as(x)], x[mask[:, :, None].expand_as(x)])
