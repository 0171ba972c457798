"""DataSpec (utils/data_spec.py): the one typed description of a run's data, resolved once from the
flags or rebuilt from a checkpoint's saved ``args``; the splits built from it are those the argparse
namespace gave before it existed (sample ids recorded at commit 65544d8, the last one without it)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import pretrain_STCLN
from tests.region_fakes import BANDS, make_scene, write_geotiff_scene
from utils import finetune
from utils.args import apply_dataset_defaults, args_dict
from utils.data import (
    SMOKE_CROP,
    build_finetune_data,
    build_pretrain_data,
    pastis_root,
    resolve_data_spec,
    sample_ids,
    unwrap_subset,
)
from utils.data_spec import DataSpec
from utils.datasets import PASTISDataset, label_ratio_subset
from utils.datasets.convert import main as convert_main
from utils.datasets.folder import FolderDataset

SYNTHETIC = ["--dataset", "synthetic", "--smoke"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """5 x 5 patches of 8 px; the converter's dataset.json splits: train 1 2 3, val 5, test 4 (0: buffer)."""
    tmp = tmp_path_factory.mktemp("spec")
    label = write_geotiff_scene(tmp / "tifs", make_scene(size=40, n_dates=5))
    argv = ["--geotiff_dir", str(tmp / "tifs"), "--label", str(label), "--out", str(tmp / "ds"), "--band_names"]
    argv += [*BANDS, "--patch_size", "8", "--fold_block", "1", "--class_names", "background", "a", "b", "c", "d"]
    assert convert_main([*argv, "--background_index", "0"]) == 0
    return tmp / "ds"


def finetune_args(*argv: str):
    return finetune.parse_args("pastis", "test", list(argv))


def pretrain_args(*argv: str):
    args = pretrain_STCLN.get_parser().parse_args(list(argv))
    return apply_dataset_defaults(args, "pretrain")


def split_ids(data) -> dict[str, list[int]]:
    return {name: sorted(sample_ids(getattr(data, name))) for name in ("train", "val", "test")}


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_the_spec_of_the_flags_equals_the_spec_of_the_saved_args(folder, stage):
    """What a checkpoint stores (``ckpt['args']``, also config.json) gives back the spec the run built."""
    parse = finetune_args if stage == "finetune" else pretrain_args
    runs = [
        [*SYNTHETIC, "--temporal", "even:4", "--seed", "3"],
        ["--dataset", "folder", "--data_root", str(folder), "--crop_size", "4"],
    ]
    for argv in runs:
        args = parse(*argv)
        spec = resolve_data_spec(args)
        saved = json.loads(json.dumps(args_dict(args)))  # plain types: paths as strings, folds as lists
        assert DataSpec.from_args(saved) == spec
        assert isinstance(spec.data_root, Path | None) and spec.crop_size == args.crop_size


def test_the_spec_is_frozen_and_hashable():
    spec = resolve_data_spec(finetune_args(*SYNTHETIC))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1
    assert hash(spec) == hash(dataclasses.replace(spec))


def test_unset_fold_flags_of_the_run_are_resolved_and_written_back():
    args = finetune_args(*SYNTHETIC, "--val_folds", "3")
    spec = resolve_data_spec(args)
    assert (spec.folds, spec.train_folds, spec.val_folds, spec.test_folds) == (None, (1,), (3,), (4,))
    assert (args.train_folds, args.val_folds, args.test_folds) == ([1], [3], [4])  # config.json records them
    assert not hasattr(args, "folds")  # a flag the run does not have stays out of config.json
    assert resolve_data_spec(pretrain_args(*SYNTHETIC)).folds == (5,)


def test_a_spec_with_unresolved_folds_builds_no_split():
    with pytest.raises(ValueError, match="DataSpec.train_folds is unresolved"):
        build_finetune_data(DataSpec.from_args(finetune_args(*SYNTHETIC)))


def test_synthetic_splits_are_those_of_the_namespace_path():
    data = build_finetune_data(resolve_data_spec(finetune_args(*SYNTHETIC)))
    ids = split_ids(data)
    assert ids["val"] == [20000, 20001, 30000, 40000, 50003, 80000]
    assert ids["test"] == [10001, 30001, 40002, 50001, 70000, 70001]
    assert (len(data.train), len(data.val), len(data.test)) == (1, 6, 6)
    # the old path written out: fold 1 in smoke crops, a 2% class-stratified draw of seed 0; fold-1 statistics
    root = pastis_root(DataSpec(dataset="synthetic", smoke=True))
    full = PASTISDataset(root, folds=[1], norm_folds=[1], crop_size=SMOKE_CROP, crop_mode="grid", seed=0)
    assert unwrap_subset(data.train)[1] == [int(i) for i in label_ratio_subset(full.dominant_classes(), 0.02, 0)]
    torch.testing.assert_close(data.test[0]["image"], PASTISDataset(root, folds=[4], norm_folds=[1])[0]["image"])
    pretrain = build_pretrain_data(resolve_data_spec(pretrain_args(*SYNTHETIC)))
    assert len(pretrain.train) == 24  # fold 5: 6 patches in 4 smoke crops each
    assert sorted(sample_ids(pretrain.train)) == [10002, 20003, 40003, 60000, 60001, 80002]


def test_folder_splits_are_those_of_the_namespace_path(folder):
    folder_flags = ["--dataset", "folder", "--data_root", str(folder)]
    data = build_finetune_data(resolve_data_spec(finetune_args(*folder_flags, "--smoke")))
    assert split_ids(data) == {"train": [1, 5, 13, 15, 23, 25], "val": [11], "test": [3, 21]}
    argv = [*folder_flags, "--label_subset", "ratio", "--label_ratio", "0.5", "--crop_size", "4"]
    data = build_finetune_data(resolve_data_spec(finetune_args(*argv)))
    assert unwrap_subset(data.train)[1] == [6, 7, 8, 9, 15, 16, 17, 20, 22, 23]
    full = FolderDataset(folder, folds=[1, 2, 3], crop_size=4, crop_mode="grid", seed=0)
    assert unwrap_subset(data.train)[1] == [int(i) for i in label_ratio_subset(full.dominant_classes(), 0.5, 0)]
    pretrain = build_pretrain_data(resolve_data_spec(pretrain_args(*folder_flags, "--smoke")))
    assert sorted(sample_ids(pretrain.train)) == sorted(set(range(1, 26)) - {3, 21})  # every fold but the test fold
