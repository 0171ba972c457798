"""The label-efficiency study: its helpers against independent computations (its --smoke run is in
test_scripts.py, beside the other experiment commands)."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from experiments import label_efficiency as le


def test_pixel_features_match_np_interp():
    rng = np.random.default_rng(0)
    T, C, H, W = 7, 3, 2, 3
    days = np.sort(rng.choice(np.arange(20, 340), T, replace=False))
    image = rng.normal(size=(T, C, H, W)).astype(np.float32)
    grid = np.arange(0, 366, 15, dtype=np.float64)
    got = le.pixel_features({"image": torch.from_numpy(image), "days": torch.from_numpy(days)}, grid)
    assert got.shape == (H * W, len(grid) * C)
    for pixel in range(H * W):
        r, c = divmod(pixel, W)
        expected = np.stack([np.interp(grid, days, image[:, band, r, c]) for band in range(C)])  # (C, G)
        np.testing.assert_allclose(got[pixel].reshape(len(grid), C).T, expected, rtol=1e-5, atol=1e-5)


def test_paired_difference_matches_scipy():
    a = [0.50, 0.55, 0.47, 0.61, 0.52]
    b = [0.45, 0.56, 0.40, 0.50, 0.49]
    runs = [{"arm": "x", "budget": 5, "seed": s, "test": {"mIoU": v}} for s, v in enumerate(a)]
    runs += [{"arm": "y", "budget": 5, "seed": s, "test": {"mIoU": v}} for s, v in enumerate(b)]
    runs.append({"arm": "y", "budget": 5, "seed": 9, "test": {"mIoU": 0.0}})  # unpaired: ignored
    d = le.paired_difference(runs, "x", "y", 5)
    diff = np.subtract(a, b)
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    assert d["n"] == 5 and d["wins"] == 4
    assert math.isclose(d["mean"], diff.mean()) and math.isclose(d["low"], low) and math.isclose(d["high"], high)


def test_paired_p_values_match_a_hand_t_test_and_an_enumerated_signed_rank_test():
    # Command 13's five per-seed differences (results/label_efficiency_synthetic/commands.sh: t p 0.19, Wilcoxon p 0.31).
    diff = np.array([0.0606, 0.0415, -0.0257, -0.0006, 0.1016])
    runs = [{"arm": "x", "budget": 5, "seed": s, "test": {"mIoU": 0.5 + v}} for s, v in enumerate(diff)]
    runs += [{"arm": "y", "budget": 5, "seed": s, "test": {"mIoU": 0.5}} for s in range(5)]
    d = le.paired_difference(runs, "x", "y", 5)
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    assert math.isclose(d["p_t"], 2 * stats.t.sf(abs(t), len(diff) - 1), rel_tol=1e-9)
    # Exact signed-rank p: the share of the 2^n sign flips whose rank sum is at least as extreme.
    ranks = stats.rankdata(np.abs(diff))
    observed = ranks[diff > 0].sum()
    flips = np.array([[(k >> i) & 1 for i in range(len(diff))] for k in range(2 ** len(diff))], dtype=bool)
    sums = (flips * ranks).sum(axis=1)
    centre = ranks.sum() / 2
    expected = np.mean(np.abs(sums - centre) >= abs(observed - centre) - 1e-12)
    assert math.isclose(d["p_wilcoxon"], expected, rel_tol=1e-9)
    assert round(d["p_t"], 2) == 0.19 and round(d["p_wilcoxon"], 2) == 0.31
    assert d["seeds"] == list(range(5)) and np.allclose(d["diffs"], diff)
    # Five wins out of five: the signed-rank test cannot go below 2 / 2^5.
    runs = [
        {"arm": a, "budget": 2, "seed": s, "test": {"mIoU": 0.5 + (0.01 * (s + 1) if a == "x" else 0)}}
        for a in "xy"
        for s in range(5)
    ]
    assert math.isclose(le.paired_difference(runs, "x", "y", 2)["p_wilcoxon"], 2 / 2**5)


def test_t_test_power_matches_a_published_value_and_a_simulation():
    # Cohen's dz = 0.5, two-sided 5 %, 80 % power: 34 pairs, actual power 0.808 (G*Power's one-sample t test).
    assert le.seeds_needed(0.5, 1.0) == 34 and round(le.t_test_power(34, 0.5, 1.0), 3) == 0.808
    assert le.t_test_power(33, 0.5, 1.0) < 0.8 and le.seeds_needed(-0.5, 1.0) == 34
    for effect in (2.0, 0.9, 0.3, 0.05):  # the search against counting up one seed at a time
        n = 2
        while le.t_test_power(n, effect, 1.0) < 0.8:
            n += 1
        assert le.seeds_needed(effect, 1.0) == n
    assert math.isclose(le.t_test_power(5, 0.0, 0.05), 0.05, rel_tol=1e-9)  # no effect: the test's level
    # The detectable difference of 5 seeds at sd 0.05, checked by simulating the t test itself.
    effect = le.detectable_difference(5, 0.05)
    assert math.isclose(le.t_test_power(5, effect, 0.05), 0.8, rel_tol=1e-6)
    rng = np.random.default_rng(0)
    draws = rng.normal(effect, 0.05, size=(40_000, 5))
    rejected = stats.ttest_1samp(draws, 0.0, axis=1).pvalue < 0.05
    assert abs(rejected.mean() - 0.8) < 0.01  # binomial sd of the share: 0.002


def test_paired_difference_reports_what_its_seeds_could_detect():
    diff = np.array([0.0606, 0.0415, -0.0257, -0.0006, 0.1016])
    runs = [{"arm": "x", "budget": 5, "seed": s, "test": {"mIoU": 0.5 + v}} for s, v in enumerate(diff)]
    runs += [{"arm": "y", "budget": 5, "seed": s, "test": {"mIoU": 0.5}} for s in range(5)]
    d = le.paired_difference(runs, "x", "y", 5)
    assert math.isclose(d["sd"], diff.std(ddof=1), rel_tol=1e-9)
    assert math.isclose(le.t_test_power(5, d["detectable"], d["sd"]), 0.8, rel_tol=1e-6)
    assert math.isnan(le.paired_difference(runs[:1] + runs[5:6], "x", "y", 5)["detectable"])  # one seed


def test_schedule_gives_enough_steps():
    args = le.get_parser().parse_args(["--steps", "300", "--batch_size", "8", "--min_epochs", "2"])
    assert le.schedule(args, 30) == (75, 9)  # 4 steps/epoch -> 75 epochs, validate every 9
    epochs, _ = le.schedule(args, 3000)  # 375 steps/epoch: the min_epochs floor wins
    assert epochs == 2


def test_executor_runs_in_process_tasks_in_a_slot_and_propagates_their_failure(tmp_path):
    done = []
    tasks = [(done.append, (i,), None) for i in range(5)]
    le.Executor(2).map(tasks)
    assert sorted(done) == list(range(5))
    le.Executor(1).map(tasks)  # in this process, in order
    assert done[5:] == list(range(5))

    def fail():
        raise ValueError("anchor failed")

    with pytest.raises(ValueError, match="anchor failed"):
        le.Executor(2).map([(fail, (), None)])


def test_executor_shares_the_cores_among_the_slots_a_wave_fills(monkeypatch):
    monkeypatch.setattr(le.os, "cpu_count", lambda: 8)
    executor = le.Executor(4)
    assert [executor.threads(n) for n in (1, 2, 3, 4, 9)] == [8, 4, 2, 2, 2]
    monkeypatch.setattr(le.os, "cpu_count", lambda: 2)
    assert le.Executor(4).threads(4) == 1  # never 0


def test_pretrain_history_reads_every_launch_of_a_resumed_pre_training(tmp_path):
    """Two TensorBoard files (a launch, then a resumed one that redoes epoch 3) -> one row per epoch, the
    redone epoch with its latest values."""
    import time

    from torch.utils.tensorboard import SummaryWriter

    args = le.get_parser().parse_args(["--output_dir", str(tmp_path)])
    log_dir = le.pretrain_dir(args, "cell") / "tb"
    for epochs in ({0: 0.5, 1: 0.2, 2: 0.1}, {2: 0.09, 3: 0.05}):
        writer = SummaryWriter(str(log_dir))
        for epoch, value in epochs.items():
            writer.add_scalar("pretext/model", value, epoch)
            writer.add_scalar("pretext/neighbour_mean", 0.01, epoch)
        writer.close()
        time.sleep(1.1)  # event file names carry the second they were opened
    history = le.pretrain_history(args, "cell")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert [row["model"] for row in history] == pytest.approx([0.5, 0.2, 0.09, 0.05])
    assert all(row["neighbour_mean"] == pytest.approx(0.01) and "loss" not in row for row in history)


def test_a_backbone_copied_in_without_its_pre_training_folder_reports_no_pre_training(tmp_path):
    """An export pre-trained elsewhere (results/label_efficiency_synthetic/commands.sh, command 13): no last.tar, no TensorBoard
    folder; the study treats it as pre-trained and its pre-training tables stay empty."""
    args = le.get_parser().parse_args(["--output_dir", str(tmp_path), "--pretrain_epochs", "35"])
    le.pretrain_dir(args, "cell").mkdir(parents=True)
    le.backbone_path(args, "cell").write_bytes(b"backbone")
    assert le.backbone_path(args, "cell").name == "checkpoint_34.stcln.tar"
    assert le.pretrain_tasks(args, ["cell"]) == []
    assert le.pretrain_diagnostics(args, "cell") == {} and le.pretrain_history(args, "cell") == []


def test_one_output_folder_holds_one_schedule(tmp_path, capsys):
    """study.json records the schedule; more budgets or seeds extend the study, another schedule is refused
    (exit 2, one line naming the file and what differs) before any work; a folder where no work started
    takes the new schedule."""
    folder = tmp_path / "study"
    base = ["--output_dir", str(folder), "--budgets", "1", "5", "--steps", "300"]
    le.check_schedule(le.get_parser().parse_args(base[:-1] + ["600"]))  # a command that stopped before any work
    le.check_schedule(le.get_parser().parse_args(base))
    assert json.loads((folder / "study.json").read_text())["steps"] == 300
    (folder / "pretrain_cell").mkdir()  # pre-training has started: from now on the schedule is fixed
    le.check_schedule(le.get_parser().parse_args(base + ["--seeds", "7", "--budgets", "1", "2", "5", "--arms", "rf"]))
    for extra, named in (
        (["--steps", "900"], "steps 300 (folder) vs 900 (now)"),
        (["--fast"], "fast False (folder) vs True (now)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            le.main(base + extra)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "study.json" in err and named in err, err
    assert not (folder / "runs").exists()  # refused before any run


def test_a_folder_started_in_bf16_refuses_a_machine_that_would_run_fp32(tmp_path, capsys, monkeypatch):
    """--fast gives bf16 autocast only where bf16 is native: runs added or resumed on a CPU without it would
    mix fp32 into a bf16 study, so the command is refused (exit 2, one line) before any work; --report,
    which runs nothing, still works there."""
    from utils import precision

    folder = tmp_path / "study"
    argv = ["--output_dir", str(folder), "--fast", "--arms", "rf", "--budgets", "100", "--sweep_budget", "100"]
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: "avx512_bf16")
    le.check_schedule(le.get_parser().parse_args(argv))
    assert json.loads((folder / "study.json").read_text())["precision"] == "bf16"
    (folder / "runs").mkdir()  # work has started
    le.check_schedule(le.get_parser().parse_args(argv))  # the same machine kind: accepted
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        le.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "study.json" in err and "precision bf16 (folder) vs fp32 (now)" in err, err
    le.check_schedule(le.get_parser().parse_args(argv + ["--report"]))
    saved = json.loads((folder / "study.json").read_text())
    del saved["precision"]  # a folder from before precision was recorded: nothing to compare
    (folder / "study.json").write_text(json.dumps(saved))
    le.check_schedule(le.get_parser().parse_args(argv))


def test_the_recorded_precision_is_that_of_the_device_the_runs_get(tmp_path, capsys, monkeypatch):
    """--device cpu on a machine with CUDA runs on a CPU without bf16 in fp32: that is what study.json says;
    a device that is not there is refused in one line before anything is written."""
    from utils import precision

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    common = ["--fast", "--arms", "rf", "--budgets", "100", "--sweep_budget", "100"]
    for device, expected in (("cpu", "fp32"), ("auto", "bf16"), ("cuda", "bf16")):
        folder = tmp_path / device
        le.check_schedule(le.get_parser().parse_args(["--output_dir", str(folder), "--device", device, *common]))
        assert json.loads((folder / "study.json").read_text())["precision"] == expected, device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = tmp_path / "missing_gpu"
    with pytest.raises(SystemExit) as exit_info:
        le.main(["--output_dir", str(folder), "--device", "cuda", *common])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--device cuda" in err and "no CUDA device" in err, err
    assert not (folder / "study.json").exists()


def test_report_on_a_folder_without_a_study_is_one_line_and_writes_nothing(tmp_path, capsys):
    for folder in (tmp_path / "missing", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
            (folder / "study.json").write_text("{}")  # a command that stopped before any work
        with pytest.raises(SystemExit) as exit_info:
            le.main(["--output_dir", str(folder), "--report"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert str(folder) in err and "nothing to report" in err, err
        assert not (folder / "results.md").exists() and not (folder / "runs").exists()


def test_fast_passes_bf16_and_fast_dropout_to_every_run():
    plain = le.common_args(le.get_parser().parse_args([]))
    fast = le.common_args(le.get_parser().parse_args(["--fast"]))
    assert "--amp" not in plain and "--fast_dropout" not in plain
    assert fast[-2:] == ["--amp", "--fast_dropout"] and fast[:-2] == plain


def test_a_stopped_run_resumes_from_its_last_tar_and_one_stopped_in_its_first_epoch_restarts(tmp_path):
    args = le.get_parser().parse_args(["--output_dir", str(tmp_path)])
    stopped, early, finished = (le.make_run(args, "scratch", 5.0, seed, 1e-3, 149) for seed in (0, 1, 2))
    assert stopped.epochs == le.schedule(args, 149)[0] > 2
    assert stopped.argv[stopped.argv.index("--save_every") + 1] == 1  # last.tar after every epoch
    for run in (stopped, early, finished):
        run.out.mkdir(parents=True)
    (stopped.out / "last.tar").write_bytes(b"epoch 2")
    (stopped.out / "history.json").write_text(json.dumps({"history": [{"epoch": 1}, {"epoch": 2}]}))
    (early.out / "log.txt").write_text("stopped before its first last.tar")
    (finished.out / "summary.json").write_text("{}")
    tasks = le.run_tasks([stopped, early, finished], "PASTIS/finetuning_STCLN.py")
    assert [argv for _, argv, _ in tasks] == [stopped.argv + ["--resume"], early.argv]
    assert (stopped.out / "last.tar").read_bytes() == b"epoch 2" and not early.out.exists()
    expected = dict(arm="scratch", budget=5.0, seed=0, lr=1e-3, epoch=2, of=stopped.epochs)
    assert stopped.progress() == expected
    assert early.progress()["epoch"] == 0


def run_recording_waves(tmp_path, monkeypatch, argv: list[str], pre_trained: bool) -> tuple[list, dict]:
    """le.main(argv) with every task "run" by a recorder: returns the waves (run folders per Executor.map) and the results."""
    waves = []
    args = le.get_parser().parse_args(argv)

    class Recorder:
        def __init__(self, jobs):
            pass

        def map(self, tasks):  # "runs" every task: a fine-tune leaves its summary, a pre-training its backbone
            waves.append([str(log.parent.relative_to(tmp_path)) for _, _, log in tasks if log])  # anchors: no log
            for _, _, log in tasks:
                if log is None:
                    continue
                log.parent.mkdir(parents=True)
                if log.parent.name.startswith("pretrain_"):
                    le.backbone_path(args, log.parent.name.removeprefix("pretrain_")).write_bytes(b"backbone")
                else:
                    (log.parent / "summary.json").write_text(json.dumps({"test": {"mIoU": 0.5}}))
                    (log.parent / "history.json").write_text(json.dumps({"history": [{"epoch": 1, "steps": 2}]}))

    fakes = dict(
        Executor=Recorder,
        labelled_count=lambda *a: 16,
        write_outputs=lambda *a: None,
        pretrain_diagnostics=lambda *a: {},
        pretrain_history=lambda *a: [],
        read_run=lambda run: {"arm": run.arm, "seed": run.seed, "lr": run.lr, "best_val_mIoU": 0.5 - run.lr},
    )
    for name, fake in fakes.items():  # where the study command looks them up
        monkeypatch.setattr(le.study_module, name, fake)
    if pre_trained:
        le.pretrain_dir(args, "cell").mkdir(parents=True)
        le.backbone_path(args, "cell").write_bytes(b"backbone")
    return waves, le.main(argv)


@pytest.mark.parametrize("pre_trained", [False, True])
def test_waves_with_one_lr(tmp_path, monkeypatch, pre_trained):
    """One lr: the pre-training and scratch runs form the first wave and wp runs wait for the backbone; once
    the backbone exists every run is in one wave (no slot idles while one arm's last runs finish)."""
    argv = [
        "--output_dir",
        str(tmp_path),
        *"--arms scratch wp_cell --lrs 1e-3 --budgets 5 --sweep_budget 5 --seeds 2".split(),
    ]
    waves, results = run_recording_waves(tmp_path, monkeypatch, argv, pre_trained)
    runs = [f"runs/{arm}/b5_s{seed}_lr0.001" for seed in (0, 1) for arm in ("scratch", "wp_cell")]
    if pre_trained:
        assert waves == [runs, []]
    else:
        assert waves == [["pretrain_cell", *runs[::2]], runs[1::2]]
    assert [f"runs/{r['arm']}/b5_s{r['seed']}_lr0.001" for r in results["runs"]] == runs


def test_only_seeds_runs_those_seeds_and_keeps_the_lr_sweep_at_seed_0(tmp_path, monkeypatch):
    """--only_seeds 2 of --seeds 3 (one seed per machine): the lr sweep still runs at seed 0 (the same choice as
    the whole study), then only seed 2's runs; the results hold seed 2 alone."""
    argv = [
        "--output_dir",
        str(tmp_path),
        *"--arms scratch --lrs 1e-3 3e-3 --budgets 5 20 --sweep_budget 5 --seeds 3 --only_seeds 2".split(),
    ]
    waves, results = run_recording_waves(tmp_path, monkeypatch, argv, pre_trained=False)
    sweep = ["runs/scratch/b5_s0_lr0.001", "runs/scratch/b5_s0_lr0.003"]
    assert waves == [sweep, ["runs/scratch/b5_s2_lr0.001", "runs/scratch/b20_s2_lr0.001"], []]  # 1e-3 scores higher
    assert results["seeds"] == [2] and {r["seed"] for r in results["runs"]} == {2}
    assert results["finished"]["of"] == 2
    results["settings"]["seeds"] = 3
    assert le.seeds_text(results) == "seed 2 of 0-2" and le.seeds_text({"settings": {"seeds": 3}}) == "3 seeds"


def test_only_seeds_outside_the_study_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        le.main(["--output_dir", str(tmp_path), "--seeds", "3", "--only_seeds", "3", "--arms", "rf"])
    assert exit_info.value.code == 2
    assert "--only_seeds [3] must be among the seeds 0..2" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_demo_prints_the_mean_validation_curve_of_each_learned_arm():
    from experiments.demo import plateau_report

    def run(arm, seed, curve):
        history = [{"steps": 10, "train_loss": 1.0}] + [{"steps": s, "val_mIoU": v} for s, v in curve]
        return {"arm": arm, "budget": 5.0, "seed": seed, "history": history}

    report = plateau_report(
        {
            "runs": [
                run("scratch", 0, [(50, 0.2), (100, 0.30), (150, 0.31)]),
                run("scratch", 1, [(50, 0.4), (100, 0.40), (120, 0.5)]),  # 120: not validated by seed 0
                run("wp_cell", 0, [(50, 0.2), (100, 0.35)]),
                run("rf", 0, [(50, 0.1)]),
            ]
        }
    )
    lines = {line.split()[2]: line for line in report.splitlines() if line.startswith("  5 %")}
    assert sorted(lines) == ["scratch", "wp_cell"]  # the forest has no curve
    assert lines["scratch"].split("scratch")[1].split() == ["50:", "0.30", "100:", "0.35"]
    assert lines["wp_cell"].split("wp_cell")[1].split() == ["50:", "0.20", "100:", "0.35"]
