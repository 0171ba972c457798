"""Label efficiency: does masked pre-training help STCLN when labels are few?

    python -m experiments.label_efficiency                      # the full study on the synthetic benchmark
    python -m experiments.label_efficiency --smoke              # seconds (CI)
    bash results/label_efficiency_synthetic/commands.sh   # every command behind the README's results, in order (hours on 2 cores)
    python -m experiments.label_efficiency --dataset pastis --data_root data/PASTIS --preset paper --device cuda

For every label budget (% of the training crops, class-stratified, never a crop without a scored
pixel) and every seed (a seed draws the labelled subset *and* the initialisation, the same draw
for every arm), the arms run on one schedule (same steps, batch, validation and model selection):

    scratch        STCLN from a random initialisation, full fine-tune
    wp_<mode>      STCLN_wp: backbone pre-trained with --mask_mode <mode> (cell = the paper,
                   block, frame), full fine-tune
    probe_wp       linear probe (--freeze_backbone) of the cell-pre-trained backbone
    probe_random   linear probe of a random backbone (what the probe learns without pre-training)
    rf             per-pixel random forest on the same labelled pixels (sanity anchor)
    majority       the most frequent labelled class everywhere (floor)

The learning rate of every learned arm is picked from --lrs by the best validation score at
--sweep_budget with the first seed; that seed's run with the chosen lr is reused by the study.
Outputs in --output_dir: results.json (every run), results.md (mean +- std per budget and arm,
paired differences with 95 % confidence intervals over seeds), curve.png (mIoU vs budget),
training_curves.png (validation mIoU vs steps, first seed) and pretext_curves.png (masked-cell MSE of
each pre-training vs epoch, next to the two non-learned baselines). Re-running with the same
--output_dir skips every finished run and resumes an interrupted one from its last epoch (saved
every epoch), so an interrupted study continues where it stopped; --report writes the tables and
figures of the runs finished so far, and how far each unfinished one has trained, without starting
any. The folder's study.json holds the schedule its runs share, and a command with another schedule
(steps, batch, model, pre-training, --fast, crop, --cv, ...) is refused there, so runs of different
recipes never mix in one table (budgets, seeds and arms may grow).

--crop_size: the training crop of every pre-training and fine-tuning run (validation and test read
whole patches). A folder's patch size is dataset.json's 'patch_size' (written by utils.datasets.convert),
else the smallest patch side of the folder; a crop larger than the folder's patches is refused before
any work. --smoke crops 8 px whatever is given.

--cv, spatial cross-validation, for data sets split in folds (folder, synthetic, pastis; not MTLCC).
With the labelled folds f_1 < ... < f_n of metadata.geojson (folds > 0; the converter's fold 0 holds
buffer patches, used only by pre-training), rotation i tests on f_i, selects on f_(i mod n + 1), trains
on the other folds and pre-trains on every fold but f_i (one backbone per masking mode and rotation).
Each (budget, seed, test fold) is one unit: tables give mean +- std over the seeds x folds units,
paired differences pair by unit (the test folds are disjoint, their training folds overlap), and a
pooled score per seed sums the n test folds' confusion matrices before scoring. Run folders carry the
fold: runs/<arm>/b<budget>_s<seed>_f<fold>_lr<lr> and pretrain_<mode>_f<fold>. The lr sweep stays at
the sweep budget, first seed, first rotation.
"""

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("stcln")

# Which folds/splits each data set uses. Synthetic: folds 1, 2, 3 and 5 (1,000 patches) are the
# unlabelled pre-training pool, labels come from folds 1-3, fold 5 selects the model, fold 4 (never
# seen by pre-training) is the test set. PASTIS follows the paper (pre-train on fold 5, labels from
# fold 1, select on fold 2, test on fold 4); MTLCC pre-trains on the training tiles of the same year.
SPLITS = {
    "synthetic": {"pretrain": ["--folds", "1", "2", "3", "5"],
                  "finetune": ["--train_folds", "1", "2", "3", "--val_folds", "5", "--test_folds", "4"], "crop": 16},
    "pastis": {"pretrain": ["--folds", "5"],
               "finetune": ["--train_folds", "1", "--val_folds", "2", "--test_folds", "4"], "crop": 32},
    "mtlcc": {"pretrain": [], "finetune": [], "crop": 0},
    # folds: the folder's dataset.json splits. crop: what studies used before they took the folder's patch
    # size (study_crop), so the crop of a study.json without crop_size (and pretext_baselines' default)
    "folder": {"pretrain": [], "finetune": [], "crop": 32},
}
SCRIPTS = {"synthetic": "PASTIS/finetuning_STCLN.py", "pastis": "PASTIS/finetuning_STCLN.py", "mtlcc": "MTLCC/finetuning_STCLN.py",
           "folder": "PASTIS/finetuning_STCLN.py"}
ARMS = ("scratch", "wp_cell", "wp_block", "wp_frame", "probe_wp", "probe_random", "rf", "majority")
LEARNED = ("scratch", "wp_cell", "wp_block", "wp_frame", "probe_wp", "probe_random")
ARM_NAMES = {"scratch": "STCLN from scratch", "wp_cell": "STCLN_wp, cell masking (the paper)",
             "wp_block": "STCLN_wp, block masking", "wp_frame": "STCLN_wp, frame masking",
             "probe_wp": "linear probe of the cell-pre-trained backbone", "probe_random": "linear probe of a random backbone",
             "rf": "per-pixel random forest", "majority": "majority class"}
PAIRS = (("wp_cell", "scratch"), ("wp_block", "scratch"), ("wp_frame", "scratch"), ("probe_wp", "probe_random"))
PROBE_BACKBONE = "cell"  # the probe reads the paper's (cell-masked) backbone
RF_MAX_PIXELS = 50_000  # labelled pixels the forest trains on at most (random, seeded)
RF_DAY_STEP = 15  # features: every band linearly interpolated every 15 days of the season
RF_TREES = 100
# The settings every run of one output folder must share (study.json); budgets, seeds, arms and lrs may grow.
SCHEDULE_KEYS = ("dataset", "year", "preset", "paper_padding", "steps", "min_epochs", "batch_size", "val_limit",
                 "validations", "test_limit", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "fast",
                 "crop_size", "cv", "pretrain_scope", "positions", "drop_invalid", "hide_invalid", "augment")
# Keys recorded since folders were first started: a study.json written before lacks them and its runs had
# the value given here (of its data set); "precision" was not known then, so it is not compared.
LATER_KEYS = {"crop_size": lambda saved: SPLITS.get(saved.get("dataset"), {}).get("crop"), "cv": lambda saved: False,
              "pretrain_scope": lambda saved: "heldout", "positions": lambda saved: "index",
              "drop_invalid": lambda saved: False, "hide_invalid": lambda saved: False, "augment": lambda saved: False}
SMOKE = dict(budgets=[100.0], seeds=2, steps=1, min_epochs=1, pretrain_epochs=1, lrs=[1e-3], sweep_budget=100.0, val_limit=4)


@dataclass
class Run:
    """One fine-tuning run of the study (a learned arm at one budget, seed and learning rate; under --cv
    also one test fold)."""

    arm: str
    budget: float
    seed: int
    lr: float
    out: Path
    epochs: int = 0
    argv: list = field(default_factory=list)
    fold: int | None = None

    @property
    def done(self) -> bool:
        return (self.out / "summary.json").is_file()

    def progress(self) -> dict:
        """Where an unfinished run stands: epochs trained so far (its history.json, written every epoch)."""
        history = self.out / "history.json"
        trained = json.loads(history.read_text())["history"][-1]["epoch"] if history.is_file() else 0
        return {"arm": self.arm, "budget": self.budget, "seed": self.seed, **unit_fold(self.fold), "lr": self.lr,
                "epoch": trained, "of": self.epochs}


def unit_fold(fold: int | None) -> dict:
    """The fold entry of a record: {"fold": f} under --cv, nothing otherwise (records as before --cv)."""
    return {} if fold is None else {"fold": fold}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=sorted(SPLITS), default="synthetic",
                      help="'synthetic' (default): the embedded benchmark; 'pastis' / 'mtlcc' / 'folder' (your own data) need --data_root")
    data.add_argument("--data_root", type=Path, default=None, help="real data set folder (see README: Data set-up)")
    data.add_argument("--year", type=int, default=2016, choices=(2016, 2017), help="MTLCC year")
    data.add_argument("--crop_size", type=int, default=None, metavar="N",
                      help="training crop in pixels of every run, 0 = whole patches (default: the folder's patch size "
                           "with --dataset folder, 32 on PASTIS, 16 on synthetic, whole tiles on MTLCC; see below)")
    study = parser.add_argument_group("study design")
    study.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 5, 20, 100],
                       help="label budgets in %% of the training crops (class-stratified)")
    study.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1; each draws the labelled subset and the initialisation")
    study.add_argument("--only_seeds", type=int, nargs="+", default=None, metavar="S",
                       help="run (or --report) only these of the seeds 0..N-1, e.g. one seed per machine: copy the runs/ "
                            "folders into one output folder and --report them together (the lr sweep stays at seed 0)")
    study.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run (see above)")
    study.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3], help="learning rates swept per arm")
    study.add_argument("--sweep_budget", type=float, default=5, help="budget (%%) at which the lr is chosen, first seed")
    study.add_argument("--cv", action="store_true",
                       help="spatial cross-validation: the test fold rotates over the labelled folds, one unit per "
                            "(budget, seed, test fold) (default: off, the data set's fixed splits; see below)")
    study.add_argument("--pretrain_scope", choices=("heldout", "scene"), default="heldout",
                       help="with --cv, what each backbone is pre-trained on: 'heldout' (default), every fold but the "
                            "rotation's test fold (one backbone per masking mode and rotation); 'scene', every patch of "
                            "the data set, imagery only (one backbone per mode shared by the rotations): a user mapping "
                            "one scene pre-trains on its imagery, and no label is ever read")
    recipe = parser.add_argument_group("recipe options (every arm alike; each is off/the paper's by default)")
    recipe.add_argument("--positions", choices=("index", "doy"), default="index",
                        help="positional encoding input of every model: date index (paper) or acquisition day")
    recipe.add_argument("--drop_invalid", action="store_true",
                        help="every model ignores cloudy cells of folders with cloud masks (fine-tuning's --drop_invalid)")
    recipe.add_argument("--hide_invalid", action="store_true",
                        help="pre-training replaces cloudy cells by the mask token (pretrain_STCLN.py --hide_invalid)")
    recipe.add_argument("--augment", action="store_true",
                        help="random rotations/reflections of the training crops (fine-tuning's --augment)")
    sched = parser.add_argument_group("schedule (identical for every arm)")
    sched.add_argument("--steps", type=int, default=300,
                       help="optimiser steps per fine-tune at least (rounded up to whole epochs; at least --min_epochs)")
    sched.add_argument("--min_epochs", type=int, default=2, help="large budgets see every labelled crop at least this often")
    sched.add_argument("--batch_size", type=int, default=8, help="fine-tuning batch size")
    sched.add_argument("--val_limit", type=int, default=64, help="validation samples (evenly spaced) used for model selection")
    sched.add_argument("--validations", type=int, default=8, help="validations per fine-tuning run (model selection)")
    sched.add_argument("--test_limit", type=int, default=0, help="test samples (evenly spaced; 0 = the whole test split)")
    sched.add_argument("--pretrain_epochs", type=int, default=10, help="pre-training epochs (every mode the same)")
    sched.add_argument("--pretrain_lr", type=float, default=1e-3, help="pre-training learning rate")
    sched.add_argument("--pretrain_batch_size", type=int, default=16)
    model = parser.add_argument_group("model")
    model.add_argument("--preset", choices=("tiny", "small", "paper"), default="tiny",
                       help="model size for every arm (tiny: CPU; paper: GPU)")
    model.add_argument("--paper_padding", action="store_true",
                       help="let padded dates enter the model as the paper does (default: --use_pad_mask, so batches "
                            "mixing tiles with different calendars are exact)")
    run = parser.add_argument_group("runtime")
    run.add_argument("--output_dir", type=Path, default=Path("checkpoints/label_efficiency"))
    run.add_argument("--jobs", type=int, default=1,
                     help="runs in parallel, each a subprocess; the cores are shared among the runs going at once (1 = in this process)")
    run.add_argument("--device", default="auto", help="passed to every run ('auto', 'cpu', 'cuda')")
    run.add_argument("--fast", action="store_true",
                     help="pass --amp --fast_dropout to every pre-training and fine-tuning run (bf16 autocast where the "
                          "device has it, cheaper dropout masks): 1.9x per tiny-model step (python -m bench.dropout); "
                          "a different recipe (bf16 numerics, another dropout stream), so a folder holds runs of one kind")
    run.add_argument("--smoke", action="store_true", help="tiny data, one budget x 2 seeds, one epoch per run (CI)")
    run.add_argument("--report", action="store_true",
                     help="start nothing: write results.md/json and the figures from the runs of --output_dir that have "
                          "finished (a partial table while the study runs, or after it was stopped)")
    return parser


# ---------------------------------------------------------------------------------------------
# Running the entry scripts
# ---------------------------------------------------------------------------------------------

def _execute(script: str, argv: list, log_file: Path | None, threads: int | None) -> None:
    """Run an entry script in this process (log_file None) or as a subprocess writing log_file."""
    argv = [str(a) for a in argv]
    if log_file is None:
        if script == "pretrain_STCLN.py":
            import pretrain_STCLN

            status = pretrain_STCLN.main(argv)
        else:
            from utils import finetune

            status = finetune.main("mtlcc" if script.startswith("MTLCC") else "pastis", "fine-tuning", argv)
        if status != 0:
            sys.exit(f"error: {script} {' '.join(argv)} failed (exit {status})")
        return
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as handle:  # a resumed run appends to its log
        status = subprocess.run([sys.executable, str(REPO / script), *argv], stdout=handle, stderr=subprocess.STDOUT,
                                env=env, cwd=os.getcwd()).returncode
    if status != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{script} failed (exit {status}); last lines of {log_file}:\n{tail}")


class Executor:
    """Runs tasks one at a time in-process (jobs=1) or ``jobs`` at a time (entry scripts as subprocesses).

    A task is ``(script, argv, log file)`` for an entry script, or ``(function, args, None)`` for
    work done in this process (the non-learned anchors), which then takes one of the ``jobs`` slots."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def threads(self, n_tasks: int) -> int:
        """Threads per subprocess: the cores shared by the slots this wave fills (a wave of one task,
        e.g. one pre-training, gets every core instead of 1/jobs of them)."""
        return max(1, (os.cpu_count() or 1) // max(1, min(self.jobs, n_tasks)))

    def run(self, task: tuple, in_process: bool, threads: int | None = None) -> None:
        target, argv, log_file = task
        if callable(target):
            target(*argv)
        else:
            _execute(target, argv, None if in_process else log_file, threads)

    def map(self, tasks: list[tuple]) -> None:
        """Runs every task; at the first failure the tasks not started yet are dropped (the running ones finish).

        Progress: one bar over the tasks (done / total, elapsed, time left), and a line per finished
        task with its result (:func:`task_result`)."""
        if not tasks:
            return
        progress = Progress(tasks)
        if self.jobs == 1:
            for task in tasks:
                progress.start(task)
                self.run(task, in_process=True)
                progress.finish(task)
            progress.close()
            return
        with ThreadPoolExecutor(self.jobs) as pool:
            threads = self.threads(sum(not callable(task[0]) for task in tasks))  # the anchors are short

            def run(task):
                progress.start(task)
                self.run(task, False, threads)
                progress.finish(task)

            futures = [pool.submit(run, task) for task in tasks]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            finally:
                progress.close()


def task_name(task: tuple) -> str:
    """What a task is, for the progress line: 'pretrain_cell', 'scratch b5_s0_f1_lr0.003', 'rf majority b5 s0 f1'."""
    target, argv, _ = task
    if target is baselines:
        args, budget, seed, arms, *fold = argv
        return f"{' '.join(arms)} b{budget:g} s{seed}" + (f" f{fold[0]}" if fold and fold[0] is not None else "")
    if callable(target):
        return getattr(target, "__name__", "task")
    out = Path(str(argv[list(map(str, argv)).index("--output_dir") + 1]))
    return out.name if out.name.startswith("pretrain_") else f"{out.parent.name} {out.name}"


def task_result(task: tuple) -> str:
    """A finished task's headline: test mIoU of a fine-tune, the last masked-cell MSE of a pre-training."""
    target, argv, _ = task
    if callable(target):
        return "scored" if target is baselines else "done"
    out = Path(str(argv[list(map(str, argv)).index("--output_dir") + 1]))
    summary = out / "summary.json"
    if summary.is_file():
        return f"test mIoU {json.loads(summary.read_text())['test']['mIoU']:.3f}"
    return "backbone written" if out.name.startswith("pretrain_") else "finished"


class Progress:
    """One progress bar over a wave of tasks and a log line per finished task (thread-safe)."""

    def __init__(self, tasks: list[tuple]):
        from threading import Lock

        from tqdm import tqdm

        self.total, self.done, self.start_time, self.lock = len(tasks), 0, time.perf_counter(), Lock()
        self.running: dict[int, str] = {}
        self.bar = tqdm(total=self.total, unit="run", desc="study", dynamic_ncols=True, mininterval=1.0)

    def start(self, task: tuple) -> None:
        with self.lock:
            self.running[id(task)] = task_name(task)
            self.bar.set_postfix_str(", ".join(self.running.values()), refresh=True)

    def finish(self, task: tuple) -> None:
        with self.lock:
            self.done += 1
            self.running.pop(id(task), None)
            elapsed = time.perf_counter() - self.start_time
            left = elapsed / self.done * (self.total - self.done)
            self.bar.write(f"[{self.done}/{self.total}] {task_name(task)}: {task_result(task)} "
                           f"({elapsed / 60:.1f} min so far, about {left / 60:.1f} min left in this wave)")
            self.bar.set_postfix_str(", ".join(self.running.values()), refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------

def common_args(args) -> list:
    # --smoke without --data_root: the embedded synthetic set, in MTLCC format through the MTLCC script
    dataset = args.dataset if args.data_root is not None else "synthetic"
    out = ["--dataset", dataset, "--device", args.device, "--num_workers", "0", "--no_progress"]
    if args.data_root is not None:
        out += ["--data_root", args.data_root]
    if args.dataset == "mtlcc":
        out += ["--year", args.year]
    if args.smoke:
        out += ["--smoke"]
    else:
        out += ["--preset", args.preset, "--crop_size", study_crop(args)]
    if not args.paper_padding:
        out += ["--use_pad_mask"]
    if args.fast:
        out += ["--amp", "--fast_dropout"]
    if args.positions != "index":
        out += ["--positions", args.positions]
    if args.drop_invalid:
        out += ["--drop_invalid"]
    return out


def study_crop(args) -> int:
    """The training crop of every run: --crop_size, else a folder's patch size, else the data set's (SPLITS)."""
    if args.crop_size is not None:
        return args.crop_size
    if args.dataset == "folder" and args.data_root is not None:
        from utils.data_folder import folder_patch_size

        return folder_patch_size(args.data_root)
    return SPLITS[args.dataset]["crop"]


def check_schedule(args) -> None:
    """Record the folder's schedule in study.json; refuse another schedule once work has started.

    Work = a pre-training or run folder. A command that stopped before any (bad data, Ctrl-C while
    the labelled subsets are drawn) leaves nothing to protect, so the next command's schedule
    replaces the recorded one.
    """
    path = args.output_dir / "study.json"
    current = {key: getattr(args, key) for key in SCHEDULE_KEYS}  # plain values (no paths among them)
    current["crop_size"] = study_crop(args)
    if not args.report:  # --report starts nothing, so it runs on any machine
        current["precision"] = run_precision(args)
    started = (args.output_dir / "runs").exists() or any(args.output_dir.glob("pretrain_*"))
    if args.report and not (path.is_file() and started):
        get_parser().error(f"{args.output_dir}: no study has started there (no study.json with runs), nothing to report")
    if not path.is_file() or not started:
        from utils.atomic import write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(current, indent=1, sort_keys=True))
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        get_parser().error(f"{path}: unreadable ({err}); it records the schedule of the runs in that folder")
    # (a folder started before "precision" was recorded has no value to compare)
    recorded = {key: saved[key] if key in saved else LATER_KEYS[key](saved) if key in LATER_KEYS else None
                for key in current}
    differ = {key: (recorded[key], value) for key, value in current.items()
              if recorded[key] != value and (key in saved or key != "precision")}
    if differ:
        listed = ", ".join(f"{key} {old} (folder) vs {new} (now)" for key, (old, new) in differ.items())
        get_parser().error(f"{path}: the runs in {args.output_dir} used another schedule ({listed}); "
                           "use another --output_dir, or the same settings to extend the study")


def run_precision(args) -> str:
    """What the runs compute in on this machine: 'bf16' when --fast gets bf16 autocast (CUDA, or a CPU
    with native bf16), else 'fp32'. Part of a folder's schedule: a seed added or a run resumed on a
    machine that resolves --fast otherwise would mix two recipes in one table."""
    from utils.distributed import resolve_device
    from utils.errors import STCLNError
    from utils.precision import resolve_amp

    try:
        device = resolve_device(args.device)  # the device every run is given (--device)
    except STCLNError as err:  # e.g. --device cuda on a machine without one: refused before any work
        get_parser().error(str(err))
    return "bf16" if resolve_amp(args.fast, device) else "fp32"


def rotations(args) -> list[int | None]:
    """The test fold of each rotation under --cv (the labelled folds, > 0), else [None]: the fixed splits."""
    return [fold for fold in args.cv_folds if fold > 0] if getattr(args, "cv", False) else [None]


def data_folds(args) -> list[int]:
    """Every fold of the data set's metadata.geojson (PASTIS layout: synthetic, pastis, folder)."""
    from utils.data import pastis_root
    from utils.datasets.pastis import METADATA_FILE, read_pastis_metadata

    root = Path(args.data_root) if args.dataset == "folder" else pastis_root(finetune_args(args, []))
    return sorted({meta.fold for meta in read_pastis_metadata(root / METADATA_FILE)})


def split_args(args, fold: int | None) -> tuple[list, list]:
    """(pre-training, fine-tuning) fold flags: the data set's fixed splits (fold None), or --cv rotation
    ``fold``: test on it, select on the next labelled fold, train on the others, pre-train on every fold
    but the test fold (fold 0, the converter's buffer patches, included)."""
    if fold is None:
        return SPLITS[args.dataset]["pretrain"], SPLITS[args.dataset]["finetune"]
    labelled = rotations(args)
    val = labelled[(labelled.index(fold) + 1) % len(labelled)]
    train = [f for f in labelled if f not in (fold, val)]
    pretrain = [f for f in args.cv_folds if f != fold]
    return ["--folds", *pretrain], ["--train_folds", *train, "--val_folds", val, "--test_folds", fold]


def backbone_fold(args, fold: int | None) -> int | None:
    """The rotation whose backbone a run uses: its own, or None (one backbone for all) with --pretrain_scope scene."""
    return None if getattr(args, "pretrain_scope", "heldout") == "scene" else fold


def pretrain_folds(args, fold: int | None) -> list:
    """pretrain_STCLN.py's fold flags for the backbone of ``backbone_fold(args, fold)``."""
    if getattr(args, "cv", False) and backbone_fold(args, fold) is None:
        return ["--folds", *args.cv_folds]  # --pretrain_scope scene: every patch, imagery only
    return split_args(args, fold)[0]


def fold_suffix(fold: int | None) -> str:
    """'_f<fold>' in the folder names of a --cv rotation, '' otherwise (the names of studies without --cv)."""
    return "" if fold is None else f"_f{fold}"


def pretrain_dir(args, mode: str, fold: int | None = None) -> Path:
    return args.output_dir / f"pretrain_{mode}{fold_suffix(fold)}"


def backbone_path(args, mode: str, fold: int | None = None) -> Path:
    return pretrain_dir(args, mode, fold) / f"checkpoint_{args.pretrain_epochs - 1}.stcln.tar"


def pretrain_tasks(args, modes: list[str]) -> list:
    tasks = []
    for mode in modes:
        for fold in dict.fromkeys(backbone_fold(args, f) for f in rotations(args)):
            if backbone_path(args, mode, fold).is_file():
                continue
            out = pretrain_dir(args, mode, fold)
            resume = ["--resume"] if (out / "last.tar").is_file() else []
            if not resume and out.exists():
                shutil.rmtree(out)
            layout = ["--synthetic_format", "mtlcc"] if args.dataset == "mtlcc" else []  # of a --smoke synthetic set
            argv = common_args(args) + pretrain_folds(args, fold) + layout + [
                "--mask_mode", mode, "--epochs", args.pretrain_epochs, "--lr", args.pretrain_lr,
                "--batch_size", args.pretrain_batch_size, "--seed", 0, "--save_every", 1, "--output_dir", out] + resume
            if args.hide_invalid:
                argv += ["--hide_invalid"]
            tasks.append(("pretrain_STCLN.py", argv, out / "log.txt"))
    return tasks


def labelled_count(args, budget: float, seed: int, fold: int | None = None) -> int:
    """Size of the labelled subset the fine-tuning script will draw (same code path)."""
    data = labelled_data(args, budget, seed, splits=("train",), fold=fold)
    return len(data.train)


def finetune_args(args, extra: list) -> argparse.Namespace:
    """The fine-tuning script's flags of this study's runs, plus ``extra``."""
    from utils import finetune

    return finetune.parse_args(args.dataset, "fine-tuning", [str(a) for a in common_args(args) + extra])


def labelled_data(args, budget: float, seed: int, splits, fold: int | None = None):
    from utils.data import build_finetune_data

    ft_args = finetune_args(args, split_args(args, fold)[1] + label_args(budget) + ["--seed", seed])
    return build_finetune_data(ft_args, splits=splits)


def label_args(budget: float) -> list:
    return ["--label_subset", "ratio", "--label_ratio", f"{budget / 100:g}"]


def schedule(args, n_labelled: int) -> tuple[int, int]:
    """(epochs, validate every N epochs) giving at least --steps steps and --min_epochs epochs."""
    steps_per_epoch = math.ceil(n_labelled / args.batch_size)
    epochs = max(args.min_epochs, math.ceil(args.steps / steps_per_epoch))
    return epochs, max(1, epochs // args.validations)


def make_run(args, arm: str, budget: float, seed: int, lr: float, n_labelled: int, fold: int | None = None) -> Run:
    out = args.output_dir / "runs" / arm / f"b{budget:g}_s{seed}{fold_suffix(fold)}_lr{lr:g}"
    epochs, val_every = schedule(args, n_labelled)
    argv = common_args(args) + split_args(args, fold)[1] + label_args(budget) + [
        "--seed", seed, "--lr", lr, "--epochs", epochs, "--val_every", val_every, "--batch_size", args.batch_size,
        "--val_limit", args.val_limit, "--test_limit", args.test_limit, "--eval_batch_size", 16 if not args.paper_padding else 1,
        "--save_every", 1, "--n_maps", 0, "--output_dir", out]  # last.tar every epoch: an interrupted run resumes
    if args.augment:
        argv += ["--augment"]
    if arm.startswith("wp_"):
        argv += ["--pretrain_pth", backbone_path(args, arm[3:], backbone_fold(args, fold))]
    if arm == "probe_wp":
        argv += ["--pretrain_pth", backbone_path(args, PROBE_BACKBONE, backbone_fold(args, fold))]
    if arm.startswith("probe_"):
        argv += ["--freeze_backbone"]
    return Run(arm, budget, seed, lr, out, epochs, argv, fold)


def run_tasks(runs: list[Run], script: str) -> list:
    """The unfinished runs' tasks. A run stopped after an epoch resumes from its last.tar (each epoch is
    re-seeded from (seed, epoch), so it ends as the uninterrupted run would); one stopped before, restarts."""
    tasks = []
    for run in runs:
        if run.done:
            continue
        argv = run.argv
        if (run.out / "last.tar").is_file():
            argv = argv + ["--resume"]
        elif run.out.exists():
            shutil.rmtree(run.out)
        tasks.append((script, argv, run.out / "log.txt"))
    return tasks


def read_run(run: Run) -> dict:
    summary = json.loads((run.out / "summary.json").read_text())
    history = json.loads((run.out / "history.json").read_text())["history"]
    validated = [h for h in history if "val_mIoU" in h]
    best_val = max((h["val_mIoU"] for h in validated if h["val_mIoU"] == h["val_mIoU"]), default=float("nan"))
    return {"arm": run.arm, "budget": run.budget, "seed": run.seed, **unit_fold(run.fold), "lr": run.lr, "dir": str(run.out),
            "best_val_mIoU": best_val, "steps": history[-1]["steps"], "epochs": history[-1]["epoch"],
            "test": summary["test"], "history": history}


def needed_modes(arms: list[str]) -> list[str]:
    modes = [arm[3:] for arm in arms if arm.startswith("wp_")]
    if "probe_wp" in arms and PROBE_BACKBONE not in modes:
        modes.append(PROBE_BACKBONE)
    return modes


def pretrain_diagnostics(args, mode: str, fold: int | None = None) -> dict:
    """Final-epoch pre-training numbers (masked MSE and, where logged, the non-learned baselines)."""
    from utils.checkpoint import load_checkpoint

    path = pretrain_dir(args, mode, fold) / "last.tar"
    if not path.is_file():  # a backbone export pre-trained elsewhere and copied in (results/label_efficiency_synthetic/commands.sh, 13)
        return {}
    ckpt = load_checkpoint(path, trusted=False)
    return {k: v for k, v in ckpt.get("metrics", {}).items() if isinstance(v, (int, float))}


PRETEXT_TAGS = {"loss": "pretrain/loss", "model": "pretext/model", "neighbour_mean": "pretext/neighbour_mean",
                "temporal_interp": "pretext/temporal_interp"}


def pretrain_history(args, mode: str, fold: int | None = None) -> list[dict]:
    """Per-epoch training loss and masked-cell MSE of the model and the non-learned baselines, from the
    pre-training's TensorBoard log (every epoch, across resumed launches)."""
    from utils.report import read_scalars

    log_dir = pretrain_dir(args, mode, fold) / "tb"
    if not log_dir.is_dir():  # a backbone export copied in without its pre-training folder
        return []
    scalars = read_scalars(log_dir, list(PRETEXT_TAGS.values()))
    by_epoch: dict[int, dict] = {}
    for key, tag in PRETEXT_TAGS.items():
        for step, value in scalars[tag]:
            by_epoch.setdefault(step, {"epoch": step + 1})[key] = value
    return [by_epoch[e] for e in sorted(by_epoch)]


def main(argv: list[str] | None = None) -> dict:
    """The study; returns its results. A bad flag (argparse) or a data error (one ``error: ...`` line on
    stderr, no traceback) stops it with exit status 2 (SystemExit)."""
    from utils.runner import one_line_errors

    results = {}
    status = one_line_errors(lambda: results.update(study(resolve_args(argv))))
    if status:
        sys.exit(status)
    return results


def resolve_args(argv: list[str] | None) -> argparse.Namespace:
    """The flags, checked (argparse's exit 2), with what depends on the data resolved: ``crop_size`` (the
    crop every run gets) and, with --cv, ``cv_folds`` (every fold of the data set). A data set that cannot
    be read raises :class:`utils.errors.DataError`."""
    from utils.errors import DataError

    parser = get_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.dataset != "synthetic" and args.data_root is None and (args.dataset == "folder" or not args.smoke):
        parser.error(f"--dataset {args.dataset} needs --data_root (only --smoke runs on the synthetic data set)")
    bad_budgets = [b for b in args.budgets if not 0 < b <= 100]
    if bad_budgets:
        parser.error(f"--budgets must be in (0, 100] (% of the training crops), got {', '.join(f'{b:g}' for b in bad_budgets)}")
    for name in ("seeds", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.crop_size is not None and args.crop_size < 0:
        parser.error(f"--crop_size must be >= 0 (0 = whole patches), got {args.crop_size}")
    if args.only_seeds and not set(args.only_seeds) <= set(range(args.seeds)):
        parser.error(f"--only_seeds {args.only_seeds} must be among the seeds 0..{args.seeds - 1} of --seeds {args.seeds}")
    if args.sweep_budget not in args.budgets:
        parser.error(f"--sweep_budget {args.sweep_budget:g} must be one of --budgets {args.budgets}")
    if args.cv and args.dataset == "mtlcc":
        parser.error("--cv needs a data set split in folds (synthetic, pastis, folder); MTLCC is split by tile lists")
    given = args.crop_size
    args.crop_size = study_crop(args)  # from here on the crop of every run (and of study.json)
    if given and args.dataset == "folder":
        from utils.data_folder import folder_patch_size

        patch = folder_patch_size(args.data_root)
        if given > patch:
            raise DataError(f"--crop_size {given} does not fit the {patch}x{patch} patches of {args.data_root} "
                            f"(at most {patch}; 0 = whole patches)")
    args.cv_folds = data_folds(args) if args.cv else None
    if args.cv and len(rotations(args)) < 3:
        raise DataError(f"--cv needs at least 3 labelled folds (test, validation, training): {args.data_root or 'the data set'} "
                        f"has folds {args.cv_folds} (fold 0: unlabelled buffer)")
    return args


def study(args: argparse.Namespace) -> dict:
    """Runs (or with --report, reads) every run of the study and writes the report; returns the results."""
    check_schedule(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    script = SCRIPTS[args.dataset]
    start = time.perf_counter()
    executor = Executor(args.jobs)
    seeds = sorted(set(args.only_seeds)) if args.only_seeds else list(range(args.seeds))
    folds = rotations(args)  # [None] without --cv
    units = [(s, f) for s in seeds for f in folds]
    learned = [arm for arm in args.arms if arm in LEARNED]
    counts = {(b, s, f): labelled_count(args, b, s, f) for b in args.budgets for s, f in units}
    sweep_key = (args.sweep_budget, 0, folds[0])  # the first seed of the study, also under --only_seeds; first rotation
    if len(args.lrs) > 1 and sweep_key not in counts:
        counts[sweep_key] = labelled_count(args, *sweep_key)
    log.info("labelled crops per budget (seed %d%s): %s", seeds[0], f", test fold {folds[0]}" if args.cv else "",
             {b: counts[(b, *units[0])] for b in args.budgets})

    # Three waves, so that both the pre-training and the lr sweeps overlap with other work:
    # 1. pre-training (one backbone per masking mode, and --cv rotation) + the arms that need no backbone
    #    (their lr sweep, or all their runs when a single lr is given);
    # 2. the sweep of the backbone arms + the remaining runs of the no-backbone arms;
    # 3. the remaining runs of the backbone arms. (budget, seed, fold) is outermost in every wave.
    # With one lr and every backbone already pre-trained nothing waits: all runs form one wave, so
    # the tail of one arm's runs does not leave a slot idle.
    no_backbone = [arm for arm in learned if arm in ("scratch", "probe_random")]
    with_backbone = [arm for arm in learned if arm not in no_backbone]
    chosen, sweep = {}, {}

    def sweep_runs(arms):
        return [make_run(args, arm, *sweep_key[:2], lr, counts[sweep_key], sweep_key[2]) for arm in arms for lr in args.lrs]

    def study_runs(arms):
        return [make_run(args, arm, b, s, chosen[arm], counts[(b, s, f)], f) for b in args.budgets for s, f in units
                for arm in arms]

    def choose(arms):
        for arm in arms:
            if args.report and len(args.lrs) > 1 and not all(run.done for run in sweep_runs([arm])):
                log.info("%s: its lr sweep has not finished, so it has no chosen lr and no row yet", arm)
                continue
            scores = {run.lr: read_run(run)["best_val_mIoU"] for run in sweep_runs([arm])} if len(args.lrs) > 1 else {}
            sweep[arm] = scores
            chosen[arm] = max(scores, key=lambda lr: (scores[lr] if scores[lr] == scores[lr] else -1.0, -lr)) if scores else args.lrs[0]
            if scores:
                log.info("lr sweep %s: %s -> %g", arm, {f"{k:g}": round(v, 4) for k, v in scores.items()}, chosen[arm])

    # The non-learned anchors (random forest, majority class) need no backbone: they take a slot
    # of the first wave instead of running alone at the end.
    anchors = [arm for arm in args.arms if arm in ("rf", "majority")]
    anchor_tasks = [(baselines, (args, b, s, anchors, f), None) for b in args.budgets for s, f in units] if anchors else []
    if args.report:
        choose(learned)
    elif len(args.lrs) == 1:
        choose(learned)
        pretraining = pretrain_tasks(args, needed_modes(args.arms))
        first = no_backbone if pretraining else learned
        executor.map(pretraining + anchor_tasks + run_tasks(study_runs(first), script))
    else:
        executor.map(pretrain_tasks(args, needed_modes(args.arms)) + anchor_tasks + run_tasks(sweep_runs(no_backbone), script))
        choose(no_backbone)
        executor.map(run_tasks(sweep_runs(with_backbone) + study_runs(no_backbone), script))
        choose(with_backbone)
    runs = study_runs([arm for arm in learned if arm in chosen])
    if not args.report:
        executor.map(run_tasks(runs, script))
    records = [read_run(run) for run in runs if run.done]
    for b in args.budgets:
        for s, f in units:  # cached by the first wave (--report: those cached so far)
            records += baselines(args, b, s, [arm for arm in anchors if not args.report or anchor_done(args, arm, b, s, f)], f)
    backbones = {f"{mode}{fold_suffix(f)}": (mode, f) for mode in needed_modes(args.arms)
                 for f in dict.fromkeys(backbone_fold(args, f) for f in folds)
                 if not args.report or (pretrain_dir(args, mode, f) / "last.tar").is_file()}

    results = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seeds": seeds,
        **({"folds": folds} if args.cv else {}),
        "labelled_crops": {f"{b:g}": [counts[(b, s, f)] for s, f in units] for b in args.budgets},
        "lr_sweep": {arm: {f"{lr:g}": v for lr, v in sweep[arm].items()} for arm in sweep},
        "lr_chosen": {arm: chosen[arm] for arm in chosen},
        "pretrain": {key: pretrain_diagnostics(args, *backbone) for key, backbone in backbones.items()},
        "pretrain_history": {key: pretrain_history(args, *backbone) for key, backbone in backbones.items()},
        "runs": records,
        **({"pooled": pooled_scores(args, records, folds)} if args.cv else {}),
        "finished": {"runs": len(records), "of": (len(learned) + len(anchors)) * len(args.budgets) * len(units)},
        "unfinished": [run.progress() for run in runs if not run.done],
        "minutes": (time.perf_counter() - start) / 60,
    }
    write_outputs(args.output_dir, results, args.budgets, [a for a in ARMS if a in args.arms])
    return results


# ---------------------------------------------------------------------------------------------
# Non-learned anchors: per-pixel random forest and the majority class
# ---------------------------------------------------------------------------------------------

def rf_grid(dataset) -> np.ndarray:
    """The forest's feature days: every RF_DAY_STEP days from day 0 to the last acquisition of the
    training samples (at least one year: the grid of a one-season data set is 0..365 as always)."""
    last = max(int(dataset[index]["days"].max()) for index in range(len(dataset)))
    return np.arange(0, max(366, last + 1), RF_DAY_STEP, dtype=np.float64)


def pixel_features(sample: dict, grid: np.ndarray) -> np.ndarray:
    """(T, C, H, W) normalised series with its days -> (H*W, C*G) band values every RF_DAY_STEP days.

    A sample with per-cell validity (cloud masks) is interpolated, pixel by pixel, between its clear
    dates only (a pixel never clear: all dates), as remote-sensing practice does before a forest."""
    if "valid" in sample:
        return clear_pixel_features(sample, grid)
    image, days = sample["image"].numpy(), sample["days"].numpy().astype(np.float64)
    T, C, H, W = image.shape
    right = np.clip(np.searchsorted(days, grid), 1, max(T - 1, 1))  # (G,) first date >= grid day
    left = right - 1
    span = np.maximum(days[right] - days[left], 1e-9) if T > 1 else np.ones_like(grid)
    weight = np.clip((grid - days[left]) / span, 0.0, 1.0)[:, None, None, None]  # (G,) -> (G, 1, 1, 1), flat ends
    values = image[left] * (1 - weight) + image[right] * weight  # (G, C, H, W)
    return values.reshape(len(grid) * C, H * W).T  # (G, C, H, W) -> (G*C, H*W) -> (H*W, G*C)


def clear_pixel_features(sample: dict, grid: np.ndarray) -> np.ndarray:
    """:func:`pixel_features` of a sample with ``valid`` (T, H, W): linear in the day between each
    pixel's clear dates, flat beyond the first and last ones."""
    image, days = sample["image"].numpy().astype(np.float64), sample["days"].numpy().astype(np.float64)
    valid = sample["valid"].numpy()
    T, C, H, W = image.shape
    series = image.reshape(T, C, H * W)  # (T, C, H, W) -> (T, C, HW)
    clear = valid.reshape(T, H * W)  # (T, H, W) -> (T, HW)
    out = np.empty((H * W, len(grid) * C))
    for pixel in range(H * W):
        dates = clear[:, pixel] if clear[:, pixel].any() else np.ones(T, dtype=bool)
        values = [np.interp(grid, days[dates], series[dates, band, pixel]) for band in range(C)]  # C x (G,)
        out[pixel] = np.stack(values, axis=1).ravel()  # (G, C) -> (G*C,), the order of pixel_features
    return out


def collect_pixels(dataset, grid: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        label = sample["label"].numpy().ravel()  # (H, W) -> (H*W,)
        keep = weight[label] > 0
        features.append(pixel_features(sample, grid)[keep])
        labels.append(label[keep])
    return np.concatenate(features), np.concatenate(labels)


def rf_threads(args) -> int:
    """Cores of one job slot (all cores when runs go one at a time)."""
    return max(1, (os.cpu_count() or 1) // args.jobs)


def anchor_dir(args, arm: str, budget: float, seed: int, fold: int | None = None) -> Path:
    """Where an anchor's result at one budget and seed (and --cv test fold) is cached (its summary.json)."""
    return args.output_dir / "runs" / arm / f"b{budget:g}_s{seed}{fold_suffix(fold)}"


def anchor_done(args, arm: str, budget: float, seed: int, fold: int | None = None) -> bool:
    return (anchor_dir(args, arm, budget, seed, fold) / "summary.json").is_file()


def baselines(args, budget: float, seed: int, arms: list[str], fold: int | None = None) -> list[dict]:
    """rf / majority at one budget and seed (and --cv test fold), cached as
    <output_dir>/runs/<arm>/b<budget>_s<seed>[_f<fold>]/summary.json (test scores and confusion matrix)."""
    from sklearn.ensemble import RandomForestClassifier

    from utils.atomic import write_text_atomic
    from utils.finetune import class_weights, evenly_spaced
    from utils.metrics import evaluate_protocol

    pending = [arm for arm in arms if not anchor_done(args, arm, budget, seed, fold)]
    if pending:
        data = labelled_data(args, budget, seed, splits=("train", "test"), fold=fold)
        info = data.info
        weight = class_weights(info, info.num_classes).numpy()
        grid = rf_grid(data.train)
        x, y = collect_pixels(data.train, grid, weight)
        rng = np.random.default_rng(seed)
        if len(y) > RF_MAX_PIXELS:
            keep = np.sort(rng.choice(len(y), RF_MAX_PIXELS, replace=False))
            x, y = x[keep], y[keep]
        forest = RandomForestClassifier(RF_TREES, n_jobs=rf_threads(args), random_state=seed).fit(x, y) if "rf" in pending else None
        majority = int(np.bincount(y).argmax())
        matrices = {arm: np.zeros((info.num_classes, info.num_classes), dtype=np.int64) for arm in pending}
        test_set = evenly_spaced(data.test, args.test_limit)
        for index in range(len(test_set)):
            sample = test_set[index]
            truth = sample["label"].numpy().ravel()  # (H, W) -> (H*W,)
            predictions = {"majority": np.full_like(truth, majority)}
            if forest is not None:
                predictions["rf"] = forest.predict(pixel_features(sample, grid))
            for arm in pending:
                keep = truth != info.ignore_index if info.ignore_index is not None else slice(None)
                matrices[arm] += np.bincount(truth[keep] * info.num_classes + predictions[arm][keep],
                                             minlength=info.num_classes ** 2).reshape(info.num_classes, info.num_classes)
        for arm in pending:
            metrics = evaluate_protocol(matrices[arm], info.protocols["stcln"], info.classes)
            out = anchor_dir(args, arm, budget, seed, fold)
            out.mkdir(parents=True, exist_ok=True)
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            write_text_atomic(out / "summary.json", json.dumps({"test": scalars, "train_pixels": int(len(y)),
                                                               "confusion_matrix": matrices[arm].tolist()}))
    records = []
    for arm in arms:
        summary = json.loads((anchor_dir(args, arm, budget, seed, fold) / "summary.json").read_text())
        records.append({"arm": arm, "budget": budget, "seed": seed, **unit_fold(fold), "lr": None, "test": summary["test"]})
    return records


def confusion_of(args, record: dict) -> np.ndarray | None:
    """The raw (K, K) test confusion matrix of a run record (a learned run's test_stcln/metrics.json, an
    anchor's summary.json), or None where it was not written (an anchor cached before it was)."""
    from utils.report import read_results

    if record["lr"] is not None:
        return read_results(Path(record["dir"]) / "test_stcln" / "metrics.json")["confusion_matrix"]
    summary = json.loads((anchor_dir(args, record["arm"], record["budget"], record["seed"], record.get("fold"))
                          / "summary.json").read_text())
    return np.asarray(summary["confusion_matrix"], dtype=np.int64) if "confusion_matrix" in summary else None


def pooled_scores(args, records: list[dict], folds: list[int]) -> list[dict]:
    """--cv: per arm, budget and seed whose every rotation has finished, the test folds' confusion matrices
    summed, then scored (stcln protocol): one score of the whole labelled scene per seed."""
    from utils.data import info_for
    from utils.metrics import evaluate_protocol

    info = info_for(finetune_args(args, []))
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["arm"], record["budget"], record["seed"]), []).append(record)
    pooled = []
    for (arm, budget, seed), units in groups.items():
        if sorted(r["fold"] for r in units) != sorted(folds):
            continue  # a rotation has not finished (--report)
        matrices = [confusion_of(args, r) for r in units]
        if any(m is None for m in matrices):
            continue
        metrics = evaluate_protocol(np.sum(matrices, axis=0), info.protocols["stcln"], info.classes)  # n x (K, K) -> (K, K)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        pooled.append({"arm": arm, "budget": budget, "seed": seed, "folds": sorted(folds), "test": scalars})
    return pooled


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def paired_difference(results: list[dict], a: str, b: str, budget: float, metric: str = "mIoU") -> dict | None:
    """Mean of per-unit differences a - b with a 95 % t confidence interval (None if no common unit).

    A unit is a seed, or under --cv a (seed, test fold) pair: the records' ``(seed, fold)`` (fold None
    without --cv). Also the per-unit differences and two two-sided p values against "no difference": the
    one-sample t test (the interval's test) and the exact Wilcoxon signed-rank test, which assumes no
    normality (with n units its smallest p is 2 / 2**n: 0.0625 for 5). Neither corrects for the several
    budgets and arms of one study. ``sd`` is the spread of the per-unit differences and ``detectable`` the
    smallest true mean difference the t test on these n units finds with 80 % power at that spread.
    ``seeds`` lists each unit's seed (and ``folds`` its test fold, under --cv), in the order of ``diffs``.
    """
    from scipy import stats

    by_unit = {arm: {(r["seed"], r.get("fold")): r["test"][metric] for r in results if r["arm"] == arm and r["budget"] == budget}
               for arm in (a, b)}
    units = sorted(set(by_unit[a]) & set(by_unit[b]), key=lambda unit: (unit[0], -1 if unit[1] is None else unit[1]))
    if not units:
        return None
    diff = np.array([by_unit[a][u] - by_unit[b][u] for u in units])
    out = {"mean": float(diff.mean()), "low": float("nan"), "high": float("nan"), "n": len(diff),
           "wins": int((diff > 0).sum()), "seeds": [seed for seed, _ in units], "diffs": diff.tolist(), "p_t": float("nan"),
           "p_wilcoxon": float("nan"), "sd": float("nan"), "detectable": float("nan")}
    if any(fold is not None for _, fold in units):
        out["folds"] = [fold for _, fold in units]
    if len(diff) < 2:
        return out
    sd = float(diff.std(ddof=1))  # the spread of the differences: the interval, the t test and the power use it
    half = float(stats.t.ppf(0.975, len(diff) - 1) * sd / math.sqrt(len(diff)))
    out.update(low=out["mean"] - half, high=out["mean"] + half, sd=sd)
    if sd > 0:
        out["p_t"] = float(stats.ttest_1samp(diff, 0.0).pvalue)
        out["detectable"] = detectable_difference(len(diff), sd)
    if np.any(diff != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(diff, zero_method="wilcox", method="exact").pvalue)
    return out


def t_test_power(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t test at level alpha on n paired differences of standard
    deviation sd whose true mean is effect (the noncentral t distribution; Cohen 1988, ch. 2)."""
    from scipy import stats

    df, nc = n - 1, effect * math.sqrt(n) / sd
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, nc) + stats.nct.sf(critical, df, -nc))  # P(T > c) + P(T < -c)


def detectable_difference(n: int, sd: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true mean difference the paired t test on n seeds finds with this power, if the
    per-seed differences spread by sd: what a study of n seeds can and cannot tell apart from zero."""
    from scipy.optimize import brentq

    high = sd
    while t_test_power(n, high, sd, alpha) < power:
        high *= 2
    return float(brentq(lambda effect: t_test_power(n, effect, sd, alpha) - power, 0.0, high, xtol=1e-9 * sd))


def seeds_needed(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """How many seeds the paired t test needs to find a true mean difference effect with this power,
    if the per-seed differences spread by sd (smallest n, at least 2; power grows with n)."""
    if effect == 0:
        raise ValueError("no number of seeds finds a true difference of zero")
    low, high = 1, 2  # power(low) < power <= power(high) once the doubling stops
    while t_test_power(high, abs(effect), sd, alpha) < power:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if t_test_power(middle, abs(effect), sd, alpha) < power else (low, middle)
    return high


def seeds_text(results: dict) -> str:
    """'3 seeds', or 'seed 2 of 0-2' for a study run with --only_seeds."""
    n, seeds = results["settings"]["seeds"], results.get("seeds", list(range(results["settings"]["seeds"])))
    folds = results.get("folds")
    cv = f" x {len(folds)} test folds ({', '.join(map(str, folds))}; --cv)" if folds else ""
    if len(seeds) == n:
        return f"{n} seeds{cv}"
    return f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))} of 0-{n - 1}{cv}"


def fold_text(fold: int | None) -> str:
    return "" if fold is None else f" test fold {fold}"


def unit_label(seed: int, fold: int | None) -> str:
    """'s3', or under --cv 's3 f2' (seed 3, test fold 2)."""
    return f"s{seed}" if fold is None else f"s{seed} f{fold}"


def markdown(results: dict, budgets: list[float], arms: list[str]) -> str:
    from utils.report import format_table

    runs = results["runs"]
    folds = results.get("folds")  # --cv: the test folds
    n_units = len(results.get("seeds", range(results["settings"]["seeds"]))) * len(folds or [None])
    units = "seed x test fold units" if folds else "seeds"
    unit = "unit" if folds else "seed"
    lines = ["Arms: " + "; ".join(f"{arm} = {ARM_NAMES[arm]}" for arm in arms) + ".\n"]
    for metric in ("mIoU", "OA"):
        rows = []
        for b in budgets:
            crops = results["labelled_crops"][f"{b:g}"]  # per unit (seed, and test fold under --cv)
            row = {"budget %": f"{b:g}",
                   "labelled crops": crops[0] if not folds or min(crops) == max(crops) else f"{min(crops)}-{max(crops)}"}
            for arm in arms:
                values = [r["test"][metric] for r in runs if r["arm"] == arm and r["budget"] == b]
                if values:
                    mean, std = mean_std(values)
                    row[arm] = f"{mean:.3f} ± {std:.3f}" if std == std else f"{mean:.3f}"
                    if len(values) < n_units:
                        row[arm] += f" (n={len(values)})"  # units not finished yet (--report)
            rows.append(row)
        lines.append(f"Test {metric} (mean ± std over {units}, stcln protocol):\n\n"
                     + format_table(rows, ["budget %", "labelled crops", *arms]))
    pooled = results.get("pooled", [])
    if pooled:
        rows = []
        for b in budgets:
            row = {"budget %": f"{b:g}"}
            for arm in arms:
                values = [r["test"]["mIoU"] for r in pooled if r["arm"] == arm and r["budget"] == b]
                if values:
                    mean, std = mean_std(values)
                    row[arm] = f"{mean:.3f} ± {std:.3f}" if std == std else f"{mean:.3f}"
            rows.append(row)
        lines.append(f"Pooled test mIoU per seed (the confusion matrices of the {len(folds)} test folds summed, then "
                     "scored; a seed counts once all its rotations have finished), mean ± std over seeds:\n\n"
                     + format_table(rows, ["budget %", *arms]))
    pairs = {(a, b, budget): paired_difference(runs, a, b, budget)
             for a, b in PAIRS if a in arms and b in arms for budget in budgets}  # each computed once, for both tables
    rows = []
    for a, b in dict.fromkeys((a, b) for a, b, _ in pairs):
        row = {"difference": f"{a} − {b}"}
        for budget in budgets:
            d = pairs[(a, b, budget)]
            if d is not None:
                ci = f" [{d['low']:+.3f}, {d['high']:+.3f}]" if d["low"] == d["low"] else ""
                row[f"{budget:g} %"] = f"{d['mean']:+.3f}{ci} ({d['wins']}/{d['n']})"
        rows.append(row)
    if rows:
        lines.append(f"Paired test-mIoU difference over {units}: mean [95 % CI] ({units} where the first arm wins):\n\n"
                     + format_table(rows, ["difference", *[f"{b:g} %" for b in budgets]]))
    rows = [{"difference": f"{a} − {b}", "budget %": f"{budget:g}",
             f"per {unit}": ", ".join(f"{unit_label(s, f)} {v:+.3f}"
                                      for s, f, v in zip(d["seeds"], d.get("folds", [None] * d["n"]), d["diffs"])),
             "t test p": f"{d['p_t']:.3g}", "Wilcoxon p": f"{d['p_wilcoxon']:.3g}",
             "detectable (80 % power)": f"{d['detectable']:.3f}"}
            for (a, b, budget), d in pairs.items() if d is not None and d["n"] > 1]
    if rows:
        lines.append(f"Per-{unit} differences and two-sided p values against no difference (one-sample t test; exact "
                     "Wilcoxon signed-rank, smallest possible p 2/2^n), uncorrected for the several budgets and arms; "
                     f"detectable: the smallest true mean difference the t test on these {units} would find 4 times in 5 "
                     f"if the per-{unit} differences spread as these did"
                     + (" (the test folds are disjoint, their training folds overlap)" if folds else "") + ":\n\n"
                     + format_table(rows, ["difference", "budget %", f"per {unit}", "t test p", "Wilcoxon p",
                                           "detectable (80 % power)"]))
    lr_rows = [{"arm": arm, "chosen lr": f"{lr:g}", **{f"val mIoU @ lr {k}": v for k, v in results["lr_sweep"][arm].items()}}
               for arm, lr in results["lr_chosen"].items()]
    if lr_rows:
        columns = ["arm", "chosen lr", *[f"val mIoU @ lr {k}" for k in next(iter(results["lr_sweep"].values()))]]
        lines.append(f"Learning rate per arm (best validation mIoU at the sweep budget, first seed{', first rotation' if folds else ''}):\n\n"
                     + format_table(lr_rows, columns))
    logged = {mode: stats for mode, stats in results["pretrain"].items() if stats}
    copied = [mode for mode, stats in results["pretrain"].items() if not stats]
    if logged:
        pre_rows = [{"mode": mode, **stats} for mode, stats in logged.items()]
        columns = ["mode", *sorted({k for stats in logged.values() for k in stats})]
        lines.append("Pre-training, last epoch (masked-cell MSE of the model and of the non-learned baselines):\n\n"
                     + format_table(pre_rows, columns))
    if copied:
        lines.append(f"Backbones copied in, pre-trained elsewhere (no pre-training log in this folder): {', '.join(copied)}.\n")
    history = results.get("pretrain_history", {})
    rows = [{"mode": mode, **epoch} for mode, epochs in history.items() for epoch in epochs]
    if rows:
        lines.append("Pre-training per epoch (training loss; masked-cell MSE of the model, the same-date 3x3 neighbour "
                     "mean and per-pixel temporal interpolation):\n\n"
                     + format_table(rows, ["mode", "epoch", *PRETEXT_TAGS]))
    return "\n".join(lines)


def write_outputs(out: Path, results: dict, budgets: list[float], arms: list[str]) -> None:
    from utils.report import write_text_atomic
    from utils.figures import label_efficiency_figure, pretext_curves_figure, save_figure, training_curves_figure

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(results, indent=1, default=float))
    body = markdown(results, budgets, arms)
    settings = results["settings"]
    header = (f"# Label efficiency of masked pre-training ({settings['dataset']})\n\n"
              f"{seeds_text(results)}, budgets {', '.join(f'{b:g}' for b in budgets)} % of the training crops, "
              f"preset {settings['preset']}, >= {settings['steps']} fine-tuning steps of batch {settings['batch_size']}, "
              f"{settings['pretrain_epochs']} pre-training epochs"
              f"{', --fast (bf16 autocast + fast dropout in every run)' if settings.get('fast') else ''}. "
              + (f"{results['minutes']:.0f} min in this command (runs finished before it are not re-run).\n\n"
                 if not settings.get("report") else "Written by --report (no run was started by it).\n\n"))
    done = results.get("finished", {})
    if done and done["runs"] < done["of"]:
        header += (f"**Partial: {done['runs']} of {done['of']} runs have finished** (a cell with fewer seeds says n=...; "
                   "the paired differences use the seeds both arms have).\n\n")
        unfinished = [f"{r['arm']} {r['budget']:g} % seed {r['seed']}{fold_text(r.get('fold'))}: {r['epoch']} of {r['of']} epochs"
                      for r in results.get("unfinished", [])]
        if unfinished:
            header += f"Unfinished learned runs (epochs trained so far): {'; '.join(unfinished)}.\n\n"
    write_text_atomic(out / "results.md", header + body)
    save_figure(label_efficiency_figure(results["runs"], budgets, arms), out / "curve.png")
    first_seed = results.get("seeds", [0])[0]  # one seed's curves: the first of this study's seeds
    first_fold = (results.get("folds") or [None])[0]  # and its first --cv rotation
    curves = [r for r in results["runs"] if "history" in r and r["seed"] == first_seed and r.get("fold") == first_fold]
    if curves:
        save_figure(training_curves_figure(curves, budgets), out / "training_curves.png")
    if any(results.get("pretrain_history", {}).values()):
        save_figure(pretext_curves_figure(results["pretrain_history"]), out / "pretext_curves.png")
    print(header + body)
    print(f"written to {out / 'results.md'}, {out / 'results.json'} and the figures in {out}")


if __name__ == "__main__":
    main()
