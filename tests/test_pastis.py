"""PASTIS loader: writer round trip, real side files, folds, crops and one-line DataErrors."""

import datetime
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.datasets import PASTISDataset, write_pastis_like
from utils.datasets.pastis import PASTIS_CLASSES, PASTIS_COLORMAP, PASTIS_FOLD_SPLITS, read_pastis_metadata
from utils.datasets.protocols import TemporalSubset
from utils.errors import DataError

REAL_META = Path(__file__).resolve().parent / "data" / "pastis_real_meta"
REFERENCE = datetime.date(2018, 9, 1)
SIZE = 16


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("pastis")
    return write_pastis_like(root, n_patches=10, size=SIZE, n_dates=(4, 7), seed=3)


def copy_of(written, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(written["root"], root)
    return root


def independent_norm(root: Path, folds) -> tuple[np.ndarray, np.ndarray]:
    stats = json.loads((root / "NORM_S2_patch.json").read_text())
    mean = np.mean([stats[f"Fold_{f}"]["mean"] for f in folds], axis=0)
    std = np.mean([stats[f"Fold_{f}"]["std"] for f in folds], axis=0)
    return mean, std


def test_round_trip_equals_written_arrays(written):
    folds = (1, 2, 3)
    dataset = PASTISDataset(written["root"], folds=folds)
    assert dataset.patch_ids == sorted(i for i in written["ids"] if written["folds"][i] in folds)
    mean, std = independent_norm(written["root"], folds)
    for index, patch_id in enumerate(dataset.patch_ids):
        sample = dataset[index]
        raw = written["images"][patch_id].astype(np.float64)
        expected = (raw - mean[:, None, None]) / std[:, None, None]
        np.testing.assert_allclose(sample["image"].numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(sample["label"].numpy(), written["targets"][patch_id][0])
        days = [(d - REFERENCE).days for d in written["dates"][patch_id]]
        assert sample["days"].tolist() == days and sample["id"] == str(patch_id)
        red, nir = raw[:, 2], raw[:, 6]
        np.testing.assert_allclose(sample["ndvi"].numpy(), (nir - red) / (nir + red + 1e-6), atol=1e-5)
        assert sample["image"].dtype == torch.float32 and sample["label"].dtype == torch.int64


def test_norm_file_is_utae_compute_norm_vals(written):
    stats = json.loads((written["root"] / "NORM_S2_patch.json").read_text())
    for fold in set(written["folds"].values()):
        images = [written["images"][i].astype(np.float64) for i in written["ids"] if written["folds"][i] == fold]
        means = [img.transpose(1, 0, 2, 3).reshape(10, -1).mean(1) for img in images]  # (T,C,H,W) -> (C, THW)
        stds = [img.transpose(1, 0, 2, 3).reshape(10, -1).std(1, ddof=1) for img in images]
        np.testing.assert_allclose(stats[f"Fold_{fold}"]["mean"], np.mean(means, 0), rtol=1e-9)
        np.testing.assert_allclose(stats[f"Fold_{fold}"]["std"], np.mean(stds, 0), rtol=1e-9)


def test_evaluation_split_uses_training_fold_statistics(written):
    split = PASTIS_FOLD_SPLITS[0]
    test = PASTISDataset(written["root"], folds=split["test"], norm_folds=split["train"])
    mean, std = independent_norm(written["root"], split["train"])
    np.testing.assert_allclose(test.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(test.std, std, rtol=1e-6)
    for split in PASTIS_FOLD_SPLITS:
        assert set(split["test"]).isdisjoint(split["train"] + split["val"])
        train = PASTISDataset(written["root"], folds=split["train"])
        assert all(written["folds"][i] not in split["test"] for i in train.patch_ids)


def test_ids_must_belong_to_selected_folds_and_keep_duplicates(written):
    fold1 = [i for i in written["ids"] if written["folds"][i] == 1]
    other = next(i for i in written["ids"] if written["folds"][i] != 1)
    dataset = PASTISDataset(written["root"], folds=[1], ids=[fold1[0], fold1[0]])
    assert dataset.patch_ids == [fold1[0], fold1[0]]
    with pytest.raises(DataError, match=f"ids not in folds.*{other}"):
        PASTISDataset(written["root"], folds=[1], ids=[fold1[0], other])


def test_crops_grid_cells_random(written):
    grid = PASTISDataset(written["root"], folds=[1], crop_size=8, crop_mode="grid")
    n_patches = len(PASTISDataset(written["root"], folds=[1]))
    assert len(grid) == n_patches * (SIZE // 8) ** 2
    cells = PASTISDataset(written["root"], folds=[1], crop_size=8, crop_mode="cells", cells=[(0, 0), (1, 1)])
    first = cells.patch_ids[0]
    assert [cells[0]["id"], cells[1]["id"]] == [f"{first}@0,0", f"{first}@8,8"]
    np.testing.assert_array_equal(cells[1]["label"].numpy(), written["targets"][first][0, 8:16, 8:16])
    rand = PASTISDataset(written["root"], folds=[1], crop_size=8, seed=5)
    ids_epoch0 = [rand[i]["id"] for i in range(len(rand))]
    assert ids_epoch0 == [rand[i]["id"] for i in range(len(rand))]  # reproducible
    rand.set_epoch(1)
    assert ids_epoch0 != [rand[i]["id"] for i in range(len(rand))]
    row, col = (int(v) for v in ids_epoch0[0].split("@")[1].split(","))
    np.testing.assert_array_equal(rand.dominant_classes().shape, (len(rand),))
    rand.set_epoch(0)
    np.testing.assert_array_equal(rand[0]["label"].numpy(), written["targets"][first][0, row:row + 8, col:col + 8])


def test_mmap_off_and_temporal_subset(written):
    on = PASTISDataset(written["root"], folds=[2], crop_size=8, crop_mode="grid")
    off = PASTISDataset(written["root"], folds=[2], crop_size=8, crop_mode="grid", mmap=False)
    np.testing.assert_array_equal(on[3]["image"].numpy(), off[3]["image"].numpy())
    first2 = PASTISDataset(written["root"], folds=[2], temporal=TemporalSubset("first", n=2))
    full = on.__class__(written["root"], folds=[2])
    assert first2[0]["image"].shape[0] == 2
    np.testing.assert_array_equal(first2[0]["image"].numpy(), full[0]["image"][:2].numpy())
    assert first2[0]["days"].tolist() == full[0]["days"][:2].tolist()


def test_class_attributes():
    assert PASTISDataset.num_classes == 20 and PASTISDataset.ignore_index == 19
    assert PASTISDataset.background_index == 0 and PASTISDataset.in_channels == 10
    assert PASTISDataset.band_names[PASTISDataset.red_index] == "B04"
    assert PASTISDataset.band_names[PASTISDataset.nir_index] == "B08"


def test_real_side_files_match_constants():
    names = json.loads((REAL_META / "label_names.json").read_text())
    assert [names[str(k)] for k in range(len(names))] == PASTIS_CLASSES
    colours = [tuple(float(v) for v in line.strip().rstrip(",").strip("()").split(","))
               for line in (REAL_META / "colormap.txt").read_text().splitlines() if line.strip()]
    assert colours == [tuple(float(v) for v in rgb) for rgb in PASTIS_COLORMAP]


def test_real_metadata_and_norm_round_trip(tmp_path):
    metas = read_pastis_metadata(REAL_META / "metadata.geojson")
    assert [m.patch_id for m in metas] == [10000, 10001, 10002, 10003, 10004, 10005, 10006, 10007, 10009]
    assert all(len(m.dates) == 43 and m.tile == "30UXV" for m in metas)
    assert metas[0].dates[0] == datetime.date(2018, 9, 24) and list(metas[0].dates) == sorted(metas[0].dates)
    written = write_pastis_like(tmp_path, size=8, metadata=REAL_META / "metadata.geojson", seed=1)
    shutil.copyfile(REAL_META / "NORM_S2_patch.json", tmp_path / "NORM_S2_patch.json")
    dataset = PASTISDataset(tmp_path, folds=[1])
    assert dataset.patch_ids == [10000, 10007]
    mean, std = independent_norm(REAL_META, [1])
    for index, patch_id in enumerate(dataset.patch_ids):
        sample = dataset[index]
        expected = (written["images"][patch_id] - mean[:, None, None]) / std[:, None, None]
        np.testing.assert_allclose(sample["image"].numpy(), expected, rtol=1e-5, atol=1e-5)
        meta = next(m for m in metas if m.patch_id == patch_id)
        assert sample["days"].tolist() == [(d - REFERENCE).days for d in meta.dates]


def test_dates_given_as_json_string(tmp_path):
    collection = json.loads((REAL_META / "metadata.geojson").read_text())
    for feature in collection["features"]:
        feature["properties"]["dates-S2"] = json.dumps(feature["properties"]["dates-S2"])
    path = tmp_path / "meta.geojson"
    path.write_text(json.dumps(collection))
    direct = read_pastis_metadata(REAL_META / "metadata.geojson")
    assert read_pastis_metadata(path) == direct


# ---- corrupted and missing files: one-line DataError naming the file ----
def first_id(root: Path, fold: int = 1) -> int:
    return next(m.patch_id for m in read_pastis_metadata(root / "metadata.geojson") if m.fold == fold)


def corrupt(root: Path, case: str) -> str:
    """Damage one file of the copy; returns the file name the message must contain."""
    patch_id = first_id(root)
    s2, target = root / "DATA_S2" / f"S2_{patch_id}.npy", root / "ANNOTATIONS" / f"TARGET_{patch_id}.npy"
    meta_path = root / "metadata.geojson"
    if case == "missing_geojson":
        meta_path.unlink()
        return "metadata.geojson"
    if case == "bad_geojson":
        meta_path.write_text("{not json")
        return "metadata.geojson"
    if case == "missing_norm":
        (root / "NORM_S2_patch.json").unlink()
        return "NORM_S2_patch.json"
    if case == "missing_npy":
        s2.unlink()
        return s2.name
    if case == "truncated_npy":
        s2.write_bytes(s2.read_bytes()[:200])
        return s2.name
    if case == "garbage_npy":
        target.write_bytes(b"\x00not an npy file at all")
        return target.name
    data = np.load(s2)
    if case == "wrong_dtype":
        np.save(s2, data.astype(np.float64))
        return s2.name
    if case == "wrong_bands":
        np.save(s2, data[:, :9])
        return s2.name
    if case == "wrong_T":
        np.save(s2, data[:-1])
        return s2.name
    if case == "empty_T":
        np.save(s2, data[:0])
        return s2.name
    collection = json.loads(meta_path.read_text())
    feature = next(f for f in collection["features"] if f["properties"]["ID_PATCH"] == patch_id)
    if case == "missing_dates":
        del feature["properties"]["dates-S2"]
        meta_path.write_text(json.dumps(collection))
        return "metadata.geojson"
    raise AssertionError(case)


CASES = ["missing_geojson", "bad_geojson", "missing_norm", "missing_npy", "truncated_npy", "garbage_npy",
         "wrong_dtype", "wrong_bands", "wrong_T", "empty_T", "missing_dates"]


@pytest.mark.parametrize("case", CASES)
def test_corrupted_files_raise_one_line_data_error(written, tmp_path, case):
    root = copy_of(written, tmp_path)
    name = corrupt(root, case)
    with pytest.raises(DataError) as info:
        PASTISDataset(root, folds=[1])
    message = str(info.value)
    assert name in message and "\n" not in message, message


def test_label_out_of_range_and_target_dtype_cast(written, tmp_path):
    root = copy_of(written, tmp_path)
    patch_id = first_id(root)
    target_path = root / "ANNOTATIONS" / f"TARGET_{patch_id}.npy"
    target = np.load(target_path)
    np.save(target_path, target.astype(np.int16))  # the release mixes uint8 and 2-byte targets
    dataset = PASTISDataset(root, folds=[1])
    np.testing.assert_array_equal(dataset[0]["label"].numpy(), target[0])
    target[0, 0, 0] = 42
    np.save(target_path, target)
    with pytest.raises(DataError, match=f"TARGET_{patch_id}.npy.*0..19"):
        PASTISDataset(root, folds=[1])[0]


def test_missing_root_and_empty_folds(written, tmp_path):
    with pytest.raises(DataError, match="not found"):
        PASTISDataset(tmp_path / "nowhere", folds=[1])
    root = copy_of(written, tmp_path)
    collection = json.loads((root / "metadata.geojson").read_text())
    collection["features"] = [f for f in collection["features"] if f["properties"]["Fold"] != 5]
    (root / "metadata.geojson").write_text(json.dumps(collection))
    with pytest.raises(DataError, match="metadata.geojson: no patches in folds"):
        PASTISDataset(root, folds=[5], norm_folds=[1])


def test_dominant_classes_mark_crops_without_a_crop_pixel_unscored(written, tmp_path):
    from utils.datasets.pastis import target_path
    from utils.datasets.protocols import UNSCORED, label_ratio_subset

    root = copy_of(written, tmp_path)
    dataset = PASTISDataset(root, folds=[1, 2, 3, 4, 5], crop_size=8, crop_mode="grid")
    first = dataset.patch_ids[0]
    target = np.load(target_path(root, first))
    target[0] = 0  # background only ...
    target[0, :8, 8:] = PASTISDataset.ignore_index  # ... and one crop of void only
    np.save(target_path(root, first), target)
    classes = PASTISDataset(root, folds=[1, 2, 3, 4, 5], crop_size=8, crop_mode="grid").dominant_classes()
    for index, sample_id in enumerate(dataset[i]["id"] for i in range(len(dataset))):
        patch, _, cell = sample_id.partition("@")
        row, col = (int(v) for v in cell.split(","))
        label = target[0] if int(patch) == first else written["targets"][int(patch)][0]
        crop = label[row:row + 8, col:col + 8].ravel()
        crop = crop[(crop != 0) & (crop != PASTISDataset.ignore_index)]
        expected = np.bincount(crop).argmax() if crop.size else UNSCORED
        assert classes[index] == expected, sample_id
    assert (classes == UNSCORED).sum() >= 4  # the four crops of the emptied patch
    for ratio in (0.1, 0.5, 1.0):
        assert (classes[label_ratio_subset(classes, ratio, seed=0)] != UNSCORED).all()


@pytest.mark.parametrize(
    "case, words",
    [
        ("fold_9", "has Fold 9"),
        ("dates_as_list", "dates-S2 is a list"),
        ("tiny_std", "stds of (almost) zero"),
    ],
)
def test_inputs_that_were_accepted_silently_are_one_line_errors(written, tmp_path, case, words):
    root = copy_of(written, tmp_path)
    meta_path = root / "metadata.geojson"
    collection = json.loads(meta_path.read_text())
    feature = next(f for f in collection["features"] if f["properties"]["ID_PATCH"] == first_id(root))
    if case == "fold_9":
        feature["properties"]["Fold"] = 9
    elif case == "dates_as_list":
        feature["properties"]["dates-S2"] = list(feature["properties"]["dates-S2"].values())
    meta_path.write_text(json.dumps(collection))
    if case == "tiny_std":
        norm = json.loads((root / "NORM_S2_patch.json").read_text())
        norm["Fold_1"]["std"][3] = 1e-30
        (root / "NORM_S2_patch.json").write_text(json.dumps(norm))
    with pytest.raises(DataError) as info:
        PASTISDataset(root, folds=[1])
    message = str(info.value)
    assert words in message and "\n" not in message, message
