"""The label-efficiency study with several sources (issue 38): --sources, --fusion and --cloud_fraction reach
every pre-training and fine-tuning run, an output folder holds runs of one kind only, and the random forest
reads every source's dates (features checked against np.interp)."""

import argparse

import numpy as np
import pytest

from experiments import label_efficiency as le
from experiments.label_efficiency.anchors import sample_features
from utils.datasets import PASTISDataset, write_pastis_like

TWO = ["--sources", "S2", "S1", "--fusion", "late", "--cloud_fraction", "0.5"]


def resolve(tmp_path, *argv) -> argparse.Namespace:
    return le.resolve_args(["--output_dir", str(tmp_path / "study"), *map(str, argv)])


def test_sources_fusion_and_clouds_reach_every_run(tmp_path):
    """Every learned arm and the pre-training get the aliases expanded; each argv parses in its script. A
    single-source study passes none of the three flags: its runs' argv are those of studies before them."""
    import pretrain_STCLN
    from utils.args import apply_dataset_defaults, check_args

    args = resolve(tmp_path, *TWO)
    assert args.sources == ["S2", "S1A", "S1D"]
    wanted = ["--sources", "S2", "S1A", "S1D", "--fusion", "late", "--cloud_fraction", "0.5"]
    runs = [le.make_run(args, arm, 5.0, 0, 1e-3, 10) for arm in ("scratch", "wp_cell", "probe_wp", "probe_random")]
    pretrain = le.pretrain_tasks(args, ["cell"])
    for argv in [run.argv for run in runs] + [task[1] for task in pretrain]:
        text = [str(a) for a in argv]
        start = text.index("--sources")
        assert text[start : start + len(wanted)] == wanted, text
    ft = le.finetune_args(args, [])
    assert (ft.sources, ft.fusion, ft.cloud_fraction) == (["S2", "S1A", "S1D"], "late", 0.5)
    parser = pretrain_STCLN.get_parser()
    parsed = apply_dataset_defaults(parser.parse_args([str(a) for a in pretrain[0][1]]), "pretrain")
    check_args(parser, parsed)
    assert (parsed.sources, parsed.fusion, parsed.cloud_fraction) == (["S2", "S1A", "S1D"], "late", 0.5)
    plain = le.common_args(resolve(tmp_path, "--budgets", "5"))
    assert not {"--sources", "--fusion", "--cloud_fraction"} & set(map(str, plain))


def test_one_folder_holds_one_kind_of_sources_fusion_and_clouds(tmp_path, capsys):
    """study.json records sources (aliases expanded), fusion and cloud fraction; another value is refused in
    one line before any work; the same sources spelt out are the same study."""
    le.check_schedule(resolve(tmp_path, *TWO))
    (tmp_path / "study" / "runs").mkdir()  # work has started: the schedule is fixed
    le.check_schedule(resolve(tmp_path, "--sources", "S2", "S1A", "S1D", "--cloud_fraction", "0.5"))
    for argv, named in (
        (["--cloud_fraction", "0.5"], "sources ['S2', 'S1A', 'S1D'] (folder) vs ['S2'] (now)"),
        (
            ["--sources", "S2", "S1", "--positions", "doy", "--fusion", "merged", "--cloud_fraction", "0.5"],
            "fusion late (folder) vs merged (now)",
        ),
        (["--sources", "S2", "S1"], "cloud_fraction 0.5 (folder) vs None (now)"),
    ):
        with pytest.raises(SystemExit) as stop:
            le.main(["--output_dir", str(tmp_path / "study"), *argv])
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "study.json" in err and named in err, err
    for argv, message in (
        (["--sources", "S2", "S1", "--fusion", "merged"], "--positions doy"),
        (["--dataset", "mtlcc", "--smoke", "--sources", "S1"], "Sentinel-2 only"),
        (["--sources", "S3"], "S3"),
    ):
        with pytest.raises(SystemExit):
            le.resolve_args(["--output_dir", str(tmp_path / "other"), *argv])
        assert message in capsys.readouterr().err


def test_random_forest_features_hold_every_source_on_its_own_dates(tmp_path):
    """sample_features of a PASTIS-R sample: S2, S1A and S1D each linearly interpolated on the grid between its
    own dates (np.interp, flat ends), side by side; the grid reaches the last date of any source."""
    root = write_pastis_like(
        tmp_path,
        n_patches=5,
        size=8,
        n_dates=(4, 5),
        seed=1,
        version=2,
        radar=True,
        radar_revisit=36,
        return_arrays=False,
    )["root"]
    data = PASTISDataset(root, folds=[1, 2, 3, 4, 5], sources=("S2", "S1A", "S1D"))
    sample = data[0]
    grid = le.rf_grid(data)
    last = max(int(data[i][key].max()) for i in range(len(data)) for key in ("days", "days_S1A", "days_S1D"))
    assert grid[-1] <= last < grid[-1] + le.RF_DAY_STEP or grid[-1] == 365
    got = sample_features(sample, grid)
    H, W = sample["label"].shape
    assert got.shape == (H * W, len(grid) * (10 + 3 + 3))
    start = 0
    for suffix in ("", "_S1A", "_S1D"):
        image, days = sample[f"image{suffix}"].numpy(), sample[f"days{suffix}"].numpy()
        C = image.shape[1]
        block = got[:, start : start + len(grid) * C]  # (HW, G*C) of this source
        for pixel in (0, H * W - 1):
            r, c = divmod(pixel, W)
            expected = np.stack([np.interp(grid, days, image[:, band, r, c]) for band in range(C)], axis=1)  # (G, C)
            np.testing.assert_allclose(block[pixel].reshape(len(grid), C), expected, rtol=1e-5, atol=1e-5)
        start += len(grid) * C


def load_compare():
    """results/multisource/compare.py as a module (a script outside the packages)."""
    import importlib.util

    from experiments.label_efficiency.design import REPO

    spec = importlib.util.spec_from_file_location("compare", REPO / "results" / "multisource" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    return compare


def test_compare_pairs_two_folders_by_seed_and_refuses_another_schedule(tmp_path, capsys):
    """results/multisource/compare.py: second - first per seed, by hand; another schedule or another labelled
    draw is refused in one line (exit 2)."""
    import json

    compare = load_compare()
    settings = {key: 1 for key in le.SCHEDULE_KEYS}

    def study(name, sources, scores, **changed):
        runs = [{"arm": "scratch", "budget": 5.0, "seed": s, "test": {"mIoU": v}} for s, v in enumerate(scores)]
        runs.append({"arm": "rf", "budget": 5.0, "seed": 0, "test": {"mIoU": 0.3}})  # only in one folder: no row
        record = {
            "settings": {**settings, "sources": sources, **changed},
            "labelled_crops": {"5": [150, 150, 150]},
            "runs": runs,
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(record))
        return tmp_path / name

    s2 = study("s2", ["S2"], [0.50, 0.60, 0.55])
    s1s2 = study("s1s2", ["S2", "S1A", "S1D"], [0.56, 0.61, 0.52])
    rows = compare.compare(compare.read_study(s2), compare.read_study(s1s2))
    row = next(r for r in rows if r["arm"] == "scratch")
    assert row["diffs"] == pytest.approx([0.06, 0.01, -0.03]) and row["wins"] == 2 and row["n"] == 3
    assert row["mean"] == pytest.approx(0.04 / 3) and row["first"] == pytest.approx(0.55)
    half = 4.302652729911275 * np.std([0.06, 0.01, -0.03], ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert (row["low"], row["high"]) == pytest.approx((0.04 / 3 - half, 0.04 / 3 + half))
    assert compare.main([str(s2), str(s1s2)]) == 0 and "| scratch | 5 % | 0.550 | 0.563 |" in capsys.readouterr().out
    other = study("steps", ["S2", "S1A", "S1D"], [0.5, 0.5, 0.5], steps=2)
    assert compare.main([str(s2), str(other)]) == 2
    assert "differ in steps" in capsys.readouterr().err
    (s2 / "study.json").write_text(json.dumps({"precision": "fp32"}))
    (s1s2 / "study.json").write_text(json.dumps({"precision": "bf16"}))
    assert compare.main([str(s2), str(s1s2)]) == 2
    assert "differ in precision" in capsys.readouterr().err


def test_compare_per_class_pairs_each_class_iou_by_seed(tmp_path, capsys):
    """compare.py --per_class: each class's IoU difference per seed, by hand, from the runs' metrics.json; a class
    absent from the test pixels gets no row; a run without its metrics.json is refused in one line naming it."""
    import json

    compare = load_compare()
    settings = {key: 1 for key in le.SCHEDULE_KEYS}

    def study(name, ious):  # ious[seed] = (IoU of Meadow, IoU of Corn)
        runs = []
        for seed, (meadow, corn) in enumerate(ious):
            run = tmp_path / name / "runs" / "scratch" / f"b5_s{seed}_lr0.003"
            (run / "test_stcln").mkdir(parents=True)
            classes = [
                {"index": 1, "name": "Meadow", "IoU": meadow, "support": 100},
                {"index": 3, "name": "Corn", "IoU": corn, "support": 50},
                {"index": 11, "name": "Winter durum wheat", "IoU": None, "support": 0},
            ]
            (run / "test_stcln" / "metrics.json").write_text(json.dumps({"metrics": {"per_class": classes}}))
            runs.append({"arm": "scratch", "budget": 5.0, "seed": seed, "dir": str(run), "test": {"mIoU": 0.5}})
        record = {"settings": dict(settings), "labelled_crops": {"5": [150] * 3}, "runs": runs}
        (tmp_path / name / "results.json").write_text(json.dumps(record))
        return tmp_path / name

    first = study("s2", [(0.9, 0.5), (0.8, 0.6), (0.7, 0.4)])
    second = study("s2s1", [(0.8, 0.6), (0.9, 0.7), (0.6, 0.5)])
    studies = (compare.read_study(first), compare.read_study(second))
    rows = {row["class"]: row for row in compare.per_class((first, second), studies, "scratch")}
    assert set(rows) == {"Meadow", "Corn"}
    assert rows["Meadow"]["diffs"] == pytest.approx([-0.1, 0.1, -0.1]) and rows["Meadow"]["wins"] == 1
    assert rows["Corn"]["diffs"] == pytest.approx([0.1, 0.1, 0.1]) and rows["Corn"]["first"] == pytest.approx(0.5)
    assert compare.main([str(first), str(second), "--per_class", "scratch"]) == 0
    assert "| 5 % | Corn | 0.500 | 0.600 | +0.100" in capsys.readouterr().out
    assert compare.main([str(first), str(second), "--per_class", "scrach"]) == 2  # a typo is not an empty table
    assert "no learned arm 'scrach'" in capsys.readouterr().err
    (second / "runs" / "scratch" / "b5_s1_lr0.003" / "test_stcln" / "metrics.json").unlink()
    assert compare.main([str(first), str(second), "--per_class", "scratch"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b5_s1_lr0.003/test_stcln/metrics.json" in err
