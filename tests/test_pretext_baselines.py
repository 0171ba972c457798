"""Non-learned pretext baselines against slow, obviously-correct loops (independent computation)."""

import json
import shutil

import numpy as np
import pytest
import torch

from models.heads import masked_mse
from utils.args import check_sources
from utils.datasets.collate import pad_collate
from utils.engine import primary_mask
from utils.masking import MaskingConfig, build_source_mask
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


# experiments/pretext_baselines.py with several sources (--sources S2 S1): every row against slow loops over
# masks rebuilt here the way pre-training draws them (utils.engine's primary_mask, then build_source_mask)

SCRIPT_FLAGS = ["--smoke", "--limit", "6", "--batch_size", "4", "--mask_mode", "cell", "block", "frame", "--seed", "3"]


@pytest.fixture(scope="module")
def script_runs(tmp_path_factory):
    """The script's results.json with --sources S2 S1, S2 alone and a radar primary (S1A), on the smoke set written
    to a temporary cache, with that set's pre-training data (the radar run's and the radar primary's)."""
    from experiments import pretext_baselines
    from utils import data as data_module

    tmp = tmp_path_factory.mktemp("pretext_sources")
    runs, data = {}, {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data_module, "CACHE_ROOT", tmp / "cache")
        for name, sources in (("S2 S1", ["S2", "S1"]), ("S2", ["S2"]), ("S1A", ["S1A"])):
            assert pretext_baselines.main(SCRIPT_FLAGS + ["--sources", *sources, "--output_dir", str(tmp / name)]) == 0
            runs[name] = json.loads((tmp / name / "results.json").read_text())
            parser = pretext_baselines.get_parser()
            args = parser.parse_args(SCRIPT_FLAGS + ["--sources", *sources])
            check_sources(parser, args)  # S1 -> S1A S1D
            pretext_baselines.resolve(args)
            data[name] = data_module.build_pretrain_data(data_module.resolve_data_spec(args))
    return runs, data, tmp / "cache"


def reference_rows(data, modes=("cell", "block", "frame"), limit=6, batch_size=4, seed=3) -> list[dict]:
    """The rows recomputed with loops: the same evenly spaced samples and batches, each mode's masks drawn as
    pre-training draws them (primary first, then the further sources in order, from generators seeded seed and
    seed + 1), scored cell by cell."""
    dataset, info = data.train, data.info
    indices = np.linspace(0, len(dataset) - 1, limit).round().astype(int).tolist()
    batches = [pad_collate([dataset[i] for i in indices[k : k + batch_size]]) for k in range(0, limit, batch_size)]
    rows = {}
    for mode in modes:
        masking = MaskingConfig(0.4, mode, 0.2, 0.9, block=4, ndvi_gate=info.ndvi_gate)
        primary, further = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
        cases = {source: [] for source in info.sources}  # source -> [(x, mask, days, pad, gate dates or None)]
        for batch in batches:
            x, pad = batch["image"], batch["pad_mask"]
            mask = primary_mask(batch, x, pad, masking, info.red_index, info.nir_index, primary)
            gate = None
            if info.ndvi_gate:  # the dates the NDVI gate lets through: those of (b')
                ndvi = batch["ndvi"].numpy()
                gate = np.array([[(ndvi[b, t] > 0.2).mean() > 0.9 for t in range(x.shape[1])] for b in range(len(x))])
                gate &= ~pad.numpy()
            cases[info.sources[0]].append((x, mask, batch["days"], pad, gate))
            for source in info.sources[1:]:
                image, source_pad = batch[f"image_{source}"], batch[f"pad_mask_{source}"]
                source_mask = build_source_mask(image, source_pad, masking, further)
                cases[source].append((image, source_mask, batch[f"days_{source}"], source_pad, None))
        for source, batches_of_source in cases.items():
            rows[source, mode] = slow_row(batches_of_source)
    return rows


def slow_row(cases) -> dict:
    """Masked-cell MSE of (a), (b), (b') and (c), masked fraction and 'no neighbour' share, cell by cell."""
    sse_a = sse_b = sse_gated = 0.0
    masked = cells = no_neighbour = 0
    values = []
    for x, mask, days, pad, gate in cases:
        xn, visible, dn = x.double().numpy(), visible_of(mask, pad), days.double().numpy()
        gated = visible & gate[:, :, None, None] if gate is not None else None  # (b') reads the gate's dates only
        H, W = xn.shape[3:]
        cells += int((~pad).sum()) * H * W
        for b, t, i, j in masked_cells(mask):
            target = xn[b, t, :, i, j]
            sse_a += np.mean((slow_neighbour(xn, visible, b, t, i, j) - target) ** 2)
            sse_b += np.mean((slow_interp(xn, visible, dn, b, t, i, j) - target) ** 2)
            if gated is not None:
                sse_gated += np.mean((slow_interp(xn, gated, dn, b, t, i, j) - target) ** 2)
            near = [(i + di, j + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]
            no_neighbour += not any(0 <= r < H and 0 <= c < W and visible[b, t, r, c] for r, c in near)
            masked += 1
            values.append(target)
    values = np.stack(values)  # (masked cells, C)
    return {
        "masked cells": masked,
        "masked fraction": masked / cells,
        "(a) neighbour mean": sse_a / masked,
        "(b) temporal interp": sse_b / masked,
        "(b') gated dates": sse_gated / masked if cases[0][4] is not None else None,
        "(c) best constant": float(np.mean(values.var(axis=0))),
        "(a) no neighbour": no_neighbour / masked,
    }


def assert_rows_match(rows: list[dict], reference: dict, sources: list[str]) -> None:
    mask_names = {"cell": "cell", "block": "block 4x4", "frame": "frame"}
    assert [(row["source"], row["mask"]) for row in rows] == [
        (source, mask_names[mode]) for source in sources for mode in mask_names
    ]  # one row per (source, mode), grouped by source
    for row in rows:
        mode = next(mode for mode, name in mask_names.items() if name == row["mask"])
        expected = reference[row["source"], mode]
        assert row["masked cells"] == expected["masked cells"] > 0
        assert row["masked fraction"] == expected["masked fraction"]
        for key in ("(a) neighbour mean", "(b) temporal interp", "(b') gated dates", "(c) best constant"):
            if expected[key] is None:
                assert row[key] is None, (row["source"], key)
            else:
                assert row[key] == pytest.approx(expected[key], rel=1e-4), (row["source"], row["mask"], key)
        assert row["(a) no neighbour"] == pytest.approx(expected["(a) no neighbour"], abs=1e-12)


def test_script_radar_rows_match_loops_over_the_masks_pre_training_draws(script_runs):
    runs, data, _ = script_runs
    run = runs["S2 S1"]
    assert run["sources"] == ["S2", "S1A", "S1D"] and run["settings"]["sources"] == ["S2", "S1A", "S1D"]
    assert_rows_match(run["rows"], reference_rows(data["S2 S1"]), run["sources"])
    radar = [row for row in run["rows"] if row["source"] != "S2"]
    assert all(row["masked fraction"] == row["masked of eligible"] for row in radar)  # no gate: all cells eligible


def test_script_optical_rows_do_not_change_when_radar_is_added(script_runs):
    runs, _, _ = script_runs
    assert runs["S2"]["sources"] == ["S2"] and len(runs["S2"]["rows"]) == 3
    # two batches: a shared generator would shift the second batch's optical masks
    assert [row for row in runs["S2 S1"]["rows"] if row["source"] == "S2"] == runs["S2"]["rows"]


def test_script_radar_primary_has_no_ndvi_gate(script_runs):
    runs, data, _ = script_runs
    assert runs["S1A"]["sources"] == ["S1A"]
    assert_rows_match(runs["S1A"]["rows"], reference_rows(data["S1A"]), ["S1A"])


def test_script_refuses_a_source_the_data_lacks_in_one_line(script_runs, tmp_path, capsys):
    from experiments import pretext_baselines

    root = tmp_path / "no_s1d"
    shutil.copytree(script_runs[2] / "synthetic_pastis_v2_smoke", root)
    shutil.rmtree(root / "DATA_S1D")
    (root / "NORM_S1D_patch.json").unlink()
    capsys.readouterr()
    argv = ["--smoke", "--dataset", "pastis", "--data_root", str(root), "--sources", "S2", "S1", "--limit", "2"]
    assert pretext_baselines.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(root) in err and "S1D" in err, err
    with pytest.raises(SystemExit) as stop:  # a source named twice: an argument error, not a traceback
        pretext_baselines.main(["--smoke", "--sources", "S2", "S1", "S1A"])
    assert stop.value.code == 2 and "S1A is listed twice" in capsys.readouterr().err
