"""Mapping at scale with predict_STCLN.py: several scenes, strips shared by torchrun ranks, resume, COG output.

Expected maps come from independent runs (one scene at a time, one process, uninterrupted); the
georeferencing is read back with rasterio and compared with the source rasters'.
"""

import json
import logging
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

import predict_STCLN
from models import STCLNSegmenter, tiny_config
from tests.region_fakes import BANDS, make_scene, write_geotiff_scene
from utils.datasets.convert import main as convert_main
from utils.datasets.scene import write_class_map
from utils.predict import plan_windows, sliding_window_logits, split_strips, strips_needed
from utils.signals import Interrupted

SIZE, WINDOW, STRIDE = 24, 8, 4  # 5 strips of 5 windows per scene
CLASSES = ["unlabelled", "a", "b", "c", "d"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Two GeoTIFF scenes of one grid, a folder data set cut from the first (its statistics), and a
    checkpoint of a randomly initialised tiny model (the map's cost and plumbing do not depend on weights)."""
    tmp = tmp_path_factory.mktemp("scale")
    scenes = {}
    for seed, name in ((1, "tile_a"), (2, "tile_b")):
        write_geotiff_scene(tmp / name, make_scene(size=SIZE, n_dates=5, seed=seed))
        scenes[name] = tmp / name
    label = tmp / "tile_a_label.tif"
    assert (
        convert_main(
            [
                "--geotiff_dir",
                str(scenes["tile_a"]),
                "--label",
                str(label),
                "--out",
                str(tmp / "ds"),
                "--band_names",
                *BANDS,
                "--patch_size",
                "4",
                "--fold_block",
                "1",
                "--class_names",
                *CLASSES,
            ]
        )
        == 0
    )
    torch.manual_seed(0)
    config = tiny_config(in_channels=len(BANDS), num_classes=len(CLASSES))
    checkpoint = tmp / "model.tar"
    torch.save(
        {
            "model": STCLNSegmenter(config).state_dict(),
            "model_config": config.to_dict(),
            "args": {
                "dataset": "folder",
                "data_root": str(tmp / "ds"),
                "train_folds": [1, 2, 3],
                "crop_size": WINDOW,
                "temporal": None,
                "smoke": False,
            },
        },
        checkpoint,
    )
    (tmp / "scenes.txt").write_text("# two tiles\ntile_a\ntile_b  # same grid\n")
    return {"tmp": tmp, "scenes": scenes, "checkpoint": checkpoint, "list": tmp / "scenes.txt"}


def argv(setup: dict, out: Path, *source: str) -> list[str]:
    return [
        "--checkpoint",
        str(setup["checkpoint"]),
        *source,
        "--stride",
        str(STRIDE),
        "--batch_size",
        "8",
        "--no_progress",
        "--output_dir",
        str(out),
    ]


def read_map(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read(1)


@pytest.fixture(scope="module")
def single_maps(setup) -> dict:
    """Each scene mapped alone, in one process, uninterrupted: the reference maps."""
    maps = {}
    for name, folder in setup["scenes"].items():
        out = setup["tmp"] / f"single_{name}"
        assert predict_STCLN.main(argv(setup, out, "--geotiff_dir", str(folder))) == 0
        maps[name] = read_map(out / "class_map.tif")
    return maps


# ---------------------------------------------------------------------------------------------
# strips: any subset equals the full pass (what resume and ranks rely on)
# ---------------------------------------------------------------------------------------------
def strip_rows(model, cube, plan, strips=None) -> dict[int, np.ndarray]:
    rows = {}
    positions = torch.arange(cube.shape[0])
    sliding_window_logits(
        model,
        lambda r, c, h, w: cube[:, :, r : r + h, c : c + w],
        positions,
        plan,
        3,
        lambda first, logits: rows.__setitem__(first, logits.copy()),
        batch_size=3,
        progress=False,
        strips=strips,
    )
    return rows


@pytest.mark.parametrize("stride", [2, 5])
def test_any_subset_of_strips_equals_the_full_pass_bit_for_bit(stride):
    torch.manual_seed(0)
    model = STCLNSegmenter(tiny_config(in_channels=2, num_classes=3))
    cube = np.random.default_rng(0).normal(size=(3, 2, 21, 10)).astype(np.float32)  # (T, C, H, W)
    plan = plan_windows(21, 10, 8, stride, "linear")
    full = strip_rows(model, cube, plan)
    n = len(plan.row_starts)
    assert sorted(full) == list(plan.row_starts)
    for subset in ({0, n - 1}, set(range(1, n, 2)), *[set(split_strips(n, 3, r)) for r in range(3)]):
        part = strip_rows(model, cube, plan, sorted(subset))
        assert sorted(part) == [plan.row_starts[s] for s in sorted(subset)]
        for first, logits in part.items():
            np.testing.assert_array_equal(logits, full[first])


def test_strips_needed_reach_back_as_far_as_the_windows_overlap():
    plan = plan_windows(40, 40, 8, 2)  # a window spans 4 strips
    assert strips_needed(plan, {10}) == [7, 8, 9, 10]
    assert strips_needed(plan, {0, 1}) == [0, 1]
    assert strips_needed(plan_windows(40, 40, 8, 8), {3}) == [3]  # no overlap: the strip alone


@pytest.mark.parametrize("n_strips, world", [(9, 2), (3, 4), (10, 3), (1, 1)])
def test_ranks_share_the_strips_once_in_contiguous_blocks(n_strips, world):
    shares = [split_strips(n_strips, world, rank) for rank in range(world)]
    assert [s for share in shares for s in share] == list(range(n_strips))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


# ---------------------------------------------------------------------------------------------
# many scenes, resume, torchrun
# ---------------------------------------------------------------------------------------------
def test_a_scene_list_maps_every_scene_and_sums_the_areas(setup, single_maps):
    out = setup["tmp"] / "listed"
    assert predict_STCLN.main(argv(setup, out, "--scene_list", str(setup["list"]))) == 0
    total = np.zeros(len(CLASSES), dtype=np.int64)
    for name, expected in single_maps.items():
        np.testing.assert_array_equal(read_map(out / name / "class_map.tif"), expected)
        total += np.bincount(expected.ravel(), minlength=len(CLASSES))
    run = json.loads((out / "areas.json").read_text())
    assert [row["pixels"] for row in run["classes"]] == total.tolist()
    np.testing.assert_allclose([row["hectares"] for row in run["classes"]], total * 0.01)  # 10 m pixels
    assert [scene["scene"] for scene in run["scenes"]] == ["tile_a", "tile_b"]


def test_a_killed_run_resumes_from_its_finished_strips_and_scenes(setup, single_maps, monkeypatch, caplog):
    out = setup["tmp"] / "killed"
    command = argv(setup, out, "--geotiff_dir", *map(str, setup["scenes"].values()))
    written, real_write = [], predict_STCLN.write_atomic

    def stop_after_seven_strips(path, write):
        real_write(path, write)
        written.append(path)
        if len(written) == 7:  # scene a (5 strips) done, 2 strips of scene b: then SIGTERM
            raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(predict_STCLN, "write_atomic", stop_after_seven_strips)
    assert predict_STCLN.main(command) == 128 + signal.SIGTERM
    assert not (out / "tile_a" / "areas.json").exists()  # the maps are written once every strip is there
    assert len(list((out / "tile_b" / ".partial").glob("rows_*.npy"))) == 2
    monkeypatch.setattr(predict_STCLN, "write_atomic", real_write)
    with caplog.at_level(logging.INFO, logger="stcln"):
        assert predict_STCLN.main(command) == 0
    assert "5 of this process's 5 strips finished by an earlier run" in caplog.text
    assert "2 of this process's 5 strips finished by an earlier run" in caplog.text
    for name, expected in single_maps.items():
        np.testing.assert_array_equal(read_map(out / name / "class_map.tif"), expected)
        assert not (out / name / ".partial").exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stcln"):
        assert predict_STCLN.main(command) == 0  # everything finished: nothing is mapped again
    assert caplog.text.count("mapped by an earlier run") == 2


def test_two_process_torchrun_with_amp_writes_the_maps_of_one_process(setup):
    """The multi-GPU path on CPU: 2-process gloo torchrun, bf16 autocast (fp32 with a warning on a CPU
    without native bf16), two scenes whose strips the ranks share; the maps equal a one-process run's."""
    from tests.test_ddp import REPO, torchrun

    one, two = setup["tmp"] / "amp_one", setup["tmp"] / "amp_two"
    assert predict_STCLN.main(argv(setup, one, "--scene_list", str(setup["list"])) + ["--amp"]) == 0
    result = torchrun(
        [
            str(REPO / "predict_STCLN.py"),
            *argv(setup, two, "--scene_list", str(setup["list"])),
            "--amp",
            "--device",
            "cpu",
        ],
        cwd=setup["tmp"],
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in setup["scenes"]:
        np.testing.assert_array_equal(read_map(two / name / "class_map.tif"), read_map(one / name / "class_map.tif"))
    assert (two / "areas.json").read_text() == (one / "areas.json").read_text()
    assert json.loads((two / "run.json").read_text())["amp"] is True


# ---------------------------------------------------------------------------------------------
# the map as a GIS reads it; refusals
# ---------------------------------------------------------------------------------------------
def test_the_map_is_a_cloud_optimised_geotiff_with_overviews_classes_and_colours(tmp_path):
    grid = {
        "crs": rasterio.crs.CRS.from_epsg(32633).to_wkt(),
        "epsg": 32633,
        "transform": [10.0, 0.0, 400_000.0, 0.0, -10.0, 5_100_000.0],
        "height": 700,
        "width": 600,
    }
    class_map = (np.arange(700)[:, None] // 70 + np.arange(600)[None, :] // 60).astype(np.uint8) % 3  # (H, W)
    colours = [[0, 0, 0], [1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]
    write_class_map(tmp_path / "map.tif", class_map, grid, ["none", "wheat", "maize"], colours, block=256)
    with rasterio.open(tmp_path / "map.tif") as dataset:
        np.testing.assert_array_equal(dataset.read(1), class_map)
        assert dataset.crs.to_epsg() == 32633 and list(dataset.transform)[:6] == grid["transform"]
        assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and dataset.block_shapes[0] == (256, 256)
        assert dataset.overviews(1) == [2, 4]  # down to one block
        assert json.loads(dataset.tags()["CLASS_NAMES"]) == ["none", "wheat", "maize"]
        assert dataset.tags(1)["CLASS_1"] == "wheat" and dataset.colormap(1)[1] == (255, 128, 0, 255)


def test_a_date_on_another_grid_is_refused_before_any_window(setup, tmp_path, capsys):
    import shutil

    scene = tmp_path / "moved"
    shutil.copytree(setup["scenes"]["tile_a"], scene)
    moved = sorted(scene.glob("S2_*.tif"))[2]
    with rasterio.open(moved, "r+") as dataset:
        dataset.transform = dataset.transform @ rasterio.Affine.translation(3, 0)  # 3 pixels east
    assert predict_STCLN.main(argv(setup, tmp_path / "out", "--geotiff_dir", str(scene))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and moved.name in err and "grid origin" in err
    assert not list((tmp_path / "out").glob("*/rows_*.npy"))


def test_bad_scene_lists_are_one_line(setup, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("tile_a clouds extra\n")
    assert predict_STCLN.main(argv(setup, tmp_path / "o1", "--scene_list", str(bad))) == 2
    assert f"{bad}:1: expected a scene folder" in capsys.readouterr().err
    assert predict_STCLN.main(argv(setup, tmp_path / "o2", "--scene_list", str(tmp_path / "none.txt"))) == 2
    assert "scene list not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        predict_STCLN.main(argv(setup, tmp_path / "o3", "--geotiff_dir", "a", "b", "--cloud_dir", "c"))
    assert stop.value.code == 2 and "--cloud_dir gives 1 folders for 2" in capsys.readouterr().err


def test_a_declared_nodata_value_marks_invalid_cells(setup, tmp_path):
    """Pixels where a raster holds its declared nodata value (outside a swath) become invalid cells, as clouds do."""
    import shutil

    from utils.datasets.scene import open_raster_folder

    scene = tmp_path / "swath"
    shutil.copytree(setup["scenes"]["tile_a"], scene)
    edge = sorted(scene.glob("S2_*.tif"))[1]
    with rasterio.open(edge, "r+") as dataset:
        image = dataset.read()  # (C, H, W)
        image[:, :, :7] = 0  # the first 7 columns outside the swath
        dataset.write(image)
        dataset.nodata = 0
    with open_raster_folder(scene) as opened:
        valid = np.asarray(opened.valid)  # (T, H, W)
        expected = np.ones_like(valid)
        expected[1, :, :7] = 0
        np.testing.assert_array_equal(valid, expected)
        np.testing.assert_array_equal(opened.cube[:, :, 3:9, :][1], image[:, 3:9])  # the values themselves kept
