"""README "Your own region" end to end: GeoTIFF scene -> convert -> pre-train -> fine-tune -> predict (--smoke).

The scripts run in-process (their ``main(argv)``), as the experiment commands call them.
"""

import json

import numpy as np
import rasterio
import pytest
import torch

import predict_STCLN
import pretrain_STCLN
from models import STCLNConfig, STCLNSegmenter
from tests.region_fakes import BANDS, EPSG_UTM31N, make_scene, write_geotiff_scene, write_ndvi_cube
from utils import finetune
from utils.datasets.convert import main as convert_main

PATCH = 16  # --smoke crops are 8 px
SIZE = 48  # 3 x 3 patches of 16 px; --fold_block 1 leaves 4 blocks, so 3 folds
SMOKE = ["--smoke", "--epochs", "1", "--no_progress", "--num_workers", "0"]
CLASSES = ["unlabelled", "a", "b", "c", "d"]


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> dict:
    """The four-band GeoTIFF scene and the one-band NDVI cube of the same scene, both converted."""
    tmp = tmp_path_factory.mktemp("region")
    scene = make_scene(size=SIZE, n_dates=5)
    label = write_geotiff_scene(tmp / "tifs", scene)
    common = [
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
    assert (
        convert_main(
            [
                "--geotiff_dir",
                str(tmp / "tifs"),
                "--label",
                str(label),
                "--out",
                str(tmp / "s2"),
                "--band_names",
                *BANDS,
                *common,
            ]
        )
        == 0
    )
    ndvi = write_ndvi_cube(tmp / "ndvi_src", scene)
    assert (
        convert_main(
            [
                "--cube",
                str(ndvi["cube"]),
                "--dates",
                str(ndvi["dates"]),
                "--label",
                str(ndvi["label"]),
                "--out",
                str(tmp / "ndvi"),
                "--band_names",
                "NDVI",
                *common,
            ]
        )
        == 0
    )
    return {"tmp": tmp, "scene": scene, "tifs": tmp / "tifs", "ndvi_src": ndvi}


@pytest.fixture(scope="module", params=["s2", "ndvi"])
def trained(request, region) -> dict:
    """Pre-train then fine-tune (from the pre-trained backbone) on one converted folder (once per
    data set: tests that take only one of them re-parametrise this fixture and reuse its runs)."""
    name, tmp = request.param, region["tmp"]
    done = region.setdefault("trained", {})
    if name in done:
        return done[name]
    data = ["--dataset", "folder", "--data_root", str(tmp / name)]
    assert pretrain_STCLN.main(data + SMOKE + ["--output_dir", str(tmp / f"pt_{name}")]) == 0
    backbone = tmp / f"pt_{name}" / "checkpoint_0.stcln.tar"
    out = tmp / f"ft_{name}"
    assert (
        finetune.main(
            "folder", "folder fine-tuning", data + SMOKE + ["--output_dir", str(out), "--pretrain_pth", str(backbone)]
        )
        == 0
    )
    done[name] = {"name": name, "root": tmp / name, "out": out, "pretrain": tmp / f"pt_{name}"}
    return done[name]


def test_pretrain_and_finetune_use_the_folder_splits_and_classes(trained):
    pretrain_config = json.loads((trained["pretrain"] / "config.json").read_text())
    assert pretrain_config["folds"] == [0, 1, 3]  # every fold but the test fold 2 (3 folds)
    config = json.loads((trained["out"] / "config.json").read_text())
    assert (config["train_folds"], config["val_folds"], config["test_folds"]) == ([1], [3], [2])
    metrics = json.loads((trained["out"] / "test_stcln" / "metrics.json").read_text())
    assert metrics["class_names"] == CLASSES
    assert [row["index"] for row in metrics["metrics"]["per_class"]] == [1, 2, 3, 4]  # unlabelled not scored
    assert len(metrics["confusion_matrix"]) == len(CLASSES)


@pytest.mark.parametrize("trained", ["ndvi"], indirect=True)  # the one-band series only
def test_ndvi_only_series_pretrains_with_the_gate_on_its_ndvi_band(trained):
    # the band named NDVI is the gate's NDVI: only dates vegetated on > 90 % of a crop's pixels are masked
    config = json.loads((trained["pretrain"] / "config.json").read_text())
    state = torch.load(trained["pretrain"] / "last.tar", map_location="cpu", weights_only=True)
    assert json.loads((trained["root"] / "dataset.json").read_text())["ndvi_band"] == "NDVI"
    assert 0.0 < state["metrics"]["masked_fraction"] < 0.4 and config["ndvi_threshold"] == 0.2


def test_predict_maps_the_whole_scene_with_its_georeferencing(trained, region):
    out = region["tmp"] / f"map_{trained['name']}"
    if trained["name"] == "s2":
        source = ["--geotiff_dir", str(region["tifs"])]
    else:
        source = [
            "--cube",
            str(region["ndvi_src"]["cube"]),
            "--dates",
            str(region["ndvi_src"]["dates"]),
            "--pixel_size_m",
            "10",
        ]
    assert (
        predict_STCLN.main(
            ["--checkpoint", str(trained["out"] / "best.tar"), *source, "--output_dir", str(out), "--no_progress"]
        )
        == 0
    )
    if trained["name"] == "s2":
        with (
            rasterio.open(out / "class_map.tif") as dataset,
            rasterio.open(next(region["tifs"].glob("S2_*.tif"))) as source,
        ):
            class_map = dataset.read(1)
            assert dataset.crs == source.crs and dataset.crs.to_epsg() == EPSG_UTM31N
            assert dataset.transform == source.transform and (dataset.height, dataset.width) == (
                source.height,
                source.width,
            )
            assert dataset.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and dataset.compression.name == "deflate"
            assert json.loads(dataset.tags()["CLASS_NAMES"]) == list(CLASSES)
    else:
        class_map = np.load(out / "class_map.npy")
    assert class_map.shape == (SIZE, SIZE) and class_map.max() < len(CLASSES)
    areas = json.loads((out / "areas.json").read_text())
    assert areas["pixel_area_m2"] == 100.0
    assert [row["pixels"] for row in areas["classes"]] == np.bincount(
        class_map.ravel(), minlength=len(CLASSES)
    ).tolist()
    np.testing.assert_allclose(
        [row["hectares"] for row in areas["classes"]], [row["pixels"] * 0.01 for row in areas["classes"]]
    )
    assert (out / "class_map.png").stat().st_size > 0 and "hectares" in (out / "areas.md").read_text()
    assert not any(path.name.startswith(".") for path in out.iterdir())  # the partial strips removed


@pytest.mark.parametrize("trained", ["ndvi"], indirect=True)  # one scene is enough
def test_predict_with_one_window_is_the_model_on_the_normalised_scene(trained, region):
    """--window = scene size: the map is the argmax of one forward pass on the scene normalised with
    the training fold's statistics (read back from NORM_S2_patch.json), computed here independently."""
    out = region["tmp"] / "map_one_window"
    cube_path, dates_path = region["ndvi_src"]["cube"], region["ndvi_src"]["dates"]
    assert (
        predict_STCLN.main(
            [
                "--checkpoint",
                str(trained["out"] / "best.tar"),
                "--cube",
                str(cube_path),
                "--dates",
                str(dates_path),
                "--window",
                str(SIZE),
                "--output_dir",
                str(out),
                "--no_progress",
            ]
        )
        == 0
    )
    ckpt = torch.load(trained["out"] / "best.tar", map_location="cpu", weights_only=True)
    model = STCLNSegmenter(STCLNConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    norm = json.loads((trained["root"] / "NORM_S2_patch.json").read_text())["Fold_1"]  # train fold of 3 folds
    cube = np.load(cube_path)
    x = (cube - np.float32(norm["mean"][0])) / np.float32(norm["std"][0])
    with torch.no_grad():
        logits = model.eval()(
            torch.from_numpy(x)[None].float(),
            torch.arange(cube.shape[0])[None],
            torch.zeros(1, cube.shape[0], dtype=torch.bool),
        )
    np.testing.assert_array_equal(np.load(out / "class_map.npy"), logits[0].argmax(0).numpy())


def test_authors_subset_is_refused_on_folder_data(region, capsys):
    argv = [
        "--dataset",
        "folder",
        "--data_root",
        str(region["tmp"] / "s2"),
        "--label_subset",
        "authors",
        "--output_dir",
        str(region["tmp"] / "refused"),
    ] + SMOKE
    assert finetune.main("folder", "folder fine-tuning", argv) == 2
    assert "--label_subset authors" in capsys.readouterr().err


def test_label_limited_experiment_takes_a_folder(region):
    from experiments import label_limited

    out = region["tmp"] / "label_limited"
    label_limited.main(
        ["--dataset", "folder", "--data_root", str(region["tmp"] / "ndvi"), "--smoke", "--output_dir", str(out)]
    )
    assert "STCLN_wp" in (out / "results.md").read_text()
    config = json.loads((out / "stcln" / "config.json").read_text())
    assert (config["dataset"], config["label_subset"], config["test_folds"]) == ("folder", "all", [2])


@pytest.mark.parametrize("trained", ["s2"], indirect=True)  # one data set is enough
def test_test_script_evaluates_a_folder_checkpoint(trained):
    argv = [
        "--dataset",
        "folder",
        "--data_root",
        str(trained["root"]),
        "--eval_only",
        "--checkpoint",
        str(trained["out"] / "best.tar"),
        "--protocol",
        "utae",
        "--output_dir",
        str(trained["out"]),
    ] + SMOKE
    assert finetune.main("folder", "folder test", argv) == 0
    metrics = json.loads((trained["out"] / "test_utae" / "metrics.json").read_text())
    assert [row["index"] for row in metrics["metrics"]["per_class"]] == [1, 2, 3, 4]  # no background declared
