"""Sentinel-1 with your own region: Sentinel-2 and Sentinel-1 GeoTIFFs -> convert -> pre-train -> fine-tune ->
predict, with two sources (--smoke).

The radar files are written here with rasterio on the optical scene's grid, in linear power: the ascending
orbit without band descriptions and with one cell at 0 (no logarithm), the descending one with GEE-like band
descriptions (VH, VV, angle), a GDAL nodata value and two slices of one pass on one date. The expected dB
arrays are computed here from the values written, independently of utils/datasets/radar.py.
"""

import datetime
import json

import numpy as np
import pytest
import rasterio
import torch

import predict_STCLN
import pretrain_STCLN
from models import STCLNConfig, STCLNSegmenter
from tests.region_fakes import BANDS, make_scene, write_geotiff_scene
from utils import finetune
from utils.datasets.convert import main as convert_main

PATCH, SIZE = 16, 48  # 3 x 3 patches; --fold_block 1 and 3 folds as tests/test_your_region.py
SMOKE = ["--smoke", "--epochs", "1", "--no_progress", "--num_workers", "0"]
CLASSES = ["unlabelled", "a", "b", "c", "d"]
ASC_DATES = [datetime.date(2018, 9, 20), datetime.date(2019, 2, 11), datetime.date(2019, 6, 3)]
DESC_DATES = [datetime.date(2018, 10, 2), datetime.date(2019, 4, 14), datetime.date(2019, 8, 30)]
NODATA = -9999.0
ZERO_CELL = (1, 5, 7)  # (date, row, col) of the ascending series where VV is 0 (no logarithm)


def write_radar(path, image, profile, descriptions=None, nodata=None, shift=0.0):
    """One float32 raster (C, H, W) on ``profile``'s grid (``shift`` metres east: off the grid)."""
    own = dict(profile, count=image.shape[0], dtype="float32", nodata=nodata)
    own["transform"] = profile["transform"] @ rasterio.Affine.translation(shift / profile["transform"].a, 0)
    with rasterio.open(path, "w", **own) as dataset:
        dataset.write(image.astype(np.float32))
        for index, name in enumerate(descriptions or (), start=1):
            dataset.set_band_description(index, name)


def expected_db(power: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) float32 VV, VH, VV - VH in dB of (T, 2, H, W) linear power; a cell <= 0 (either band) takes
    the pixel's mean over its other dates (the --radar_nodata fill rule)."""
    values = power.astype(np.float32).astype(np.float64)  # the values as stored
    bad = np.broadcast_to((values <= 0).any(axis=1, keepdims=True), values.shape)
    with np.errstate(divide="ignore"):
        values = np.where(bad, np.nan, 10.0 * np.log10(values))
    values[bad] = np.broadcast_to(np.nanmean(values, axis=0), values.shape)[bad]
    return np.concatenate([values, values[:, :1] - values[:, 1:2]], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("radar")
    scene = make_scene(size=SIZE, n_dates=5)
    label = write_geotiff_scene(tmp / "s2", scene)
    with rasterio.open(next((tmp / "s2").glob("S2_*.tif"))) as dataset:
        profile = {key: dataset.profile[key] for key in ("driver", "height", "width", "crs", "transform")}
    rng = np.random.default_rng(0)
    asc = rng.uniform(0.002, 0.6, (len(ASC_DATES), 2, SIZE, SIZE)).astype(np.float32)  # VV, VH linear power
    asc[ZERO_CELL[0], 0, ZERO_CELL[1], ZERO_CELL[2]] = 0.0
    (tmp / "s1a").mkdir()
    for date, image in zip(ASC_DATES, asc):
        write_radar(tmp / "s1a" / f"S1A_IW_GRDH_{date:%Y%m%d}T053012.tif", image, profile)
    desc = rng.uniform(0.004, 0.5, (len(DESC_DATES), 2, SIZE, SIZE)).astype(np.float32)
    angle = np.full((1, SIZE, SIZE), 38.5)
    (tmp / "s1d").mkdir()
    for t, date in enumerate(DESC_DATES):
        parts = [("171501", desc[t].copy())]
        if t == 1:  # two slices of one pass: rows 0..27 and rows 20..47 hold data, their mean where both do
            parts.append(("171526", (desc[t] * 1.5).astype(np.float32)))
            parts[0][1][:, 28:], parts[1][1][:, :20] = NODATA, NODATA
            desc[t, :, 20:28] = ((parts[0][1][:, 20:28].astype(np.float64) + parts[1][1][:, 20:28]) / 2).astype(
                np.float32
            )
            desc[t, :, 28:] = parts[1][1][:, 28:]
        for time, image in parts:  # the band order of this export: VH, VV, angle
            write_radar(
                tmp / "s1d" / f"{date:%Y-%m-%d}T{time}_S1.tif",
                np.concatenate([image[::-1], angle]),
                profile,
                ("VH", "VV", "angle"),
                NODATA,
            )
    common = [
        "--geotiff_dir",
        str(tmp / "s2"),
        "--label",
        str(label),
        "--band_names",
        *BANDS,
        "--patch_size",
        str(PATCH),
        "--fold_block",
        "1",
        "--n_folds",
        "3",
        "--class_names",
        *CLASSES,
        "--ignore_index",
        "0",
    ]
    radar = ["--s1a_dir", str(tmp / "s1a"), "--s1d_dir", str(tmp / "s1d"), "--radar_units", "linear"]
    return {
        "tmp": tmp,
        "scene": scene,
        "profile": profile,
        "common": common,
        "radar": radar,
        "asc": asc,
        "S1A": expected_db(asc),
        "S1D": expected_db(desc),
        "root": tmp / "data",
    }


@pytest.fixture(scope="module")
def converted(region) -> dict:
    """The two orbits converted (linear power, --radar_nodata fill)."""
    argv = region["common"] + region["radar"] + ["--radar_nodata", "fill", "--out", str(region["root"])]
    assert convert_main(argv) == 0
    return region


def test_zero_linear_cell_is_refused_without_fill_in_one_line(region, capsys):
    out = region["tmp"] / "refused"
    assert convert_main(region["common"] + region["radar"] + ["--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"on {ASC_DATES[1]}" in error[0] and "--radar_nodata fill" in error[0], error
    assert not out.exists() or not any(out.iterdir())  # the staging folder removed


def test_converter_writes_radar_in_db_on_the_optical_patches(converted):
    """DATA_S1A/DATA_S1D equal the dB series computed here (10 log10 of linear power, VV - VH, the zero cell
    filled with its pixel's mean, two slices of a date averaged where both hold data), patch by patch."""
    root = converted["root"]
    spec = json.loads((root / "dataset.json").read_text())
    for name, dates in (("S1A", ASC_DATES), ("S1D", DESC_DATES)):
        assert spec["sources"][name]["band_names"] == ["VV", "VH", "VV/VH"]
        assert spec["sources"][name]["dates"] == [date.isoformat() for date in dates]
    features = json.loads((root / "metadata.geojson").read_text())["features"]
    assert len(features) == 9
    for feature in features:
        props = feature["properties"]
        assert props["dates-S1A"] == {str(k): int(f"{d:%Y%m%d}") for k, d in enumerate(ASC_DATES)}
        assert props["dates-S1D"] == {str(k): int(f"{d:%Y%m%d}") for k, d in enumerate(DESC_DATES)}
        rows, cols = slice(props["ROW"], props["ROW"] + PATCH), slice(props["COL"], props["COL"] + PATCH)
        for name in ("S1A", "S1D"):
            written = np.load(root / f"DATA_{name}" / f"{name}_{props['ID_PATCH']}.npy")
            assert written.dtype == np.float32 and written.shape == (3, 3, PATCH, PATCH)
            np.testing.assert_allclose(written, converted[name][:, :, rows, cols], rtol=1e-6, atol=1e-6)
    t, row, col = ZERO_CELL
    pixel = converted["asc"][[0, 2], :, row, col].astype(np.float64)
    filled = 10 * np.log10(pixel).mean(axis=0)  # the pixel's mean over its two other dates
    np.testing.assert_allclose(np.load(root / "DATA_S1A" / "S1A_1.npy")[t, :2, row, col], filled, rtol=1e-6)


def test_db_files_convert_to_the_same_series(converted):
    """The ascending orbit written in dB (NaN at the zero cell; --radar_units db, the default) converts to
    the series of its linear files."""
    tmp = converted["tmp"]
    (tmp / "s1a_db").mkdir()
    for path in sorted((tmp / "s1a").iterdir()):
        with rasterio.open(path) as dataset:
            power = dataset.read().astype(np.float64)
        with np.errstate(divide="ignore"):
            db = np.where(power > 0, 10 * np.log10(power), np.nan)
        write_radar(tmp / "s1a_db" / path.name, db, converted["profile"])
    out = tmp / "asc_db"
    argv = converted["common"] + ["--s1a_dir", str(tmp / "s1a_db"), "--radar_nodata", "fill", "--out", str(out)]
    assert convert_main(argv) == 0
    features = json.loads((out / "metadata.geojson").read_text())["features"]
    for props in (feature["properties"] for feature in features):
        rows, cols = slice(props["ROW"], props["ROW"] + PATCH), slice(props["COL"], props["COL"] + PATCH)
        np.testing.assert_allclose(
            np.load(out / "DATA_S1A" / f"S1A_{props['ID_PATCH']}.npy"),
            converted["S1A"][:, :, rows, cols],
            rtol=1e-6,
            atol=1e-5,
        )
    assert list(json.loads((out / "dataset.json").read_text())["sources"]) == ["S1A"]


@pytest.mark.parametrize("case", ["wrong_grid", "one_band", "vv_only"])
def test_bad_radar_files_are_refused_naming_the_file(converted, case, capsys):
    tmp = converted["tmp"]
    folder = tmp / f"bad_{case}"
    folder.mkdir()
    image = np.full((2, SIZE, SIZE), -12.0)
    write_radar(folder / "S1_20190101.tif", image, converted["profile"])
    bad = folder / "S1_20190301.tif"
    if case == "wrong_grid":
        write_radar(bad, image, converted["profile"], shift=20.0)  # two pixels east
    elif case == "one_band":
        write_radar(bad, image[:1], converted["profile"])
    else:
        write_radar(bad, image, converted["profile"], ("VV", "angle"))
    assert convert_main(converted["common"] + ["--s1a_dir", str(folder), "--out", str(tmp / f"out_{case}")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: {bad}:"), error
    assert {"wrong_grid": "not on the pixel grid", "one_band": "1 band(s)", "vv_only": "name no VH"}[case] in error[0]


@pytest.fixture(scope="module")
def trained(converted) -> dict:
    """Pre-train and fine-tune a two-source (S2 + S1A + S1D, late fusion) smoke model on the converted folder."""
    tmp, root = converted["tmp"], converted["root"]
    data = ["--dataset", "folder", "--data_root", str(root), "--sources", "S2", "S1"]
    assert pretrain_STCLN.main(data + SMOKE + ["--output_dir", str(tmp / "pt")]) == 0
    assert (
        finetune.main(
            "folder",
            "folder fine-tuning",
            data
            + SMOKE
            + ["--output_dir", str(tmp / "ft"), "--pretrain_pth", str(tmp / "pt" / "checkpoint_0.stcln.tar")],
        )
        == 0
    )
    return converted | {"checkpoint": tmp / "ft" / "best.tar"}


def test_predict_with_one_window_is_the_two_source_model_on_the_normalised_scene(trained):
    """--window = scene size: the map is the argmax of one forward pass on every source normalised with its
    training fold's statistics (NORM_*_patch.json), each on its own dates, computed here. The checkpoint's
    radar fusion layers are made large first, so that the map depends on what is read from the radar files."""
    tmp, root = trained["tmp"], trained["root"]
    ckpt = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    config = STCLNConfig.from_dict(ckpt["model_config"])
    assert config.extra_sources == ("S1A", "S1D") and config.fusion == "late"
    generator = torch.Generator().manual_seed(0)
    fusion = [key for key in ckpt["model"] if key.startswith("fusion.") and key.endswith(".weight")]
    assert len(fusion) == 2
    for key in fusion:
        ckpt["model"][key] = torch.randn(ckpt["model"][key].shape, generator=generator)
    torch.save(ckpt, tmp / "radar_heavy.tar")
    out = tmp / "map"
    argv = ["--checkpoint", str(tmp / "radar_heavy.tar"), "--geotiff_dir", str(tmp / "s2"), "--window", str(SIZE)]
    argv += trained["radar"] + ["--radar_nodata", "fill", "--output_dir", str(out), "--no_progress"]
    assert predict_STCLN.main(argv) == 0
    model = STCLNSegmenter(config)
    model.load_state_dict(ckpt["model"])

    def normalised(name: str, cube: np.ndarray) -> torch.Tensor:
        norm = json.loads((root / f"NORM_{name}_patch.json").read_text())["Fold_1"]  # the train fold of 3 folds
        mean, std = (np.asarray(norm[key], dtype=np.float32)[:, None, None] for key in ("mean", "std"))
        return torch.from_numpy((cube.astype(np.float32) - mean) / std)[None]

    reference = datetime.date.fromisoformat(json.loads((root / "dataset.json").read_text())["reference_date"])

    def positions(dates: list) -> torch.Tensor:
        days = [(date - reference).days for date in dates]
        return torch.tensor(days if config.positions == "doy" else range(len(dates)))[None]

    def class_map(asc: np.ndarray, desc: np.ndarray) -> np.ndarray:
        extra = {
            name: (normalised(name, cube), positions(dates), torch.zeros(1, len(dates), dtype=torch.bool))
            for name, cube, dates in (("S1A", asc, ASC_DATES), ("S1D", desc, DESC_DATES))
        }
        scene = trained["scene"]
        with torch.no_grad():
            logits = model.eval()(
                normalised("S2", scene["cube"]),
                positions(scene["dates"]),
                torch.zeros(1, len(scene["dates"]), dtype=torch.bool),
                None,
                extra=extra,
            )
        return logits[0].argmax(0).numpy()

    expected = class_map(trained["S1A"], trained["S1D"])
    with rasterio.open(out / "class_map.tif") as dataset:
        np.testing.assert_array_equal(dataset.read(1), expected)
    swapped = class_map(trained["S1D"], trained["S1A"])  # the orbits read the wrong way round
    assert (swapped != expected).mean() > 0.05
    assert json.loads((out / "run.json").read_text())["radar_units"] == "linear"


def test_predict_needs_the_model_sources(trained, capsys):
    """One line each: a radar folder the model needs is missing; a cube scene for a two-source model."""
    tmp = trained["tmp"]
    common = ["--checkpoint", str(trained["checkpoint"]), "--output_dir", str(tmp / "refused_map"), "--no_progress"]
    np.save(tmp / "cube.npy", trained["scene"]["cube"])
    (tmp / "dates.txt").write_text("\n".join(map(str, trained["scene"]["dates"])) + "\n")
    refusals = [
        (["--geotiff_dir", str(tmp / "s2"), "--s1a_dir", str(tmp / "s1a")], "give --s1d_dir"),
        (
            ["--cube", str(tmp / "cube.npy"), "--dates", str(tmp / "dates.txt")],
            "--cube and --scene_list take Sentinel-2",
        ),
    ]
    for argv, message in refusals:
        assert predict_STCLN.main(common + argv) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error
