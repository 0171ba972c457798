"""The real Sentinel-2 scene of tests/data/eopatch_slovenia as a user has it: convert -> pre-train ->
fine-tune -> predict (--smoke), and the converter's rules for real archives checked against the files.

The expected values are computed here from the GeoTIFFs themselves (tifffile), independently of the
converter's code path.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import predict_STCLN
import pretrain_STCLN
from utils import finetune
from utils.datasets.convert import main as convert_main
from utils.datasets.folder import FolderDataset, read_dataset_json, valid_path
from utils.datasets.pastis import read_pastis_metadata, s2_path, target_path

SCENE = Path(__file__).parent / "data" / "eopatch_slovenia"
IMAGES, CLOUDS = SCENE / "geotiff_folder", SCENE / "cloud_masks"
LABEL = IMAGES / "labels_LULC.tif"
TWO_ON_ONE_DAY = ("S2A_MSIL1C_20151208T100409_NDVI.tif", "S2A_MSIL1C_20151208T101125_NDVI.tif")
PATCH = 8
SMOKE = ["--smoke", "--epochs", "1", "--no_progress", "--num_workers", "0"]


def read(path: Path) -> np.ndarray:
    return tifffile.imread(path)


def images() -> list[Path]:
    return sorted(IMAGES.glob("S2A_*_NDVI.tif"))


def cloud_of(image: Path) -> Path:
    return CLOUDS / image.name.replace("_NDVI", "_CLM")


def convert(out: Path, *extra: str, source: Path = IMAGES, clouds: Path | None = CLOUDS) -> int:
    argv = [
        "--geotiff_dir",
        str(source),
        "--label",
        str(LABEL),
        "--out",
        str(out),
        "--patch_size",
        str(PATCH),
        "--fold_block",
        "2",
        *extra,
    ]
    return convert_main(argv + (["--cloud_dir", str(clouds)] if clouds else []))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real") / "slovenia"
    assert convert(out) == 0  # the folder as shipped: the label inside, two acquisitions on 2015-12-08
    return out


def patches(root: Path) -> list[tuple[int, int, int]]:
    """(ID_PATCH, ROW, COL) of every written patch, from metadata.geojson."""
    features = json.loads((root / "metadata.geojson").read_text())["features"]
    return [(f["properties"]["ID_PATCH"], f["properties"]["ROW"], f["properties"]["COL"]) for f in features]


def first_of_fold(root: Path, fold: int) -> int:
    return next(meta.patch_id for meta in read_pastis_metadata(root / "metadata.geojson") if meta.fold == fold)


def scene_cube(root: Path, name: str) -> np.ndarray:
    """Reassemble the (T, H', W') scene of the written patches (S2 series or validity)."""
    written = patches(root)
    rows, cols = max(r for _, r, _ in written) + PATCH, max(c for _, _, c in written) + PATCH
    first = np.load(s2_path(root, written[0][0]))
    cube = np.zeros((first.shape[0], rows, cols), dtype=np.float64)
    for patch_id, row, col in written:
        path = s2_path(root, patch_id) if name == "s2" else valid_path(root, patch_id)
        patch = np.load(path)
        cube[:, row : row + PATCH, col : col + PATCH] = patch[:, 0] if name == "s2" else patch
    return cube


def test_the_shipped_folder_converts_with_labels_inside_two_acquisitions_a_day_and_nodata(converted):
    spec = read_dataset_json(converted)
    raw = json.loads((converted / "dataset.json").read_text())
    assert spec.band_names == ("NDVI",) and raw["ndvi_band"] == "NDVI"  # the GeoTIFF band description
    assert spec.ignore_index == 0 and spec.classes[0] == "nodata" and len(spec.classes) == 9  # GDAL nodata 0
    assert spec.valid_masks
    metas = read_pastis_metadata(converted / "metadata.geojson")
    dates = sorted({d for m in metas for d in m.dates})
    assert len(dates) == 67 and len(metas) == 144  # 68 acquisitions, two on one day; 12 x 12 patches of 8 px
    files = images()
    label = read(LABEL)
    for patch_id, row, col in patches(converted):
        window = (slice(row, row + PATCH), slice(col, col + PATCH))
        np.testing.assert_array_equal(np.load(target_path(converted, patch_id)), label[window])
    series, valid = scene_cube(converted, "s2"), scene_cube(converted, "valid")
    h, w = series.shape[1:]
    day = dates.index(next(d for d in dates if d.isoformat() == "2015-12-08"))
    others = [f for f in files if f.name not in TWO_ON_ONE_DAY]
    for t, path in enumerate(others[:day] + [None] + others[day:]):
        if path is None:
            continue
        np.testing.assert_array_equal(series[t], read(path)[:h, :w])
        np.testing.assert_array_equal(valid[t], read(cloud_of(path))[:h, :w] == 0)
    # the day of two acquisitions: per pixel the mean of the clear ones (of both where neither is clear)
    a, b = (read(IMAGES / name)[:h, :w].astype(np.float64) for name in TWO_ON_ONE_DAY)
    clear_a, clear_b = (read(cloud_of(IMAGES / name))[:h, :w] == 0 for name in TWO_ON_ONE_DAY)
    weight_a, weight_b = clear_a.astype(float), clear_b.astype(float)
    neither = ~clear_a & ~clear_b
    weight_a[neither], weight_b[neither] = 1.0, 1.0
    expected = ((a * weight_a + b * weight_b) / (weight_a + weight_b)).astype(np.float32)
    np.testing.assert_array_equal(series[day], expected)
    np.testing.assert_array_equal(valid[day], clear_a | clear_b)


def test_same_date_rules_first_clearest_and_error(tmp_path, capsys):
    h = w = 96
    assert convert(tmp_path / "first", "--same_date", "first") == 0
    assert convert(tmp_path / "clearest", "--same_date", "clearest") == 0
    a, b = (read(IMAGES / name) for name in TWO_ON_ONE_DAY)
    clear = [int((read(cloud_of(IMAGES / name)) == 0).sum()) for name in TWO_ON_ONE_DAY]
    clearest = (a, b)[int(np.argmax(clear))]
    day = 7  # 2015-12-08 is the 8th date
    np.testing.assert_array_equal(scene_cube(tmp_path / "first", "s2")[day], a[:h, :w])
    np.testing.assert_array_equal(scene_cube(tmp_path / "clearest", "s2")[day], clearest[:h, :w])
    capsys.readouterr()
    assert convert(tmp_path / "error", "--same_date", "error") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and TWO_ON_ONE_DAY[1] in err and "--same_date" in err
    assert convert(tmp_path / "no_clouds", "--same_date", "clearest", clouds=None) == 2
    assert "needs cloud information" in capsys.readouterr().err
    assert not (tmp_path / "error").exists() and not (tmp_path / "no_clouds").exists()


def test_label_nodata_can_be_kept_or_mapped_to_another_ignore_index(tmp_path):
    assert convert(tmp_path / "kept", "--keep_label_nodata", clouds=None) == 0
    spec = read_dataset_json(tmp_path / "kept")
    assert spec.ignore_index is None and spec.classes[0] == "class_0"
    names = ["unlabelled", "cultivated", "forest", "grassland", "shrubland", "water", "wetland", "tundra", "artificial"]
    assert convert(tmp_path / "named", "--class_names", *names, clouds=None) == 0
    spec = read_dataset_json(tmp_path / "named")
    assert spec.ignore_index == 0 and spec.classes == tuple(names)


def copy_scene(tmp_path: Path, n: int = 4) -> Path:
    folder = tmp_path / "scene"
    folder.mkdir()
    for path in images()[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def rewrite_with(path: Path, **changes) -> None:
    """Rewrite one GeoTIFF with its tags changed: epsg (projected CRS key) or shift_x (metres)."""
    with tifffile.TiffFile(path) as tif:
        data, tags = tif.asarray(), tif.pages[0].tags
        extratags = []
        for code in (33550, 33922, 34735, 34737):
            value = list(tags[code].value) if code != 34737 else tags[code].value
            if code == 33922 and "shift_x" in changes:
                value[3] += changes["shift_x"]
            if code == 34735 and "epsg" in changes:
                keys = {value[n]: n for n in range(4, len(value), 4)}
                if 3072 in keys:
                    value[keys[3072] + 3] = changes["epsg"]
                else:
                    value += [3072, 0, 1, changes["epsg"]]  # ProjectedCSTypeGeoKey
                    value[3] += 1
            extratags.append((code, tags[code].dtype, len(value) if code != 34737 else 0, value, True))
    tifffile.imwrite(path, data, extratags=extratags, photometric="minisblack")


@pytest.mark.parametrize("change, words", [({"epsg": 32632}, "CRS EPSG:32632"), ({"shift_x": 1920.0}, "grid origin")])
def test_a_date_from_another_place_is_refused_naming_the_file(tmp_path, capsys, change, words):
    folder = copy_scene(tmp_path)
    for path in images()[:4]:
        rewrite_with(folder / path.name, epsg=32633)  # every date declares its EPSG code
    odd = folder / images()[2].name
    rewrite_with(odd, **change)
    assert convert_main(["--geotiff_dir", str(folder), "--out", str(tmp_path / "out"), "--patch_size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and odd.name in err and words in err
    assert not (tmp_path / "out").exists()


def test_a_missing_cloud_file_is_one_line_naming_the_image(tmp_path, capsys):
    clouds = tmp_path / "clouds"
    shutil.copytree(CLOUDS, clouds)
    missing = images()[5]
    (clouds / cloud_of(missing).name).unlink()
    assert convert(tmp_path / "out", clouds=clouds) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and missing.name in err and "no cloud file" in err


def test_real_scene_pretrain_finetune_predict_with_clouds(converted, tmp_path):
    """CI's real-data path: pre-train (clouds never targets), fine-tune with --drop_invalid, map the scene."""
    data = ["--dataset", "folder", "--data_root", str(converted), "--temporal", "first:12"]  # seconds, not minutes
    assert (
        pretrain_STCLN.main(data + SMOKE + ["--folds", "1", "--hide_invalid", "--output_dir", str(tmp_path / "pt")])
        == 0
    )
    backbone = tmp_path / "pt" / "checkpoint_0.stcln.tar"
    out = tmp_path / "ft"
    assert (
        finetune.main(
            "folder",
            "folder fine-tuning",
            data + SMOKE + ["--drop_invalid", "--output_dir", str(out), "--pretrain_pth", str(backbone)],
        )
        == 0
    )
    metrics = json.loads((out / "test_stcln" / "metrics.json").read_text())
    assert 0 not in [row["index"] for row in metrics["metrics"]["per_class"]]  # nodata never scored
    assert json.loads((out / "config.json").read_text())["drop_invalid"] is True
    ckpt = torch.load(out / "best.tar", map_location="cpu", weights_only=True)
    assert ckpt["model_config"]["use_valid_mask"] is True
    maps = tmp_path / "map"
    assert (
        predict_STCLN.main(
            [
                "--checkpoint",
                str(out / "best.tar"),
                "--geotiff_dir",
                str(IMAGES),
                "--cloud_dir",
                str(CLOUDS),
                "--output_dir",
                str(maps),
                "--stride",
                "8",
                "--batch_size",
                "64",
                "--no_progress",
            ]
        )
        == 0
    )
    with tifffile.TiffFile(maps / "class_map.tif") as tif, tifffile.TiffFile(LABEL) as reference:
        class_map = tif.asarray()
        assert tif.pages[0].tags[33922].value == reference.pages[0].tags[33922].value  # the scene's grid
    assert class_map.shape == (101, 100)
    areas = json.loads((maps / "areas.json").read_text())
    assert areas["pixel_area_m2"] == pytest.approx(9.99479222007154 * 9.997448467363668)
    assert sum(row["hectares"] for row in areas["classes"]) == pytest.approx(101 * 100 * areas["pixel_area_m2"] / 1e4)


def test_folder_samples_carry_the_written_validity(converted):
    dataset = FolderDataset(converted, folds=[1], crop_size=None)
    sample = dataset[0]
    meta = dataset.patches[0].meta
    np.testing.assert_array_equal(sample["valid"].numpy(), np.load(valid_path(converted, meta.patch_id)) != 0)
    assert sample["valid"].shape == sample["ndvi"].shape


def test_forest_features_span_the_whole_series_and_skip_cloudy_dates():
    from experiments.label_efficiency import pixel_features, rf_grid

    generator = torch.Generator().manual_seed(0)
    days = torch.tensor([200, 400, 700, 1000])  # a series over three years, as the real scene
    sample = {
        "image": torch.randn(4, 2, 3, 3, generator=generator),
        "days": days,
        "valid": torch.ones(4, 3, 3, dtype=torch.bool),
    }
    grid = rf_grid([sample])
    assert grid[0] == 0 and grid[-1] >= 990 and np.all(np.diff(grid) == 15)  # not only the first year
    everywhere = pixel_features(sample, grid)
    without = pixel_features({k: v for k, v in sample.items() if k != "valid"}, grid)
    np.testing.assert_allclose(everywhere, without, rtol=1e-6, atol=1e-6)  # all clear: the plain interpolation
    sample["valid"][1, 0, 0] = False  # pixel (0, 0) clouded on day 400: interpolated from days 200 and 700
    features = pixel_features(sample, grid).reshape(9, len(grid), 2)  # (HW, G*C) -> (HW, G, C)
    image = sample["image"].numpy()
    for band in range(2):
        expected = np.interp(grid, [200, 700, 1000], image[[0, 2, 3], band, 0, 0])
        np.testing.assert_allclose(features[0, :, band], expected, rtol=1e-6)
    np.testing.assert_allclose(features[1:], everywhere.reshape(9, len(grid), 2)[1:])  # other pixels unchanged


# --- bad inputs on the real-data paths: one line naming the file and the problem, exit 2, before work ---


def edit_dataset_json(root: Path, tmp_path: Path, **fields) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    spec = json.loads((copy / "dataset.json").read_text()) | fields
    (copy / "dataset.json").write_text(json.dumps(spec))
    return copy


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"colormap": [[999, 0, 0]] * 9}, "field 'colormap' values must lie in 0..1 or 0..255"),
        ({"classes": ["nodata", "a", "a", "b", "c", "d", "e", "f", "g"]}, "names ['a'] more than once"),
        ({"splits": {"train": [1, 2], "val": [7], "test": [4]}}, "field 'splits.val' names fold(s) [7]"),
    ],
)
def test_a_bad_dataset_json_is_refused_before_training(converted, tmp_path, capsys, fields, words):
    root = edit_dataset_json(converted, tmp_path, **fields)
    argv = ["--dataset", "folder", "--data_root", str(root), "--output_dir", str(tmp_path / "ft")] + SMOKE
    assert finetune.main("folder", "folder fine-tuning", argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset.json" in err and words in err
    assert not (tmp_path / "ft" / "last.tar").exists()


@pytest.fixture(scope="module")
def tiny_model(converted, tmp_path_factory) -> Path:
    """A --drop_invalid model fine-tuned for one smoke epoch on the first 12 dates (for the prediction cases)."""
    out = tmp_path_factory.mktemp("tiny_model")
    argv = [
        "--dataset",
        "folder",
        "--data_root",
        str(converted),
        "--temporal",
        "first:12",
        "--drop_invalid",
        "--output_dir",
        str(out),
    ] + SMOKE
    assert finetune.main("folder", "folder fine-tuning", argv) == 0
    return out / "best.tar"


def nan_cube(tmp_path: Path, on_cloud: bool) -> tuple[Path, Path, Path]:
    """The scene as a cube with one NaN pixel, on a cloudy cell (on_cloud) or on a clear one."""
    files = [path for path in images() if path.name != TWO_ON_ONE_DAY[1]][:12]  # one acquisition per date
    cube = np.stack([read(path)[None] for path in files])  # 12 x (1, H, W) -> (12, 1, H, W)
    clouds = np.stack([read(cloud_of(path)) for path in files])  # (12, H, W)
    t, row, col = np.argwhere(clouds == (1 if on_cloud else 0))[0]
    cube[t, 0, row, col] = np.nan
    paths = tmp_path / "cube.npy", tmp_path / "dates.txt", tmp_path / "clouds.npy"
    np.save(paths[0], cube)
    np.save(paths[2], clouds)
    paths[1].write_text("\n".join(f"{p.name[11:15]}-{p.name[15:17]}-{p.name[17:19]}" for p in files))
    return paths


def predict_cube(model: Path, paths: tuple[Path, Path, Path], out: Path) -> int:
    cube, dates, clouds = paths
    return predict_STCLN.main(
        [
            "--checkpoint",
            str(model),
            "--cube",
            str(cube),
            "--dates",
            str(dates),
            "--cloud_cube",
            str(clouds),
            "--pixel_size_m",
            "10",
            "--no_progress",
            "--output_dir",
            str(out),
        ]
    )


def test_prediction_refuses_a_nan_the_model_would_read_and_maps_one_it_never_reads(tiny_model, tmp_path, capsys):
    paths = nan_cube(tmp_path, on_cloud=False)
    assert predict_cube(tiny_model, paths, tmp_path / "clear") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 pixel(s) with NaN" in err and str(paths[0]) in err
    assert not (tmp_path / "clear" / "class_map.npy").exists()
    (tmp_path / "cloudy").mkdir()
    paths = nan_cube(tmp_path / "cloudy", on_cloud=True)
    assert predict_cube(tiny_model, paths, tmp_path / "cloudy_map") == 0  # a --drop_invalid model never reads it
    assert np.load(tmp_path / "cloudy_map" / "class_map.npy").shape == (101, 100)


def predict_scene_argv(checkpoint: Path) -> list[str]:
    """predict_STCLN.py on the shipped scene with its clouds, windows of 8 px every 8 px (seconds)."""
    return [
        "--checkpoint",
        str(checkpoint),
        "--geotiff_dir",
        str(IMAGES),
        "--cloud_dir",
        str(CLOUDS),
        "--stride",
        "8",
        "--batch_size",
        "64",
        "--no_progress",
    ]


def test_prediction_keeps_one_run_per_output_folder(tiny_model, tmp_path, capsys):
    argv = predict_scene_argv(tiny_model) + ["--output_dir", str(tmp_path / "map")]
    assert predict_STCLN.main(argv) == 0
    before = (tmp_path / "map" / "class_map.tif").stat().st_mtime_ns
    assert predict_STCLN.main(argv) == 0  # the same run again: the finished map is kept, not redone
    assert (tmp_path / "map" / "class_map.tif").stat().st_mtime_ns == before
    capsys.readouterr()
    other = argv[: argv.index("--stride") + 1] + ["4"] + argv[argv.index("--stride") + 2 :]
    assert predict_STCLN.main(other) == 2  # another run (here: another stride) into the same folder
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err and "stride" in err and "class_map.tif" in err
    assert (tmp_path / "map" / "class_map.tif").stat().st_mtime_ns == before  # the first map untouched
    assert predict_STCLN.main(other + ["--overwrite"]) == 0
    assert (tmp_path / "map" / "class_map.tif").stat().st_mtime_ns != before
    (tmp_path / "file").write_text("")
    assert predict_STCLN.main(argv[:-1] + [str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        predict_STCLN.main(argv + ["--stride", "0"])
    assert stop.value.code == 2 and "--stride must be >= 1" in capsys.readouterr().err


def test_prediction_warns_about_dates_outside_the_training_series(tiny_model, tmp_path, caplog):
    paths = nan_cube(tmp_path, on_cloud=True)  # its NaN lies on a cloud: the map runs
    shifted = [line.replace("2015-", "2019-").replace("2016-", "2020-") for line in paths[1].read_text().splitlines()]
    paths[1].write_text("\n".join(shifted))
    with caplog.at_level("WARNING", logger="stcln"):
        assert predict_cube(tiny_model, paths, tmp_path / "map") == 0
    assert "12 of the scene's 12 dates lie outside the training series (2015-07-11 to 2017-12-22)" in caplog.text


def test_converter_refuses_what_dataset_json_would_carry_wrongly(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    cases = [
        (["--band_names", "NDVI", "NDVI"], "names must be distinct"),
        (["--reflectance_scale", "0"], "--reflectance_scale 0 must be a positive number"),
        (["--reference_date", "2019-02-30"], "--reference_date '2019-02-30' is not a valid ISO date"),
        (["--class_names", "a", "a"], "--class_names ['a', 'a']: names must be distinct"),
    ]
    for extra, words in cases:
        assert convert(tmp_path / "out", *extra, clouds=None) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert convert_main(["--geotiff_dir", str(IMAGES), "--out", str(tmp_path / "file"), "--patch_size", "8"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prediction_says_what_to_do_when_the_training_folder_moved(converted, tiny_model, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(converted, moved)
    checkpoint = torch.load(tiny_model, map_location="cpu", weights_only=True)
    checkpoint["args"]["data_root"] = str(tmp_path / "gone")
    torch.save(checkpoint, tmp_path / "best.tar")
    argv = predict_scene_argv(tmp_path / "best.tar")
    assert predict_STCLN.main(argv + ["--output_dir", str(tmp_path / "map")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gone: the checkpoint's training data folder is not there" in err
    assert "--data_root" in err
    assert predict_STCLN.main(argv + ["--output_dir", str(tmp_path / "map2"), "--data_root", str(moved)]) == 0


def test_whole_patches_of_different_sizes_are_refused_before_the_first_batch(converted, tmp_path, capsys):
    root = tmp_path / "mixed"
    shutil.copytree(converted, root)
    patch_id = first_of_fold(root, 1)  # a training patch made 6x6 (its label and validity alike)
    for path in (s2_path(root, patch_id), target_path(root, patch_id), valid_path(root, patch_id)):
        np.save(path, np.load(path)[..., :6, :6])
    argv = [
        "--dataset",
        "folder",
        "--data_root",
        str(root),
        "--crop_size",
        "0",
        "--batch_size",
        "4",
        "--train_folds",
        "1",
        "2",
        "3",
        "0",
        "--label_subset",
        "all",
        "--output_dir",
        str(tmp_path / "ft"),
    ]
    assert finetune.main("folder", "folder fine-tuning", argv + SMOKE) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "whole patches of 2 sizes (6x6, 8x8) cannot share a batch of 4" in err


def test_pretraining_on_a_test_fold_of_the_splits_is_said(converted, tmp_path, caplog):
    from utils.data import build_pretrain_data, resolve_data_spec

    splits = {"pretrain": [0, 1, 2, 3, 4, 5], "train": [1, 2, 3], "val": [5], "test": [4]}
    root = edit_dataset_json(converted, tmp_path, splits=splits)
    args = pretrain_STCLN.get_parser().parse_args(["--dataset", "folder", "--data_root", str(root), "--smoke"])
    with caplog.at_level("WARNING", logger="stcln"):
        build_pretrain_data(resolve_data_spec(args))
    assert "'splits.pretrain' includes the test fold(s) [4]" in caplog.text


def test_bands_without_red_nir_or_ndvi_say_that_the_gate_is_off(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="stcln"):
        assert convert(tmp_path / "out", "--band_names", "VV", clouds=None) == 0
    assert "no red/NIR pair" in caplog.text and "the NDVI gate of the masking is off" in caplog.text
    assert read_dataset_json(tmp_path / "out").ndvi_gate is False


def test_an_output_folder_that_cannot_be_written_is_one_line(tiny_model, tmp_path, monkeypatch, capsys):
    """(As root every folder is writable, so the check is exercised through os.access.)"""
    monkeypatch.setattr(predict_STCLN.os, "access", lambda path, mode: False)
    argv = [
        "--checkpoint",
        str(tiny_model),
        "--geotiff_dir",
        str(IMAGES),
        "--output_dir",
        str(tmp_path / "map"),
        "--no_progress",
    ]
    assert predict_STCLN.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the output folder is not writable" in err


def test_two_process_torchrun_with_clouds_compiled_in_bf16_trains_and_tests(converted, tmp_path):
    """The GPU path with cloud masks on CPU: 2-process gloo torchrun of pre-training (--drop_invalid
    --hide_invalid) and of fine-tuning from its export (--drop_invalid --augment) through the test, both
    --compile (aot_eager) and --amp (bf16). The suite's one compiled torchrun run of the scripts: checkpoints of
    DDP(compiled) models hold unwrapped keys, and the DDP test metrics equal a one-process test of best.tar."""
    from tests.test_ddp import assert_same_test_metrics, torchrun

    common = [
        "--dataset",
        "folder",
        "--data_root",
        str(converted),
        "--smoke",
        "--epochs",
        "1",
        "--temporal",
        "first:6",
        "--num_workers",
        "0",
        "--no_progress",
        "--device",
        "cpu",
        "--compile",
        "--compile_backend",
        "aot_eager",
        "--amp",
        "--drop_invalid",
    ]
    repo = Path(__file__).resolve().parents[1]
    pre = torchrun(
        [str(repo / "pretrain_STCLN.py"), *common, "--hide_invalid", "--output_dir", str(tmp_path / "pt")], tmp_path
    )
    assert pre.returncode == 0, pre.stderr[-2000:]
    assert "torch.compile: STCLNPretrain with backend aot_eager" in pre.stdout
    last = torch.load(tmp_path / "pt" / "last.tar", weights_only=True)
    assert last["model"] and not any(key.startswith(("module.", "_orig_mod.")) for key in last["model"])
    fine = torchrun(
        [
            str(repo / "PASTIS" / "finetuning_STCLN.py"),
            *common,
            "--augment",
            "--pretrain_pth",
            str(tmp_path / "pt" / "checkpoint_0.stcln.tar"),
            "--output_dir",
            str(tmp_path / "ft"),
        ],
        tmp_path,
    )
    assert fine.returncode == 0, fine.stderr[-2000:]
    assert "torch.compile: STCLNSegmenter with backend aot_eager" in fine.stdout
    best = torch.load(tmp_path / "ft" / "best.tar", weights_only=True)
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in best["model"])
    eager = [a for a in common if a not in ("--compile", "--compile_backend", "aot_eager")]
    single = tmp_path / "single"
    one_process = [
        *eager,
        "--eval_only",
        "--checkpoint",
        str(tmp_path / "ft" / "best.tar"),
        "--output_dir",
        str(single),
    ]
    assert finetune.main("pastis", "test", one_process) == 0
    assert_same_test_metrics(tmp_path / "ft", single)
