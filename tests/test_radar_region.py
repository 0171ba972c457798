"""Sentinel-1 with your own region: Sentinel-2 and Sentinel-1 GeoTIFFs -> convert -> pre-train -> fine-tune ->
predict, with two sources (--smoke).

The radar files are written here with rasterio on the optical scene's grid, in linear power: the ascending
orbit without band descriptions and with one cell at 0 (no logarithm), the descending one with GEE-like band
descriptions (VH, VV, angle), a GDAL nodata value and two slices of one pass on one date. The expected dB
arrays are computed here from the values written, independently of utils/datasets/radar.py.
"""

import datetime
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch

import predict_STCLN
import pretrain_STCLN
from models import STCLNConfig, STCLNSegmenter, tiny_config
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


@pytest.fixture(scope="module")
def radar_heavy(trained) -> dict:
    """The two-source checkpoint with its radar fusion layers made large, so that a map depends on what is
    read from the radar files (``radar_heavy``: its path)."""
    ckpt = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    config = STCLNConfig.from_dict(ckpt["model_config"])
    assert config.extra_sources == ("S1A", "S1D") and config.fusion == "late"
    generator = torch.Generator().manual_seed(0)
    fusion = [key for key in ckpt["model"] if key.startswith("fusion.") and key.endswith(".weight")]
    assert len(fusion) == 2
    for key in fusion:
        ckpt["model"][key] = torch.randn(ckpt["model"][key].shape, generator=generator)
    torch.save(ckpt, trained["tmp"] / "radar_heavy.tar")
    return trained | {"radar_heavy": trained["tmp"] / "radar_heavy.tar"}


def test_predict_with_one_window_is_the_two_source_model_on_the_normalised_scene(radar_heavy):
    """--window = scene size: the map is the argmax of one forward pass on every source normalised with its
    training fold's statistics (NORM_*_patch.json), each on its own dates, computed here. The checkpoint's
    radar fusion layers are made large first, so that the map depends on what is read from the radar files."""
    trained = radar_heavy
    tmp, root = trained["tmp"], trained["root"]
    ckpt = torch.load(trained["radar_heavy"], map_location="cpu", weights_only=True)
    config = STCLNConfig.from_dict(ckpt["model_config"])
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
            "--cube takes Sentinel-2 models only",
        ),
    ]
    for argv, message in refusals:
        assert predict_STCLN.main(common + argv) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error


# ---------------------------------------------------------------------------------------------
# --scene_list with the two-source model: each line names its scene's radar folders
# ---------------------------------------------------------------------------------------------
LIST_WINDOW = ["--window", "32", "--stride", "16"]  # 2 x 2 overlapping windows on the 48 px scene


def test_scene_list_lines_name_clouds_and_radar_in_any_order(tmp_path):
    """The positional cloud folder and clouds= are one field; named fields in any order; paths relative to the
    list file (absolute ones kept); radar pairs in source order; a line without fields as before."""
    absolute = tmp_path / "elsewhere" / "asc"
    listed = tmp_path / "lists" / "scenes.txt"
    listed.parent.mkdir()
    listed.write_text(
        "# header\n"
        "a ../clouds/a\n"
        f"b s1d=../s1d/b clouds=../clouds/b s1a={absolute}  # the fields in another order\n"
        "\n"
        "c\n"
    )
    base = listed.parent
    assert predict_STCLN.read_scene_list(listed) == [
        (base / "a", base / "../clouds/a", (), f"{listed}:2"),
        (base / "b", base / "../clouds/b", (("S1A", absolute), ("S1D", base / "../s1d/b")), f"{listed}:3"),
        (base / "c", None, (), f"{listed}:5"),
    ]


@pytest.fixture(scope="module")
def listed(radar_heavy) -> dict:
    """Two copies of the optical scene (tiles/tile_a, tiles/tile_b) mapped from one scene list, tile_b with its
    orbits swapped (s1a= the descending folder, s1d= the ascending one); and each mapped alone with --geotiff_dir
    and the radar flags: the reference maps."""
    tmp = radar_heavy["tmp"]
    for name in ("tile_a", "tile_b"):
        shutil.copytree(tmp / "s2", tmp / "tiles" / name)
    scene_list = tmp / "lists" / "scenes.txt"
    scene_list.parent.mkdir()
    scene_list.write_text(  # relative paths (to the list's folder), then absolute ones in another field order
        "# two tiles of one grid\n"
        "../tiles/tile_a s1a=../s1a s1d=../s1d\n"
        f"{tmp / 'tiles' / 'tile_b'} s1d={tmp / 's1a'} s1a={tmp / 's1d'}  # orbits swapped\n"
    )
    common = ["--checkpoint", str(radar_heavy["radar_heavy"]), "--radar_units", "linear", "--radar_nodata", "fill"]
    common += LIST_WINDOW + ["--no_progress"]
    orbits = {"tile_a": ("s1a", "s1d"), "tile_b": ("s1d", "s1a")}
    references = {}
    for name, (asc, desc) in orbits.items():
        out = tmp / f"alone_{name}"
        radar = ["--s1a_dir", str(tmp / asc), "--s1d_dir", str(tmp / desc)]
        assert (
            predict_STCLN.main(common + ["--geotiff_dir", str(tmp / "tiles" / name), *radar, "--output_dir", str(out)])
            == 0
        )
        with rasterio.open(out / "class_map.tif") as dataset:
            references[name] = dataset.read(1)
    command = common + ["--scene_list", str(scene_list), "--output_dir", str(tmp / "listed")]
    assert predict_STCLN.main(command) == 0
    return radar_heavy | {"list": scene_list, "command": command, "references": references, "orbits": orbits}


def test_a_scene_list_maps_two_source_scenes_as_the_radar_flags_do(listed):
    """Each scene's map equals its map made alone from --geotiff_dir with --s1a_dir/--s1d_dir; the run's
    areas.json sums the scenes' pixels and hectares."""
    out, references = listed["tmp"] / "listed", listed["references"]
    total = np.zeros(len(CLASSES), dtype=np.int64)
    hectares = np.zeros(len(CLASSES))
    for name, expected in references.items():
        with rasterio.open(out / name / "class_map.tif") as dataset:
            np.testing.assert_array_equal(dataset.read(1), expected)
        total += np.bincount(expected.ravel(), minlength=len(CLASSES))
        own = json.loads((out / name / "areas.json").read_text())["classes"]
        hectares += [row["hectares"] for row in own]
    run = json.loads((out / "areas.json").read_text())
    assert [scene["scene"] for scene in run["scenes"]] == ["tile_a", "tile_b"]
    assert [row["pixels"] for row in run["classes"]] == total.tolist()
    transform = listed["profile"]["transform"]
    np.testing.assert_allclose(
        [row["hectares"] for row in run["classes"]], total * abs(transform.a * transform.e) / 1e4
    )
    np.testing.assert_allclose([row["hectares"] for row in run["classes"]], hectares)


def test_a_two_source_scene_list_under_torchrun_writes_the_maps_of_one_process(listed):
    """The multi-GPU path of a two-source scene list on CPU: 2-process gloo torchrun, the ranks sharing the
    scenes' strips and each reading the radar of its windows from its line's folders; every map equals the
    scene's map made alone with the radar flags in one process, and the run's areas are the one-process run's."""
    from tests.test_ddp import REPO, torchrun

    out = listed["tmp"] / "listed_torchrun"
    command = list(listed["command"])
    command[command.index("--output_dir") + 1] = str(out)
    result = torchrun([str(REPO / "predict_STCLN.py"), *command, "--device", "cpu"], cwd=listed["tmp"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, expected in listed["references"].items():
        with rasterio.open(out / name / "class_map.tif") as dataset:
            np.testing.assert_array_equal(dataset.read(1), expected)
    assert (out / "areas.json").read_text() == (listed["tmp"] / "listed" / "areas.json").read_text()
    assert (
        json.loads((out / "run.json").read_text())["radar"]
        == json.loads((listed["tmp"] / "listed" / "run.json").read_text())["radar"]
    )


def test_the_radar_is_read_from_each_lines_folders_and_recorded(listed, capsys):
    """The two tiles hold the same optical images, so tile_b's map differs from tile_a's only through its
    line's swapped orbits; run.json records each scene's radar folders: the same command again resumes, and
    a list naming other radar folders into the same --output_dir is refused as another run."""
    out, references = listed["tmp"] / "listed", listed["references"]
    assert (references["tile_a"] != references["tile_b"]).mean() > 0.05
    tmp = listed["tmp"]
    run = json.loads((out / "run.json").read_text())
    assert run["radar"] == [
        {"S1A": str((tmp / asc).resolve()), "S1D": str((tmp / desc).resolve())}
        for asc, desc in listed["orbits"].values()
    ]
    assert run["radar_units"] == "linear" and run["radar_nodata"] == "fill"
    assert predict_STCLN.main(listed["command"]) == 0  # the same run again: both scenes kept
    capsys.readouterr()
    other = tmp / "lists" / "unswapped.txt"
    other.write_text("../tiles/tile_a s1a=../s1a s1d=../s1d\n../tiles/tile_b s1a=../s1a s1d=../s1d\n")
    command = list(listed["command"])
    command[command.index("--scene_list") + 1] = str(other)
    assert predict_STCLN.main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "holds another run (its run.json differs in radar" in error[0], error


@pytest.fixture(scope="module")
def other_models(trained) -> dict:
    """Randomly initialised checkpoints of a single-source (S2) and an S2 + S1A model (the sources come from
    their model configuration: no saved run arguments)."""
    ckpt = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    two = STCLNConfig.from_dict(ckpt["model_config"])
    configs = {
        "S2": tiny_config(in_channels=len(BANDS), num_classes=len(CLASSES)),
        "S2 S1A": replace(two, extra_sources=("S1A",), extra_channels=two.extra_channels[:1]),
    }
    paths = {}
    for name, config in configs.items():
        paths[name] = trained["tmp"] / f"model_{name.replace(' ', '_')}.tar"
        torch.save({"model": STCLNSegmenter(config).state_dict(), "model_config": config.to_dict()}, paths[name])
    return paths


REFUSALS = {  # case: (model, the list's third line, further flags, the refused line or None, the refusal's words)
    "unknown field": ("S2 S1", "../tiles/tile_b s1a=../s1a s1b=../s1d", [], 3, "unknown field s1b= (known: clouds="),
    "field twice": ("S2 S1", "../tiles/tile_b s1a=../s1a s1a=../s1d s1d=../s1d", [], 3, "s1a= given twice"),
    "clouds twice": ("S2 S1", "../tiles/tile_b ../c s1a=../s1a clouds=../c", [], 3, "the cloud folder given twice"),
    "radar missing": ("S2 S1", "../tiles/tile_b s1a=../s1a", [], 3, "takes --sources S2 S1A S1D: {where} give s1d="),
    "single-source model": ("S2", "../tiles/tile_b", [], 2, "takes --sources S2: {where} it takes no s1a= s1d="),
    "orbit not trained": ("S2 S1A", "../tiles/tile_b s1a=../s1a", [], 2, "S2 S1A: {where} it takes no s1d="),
    "radar flags": ("S2 S1", "../tiles/tile_b s1a=../s1a s1d=../s1d", ["--s1a_dir", "s1a"], None, "--s1a_dir goes"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_scene_list_refusals_are_one_line_naming_the_list_and_line(listed, other_models, case, capsys):
    """Exit 2 and one line naming the list file (and the line: ``<list>:<line>:``), before any map is written."""
    model, third, flags, line, words = REFUSALS[case]
    tmp = listed["tmp"]
    scene_list = tmp / "lists" / f"{case.replace(' ', '_')}.txt"
    scene_list.write_text(f"# the next line names both orbits\n../tiles/tile_a s1a=../s1a s1d=../s1d\n{third}\n")
    checkpoint = listed["radar_heavy"] if model == "S2 S1" else other_models[model]
    argv = ["--checkpoint", str(checkpoint), "--scene_list", str(scene_list), *flags, "--no_progress"]
    assert predict_STCLN.main(argv + ["--output_dir", str(tmp / "refused_list")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    where = f"{scene_list}:{line}:" if line else f"{scene_list}:"
    assert len(error) == 1 and error[0].startswith("error: ") and where in error[0], error
    assert words.format(where=where) in error[0], error
    assert not (tmp / "refused_list").exists()
