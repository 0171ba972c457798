"""Synthetic benchmark version 2: surface realism, mixed pixels, within-field variation, atmosphere,
tile calendars, determinism, the writer and cache paths, and version 1 left unchanged."""

import datetime
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from utils.datasets import PASTISDataset, build_pastis_synthetic, write_pastis_like
from utils.datasets import synthetic_v2 as v2
from utils.datasets.pastis import PASTIS_BAND_NAMES, PASTIS_FOLDS, VOID_INDEX
from utils.datasets.writers import V2_TILES, _synthetic_metadata
from utils.errors import DataError

DATES = v2.tile_calendar([5, 0], (24, 24))
BANDS = PASTIS_BAND_NAMES
RED, NIR = BANDS.index("B04"), BANDS.index("B08")
V1_CHECKSUM = "5aca45d804da19c95603bd7f66c7d2bb5f4bc27dbac2b76a57d7f02bd56770c8"  # before version 2 was added


def ndvi(reflectance: np.ndarray) -> np.ndarray:
    refl = reflectance.astype(np.float64)
    return (refl[:, NIR] - refl[:, RED]) / (refl[:, NIR] + refl[:, RED])


@pytest.fixture(scope="module")
def clear_scenes():
    """Surface-only scenes (no haze, clouds or shadows) of a few patches and regions."""
    return [v2.generate_scene([1, k], 24, 24, DATES, BANDS, region_seed=[1, k % 3], atmosphere=False,
                              return_fractions=True) for k in range(4)]


def test_bare_soil_below_vegetation_gate_and_dense_canopy_green(clear_scenes):
    bare, dense = [], []
    for scene in clear_scenes:
        index = ndvi(scene["reflectance"])
        bare.append(index[scene["soil"] > 0.98])
        dense.append(index[scene["green"] > 0.9])
    bare, dense = np.concatenate(bare), np.concatenate(dense)
    assert bare.size > 200 and dense.size > 200
    assert bare.mean() < 0.15 and np.percentile(bare, 95) < 0.2  # real bare soils 0.05-0.15, gate 0.2
    assert dense.mean() > 0.75 and np.percentile(dense, 5) > 0.6


def test_every_soil_and_leaf_spectrum_is_plausible():
    red, nir = 3, 7  # B04, B08 in BAND_NAMES_ALL order
    soil_ndvi = (v2.SOIL_SPECTRA[:, nir] - v2.SOIL_SPECTRA[:, red]) / (v2.SOIL_SPECTRA[:, nir] + v2.SOIL_SPECTRA[:, red])
    assert np.all((soil_ndvi > 0.05) & (soil_ndvi < 0.15))
    leaf_ndvi = (v2.LEAF_SPECTRA[:, nir] - v2.LEAF_SPECTRA[:, red]) / (v2.LEAF_SPECTRA[:, nir] + v2.LEAF_SPECTRA[:, red])
    assert np.all(leaf_ndvi > 0.8)
    # crops differ in red edge (B05, B06) and SWIR (B11, B12), not only in NIR/red
    for band in (4, 5, 11, 12):
        assert np.ptp(v2.LEAF_SPECTRA[:, band]) > 0.15 * v2.LEAF_SPECTRA[:, band].mean(), band


def test_about_half_of_the_dates_carry_haze_cloud_or_shadow():
    dates = v2.tile_calendar([9, 1], (30, 30))
    affected = []
    for region in range(6):
        scene = v2.generate_scene([3, region], 16, 16, dates, BANDS, region_seed=[3, region])
        touched = (scene["aod"] > 0) | (scene["opacity"].max(axis=(1, 2)) > 0.05) | (scene["shadow"].max(axis=(1, 2)) > 0.05)
        affected.append(touched)
    share = np.mean(affected)
    assert 0.35 <= share <= 0.65, share
    regimes = np.concatenate([v2._weather([3, r], dates)[0] for r in range(6)])
    assert set(regimes.tolist()) == {v2.CLEAR, v2.HAZE, v2.BROKEN, v2.OVERCAST}


def test_haze_is_additive_and_strongest_in_blue():
    clear = v2.generate_scene(4, 16, 16, DATES, BANDS, region_seed=2, atmosphere=False)["reflectance"].astype(float)
    hazy = v2.generate_scene(4, 16, 16, DATES, BANDS, region_seed=2)
    dates = np.flatnonzero((hazy["aod"] > 0.1) & (hazy["opacity"].max(axis=(1, 2)) < 0.01))
    assert dates.size > 0
    lift = (hazy["reflectance"].astype(float) - clear)[dates].mean(axis=(0, 2, 3))  # (C,)
    assert lift[BANDS.index("B02")] > 2 * lift[BANDS.index("B12")] and lift[BANDS.index("B02")] > 100


def test_tile_calendars_at_full_size_from_metadata_only():
    from utils.data import SYNTHETIC_PASTIS

    full = SYNTHETIC_PASTIS[2]["full"]
    patches = _synthetic_metadata(full["n_patches"], full["n_dates"], 0, PASTIS_FOLDS, version=2)
    assert len(patches) == 1250 and np.bincount([p.fold for p in patches]).tolist() == [0, 250, 250, 250, 250, 250]
    calendars = {}
    for meta in patches:
        assert calendars.setdefault(meta.tile, meta.dates) == meta.dates  # one calendar per tile
    assert len(calendars) == len(V2_TILES) >= 6
    assert len(set(calendars.values())) == len(calendars)  # distinct
    for dates in calendars.values():
        assert 20 <= len(dates) <= 30 and list(dates) == sorted(set(dates))
        gaps = np.diff([d.toordinal() for d in dates])
        assert np.all(gaps % v2.REVISIT_DAYS == 0) and gaps.max() > v2.REVISIT_DAYS  # one satellite, missing passes
        assert v2.SEASON_START <= dates[0] and dates[-1] <= v2.SEASON_END


def test_psf_mixes_a_step_edge_linearly():
    size, factor = 8, v2.SUBPIXELS
    n_sub = (size + 2 * v2.RENDER_MARGIN_PX) * factor
    left, right = 0.1, 0.5
    image = np.full((n_sub, n_sub), right, np.float32)
    edge = (v2.RENDER_MARGIN_PX + 4) * factor + 1  # the edge lies inside pixel column 4, 1/factor from its left
    image[:, :edge] = left
    out = v2.apply_psf(image, size)
    assert np.allclose(out[:, 0], left, atol=1e-4) and np.allclose(out[:, -1], right, atol=1e-4)
    row = out[4]
    assert left < row[4] < right and np.all(np.diff(row) >= -1e-6)
    # independent weight: P(U + G < edge) for U uniform over the pixel and G Gaussian optics, by
    # averaging the Gaussian CDF over a fine grid of U
    edge_offset = 4 + 1 / factor - 4.5  # edge position relative to the centre of pixel 4
    u = np.linspace(-0.5, 0.5, 2001)
    w_left = np.mean([0.5 * (1 + math.erf((edge_offset - x) / (v2.PSF_SIGMA_PX * math.sqrt(2)))) for x in u])
    assert row[4] == pytest.approx(left * w_left + right * (1 - w_left), abs=2e-3)


def test_border_pixels_mix_their_neighbours_and_carry_the_dominant_label(clear_scenes):
    between, consistent, total = 0, 0, 0
    for scene in clear_scenes:
        refl = scene["reflectance"][:, NIR].astype(np.float64)  # (T, H, W)
        ids = scene["parcel_ids"]
        for r in range(ids.shape[0]):
            for c in range(1, ids.shape[1] - 1):
                a, m, b = ids[r, c - 1], ids[r, c], ids[r, c + 1]
                if a == b or 0 in (a, b) or m not in (a, b) or scene["dominance"][r, c] > 0.9:
                    continue
                t = np.argmax(np.abs(refl[:, r, c - 1] - refl[:, r, c + 1]))  # the date of strongest contrast
                lo, hi = sorted((refl[t, r, c - 1], refl[t, r, c + 1]))
                if hi - lo < 500:
                    continue
                total += 1
                between += lo - 60 <= refl[t, r, c] <= hi + 60
                closer = a if abs(refl[t, r, c] - refl[t, r, c - 1]) < abs(refl[t, r, c] - refl[t, r, c + 1]) else b
                consistent += closer == m
    assert total > 15
    assert between / total > 0.9 and consistent / total > 0.75, (between, consistent, total)


def test_background_pixels_are_hedges_tracks_or_non_crop_land(clear_scenes):
    for scene in clear_scenes:
        assert np.array_equal(scene["parcel_ids"] == 0, scene["label"] == 0)
        assert set(np.unique(scene["label"])) <= {0, *v2.CLASSES}
    background = np.mean([(scene["label"] == 0).mean() for scene in clear_scenes])
    assert 0.03 < background < 0.7


def neighbour_correlation(residual: np.ndarray, inside: np.ndarray) -> float:
    """Correlation of horizontally adjacent residuals over pixel pairs that are both ``inside``."""
    pairs = inside[:, :, :-1] & inside[:, :, 1:]
    left, right = residual[:, :, :-1][pairs], residual[:, :, 1:][pairs]
    return float(np.corrcoef(left, right)[0, 1])


def test_within_field_variation_is_spatially_correlated(clear_scenes):
    residuals, insides = [], []
    for scene in clear_scenes:
        index = ndvi(scene["reflectance"])  # (T, H, W)
        ids = scene["parcel_ids"]
        residual = np.zeros_like(index)
        inside = np.zeros(index.shape, bool)
        for pid in np.unique(ids[ids > 0]):
            core = (ids == pid) & (scene["dominance"] > 0.99)
            if core.sum() < 10:
                continue
            residual[:, core] = index[:, core] - index[:, core].mean(axis=1, keepdims=True)
            inside[:, core] = True
        residuals.append(residual)
        insides.append(inside)
    residual, inside = np.concatenate(residuals), np.concatenate(insides)
    assert inside.sum() > 1000
    assert neighbour_correlation(residual, inside) > 0.5
    iid = np.random.default_rng(0).standard_normal(residual.shape)
    assert abs(neighbour_correlation(iid, inside)) < 0.1  # the statistic does separate i.i.d. noise
    # the pattern changes over time: residual maps of dates far apart are far from identical
    stds = residual.std(axis=(1, 2))
    assert stds.max() > 2 * np.median(stds[stds > 0])


def test_deterministic_by_seed_and_region():
    one = v2.generate_scene(11, 16, 16, DATES[:8], BANDS, region_seed=4)
    again = v2.generate_scene(11, 16, 16, DATES[:8], BANDS, region_seed=4)
    other = v2.generate_scene(12, 16, 16, DATES[:8], BANDS, region_seed=4)
    for key in ("reflectance", "label", "parcel_ids", "opacity", "shadow", "aod", "void_ids"):
        assert np.array_equal(one[key], again[key]), key
    assert not np.array_equal(one["reflectance"], other["reflectance"])
    assert np.array_equal(one["aod"] > 0, other["aod"] > 0)  # the tile's weather regime is shared
    with pytest.raises(ValueError):
        v2.generate_scene(0, 8, 8, DATES, ("B99",))
    with pytest.raises(ValueError):
        v2.generate_scene(0, 8, 12, DATES, BANDS)


def folder_checksum(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_version_1_output_unchanged(tmp_path):
    write_pastis_like(tmp_path, n_patches=6, size=12, n_dates=(5, 8), seed=1, return_arrays=False)
    assert folder_checksum(tmp_path) == V1_CHECKSUM


def test_writer_and_cache_of_version_2(tmp_path):
    root = build_pastis_synthetic(tmp_path / "v2", n_patches=10, size=16, n_dates=(6, 10), version=2)
    data = PASTISDataset(root, folds=PASTIS_FOLDS, norm_folds=PASTIS_FOLDS)
    assert len(data) == 10
    labels = np.unique(np.concatenate([data[i]["label"].numpy().ravel() for i in range(len(data))]))
    assert set(labels.tolist()) <= {0, VOID_INDEX, *v2.CLASSES} and len(set(labels.tolist()) & set(v2.CLASSES)) >= 4
    assert build_pastis_synthetic(root, n_patches=10, size=16, n_dates=(6, 10), version=2) == root  # cached
    with pytest.raises(DataError):
        build_pastis_synthetic(root, n_patches=10, size=16, n_dates=(6, 10), version=1)
    with pytest.raises(ValueError):
        write_pastis_like(tmp_path / "bad", n_patches=2, size=8, n_dates=(6, 10), version=2, n_crop_types=8)
    with pytest.raises(ValueError):
        write_pastis_like(tmp_path / "bad", n_patches=2, size=8, n_dates=(6, 10), version=3)


def test_synthetic_version_flag_selects_version_and_cache_folder(tmp_path, monkeypatch):
    import argparse

    from utils.args import add_data_args
    from utils.data import pastis_root
    from utils.data_spec import DataSpec

    parser = argparse.ArgumentParser()
    add_data_args(parser)
    parser.add_argument("--smoke", action="store_true")
    assert parser.parse_args([]).synthetic_version == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--synthetic_version", "3"])
    monkeypatch.chdir(tmp_path)
    for version in (1, 2):
        root = pastis_root(DataSpec.from_args(parser.parse_args(["--smoke", "--synthetic_version", str(version)])))
        assert root == Path("data_cache") / f"synthetic_pastis_v{version}_smoke"
        marker = (root / "COMPLETE.json").read_text()
        assert f'"version": {version}' in marker


def test_dates_outside_the_season_slots_are_refused():
    with pytest.raises(ValueError):
        v2.tile_calendar(0, (40, 40))
    assert len(v2.tile_calendar(0, (6, 10), datetime.date(2018, 9, 1), datetime.date(2019, 10, 31))) in range(6, 11)
