"""Authors' PASTIS subsets, label-ratio subsets and temporal subsets."""

import datetime
import json
from pathlib import Path

import numpy as np
import pytest

from utils.datasets.protocols import (
    AUTHORS_FOLDS, UNSCORED, TemporalSubset, authors_pastis_subset, label_ratio_subset, read_id_list,
)
from utils.errors import DataError

REAL_META = Path(__file__).resolve().parent / "data" / "pastis_real_meta"


def test_authors_lists():
    train, cells = authors_pastis_subset("train")
    val, val_cells = authors_pastis_subset("val")
    assert len(train) == 76 and len(set(train)) == 72 and len(val) == 76 and len(set(val)) == 71
    assert cells == val_cells == [(0, 0), (1, 1)]
    assert train[:3] == [10279, 40282, 10174] and train[-1] == 40271 and val[0] == 10127
    assert {i for i in train if train.count(i) == 2} == {20153, 20167, 20203, 30013}
    with pytest.raises(ValueError):
        authors_pastis_subset("test")


def test_authors_ids_known_in_real_metadata_are_in_their_fold():
    folds = {f["properties"]["ID_PATCH"]: f["properties"]["Fold"]
             for f in json.loads((REAL_META / "metadata.geojson").read_text())["features"]}
    for split in ("train", "val"):
        ids, _ = authors_pastis_subset(split)
        known = [i for i in ids if i in folds]
        assert all(folds[i] in AUTHORS_FOLDS[split] for i in known)
    assert 10000 in authors_pastis_subset("train")[0]  # the fixture does overlap the list


def test_read_id_list_errors(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# header\n12\n\n12  # dup\nabc\n")
    with pytest.raises(DataError, match="ids.txt:5"):
        read_id_list(path)
    path.write_text("# header\n12\n\n12  # dup\n")
    assert read_id_list(path) == [12, 12]
    with pytest.raises(DataError, match="not found"):
        read_id_list(tmp_path / "missing.txt")


def test_label_ratio_subset():
    classes = np.array([1] * 50 + [2] * 30 + [3] * 15 + [4] * 5)
    subset = label_ratio_subset(classes, 0.1, seed=0)
    assert len(subset) == 10 and np.all(np.diff(subset) > 0)
    assert set(classes[subset]) == {1, 2, 3, 4}
    assert np.array_equal(subset, label_ratio_subset(classes, 0.1, seed=0))
    assert not np.array_equal(subset, label_ratio_subset(classes, 0.1, seed=1))
    assert len(label_ratio_subset(classes, 0.02, seed=0)) == 2  # budget below the class count
    assert set(classes[label_ratio_subset(classes, 0.02, seed=0)]) == {1, 2}
    assert np.array_equal(label_ratio_subset(classes, 1.0, seed=3), np.arange(100))
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            label_ratio_subset(classes, bad, seed=0)


def season(n: int = 30) -> list[datetime.date]:
    start = datetime.date(2018, 9, 24)
    return [start + datetime.timedelta(days=13 * k) for k in range(n)]  # Sept 2018 .. Oct 2019


def test_temporal_modes():
    dates = season()
    assert TemporalSubset("first", n=5)(dates).tolist() == [0, 1, 2, 3, 4]
    even = TemporalSubset("even", n=4)(dates)
    assert even.tolist() == [0, 10, 19, 29]
    random = TemporalSubset("random", n=6, seed=1)(dates)
    assert len(set(random.tolist())) == 6 and np.all(np.diff(random) > 0)
    assert np.array_equal(random, TemporalSubset("random", n=6, seed=1)(dates))
    assert TemporalSubset("first", n=99)(dates).tolist() == list(range(30))
    window = TemporalSubset("window", months=(2, 6))(dates)
    picked = [dates[i] for i in window]
    assert all(datetime.date(2019, 2, 1) <= d <= datetime.date(2019, 6, 30) for d in picked)
    assert len(picked) == sum(datetime.date(2019, 2, 1) <= d <= datetime.date(2019, 6, 30) for d in dates)
    calendar_year = [datetime.date(2016, 1, 1) + datetime.timedelta(days=10 * k) for k in range(36)]
    autumn = [calendar_year[i] for i in TemporalSubset("window", months=(9, 12))(calendar_year)]
    assert autumn and all(d.year == 2016 and d.month >= 9 for d in autumn)


def test_temporal_errors():
    with pytest.raises(ValueError, match="selects no date"):
        TemporalSubset("window", months=(7, 7))([datetime.date(2019, 1, 5)])
    with pytest.raises(ValueError):
        TemporalSubset("first")
    with pytest.raises(ValueError):
        TemporalSubset("window", months=(0, 13))
    with pytest.raises(ValueError):
        TemporalSubset("bogus", n=3)


def synthetic_like_classes(seed: int, n: int = 800, n_classes: int = 19, empty: float = 0.25) -> np.ndarray:
    """Dominant classes of grid crops: skewed crop frequencies, a quarter of crops with no crop pixel."""
    rng = np.random.default_rng(seed)
    frequency = 1.0 / np.arange(1, n_classes + 1) ** 1.2
    classes = rng.choice(np.arange(1, n_classes + 1), size=n, p=frequency / frequency.sum())
    classes[rng.random(n) < empty] = UNSCORED
    return classes


@pytest.mark.parametrize("seed", range(4))
def test_label_ratio_subset_never_draws_an_empty_crop_and_stays_stratified(seed):
    classes = synthetic_like_classes(seed)
    scored = classes != UNSCORED
    present, counts = np.unique(classes[scored], return_counts=True)
    for ratio in (0.005, 0.01, 0.02, 0.05, 0.2, 0.5, 1.0):
        for draw_seed in range(5):
            subset = label_ratio_subset(classes, ratio, seed=draw_seed)
            assert (classes[subset] != UNSCORED).all()  # never a crop without a crop pixel
            total = max(1, round(ratio * scored.sum()))
            assert len(subset) == total and len(np.unique(subset)) == total
            taken = np.array([(classes[subset] == c).sum() for c in present])
            assert (taken <= counts).all()
            if total >= len(present):
                assert (taken >= 1).all()  # every present class gets a slot
                # beyond the first slot, each class's share follows its frequency (largest remainder: < 1 off)
                share = (total - len(present)) * (counts - 1) / (counts - 1).sum()
                assert np.all(np.abs(taken - 1 - share) < 1)
            else:
                most_frequent = present[np.argsort(-counts, kind="stable")[:total]]
                assert set(classes[subset]) == set(most_frequent)
    assert np.array_equal(np.flatnonzero(scored), label_ratio_subset(classes, 1.0, seed=0))


def test_label_ratio_subset_needs_a_scored_sample():
    with pytest.raises(ValueError, match="scored"):
        label_ratio_subset(np.full(5, UNSCORED), 0.5, seed=0)
