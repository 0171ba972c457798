"""Synthetic crop-phenology scenes: contract, determinism, plausibility and difficulty."""

import datetime

import numpy as np
import pytest

from utils.datasets.synthetic import BAND_NAMES_ALL, N_CROP_TYPES, generate_scene, synthetic_dates

START, END = datetime.date(2018, 9, 1), datetime.date(2019, 10, 31)
DATES = synthetic_dates(0, START, END, 30)
PASTIS_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def ndvi_of(scene: dict, bands) -> np.ndarray:
    refl = scene["reflectance"].astype(np.float64)
    red, nir = refl[:, bands.index("B04")], refl[:, bands.index("B08")]
    return (nir - red) / (nir + red)


def test_dates_sorted_unique_in_range():
    dates = synthetic_dates(4, START, END, 50)
    assert dates == sorted(set(dates)) and len(dates) == 50 and START <= dates[0] and dates[-1] <= END
    assert dates == synthetic_dates(4, START, END, 50) and dates != synthetic_dates(5, START, END, 50)
    gaps = np.diff([d.toordinal() for d in dates])
    assert len(set(gaps.tolist())) > 1  # irregular
    with pytest.raises(ValueError):
        synthetic_dates(0, START, START + datetime.timedelta(days=3), 10)


def test_scene_contract_and_determinism():
    scene = generate_scene(7, 24, 20, DATES, BAND_NAMES_ALL, n_crop_types=5)
    assert scene["reflectance"].dtype == np.int16 and scene["reflectance"].shape == (30, 13, 24, 20)
    assert scene["label"].dtype == np.int64 and scene["label"].shape == (24, 20)
    assert scene["parcel_ids"].dtype == np.int32 and scene["cloud"].dtype == bool
    assert scene["cloud"].shape == (30, 24, 20)
    assert 0 <= scene["label"].min() and scene["label"].max() <= 5
    assert np.array_equal(scene["parcel_ids"] == 0, scene["label"] == 0)
    assert scene["reflectance"].min() > 0
    again = generate_scene(7, 24, 20, DATES, BAND_NAMES_ALL, n_crop_types=5)
    other = generate_scene(8, 24, 20, DATES, BAND_NAMES_ALL, n_crop_types=5)
    assert all(np.array_equal(scene[k], again[k]) for k in scene)
    assert not np.array_equal(scene["reflectance"], other["reflectance"])
    subset = generate_scene(7, 24, 20, DATES, ("B08", "B04"), n_crop_types=5)
    assert subset["reflectance"].shape[1] == 2
    with pytest.raises(ValueError):
        generate_scene(0, 8, 8, DATES, ("B99",))
    with pytest.raises(ValueError):
        generate_scene(0, 8, 8, DATES, PASTIS_BANDS, n_crop_types=N_CROP_TYPES + 1)


def test_spectra_are_plausible():
    scene = generate_scene(1, 64, 64, DATES, BAND_NAMES_ALL)
    refl = scene["reflectance"].astype(np.float64)
    clear = ~scene["cloud"]
    ndvi = ndvi_of(scene, BAND_NAMES_ALL)
    green = clear & (ndvi > 0.6)
    band = BAND_NAMES_ALL.index
    assert green.sum() > 100 and clear.any()
    assert refl[:, band("B08")][green].mean() > 3 * refl[:, band("B04")][green].mean()  # red edge
    assert refl[:, band("B11")][green].mean() < refl[:, band("B08")][green].mean()
    assert refl[:, band("B10")][clear].mean() < 200  # cirrus band dark when clear
    cloudy = scene["cloud"]
    assert cloudy.any() and refl[:, band("B02")][cloudy].mean() > 2 * refl[:, band("B02")][clear].mean()


def parcel_curves(seed: int) -> tuple[np.ndarray, np.ndarray]:
    scene = generate_scene(seed, 48, 48, DATES, ("B04", "B08"))
    ndvi = ndvi_of(scene, ("B04", "B08"))
    ids = np.unique(scene["parcel_ids"])[1:]
    curves = np.stack([ndvi[:, scene["parcel_ids"] == pid].mean(axis=1) for pid in ids])
    labels = np.array([scene["label"][scene["parcel_ids"] == pid][0] for pid in ids])
    return curves, labels


def test_classes_separable_but_not_trivially():
    n_types = 8
    train = [parcel_curves(seed) for seed in range(6)]
    test = [parcel_curves(seed) for seed in range(100, 106)]
    x_train, y_train = (np.concatenate(parts) for parts in zip(*train))
    x_test, y_test = (np.concatenate(parts) for parts in zip(*test))
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in range(1, n_types + 1)])
    distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)  # (parcels, classes)
    accuracy = (distances.argmin(axis=1) + 1 == y_test).mean()
    assert 3 / n_types < accuracy < 0.95, accuracy
