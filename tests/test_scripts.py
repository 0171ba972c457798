"""End-to-end tests of the entry scripts and experiment commands (tiny sizes, CPU).

The commands run as subprocesses, two at a time with one thread each (CI has 2 cores; a tiny model
gains little from a second thread), each in its own folder (its own synthetic data cache); the
tests then check what each wrote."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from utils.metrics import PROTOCOLS, evaluate_protocol

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["pretrain_STCLN.py", "PASTIS/finetuning_STCLN.py", "PASTIS/test_STCLN.py", "MTLCC/finetuning_STCLN.py",
           "MTLCC/test_STCLN.py"]
MODULES = ["experiments.demo", "experiments.pretext_baselines", "experiments.table1_mtlcc2017", "experiments.early_season",
           "experiments.label_limited", "utils.check_parity", "utils.datasets.mtlcc", "bench.train_step", "bench.profile_step", "bench.dropout",
           "bench.data_loading", "bench.gpu_step", "bench.predict_scene"]


def run(args: list, cwd: Path, timeout: int = 600, threads: int = 1) -> subprocess.CompletedProcess:
    """The command's result; one that runs past ``timeout`` is killed and fails as exit 124 with what it wrote, so
    that only the tests of its job fail, with its output, instead of every test of the shared fixture."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    args = [str(a) for a in args]
    try:
        return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as late:
        text = [x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (late.stdout, late.stderr)]
        return subprocess.CompletedProcess(late.cmd, 124, text[0], f"{text[1]}\nkilled: ran past {timeout} s")


PRETRAIN = REPO / "pretrain_STCLN.py"
PASTIS_FT = REPO / "PASTIS/finetuning_STCLN.py"
QUIET = ["--num_workers", "0", "--no_progress"]


def experiment_job(experiment: str):
    """`python -m experiments.<experiment> --smoke` (test_experiment_smoke checks every job made here)."""

    def job(cwd: Path) -> dict:
        name, *extra = experiment.split()
        return {"result": run(["-m", f"experiments.{name}", *extra, "--smoke", "--output_dir", cwd / "out"], cwd)}

    job.experiment = True
    return job


def pretext_baselines_job(cwd: Path) -> dict:
    return {"result": run(["-m", "experiments.pretext_baselines", "--smoke", "--limit", 40, "--output_dir", cwd / "out"], cwd)}


def finetune_job(cwd: Path) -> dict:
    base = ["--dataset", "synthetic", "--smoke", "--epochs", 2, *QUIET, "--output_dir", cwd / "out", "--label_ratio", 0.5]
    runs = {"finetune": run([PASTIS_FT, *base], cwd)}
    if runs["finetune"].returncode == 0:  # the test script alone, with the other protocol, on the saved best checkpoint
        runs["test"] = run([REPO / "PASTIS/test_STCLN.py", "--dataset", "synthetic", "--smoke", *QUIET,
                            "--output_dir", cwd / "out", "--protocol", "utae"], cwd)
    return runs


def pretrain_job(cwd: Path) -> dict:
    return {"result": run([PRETRAIN, "--smoke", "--epochs", 3, *QUIET, "--output_dir", cwd / "out", "--save_every", 1,
                           "--folds", 1, 2, 3, 5, "--lr", 3e-3], cwd)}


def block_pretrain_job(cwd: Path) -> dict:
    return {"result": run([PRETRAIN, "--smoke", "--epochs", 1, *QUIET, "--output_dir", cwd / "out", "--mask_mode", "block",
                           "--mask_block", 3], cwd)}


def freeze_job(cwd: Path) -> dict:
    # --grad_checkpoint --fast_dropout: both scripts run them end to end; frozen BatchNorm statistics must not move either
    common = ["--dataset", "synthetic", "--smoke", "--epochs", 1, *QUIET, "--grad_checkpoint", "--fast_dropout"]
    runs = {"pretrain": run([PRETRAIN, *common, "--output_dir", cwd / "pt"], cwd)}
    if runs["pretrain"].returncode == 0:
        runs["finetune"] = run([PASTIS_FT, *common, "--epochs", 2, "--output_dir", cwd / "out", "--pretrain_pth",
                                cwd / "pt" / "checkpoint_0.stcln.tar", "--freeze_backbone", "--label_ratio", 0.5], cwd)
    return runs


def label_efficiency_job(cwd: Path) -> dict:
    """The study's smoke run, then the same command again (every run finished: nothing may re-run)."""
    command = ["-m", "experiments.label_efficiency", "--smoke", "--output_dir", cwd / "out"]
    steps = {"result": run(command, cwd)}
    if steps["result"].returncode == 0:
        (cwd / "first_results.json").write_bytes((cwd / "out" / "results.json").read_bytes())
        stamps = {str(p): p.stat().st_mtime_ns for p in (cwd / "out").glob("runs/*/*/summary.json")}
        (cwd / "first_stamps.json").write_text(json.dumps(stamps))
        steps["again"] = run(command, cwd)
    if steps.get("again") and steps["again"].returncode == 0:
        (cwd / "again_results.json").write_bytes((cwd / "out" / "results.json").read_bytes())
        stamps = {str(p): p.stat().st_mtime_ns for p in (cwd / "out").glob("runs/*/*/summary.json")}
        (cwd / "again_stamps.json").write_text(json.dumps(stamps))
        for name in REPORT_REMOVED:  # as if the study had been stopped before these runs finished
            (cwd / "out" / "runs" / name / "summary.json").unlink()
        steps["report"] = run(command + ["--report"], cwd)
    if steps.get("report") and steps["report"].returncode == 0:
        for name in ("results.json", "results.md"):
            (cwd / f"report_{name}").write_bytes((cwd / "out" / name).read_bytes())
        steps["resume"] = run(command, cwd)  # the learned run kept its last.tar: it resumes, not restarts
    return steps


REPORT_REMOVED = ("scratch/b100_s1_lr0.001", "rf/b100_s1")


def multisource_job(cwd: Path) -> dict:
    """Issue 38's merged fusion: a fine-tune (train and test) with --sources S2 S1 --fusion merged from a
    single-source backbone. Late fusion's pre-training, fine-tuning and test script run under torchrun in
    tests/test_ddp.py::test_two_source_ddp_scripts_train_and_test."""
    import torch

    from models import STCLNPretrain, tiny_config
    from utils.checkpoint import backbone_export, save_checkpoint

    two = ["--dataset", "synthetic", "--smoke", "--epochs", 1, *QUIET, "--sources", "S2", "S1"]
    torch.manual_seed(0)  # a single-source (S2) backbone, as pre-training without --sources writes it (--positions doy)
    single = STCLNPretrain(tiny_config(in_channels=10, num_classes=20, positions="doy"))
    save_checkpoint(cwd / "single.tar", backbone_export(single, single.config, 0))
    return {"merged": run([PASTIS_FT, *two, "--output_dir", cwd / "merged", "--label_ratio", 0.5, "--fusion", "merged",
                           "--positions", "doy", "--pretrain_pth", cwd / "single.tar"], cwd)}


def gpu_bench_job(cwd: Path) -> dict:
    return {"result": run(["-m", "bench.gpu_step", "--device", "cpu", "--smoke", "--workers", 0], cwd)}


def predict_bench_job(cwd: Path) -> dict:
    return {"result": run(["-m", "bench.predict_scene", "--device", "cpu", "--smoke"], cwd)}


# longest first (measured), so that the two lanes finish together
JOBS = {
    "label_efficiency": label_efficiency_job,
    "early_season": experiment_job("early_season"),
    "demo": experiment_job("demo"),
    "demo --sources S2 S1": experiment_job("demo --sources S2 S1"),
    "table1_mtlcc2017": experiment_job("table1_mtlcc2017"),
    "label_limited --dataset mtlcc": experiment_job("label_limited --dataset mtlcc"),
    "freeze": freeze_job,
    "multisource": multisource_job,
    "pretrain": pretrain_job,
    "finetune": finetune_job,
    "gpu_bench": gpu_bench_job,
    "predict_bench": predict_bench_job,
    "block_pretrain": block_pretrain_job,
    "label_limited --dataset pastis --sources S2 S1": experiment_job("label_limited --dataset pastis --sources S2 S1"),
    "pretext_baselines": pretext_baselines_job,
}
EXPERIMENTS = [name for name, job in JOBS.items() if getattr(job, "experiment", False)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """name -> (folder, {step: CompletedProcess}) of every job above."""

    def execute(name: str):
        cwd = tmp_path_factory.mktemp(name.split()[0])
        return cwd, JOBS[name](cwd)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(JOBS, pool.map(execute, JOBS)))


def finished(runs: dict, name: str) -> tuple[Path, dict]:
    """The job's folder and runs; fails with the stderr of the first failed step."""
    cwd, steps = runs[name]
    for step, result in steps.items():
        assert result.returncode == 0, f"{name}/{step}: {result.stderr[-3000:]}"
    return cwd, steps


def exit_status(main, argv: list) -> int:
    """An entry point's ``main(argv)`` in this process: its status, or argparse's exit code."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("target", SCRIPTS + [f"-m {m}" for m in MODULES])
@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")  # `-m` of a submodule
def test_help(target, capsys, monkeypatch):
    """`--help` of every entry point, run in this process as ``python <target> --help`` would (runpy,
    ``__name__ == "__main__"``): a subprocess per target cost 16 torch imports. The scripts' own start-up
    as subprocesses is exercised by the end-to-end tests below."""
    import runpy

    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts' one sys.path edit stays in this test
    if target.startswith("-m"):
        module = target.split()[1]
        monkeypatch.setattr(sys, "argv", [module, "--help"])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        monkeypatch.setattr(sys, "argv", [str(REPO / target), "--help"])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(REPO / target), run_name="__main__")
    assert exit_info.value.code in (0, None)
    stdout = capsys.readouterr().out
    assert "usage:" in stdout
    description = stdout.split("\n\n")[1].strip()  # argparse: usage, blank line, description
    assert len(description.split()) >= 4 and not description.startswith(("options:", "positional")), stdout[:500]


@pytest.mark.parametrize("dataset", ["pastis", "mtlcc"])
def test_help_never_contradicts_the_defaults(dataset):
    """A help text that says "X (default)" must have X as the real default (PASTIS fine-tuning once
    said "'synthetic' (default)" next to "(default: pastis)")."""
    import re

    import pretrain_STCLN
    from utils.finetune import get_parser

    for parser in (get_parser(dataset, "fine-tune"), pretrain_STCLN.get_parser()):
        for action in parser._actions:
            for claimed in re.findall(r"'?([\w.]+)'? \(default\)", action.help or ""):
                assert claimed == str(action.default), (action.dest, action.help, action.default)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_smoke(experiment, runs):
    cwd, steps = finished(runs, experiment)
    assert "STCLN_wp" in steps["result"].stdout
    text = (cwd / "out" / "results.md").read_text()
    assert "STCLN" in text
    for summary in (cwd / "out").glob("*/summary.json"):  # every fine-tune tested its best checkpoint
        assert set(json.loads(summary.read_text())["test"]) >= {"OA", "mIoU", "mF1", "kappa"}



def test_the_demo_fine_tunes_the_released_backbone(runs):
    """make demo fine-tunes the 35-epoch GPU backbone the repository ships (--smoke: in the place of
    the smoke schedule's one pre-training epoch) and pre-trains nothing itself."""
    from experiments import demo

    cwd, steps = finished(runs, "demo")
    copied = cwd / "out" / "pretrain_cell" / "checkpoint_0.stcln.tar"
    assert copied.read_bytes() == demo.BACKBONE.read_bytes()
    assert [p.name for p in copied.parent.iterdir()] == [copied.name]  # no last.tar, config.json, tb/: not pre-trained
    loaded = re.findall(r"loaded \d+ backbone tensors from (\S+)", steps["result"].stdout)
    assert len(loaded) == 2 and set(loaded) == {str(copied)}  # both wp_cell seeds
    assert "Backbones copied in, pre-trained elsewhere" in (cwd / "out" / "results.md").read_text()

def test_experiments_pass_sources_to_every_run(runs):
    """label_limited and the demo with --sources S2 S1: every pre-training and fine-tuning run read S2 S1A S1D
    (late fusion), and the demo's study folder records them."""
    cwd, _ = finished(runs, "label_limited --dataset pastis --sources S2 S1")
    configs = sorted((cwd / "out").glob("*/config.json"))
    assert [p.parent.name for p in configs] == ["pretrain", "stcln", "stcln_wp"]
    for path in configs:
        args = json.loads(path.read_text())  # the run's flags
        assert (args["sources"], args["fusion"]) == (["S2", "S1A", "S1D"], "late"), path
    cwd, _ = finished(runs, "demo --sources S2 S1")
    assert json.loads((cwd / "out" / "study.json").read_text())["sources"] == ["S2", "S1A", "S1D"]
    configs = sorted((cwd / "out" / "runs").glob("*/*/config.json"))
    assert {p.parts[-3] for p in configs} == {"scratch", "wp_cell"}
    assert all(json.loads(p.read_text())["sources"] == ["S2", "S1A", "S1D"] for p in configs)


def test_experiments_refuse_radar_on_mtlcc_in_one_line(capsys):
    """MTLCC holds Sentinel-2 only: label_limited refuses --sources S2 S1 before any run (exit 2); merged fusion
    with one source, and the demo's merged fusion on the released (date-index) backbone, likewise."""
    from experiments import demo, label_limited

    for main, argv, message in (
        (label_limited.main, ["--dataset", "mtlcc", "--smoke", "--sources", "S2", "S1"], "MTLCC data hold Sentinel-2 only"),
        (label_limited.main, ["--dataset", "pastis", "--smoke", "--fusion", "merged"], "two or more --sources"),
        (demo.main, ["--smoke", "--sources", "S2", "S1", "--fusion", "merged"], "--pretrain_epochs N"),
    ):
        assert exit_status(main, argv) == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_label_efficiency_smoke_writes_results_skips_finished_runs_and_resumes_stopped_ones(runs):
    from experiments import label_efficiency as le

    cwd, steps = finished(runs, "label_efficiency")
    out = cwd / "out"
    for name in ("results.json", "results.md", "curve.png", "training_curves.png", "pretext_curves.png"):
        assert (out / name).is_file(), name
    saved = json.loads((cwd / "first_results.json").read_text())
    for mode, epochs in saved["pretrain_history"].items():  # TensorBoard log vs the checkpoint's own metrics
        assert [e["epoch"] for e in epochs] == [1]  # --smoke: one epoch
        final = saved["pretrain"][mode]
        assert math.isclose(epochs[-1]["model"], final["pretext_model"], rel_tol=1e-6)
        assert math.isclose(epochs[-1]["neighbour_mean"], final["pretext_neighbour_mean"], rel_tol=1e-6)
        assert math.isclose(epochs[-1]["loss"], final["loss"], rel_tol=1e-6)
    assert {r["arm"] for r in saved["runs"]} == set(le.ARMS)
    assert len(saved["runs"]) == len(le.ARMS) * 2  # one budget x two seeds
    for run_ in saved["runs"]:
        assert set(run_["test"]) >= {"OA", "mIoU", "mF1"}
        name = f"{run_['arm']}/{Path(run_['dir']).name}" if run_["arm"] in le.LEARNED else None
        if name and name not in REPORT_REMOVED:  # the study's numbers are the runs' own summaries
            summary = json.loads((out / "runs" / name / "summary.json").read_text())
            assert summary["test"]["mIoU"] == run_["test"]["mIoU"]
    text = (out / "results.md").read_text()
    assert "wp_cell − scratch" in text and "± " in text and "| detectable (80 % power) |" in text
    stamps = json.loads((cwd / "first_stamps.json").read_text())
    assert stamps and json.loads((cwd / "again_stamps.json").read_text()) == stamps  # nothing re-ran
    again = json.loads((cwd / "again_results.json").read_text())
    assert [r["test"] for r in again["runs"]] == [r["test"] for r in saved["runs"]]
    # --report after two runs "did not finish": a partial table of the others, and nothing started
    partial = json.loads((cwd / "report_results.json").read_text())
    kept = [r for r in saved["runs"] if not (r["seed"] == 1 and r["arm"] in ("scratch", "rf"))]
    assert [r["test"] for r in partial["runs"]] == [r["test"] for r in kept]
    assert partial["finished"] == {"runs": len(kept), "of": len(saved["runs"])}
    text = (cwd / "report_results.md").read_text()
    assert f"Partial: {len(kept)} of {len(saved['runs'])} runs" in text and "no run was started" in text
    # the learned run lost only its summary: it trained its one epoch (history.json), the anchor is not listed
    assert [(r["arm"], r["seed"], r["epoch"], r["of"]) for r in partial["unfinished"]] == [("scratch", 1, 1, 1)]
    assert "Unfinished learned runs (epochs trained so far): scratch 100 % seed 1: 1 of 1 epochs." in text
    scratch = next(line for line in text.splitlines() if line.startswith("| 100 |"))  # first table: test mIoU
    one = next(r["test"]["mIoU"] for r in kept if r["arm"] == "scratch")
    assert f"{one:.3f} (n=1)" in scratch
    paired = next(line for line in text.splitlines() if line.startswith("| wp_cell − scratch |"))
    assert paired.endswith("(0/1) |") or paired.endswith("(1/1) |")  # over the one seed both arms have
    # the study again: the stopped learned run resumes from its last.tar (trained no epoch again, only tested),
    # the anchor runs again, nothing else re-runs, and the table is the full one again
    log = steps["resume"].stdout  # --smoke runs in-process: the runs log to the study's stdout
    assert f"resumed from {out / 'runs' / REPORT_REMOVED[0] / 'last.tar'}" in log and "epoch 1/1 " not in log, log[-3000:]
    now = {str(p): p.stat().st_mtime_ns for p in out.glob("runs/*/*/summary.json")}
    removed = {str(out / "runs" / name / "summary.json") for name in REPORT_REMOVED}
    assert set(now) == set(stamps) and all(now[k] != stamps[k] for k in removed)
    assert {k: v for k, v in now.items() if k not in removed} == {k: v for k, v in stamps.items() if k not in removed}
    final = json.loads((out / "results.json").read_text())
    assert [r["test"] for r in final["runs"]] == [r["test"] for r in saved["runs"]]
    assert final["finished"] == {"runs": len(saved["runs"]), "of": len(saved["runs"])} and final["unfinished"] == []


def test_label_efficiency_report_of_later_seeds_only(runs, tmp_path, monkeypatch):
    """--report --only_seeds without seed 0 (one machine's seeds, or a replication on new seeds) with one lr: the
    learned arms' rows are the finished runs of those seeds (it raised KeyError on the sweep's seed 0)."""
    from experiments import label_efficiency as le

    cwd, _ = finished(runs, "label_efficiency")
    shutil.copytree(cwd / "out", tmp_path / "out")  # the other tests read the study's own folder
    monkeypatch.chdir(cwd)  # its synthetic data cache
    report = le.main(["--smoke", "--output_dir", str(tmp_path / "out"), "--report", "--only_seeds", "1"])
    full = json.loads((cwd / "out" / "results.json").read_text())
    assert report["seeds"] == [1] and {r["arm"] for r in report["runs"]} == set(le.ARMS)
    assert [r["test"] for r in report["runs"]] == [r["test"] for r in full["runs"] if r["seed"] == 1]
    assert "seed 1 of 0-1" in (tmp_path / "out" / "results.md").read_text()


def test_pretext_baselines_smoke(runs, capsys):
    cwd, steps = finished(runs, "pretext_baselines")
    out, stdout = cwd / "out", steps["result"].stdout
    assert "(a) neighbour mean" in stdout and "block 4x4" in stdout and "40 samples" in stdout
    rows = {row["mask"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"cell", "block 4x4"} and (out / "results.md").is_file()
    for row in rows.values():
        assert abs(row["masked of eligible"] - 0.4) < 0.06 and row["masked fraction"] <= row["masked of eligible"]
        scores = ("(a) neighbour mean", "(b) temporal interp", "(b') gated dates", "(c) best constant")
        assert all(np.isfinite(row[k]) and row[k] > 0 for k in scores)
    # blocks hide the same-date neighbours: many more masked cells have none left
    assert rows["block 4x4"]["(a) no neighbour"] > 10 * max(rows["cell"]["(a) no neighbour"], 0.01)
    from experiments import pretext_baselines

    assert exit_status(pretext_baselines.main, ["--smoke", "--mask_block", 0]) == 2
    assert "--mask_block" in capsys.readouterr().err


def test_finetune_outputs_are_consistent(runs):
    """metrics.json equals a recomputation from its own confusion matrix; test-only reruns agree."""
    cwd, _ = finished(runs, "finetune")
    out = cwd / "out"
    saved = json.loads((out / "test_stcln" / "metrics.json").read_text())
    cm = np.array(saved["confusion_matrix"])
    recomputed = evaluate_protocol(cm, PROTOCOLS["pastis"]["stcln"])
    for key in ("OA", "mIoU", "mF1", "kappa"):
        assert saved["metrics"][key] == pytest.approx(recomputed[key], abs=1e-12)
    for name in ("best.tar", "last.tar", "config.json", "test_stcln/confusion_matrix.png", "test_stcln/prediction_maps.png",
                 "test_stcln/metrics.md"):
        assert (out / name).is_file(), name
    utae = json.loads((out / "test_utae" / "metrics.json").read_text())
    assert utae["metrics"]["protocol"] == "utae"
    assert np.array_equal(np.array(utae["confusion_matrix"]), cm)  # same predictions, other scoring


def test_single_source_backbone_fine_tunes_a_merged_two_source_model(runs):
    """The script loads an S2-only backbone into the primary encoder of a merged-fusion model (the radar
    encoders start from their initialisation), and trains and tests it."""
    import torch

    cwd, steps = finished(runs, "multisource")
    single = torch.load(cwd / "single.tar", weights_only=True)
    assert f"loaded {len(single['model'])} backbone tensors" in steps["merged"].stdout
    assert "a single-source backbone: loaded into the primary encoder" in steps["merged"].stdout
    best = torch.load(cwd / "merged" / "best.tar", weights_only=True)
    assert best["model_config"]["fusion"] == "merged" and best["model_config"]["positions"] == "doy"
    assert set(json.loads((cwd / "merged" / "summary.json").read_text())["test"]) >= {"OA", "mIoU"}


def test_sources_and_fusion_refusals(runs, capsys):
    """One-line refusals: merged fusion without --positions doy or with one source, radar on MTLCC, and a
    multi-source checkpoint in predict_STCLN.py; utils.select_labels selects with that checkpoint."""
    import predict_STCLN
    import pretrain_STCLN
    from utils import select_labels
    from utils.finetune import main as finetune

    cwd, _ = finished(runs, "multisource")
    refusals = [
        (pretrain_STCLN.main, ["--smoke", "--sources", "S2", "S1", "--fusion", "merged"], "needs --positions doy"),
        (pretrain_STCLN.main, ["--smoke", "--fusion", "merged", "--positions", "doy"], "nothing to fuse"),
        (lambda argv: finetune("mtlcc", "ft", argv), ["--dataset", "synthetic", "--smoke", "--sources", "S1"],
         "MTLCC data hold Sentinel-2 only"),
    ]
    for main, argv, message in refusals:
        assert exit_status(main, argv) == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
    np.save(cwd / "cube.npy", np.zeros((2, 10, 8, 8), np.float32))
    (cwd / "dates.txt").write_text("2019-01-01\n2019-02-01\n")
    checkpoint = cwd / "merged" / "best.tar"  # a two-source (merged) model
    assert exit_status(predict_STCLN.main, ["--checkpoint", checkpoint, "--cube", cwd / "cube.npy", "--dates",
                                            cwd / "dates.txt", "--output_dir", cwd / "maps"]) == 2
    assert "--cube takes Sentinel-2 models only" in capsys.readouterr().err
    # utils.select_labels reads the data with the checkpoint's sources (the radar this job's runs added to the set)
    assert exit_status(select_labels.main, ["--checkpoint", checkpoint, "--strategy", "entropy", "--n", 1,
                                            "--data_root", cwd / "data_cache" / "synthetic_pastis_v2_smoke",
                                            "--smoke", "--output_dir", cwd / "sel", "--no_progress"]) == 0
    assert json.loads((cwd / "sel" / "selection.json").read_text())["sources"] == ["S2", "S1A", "S1D"]


def test_pretraining_writes_everything_and_lowers_loss(runs):
    cwd, steps = finished(runs, "pretrain")
    out, stdout = cwd / "out", steps["result"].stdout
    losses = [float(line.split("loss ")[1].split()[0]) for line in stdout.splitlines() if " loss " in line]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert sum("pretext MSE model" in line for line in stdout.splitlines()) == 3
    for name in ("last.tar", "checkpoint_2.stcln.tar", "reconstruction.png", "config.json"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())


def test_block_masking_pretraining_logs_the_pretext_baselines(runs, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cwd, steps = finished(runs, "block_pretrain")
    line = next(line for line in steps["result"].stdout.splitlines() if "pretext MSE model" in line)
    model, neighbour, interp = (float(line.split(name)[1].split()[0]) for name in ("model", "neighbour mean", "temporal interp"))
    assert ("does not beat both" in line) == (model >= min(neighbour, interp))
    tags = EventAccumulator(str(cwd / "out" / "tb")).Reload().Tags()["scalars"]
    assert {"pretext/model", "pretext/neighbour_mean", "pretext/temporal_interp", "pretrain/loss"} <= set(tags)
    import pretrain_STCLN

    assert exit_status(pretrain_STCLN.main, ["--smoke", "--mask_block", 0]) == 2
    assert "--mask_block" in capsys.readouterr().err


def test_freeze_backbone_keeps_pretrained_weights_exactly(runs):
    import torch

    cwd, _ = finished(runs, "freeze")
    for run_dir in ("pt", "out"):  # the runtime options reached both scripts
        flags = json.loads((cwd / run_dir / "config.json").read_text())
        assert flags["grad_checkpoint"] and flags["fast_dropout"], run_dir
    backbone = torch.load(cwd / "pt" / "checkpoint_0.stcln.tar", weights_only=True)["model"]
    tuned = torch.load(cwd / "out" / "last.tar", weights_only=True)["model"]
    for key, value in backbone.items():
        assert torch.equal(tuned[f"backbone.{key}"], value), key
    head = tuned["classifier.weight"]
    assert not torch.equal(head, torch.zeros_like(head))


def test_predict_bench_dry_run(runs):
    """bench/predict_scene.py end to end on CPU (a GeoTIFF scene, fp32 then --amp): rates and the tile estimate."""
    _, steps = finished(runs, "predict_bench")
    out = steps["result"].stdout
    rates = [float(line.split()[1]) for line in out.splitlines() if "windows/s =" in line]
    assert len(rates) == 2 and all(rate > 0 for rate in rates)
    assert out.count("estimate, one Sentinel-2 tile (10980 x 10980 px") == 2


def test_gpu_bench_dry_run(runs):
    """bench/gpu_step.py end to end on CPU: every row, fp32 and bf16, eager and (fine-tune) compiled."""
    _, steps = finished(runs, "gpu_bench")
    lines = [line for line in steps["result"].stdout.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [line.split("|")[1:-1] for line in lines[1:]]
    assert len(rows) == 3 * 2 + 2  # 3 rows x (fp32, bf16) eager + the fine-tune row compiled twice
    for cells in rows:
        assert float(cells[5]) > 0 and float(cells[7]) > 0  # samples/s, TFLOP/s
    assert {cells[2].strip() for cells in rows} == {"fp32", "bf16"}
