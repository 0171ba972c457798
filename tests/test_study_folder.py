"""The label-efficiency study on a folder data set (issue 34, part 3; issue 35): the crop taken from the
folder, one-line errors for bad flags and data, and spatial cross-validation (--cv).

The folder is a converted 40x40 NDVI scene in 8-px patches (``--fold_block 2``): folds 1-3 hold the
labelled blocks, fold 0 the buffer patches between them. The studies run in this process with --smoke.
"""

import json

import numpy as np
import pytest
import torch

from experiments import label_efficiency as le
from tests.region_fakes import make_scene, write_ndvi_cube
from utils.datasets.convert import main as convert_main

PATCH = 8
CLASSES = ["unlabelled", "a", "b", "c", "d"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder data set of 8-px patches: 5 x 5 patches, 2 x 2 blocks of them in folds 1-3, buffers in fold 0."""
    tmp = tmp_path_factory.mktemp("study_folder")
    ndvi = write_ndvi_cube(tmp / "src", make_scene(size=5 * PATCH, n_dates=5))
    argv = [
        "--cube",
        ndvi["cube"],
        "--dates",
        ndvi["dates"],
        "--label",
        ndvi["label"],
        "--out",
        tmp / "ndvi",
        "--band_names",
        "NDVI",
        "--patch_size",
        PATCH,
        "--fold_block",
        2,
        "--n_folds",
        3,
        "--class_names",
        *CLASSES,
        "--ignore_index",
        0,
    ]
    assert convert_main([str(a) for a in argv]) == 0
    return tmp / "ndvi"


@pytest.fixture
def one_thread():
    """The smoke runs (tiny model, 8-px patches) gain nothing from a second thread and slow down several
    times when it competes for a core shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def study_argv(folder, out, *extra) -> list[str]:
    return ["--dataset", "folder", "--data_root", str(folder), "--output_dir", str(out), *map(str, extra)]


def one_line_exit(capsys, argv: list[str]) -> str:
    """le.main(argv) must stop with exit status 2 and no traceback; returns its last stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        le.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_the_crop_of_a_folder_study_is_the_folder_patch_size(folder, tmp_path, one_thread):
    """The smoke study runs end to end on 8-px patches; the crop recorded in study.json and given to every
    run is 8, read from the folder (dataset.json patch_size, else the smallest patch); --crop_size overrides."""
    out = tmp_path / "study"
    results = le.main(study_argv(folder, out, "--smoke", "--arms", "scratch", "majority", "--only_seeds", 0))
    assert results["settings"]["crop_size"] == PATCH
    assert json.loads((out / "study.json").read_text())["crop_size"] == PATCH
    assert [(r["arm"], r["seed"]) for r in results["runs"]] == [("scratch", 0), ("majority", 0)]
    assert (
        "fold" not in results["runs"][0] and (out / "runs" / "scratch" / "b100_s0_lr0.001" / "summary.json").is_file()
    )
    # Outside --smoke (which crops 8 px whatever is given) every run gets the folder's crop.
    args = le.resolve_args(study_argv(folder, tmp_path / "full", "--arms", "scratch"))
    run = le.make_run(args, "scratch", 5.0, 0, 1e-3, 16)
    assert run.argv[run.argv.index("--crop_size") + 1] == PATCH
    args = le.resolve_args(study_argv(folder, tmp_path / "full", "--crop_size", 0))
    assert le.common_args(args)[le.common_args(args).index("--crop_size") + 1] == 0  # 0 = whole patches
    # Without patch_size in dataset.json: the smallest side of the folder's patches (npy headers).
    from utils.data_folder import folder_patch_size

    spec = json.loads((folder / "dataset.json").read_text())
    stripped = tmp_path / "no_patch_size"
    stripped.mkdir()
    for name in ("metadata.geojson", "DATA_S2"):
        (stripped / name).symlink_to(folder / name)
    (stripped / "dataset.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "patch_size"}))
    assert folder_patch_size(stripped) == PATCH


def test_a_crop_larger_than_the_patches_is_one_line(folder, tmp_path, capsys):
    out = tmp_path / "study"
    line = one_line_exit(capsys, study_argv(folder, out, "--smoke", "--crop_size", 32))
    assert line == f"error: --crop_size 32 does not fit the 8x8 patches of {folder} (at most 8; 0 = whole patches)"
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budgets", "0"], "--budgets must be in (0, 100]"),
        (["--budgets", "5", "150", "--sweep_budget", "5"], "got 150"),
        (["--budgets", "-1"], "got -1"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["--crop_size", "-1"], "--crop_size must be >= 0"),
        (["--cv", "--dataset", "mtlcc"], "--cv needs a data set split in folds"),
    ],
)
def test_bad_study_flags_exit_2_without_a_traceback(folder, tmp_path, capsys, extra, message):
    out = tmp_path / "study"
    assert message in one_line_exit(capsys, study_argv(folder, out, *extra))
    assert not out.exists()


def test_a_data_error_is_one_line(tmp_path, capsys):
    out = tmp_path / "study"
    line = one_line_exit(capsys, study_argv(tmp_path / "missing", out))
    assert line.startswith("error: ") and "dataset.json: not found" in line


def test_an_old_study_folder_without_the_new_schedule_keys_still_extends(tmp_path, capsys):
    """study.json written before crop_size and cv were recorded: its runs had the data set's crop and no --cv."""
    base = ["--output_dir", str(tmp_path), "--arms", "rf", "--budgets", "5"]
    le.check_schedule(le.get_parser().parse_args(base))
    saved = json.loads((tmp_path / "study.json").read_text())
    assert saved["crop_size"] == le.SPLITS["synthetic"]["crop"] and saved["cv"] is False
    (tmp_path / "study.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in ("crop_size", "cv")}))
    (tmp_path / "runs").mkdir()  # work has started
    le.check_schedule(le.get_parser().parse_args(base + ["--seeds", "7"]))
    for extra, named in (
        (["--cv"], "cv False (folder) vs True (now)"),
        (["--crop_size", "8"], "crop_size 16 (folder) vs 8"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            le.check_schedule(le.get_parser().parse_args(base + extra))
        assert exit_info.value.code == 2
        assert named in capsys.readouterr().err


def test_paired_difference_pairs_seed_and_fold_units():
    rng = np.random.default_rng(0)
    units = [(s, f) for s in range(2) for f in (1, 2, 3)]
    a, b = rng.uniform(0.4, 0.6, len(units)), rng.uniform(0.4, 0.6, len(units))
    runs = [{"arm": "x", "budget": 5, "seed": s, "fold": f, "test": {"mIoU": v}} for (s, f), v in zip(units, a)]
    runs += [{"arm": "y", "budget": 5, "seed": s, "fold": f, "test": {"mIoU": v}} for (s, f), v in zip(units, b)]
    runs.append({"arm": "y", "budget": 5, "seed": 2, "fold": 1, "test": {"mIoU": 0.0}})  # unpaired: ignored
    d = le.paired_difference(runs[::-1], "x", "y", 5)
    assert d["n"] == 6 and d["seeds"] == [0, 0, 0, 1, 1, 1] and d["folds"] == [1, 2, 3, 1, 2, 3]
    np.testing.assert_allclose(d["diffs"], a - b)
    assert d["mean"] == pytest.approx((a - b).mean()) and d["sd"] == pytest.approx((a - b).std(ddof=1))
    plain = le.paired_difference([{**r, "fold": None} for r in runs if r["fold"] == 1], "x", "y", 5)
    assert "folds" not in plain and plain["seeds"] == [0, 1]


def test_cross_validation_rotates_the_test_fold(folder, tmp_path, one_thread):
    """--cv --smoke: one test result per rotation (test folds 1, 2, 3), each rotation pre-trained on every
    fold but its test fold, paired differences and pooled scores over the (seed, fold) units."""
    out = tmp_path / "cv"
    argv = study_argv(folder, out, "--smoke", "--cv", "--arms", "scratch", "wp_cell", "majority")
    args = le.resolve_args(argv)
    assert args.cv_folds == [0, 1, 2, 3] and le.rotations(args) == [1, 2, 3]
    for fold, (_, pretrain, _) in zip((1, 2, 3), le.pretrain_tasks(args, ["cell"])):
        folds = pretrain[pretrain.index("--folds") + 1 : pretrain.index("--mask_mode")]
        assert folds == [f for f in (0, 1, 2, 3) if f != fold], (fold, folds)
        assert pretrain[pretrain.index("--output_dir") + 1] == out / f"pretrain_cell_f{fold}"
        run = le.make_run(args, "wp_cell", 100.0, 1, 1e-3, 8, fold)
        flags = {flag: run.argv[run.argv.index(flag) + 1] for flag in ("--train_folds", "--val_folds", "--test_folds")}
        assert flags == {
            "--train_folds": ({1, 2, 3} - {fold, fold % 3 + 1}).pop(),
            "--val_folds": fold % 3 + 1,
            "--test_folds": fold,
        }
        assert run.argv[run.argv.index("--pretrain_pth") + 1] == le.backbone_path(args, "cell", fold)
        assert run.out == out / "runs" / "wp_cell" / f"b100_s1_f{fold}_lr0.001"

    results = le.main(argv)
    assert results["folds"] == [1, 2, 3]
    for arm in ("scratch", "wp_cell", "majority"):
        units = sorted((r["seed"], r["fold"]) for r in results["runs"] if r["arm"] == arm)
        assert units == [(s, f) for s in (0, 1) for f in (1, 2, 3)], arm
    for fold in (1, 2, 3):  # each rotation's backbone pre-trained without its test fold
        config = json.loads((out / f"pretrain_cell_f{fold}" / "config.json").read_text())
        assert fold not in config["folds"] and 0 in config["folds"]
    d = le.paired_difference(results["runs"], "wp_cell", "scratch", 100.0)
    assert d["n"] == 6 and d["folds"] == [1, 2, 3, 1, 2, 3] and d["low"] == d["low"]
    pooled = {(r["arm"], r["seed"]): r for r in results["pooled"]}
    assert set(pooled) == {(a, s) for a in ("scratch", "wp_cell", "majority") for s in (0, 1)}
    for (arm, seed), record in pooled.items():  # the three test folds' pixels, scored together
        pixels = sum(r["test"]["n_pixels"] for r in results["runs"] if r["arm"] == arm and r["seed"] == seed)
        assert record["test"]["n_pixels"] == pixels and 0 <= record["test"]["mIoU"] <= 1
    report = (out / "results.md").read_text()
    assert "2 seeds x 3 test folds" in report and "s0 f1" in report and "Pooled test mIoU" in report


def test_help_states_the_crop_and_cv_defaults():
    text = le.get_parser().format_help()
    assert "--crop_size N" in text and "default: the folder's patch size" in text
    assert "--cv" in text and "default: off" in text


def test_progress_names_each_run_and_prints_its_result_as_it_finishes(tmp_path, capsys):
    out = tmp_path / "runs" / "scratch" / "b5_s0_f1_lr0.003"
    out.mkdir(parents=True)
    task = ("PASTIS/finetuning_STCLN.py", ["--seed", 0, "--output_dir", out], out / "log.txt")
    pretrain = ("pretrain_STCLN.py", ["--output_dir", tmp_path / "pretrain_cell"], None)
    assert le.task_name(task) == "scratch b5_s0_f1_lr0.003" and le.task_name(pretrain) == "pretrain_cell"
    (out / "summary.json").write_text(json.dumps({"test": {"mIoU": 0.5}}))
    progress = le.Progress([task, pretrain])
    progress.start(task)
    progress.finish(task)
    progress.close()
    line = [text for text in capsys.readouterr().out.splitlines() if text.startswith("[1/2]")]
    assert line and "scratch b5_s0_f1_lr0.003: test mIoU 0.500" in line[0] and "min left" in line[0]


def test_a_stop_signal_ends_the_study_in_one_line_and_a_stopped_run_stops_it(tmp_path, monkeypatch, capsys):
    """Ctrl-C (KeyboardInterrupt in the study) or a run that exited by a signal (130/143): one line saying
    how to resume, the signal's exit status, no traceback; another failure stays an error."""

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(le.study_module, "study", interrupted)
    with pytest.raises(SystemExit) as stop:
        le.main(["--smoke", "--output_dir", str(tmp_path)])
    assert stop.value.code == 130 and "run the same command again to continue" in capsys.readouterr().err

    class Finished:
        def __init__(self, code):
            self.returncode = code

    log = tmp_path / "run" / "log.txt"
    for code, name in ((143, "SIGTERM"), (-2, "Ctrl-C")):
        monkeypatch.setattr(le.runs.subprocess, "run", lambda *a, code=code, **k: Finished(code))
        with pytest.raises(le.Stopped, match=name) as info:
            le.Executor(2).map([("PASTIS/finetuning_STCLN.py", ["--output_dir", log.parent], log)])
        assert info.value.exit_status == (143 if name == "SIGTERM" else 130)
    monkeypatch.setattr(le.runs.subprocess, "run", lambda *a, **k: Finished(1))
    with pytest.raises(RuntimeError, match="failed \\(exit 1\\)"):
        le.Executor(2).map([("PASTIS/finetuning_STCLN.py", ["--output_dir", log.parent], log)])
