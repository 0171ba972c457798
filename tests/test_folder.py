"""The folder format (``--dataset folder``) and its converter: files, folds, statistics, samples, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.region_fakes import BANDS, EPSG_UTM31N, ORIGIN, PIXEL_SIZE, make_scene, write_geotiff_scene, write_ndvi_cube
from utils.data_folder import folder_protocols
from utils.datasets.convert import block_folds
from utils.datasets.convert import main as convert_main
from utils.datasets.folder import DATASET_FILE, NO_LABEL, FolderDataset, read_dataset_json
from utils.datasets.pastis import NORM_FILE, read_pastis_metadata, s2_path, target_path
from utils.errors import DataError
from utils.masking import MaskingConfig, eligible_frames

PATCH = 8
SIZE = 40  # 5 x 5 patches; --fold_block 1 gives 9 blocks for 5 folds


@pytest.fixture(scope="module")
def scene():
    return make_scene(size=SIZE, n_dates=5)


@pytest.fixture(scope="module")
def converted(scene, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("folder")
    label = write_geotiff_scene(tmp / "tifs", scene)
    out = tmp / "ds"
    status = convert_main(
        [
            "--geotiff_dir",
            str(tmp / "tifs"),
            "--label",
            str(label),
            "--out",
            str(out),
            "--band_names",
            *BANDS,
            "--patch_size",
            str(PATCH),
            "--fold_block",
            "1",
            "--class_names",
            "background",
            "a",
            "b",
            "c",
            "d",
            "--background_index",
            "0",
        ]
    )
    assert status == 0
    return out


def test_convert_writes_every_patch_with_its_fold_and_footprint(scene, converted):
    spec = json.loads((converted / DATASET_FILE).read_text())
    assert spec["red_band"] == "B04" and spec["nir_band"] == "B08"
    assert spec["reflectance_scale"] == 10000.0  # integer source
    grid = spec["georeferencing"]  # the CRS and transform the GeoKeys and tie point of the source declare
    assert grid["epsg"] == EPSG_UTM31N and "UTM zone 31N" in grid["crs"]
    assert grid["transform"] == [PIXEL_SIZE, 0.0, ORIGIN[0], 0.0, -PIXEL_SIZE, ORIGIN[1]]
    assert (grid["height"], grid["width"]) == (SIZE, SIZE)
    metas = read_pastis_metadata(converted / "metadata.geojson")
    features = {
        f["properties"]["ID_PATCH"]: f for f in json.loads((converted / "metadata.geojson").read_text())["features"]
    }
    folds = block_folds(SIZE // PATCH, SIZE // PATCH, 1, 5, 0)
    assert len(metas) == folds.size
    for meta in metas:
        props = features[meta.patch_id]["properties"]
        row, col = props["ROW"], props["COL"]
        assert meta.fold == folds[row // PATCH, col // PATCH]
        assert meta.dates == tuple(scene["dates"])
        np.testing.assert_array_equal(
            np.load(s2_path(converted, meta.patch_id)), scene["cube"][:, :, row : row + PATCH, col : col + PATCH]
        )
        np.testing.assert_array_equal(
            np.load(target_path(converted, meta.patch_id)), scene["label"][row : row + PATCH, col : col + PATCH]
        )
        ring = features[meta.patch_id]["geometry"]["coordinates"][0]
        assert ring[0] == [ORIGIN[0] + col * PIXEL_SIZE, ORIGIN[1] - row * PIXEL_SIZE]
        assert ring[2] == [ORIGIN[0] + (col + PATCH) * PIXEL_SIZE, ORIGIN[1] - (row + PATCH) * PIXEL_SIZE]


def convert_unlabelled(tmp_path: Path) -> int:
    """Convert ``tmp_path/tifs`` without labels into ``tmp_path/ds``."""
    return convert_main(
        ["--geotiff_dir", str(tmp_path / "tifs"), "--out", str(tmp_path / "ds"), "--patch_size", str(PATCH)]
        + ["--fold_block", "1"]
    )


def test_interleaved_geotiffs_give_the_same_patches(scene, converted, tmp_path):
    write_geotiff_scene(tmp_path / "tifs", scene, interleaved=True)
    assert convert_unlabelled(tmp_path) == 0
    assert not (tmp_path / "ds" / "ANNOTATIONS").exists()  # no label given
    for patch_id in (1, 7, 25):
        np.testing.assert_array_equal(
            np.load(s2_path(tmp_path / "ds", patch_id)), np.load(s2_path(converted, patch_id))
        )


@pytest.mark.parametrize("rows,cols,block,n_folds", [(5, 5, 1, 5), (20, 17, 4, 5), (30, 30, 3, 4), (9, 40, 2, 5)])
def test_block_folds_never_put_different_folds_side_by_side(rows, cols, block, n_folds):
    folds = block_folds(rows, cols, block, n_folds, seed=3)
    assert set(np.unique(folds)) == set(range(n_folds + 1))
    for (row, col), fold in np.ndenumerate(folds):
        neighbours = folds[max(0, row - 1) : row + 2, max(0, col - 1) : col + 2]  # 8-neighbourhood and itself
        if fold > 0:
            assert set(np.unique(neighbours)) <= {0, fold}, (row, col)
    blocks = {fold: set() for fold in range(1, n_folds + 1)}
    for (row, col), fold in np.ndenumerate(folds):
        if fold > 0:
            blocks[fold].add((row // (block + 1), col // (block + 1)))
    per_fold = [len(ids) for ids in blocks.values()]
    assert max(per_fold) - min(per_fold) <= 1  # blocks are dealt round-robin


def test_block_folds_refuse_a_scene_with_fewer_blocks_than_folds():
    with pytest.raises(DataError, match="--n_folds 5"):
        block_folds(3, 3, 1, 5, 0)  # 4 blocks


def test_norm_statistics_are_computed_from_the_files_then_read_from_the_cache(converted):
    (converted / NORM_FILE).unlink(missing_ok=True)
    dataset = FolderDataset(converted, folds=[1, 2], norm_folds=[1, 2])
    assert (converted / NORM_FILE).is_file()
    per_fold = {}
    for meta in read_pastis_metadata(converted / "metadata.geojson"):
        image = np.load(s2_path(converted, meta.patch_id)).astype(np.float64)
        flat = image.transpose(1, 0, 2, 3).reshape(image.shape[1], -1)  # (T, C, H, W) -> (C, T*H*W)
        per_fold.setdefault(meta.fold, []).append((flat.mean(1), flat.std(1, ddof=1)))
    expected = [np.mean([np.mean([s[i] for s in per_fold[f]], axis=0) for f in (1, 2)], axis=0) for i in (0, 1)]
    np.testing.assert_allclose(dataset.mean, expected[0], rtol=1e-6)
    np.testing.assert_allclose(dataset.std, expected[1], rtol=1e-6)
    stats = json.loads((converted / NORM_FILE).read_text())
    assert sorted(stats) == [f"Fold_{f}" for f in range(6)]
    stats["Fold_3"]["mean"] = [1.0, 2.0, 3.0, 4.0]
    (converted / NORM_FILE).write_text(json.dumps(stats))
    np.testing.assert_allclose(FolderDataset(converted, folds=[3]).mean, [1.0, 2.0, 3.0, 4.0])
    (converted / NORM_FILE).unlink()


def test_samples_follow_the_contract(converted):
    dataset = FolderDataset(converted, folds=[1], crop_size=None)
    sample = dataset[0]
    meta = dataset.patches[0].meta
    raw = np.load(s2_path(converted, meta.patch_id)).astype(np.float32)
    np.testing.assert_allclose(
        sample["image"].numpy(), (raw - dataset.mean[:, None, None]) / dataset.std[:, None, None], rtol=1e-5, atol=1e-6
    )
    red, nir = raw[:, BANDS.index("B04")] / 1e4, raw[:, BANDS.index("B08")] / 1e4
    np.testing.assert_allclose(sample["ndvi"].numpy(), (nir - red) / (nir + red + 1e-6), rtol=1e-5, atol=1e-6)
    assert sample["days"].tolist() == [(d - dataset.reference_date).days for d in meta.dates]
    assert dataset.reference_date.isoformat() == json.loads((converted / DATASET_FILE).read_text())["reference_date"]
    np.testing.assert_array_equal(sample["label"].numpy(), np.load(target_path(converted, meta.patch_id)))
    assert sample["image"].dtype == torch.float32 and sample["label"].dtype == torch.int64
    unlabelled = FolderDataset(converted, folds=[1], labels=False)[0]["label"]
    assert (unlabelled == NO_LABEL).all()


def test_one_band_ndvi_series_gates_on_its_ndvi_band_and_other_bands_turn_the_gate_off(scene, tmp_path):
    paths = write_ndvi_cube(tmp_path / "src", scene)
    common = [
        "--cube",
        str(paths["cube"]),
        "--dates",
        str(paths["dates"]),
        "--label",
        str(paths["label"]),
        "--patch_size",
        str(PATCH),
        "--fold_block",
        "1",
        "--ignore_index",
        "0",
    ]
    assert convert_main([*common, "--out", str(tmp_path / "ds"), "--band_names", "NDVI"]) == 0
    spec = read_dataset_json(tmp_path / "ds")
    assert (spec.red_index, spec.nir_index, spec.ndvi_index, spec.reflectance_scale) == (None, None, 0, 1.0)
    assert spec.ndvi_gate
    dataset = FolderDataset(tmp_path / "ds", folds=[1, 2, 3])
    meta = dataset.patches[0].meta
    raw = np.load(s2_path(tmp_path / "ds", meta.patch_id))  # (T, 1, P, P) NDVI as written
    assert dataset.in_channels == 1
    np.testing.assert_array_equal(dataset[0]["ndvi"].numpy(), raw[:, 0])  # the gate reads the NDVI band itself
    # a band that is not NDVI: no red/NIR, no NDVI band, the gate is off
    assert convert_main([*common, "--out", str(tmp_path / "other"), "--band_names", "VV"]) == 0
    spec = read_dataset_json(tmp_path / "other")
    assert (spec.ndvi_index, spec.ndvi_gate) == (None, False)
    assert not FolderDataset(tmp_path / "other", folds=[1, 2, 3])[0]["ndvi"].any()
    config = MaskingConfig(ndvi_gate=False)
    pad_mask = torch.tensor([[False, False, True]])
    assert eligible_frames(torch.zeros(1, 3, 4, 4), pad_mask, config).tolist() == [[True, True, False]]
    assert not eligible_frames(torch.zeros(1, 3, 4, 4), None, MaskingConfig()).any()  # the gate would refuse all


def test_protocols_score_the_declared_classes(converted):
    spec = read_dataset_json(converted)
    protocols = folder_protocols(spec)
    assert protocols["stcln"].eval_classes == (1, 2, 3, 4)  # background 0 excluded, no ignored class
    assert protocols["utae"].eval_classes == (0, 1, 2, 3, 4) and protocols["utae"].zeroed_classes == ()


def _edit(root: Path, change) -> None:
    spec = json.loads((root / DATASET_FILE).read_text())
    change(spec)
    (root / DATASET_FILE).write_text(json.dumps(spec))


BAD_SPECS = {
    "band_names": lambda s: s.pop("band_names"),
    "red_band": lambda s: s.update(red_band="B05"),
    "nir_band": lambda s: s.update(nir_band=None),
    "classes": lambda s: s.update(classes="wheat"),
    "ignore_index": lambda s: s.update(ignore_index=7),
    "background_index": lambda s: s.update(background_index="0"),
    "reflectance_scale": lambda s: s.update(reflectance_scale=0),
    "reference_date": lambda s: s.update(reference_date="2019-13-01"),
    "splits.test": lambda s: s["splits"].update(test=[]),
    "colormap": lambda s: s.update(colormap=[[0, 0, 0]]),
}


@pytest.mark.parametrize("field", sorted(BAD_SPECS))
def test_bad_dataset_json_names_the_file_and_the_field(field, converted, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(converted, root)
    _edit(root, BAD_SPECS[field])
    with pytest.raises(DataError) as err:
        read_dataset_json(root)
    message = str(err.value)
    assert DATASET_FILE in message and f"'{field}'" in message and "\n" not in message


def test_unlabelled_folder_is_for_pretraining_only(scene, tmp_path):
    write_geotiff_scene(tmp_path / "tifs", scene)
    assert convert_unlabelled(tmp_path) == 0
    folds = block_folds(SIZE // PATCH, SIZE // PATCH, 1, 5, 0)
    assert len(FolderDataset(tmp_path / "ds", folds=[0, 1], labels=False)) == np.isin(folds, [0, 1]).sum()
    with pytest.raises(DataError, match="'classes' is null"):
        FolderDataset(tmp_path / "ds", folds=[1])
