"""The study's design: arms, splits, the schedule every arm shares, the flags, the run folders
and the argv of every pre-training and fine-tuning run (no run is started here)."""

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from utils.select_labels import STRATEGIES as SELECTION_STRATEGIES

REPO = Path(__file__).resolve().parents[2]


log = logging.getLogger("stcln")


# Which folds/splits each data set uses. Synthetic: folds 1, 2, 3 and 5 (1,000 patches) are the
# unlabelled pre-training pool, labels come from folds 1-3, fold 5 selects the model, fold 4 (never
# seen by pre-training) is the test set. PASTIS follows the paper (pre-train on fold 5, labels from
# fold 1, select on fold 2, test on fold 4); MTLCC pre-trains on the training tiles of the same year.
SPLITS = {
    "synthetic": {
        "pretrain": ["--folds", "1", "2", "3", "5"],
        "finetune": ["--train_folds", "1", "2", "3", "--val_folds", "5", "--test_folds", "4"],
        "crop": 16,
    },
    "pastis": {
        "pretrain": ["--folds", "5"],
        "finetune": ["--train_folds", "1", "--val_folds", "2", "--test_folds", "4"],
        "crop": 32,
    },
    "mtlcc": {"pretrain": [], "finetune": [], "crop": 0},
    # folds: the folder's dataset.json splits. crop: what studies used before they took the folder's patch
    # size (study_crop), so the crop of a study.json without crop_size (and pretext_baselines' default)
    "folder": {"pretrain": [], "finetune": [], "crop": 32},
}


SCRIPTS = {
    "synthetic": "PASTIS/finetuning_STCLN.py",
    "pastis": "PASTIS/finetuning_STCLN.py",
    "mtlcc": "MTLCC/finetuning_STCLN.py",
    "folder": "PASTIS/finetuning_STCLN.py",
}


ARMS = ("scratch", "wp_cell", "wp_block", "wp_frame", "probe_wp", "probe_random", "rf", "majority")


LEARNED = ("scratch", "wp_cell", "wp_block", "wp_frame", "probe_wp", "probe_random")


ARM_NAMES = {
    "scratch": "STCLN from scratch",
    "wp_cell": "STCLN_wp, cell masking (the paper)",
    "wp_block": "STCLN_wp, block masking",
    "wp_frame": "STCLN_wp, frame masking",
    "probe_wp": "linear probe of the cell-pre-trained backbone",
    "probe_random": "linear probe of a random backbone",
    "rf": "per-pixel random forest",
    "majority": "majority class",
}


PAIRS = (("wp_cell", "scratch"), ("wp_block", "scratch"), ("wp_frame", "scratch"), ("probe_wp", "probe_random"))


PROBE_BACKBONE = "cell"  # the probe reads the paper's (cell-masked) backbone


# The settings every run of one output folder must share (study.json); budgets, seeds, arms and lrs may grow.
SCHEDULE_KEYS = (
    "dataset",
    "year",
    "preset",
    "paper_padding",
    "steps",
    "min_epochs",
    "batch_size",
    "val_limit",
    "validations",
    "test_limit",
    "pretrain_epochs",
    "pretrain_lr",
    "pretrain_batch_size",
    "fast",
    "crop_size",
    "cv",
    "pretrain_scope",
    "positions",
    "drop_invalid",
    "hide_invalid",
    "augment",
    "sources",
    "fusion",
    "cloud_fraction",
)


# Keys recorded since folders were first started: a study.json written before lacks them and its runs had
# the value given here (of its data set); "precision" was not known then, so it is not compared.
LATER_KEYS = {
    "crop_size": lambda saved: SPLITS.get(saved.get("dataset"), {}).get("crop"),
    "cv": lambda saved: False,
    "pretrain_scope": lambda saved: "heldout",
    "positions": lambda saved: "index",
    "drop_invalid": lambda saved: False,
    "hide_invalid": lambda saved: False,
    "augment": lambda saved: False,
    "sources": lambda saved: ["S2"],
    "fusion": lambda saved: "late",
    "cloud_fraction": lambda saved: None,
}


SMOKE = dict(
    budgets=[100.0], seeds=2, steps=1, min_epochs=1, pretrain_epochs=1, lrs=[1e-3], sweep_budget=100.0, val_limit=4
)


SMOKE_SELECTION = dict(budgets=[10.0, 20.0, 40.0], sweep_budget=10.0)  # --smoke --selection: three rounds


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
        return {
            "arm": self.arm,
            "budget": self.budget,
            "seed": self.seed,
            **unit_fold(self.fold),
            "lr": self.lr,
            "epoch": trained,
            "of": self.epochs,
        }


def unit_fold(fold: int | None) -> dict:
    """The fold entry of a record: {"fold": f} under --cv, nothing otherwise (records as before --cv)."""
    return {} if fold is None else {"fold": fold}


def get_parser() -> argparse.ArgumentParser:
    doc = sys.modules[__package__].__doc__  # the study's description: experiments/label_efficiency/__init__.py
    parser = argparse.ArgumentParser(
        prog="python -m experiments.label_efficiency",
        description=doc.splitlines()[0],
        epilog=doc.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=sorted(SPLITS),
        default="synthetic",
        help="'synthetic' (default): the embedded benchmark; 'pastis' / 'mtlcc' / 'folder' (your own data) need --data_root",
    )
    data.add_argument("--data_root", type=Path, default=None, help="real data set folder (see README: Data set-up)")
    data.add_argument("--year", type=int, default=2016, choices=(2016, 2017), help="MTLCC year")
    data.add_argument(
        "--crop_size",
        type=int,
        default=None,
        metavar="N",
        help="training crop in pixels of every run, 0 = whole patches (default: the folder's patch size "
        "with --dataset folder, 32 on PASTIS, 16 on synthetic, whole tiles on MTLCC; see below)",
    )
    study = parser.add_argument_group("study design")
    study.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[1, 2, 5, 20, 100],
        help="label budgets in %% of the training crops (class-stratified)",
    )
    study.add_argument(
        "--seeds", type=int, default=5, help="seeds 0..N-1; each draws the labelled subset and the initialisation"
    )
    study.add_argument(
        "--only_seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="run (or --report) only these of the seeds 0..N-1, e.g. one seed per machine: copy the runs/ "
        "folders into one output folder and --report them together (the lr sweep stays at seed 0)",
    )
    study.add_argument(
        "--arms",
        nargs="+",
        choices=ARMS,
        default=None,
        help="arms to run (see above; default: all, with --selection scratch and wp_cell)",
    )
    study.add_argument(
        "--selection",
        nargs="+",
        choices=SELECTION_STRATEGIES,
        default=None,
        metavar="STRATEGY",
        help="selection as a factor (default: off, the class-stratified random draw per budget): per arm, seed "
        "(and --cv fold) and strategy among random kcenter entropy margin badge (random required: the baseline), "
        "rounds of (select, fine-tune) from the smallest budget to the largest; see below",
    )
    study.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3], help="learning rates swept per arm")
    study.add_argument(
        "--sweep_budget", type=float, default=5, help="budget (%%) at which the lr is chosen, first seed"
    )
    study.add_argument(
        "--cv",
        action="store_true",
        help="spatial cross-validation: the test fold rotates over the labelled folds, one unit per "
        "(budget, seed, test fold) (default: off, the data set's fixed splits; see below)",
    )
    study.add_argument(
        "--pretrain_scope",
        choices=("heldout", "scene"),
        default="heldout",
        help="with --cv, what each backbone is pre-trained on: 'heldout' (default), every fold but the "
        "rotation's test fold (one backbone per masking mode and rotation); 'scene', every patch of "
        "the data set, imagery only (one backbone per mode shared by the rotations): a user mapping "
        "one scene pre-trains on its imagery, and no label is ever read",
    )
    recipe = parser.add_argument_group("recipe options (every arm alike; each is off/the paper's by default)")
    recipe.add_argument(
        "--positions",
        choices=("index", "doy"),
        default="index",
        help="positional encoding input of every model: date index (paper) or acquisition day",
    )
    recipe.add_argument(
        "--drop_invalid",
        action="store_true",
        help="every model ignores cloudy cells of folders with cloud masks (fine-tuning's --drop_invalid)",
    )
    recipe.add_argument(
        "--hide_invalid",
        action="store_true",
        help="pre-training replaces cloudy cells by the mask token (pretrain_STCLN.py --hide_invalid)",
    )
    recipe.add_argument(
        "--sources",
        nargs="+",
        default=["S2"],
        metavar="SOURCE",
        help="image sources of every learned arm and of the random forest's features, primary first: S2, S1A, "
        "S1D ('S1' = 'S1A S1D'), e.g. --sources S2 S1 (the scripts' --sources)",
    )
    recipe.add_argument(
        "--fusion",
        choices=("late", "merged"),
        default="late",
        help="with several --sources, how they meet in every model (the scripts' --fusion; merged needs --positions doy)",
    )
    recipe.add_argument(
        "--cloud_fraction",
        type=float,
        default=None,
        metavar="F",
        help="synthetic data: the share of optical dates under broken cloud or overcast (default: the generator's "
        "0.35; the cloudier setting: 0.5, docs/label_efficiency.md)",
    )
    recipe.add_argument(
        "--augment",
        action="store_true",
        help="random rotations/reflections of the training crops (fine-tuning's --augment)",
    )
    sched = parser.add_argument_group("schedule (identical for every arm)")
    sched.add_argument(
        "--steps",
        type=int,
        default=300,
        help="optimiser steps per fine-tune at least (rounded up to whole epochs; at least --min_epochs)",
    )
    sched.add_argument(
        "--min_epochs", type=int, default=2, help="large budgets see every labelled crop at least this often"
    )
    sched.add_argument("--batch_size", type=int, default=8, help="fine-tuning batch size")
    sched.add_argument(
        "--val_limit", type=int, default=64, help="validation samples (evenly spaced) used for model selection"
    )
    sched.add_argument("--validations", type=int, default=8, help="validations per fine-tuning run (model selection)")
    sched.add_argument(
        "--test_limit", type=int, default=0, help="test samples (evenly spaced; 0 = the whole test split)"
    )
    sched.add_argument("--pretrain_epochs", type=int, default=10, help="pre-training epochs (every mode the same)")
    sched.add_argument("--pretrain_lr", type=float, default=1e-3, help="pre-training learning rate")
    sched.add_argument("--pretrain_batch_size", type=int, default=16)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--preset",
        choices=("tiny", "small", "paper"),
        default="tiny",
        help="model size for every arm (tiny: CPU; paper: GPU)",
    )
    model.add_argument(
        "--paper_padding",
        action="store_true",
        help="let padded dates enter the model as the paper does (default: --use_pad_mask, so batches "
        "mixing tiles with different calendars are exact)",
    )
    run = parser.add_argument_group("runtime")
    run.add_argument("--output_dir", type=Path, default=Path("checkpoints/label_efficiency"))
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs in parallel, each a subprocess; the cores are shared among the runs going at once (1 = in this process)",
    )
    run.add_argument("--device", default="auto", help="passed to every run ('auto', 'cpu', 'cuda')")
    run.add_argument(
        "--fast",
        action="store_true",
        help="pass --amp --fast_dropout to every pre-training and fine-tuning run (bf16 autocast where the "
        "device has it, cheaper dropout masks): 1.9x per tiny-model step (python -m bench.dropout); "
        "a different recipe (bf16 numerics, another dropout stream), so a folder holds runs of one kind",
    )
    run.add_argument("--smoke", action="store_true", help="tiny data, one budget x 2 seeds, one epoch per run (CI)")
    run.add_argument(
        "--report",
        action="store_true",
        help="start nothing: write results.md/json and the figures from the runs of --output_dir that have "
        "finished (a partial table while the study runs, or after it was stopped)",
    )
    return parser


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
    if list(args.sources) != ["S2"]:
        out += ["--sources", *args.sources]
    if len(args.sources) > 1:
        out += ["--fusion", args.fusion]
    if args.cloud_fraction is not None:
        out += ["--cloud_fraction", args.cloud_fraction]
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
        get_parser().error(
            f"{args.output_dir}: no study has started there (no study.json with runs), nothing to report"
        )
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
    recorded = {
        key: saved[key] if key in saved else LATER_KEYS[key](saved) if key in LATER_KEYS else None for key in current
    }
    differ = {
        key: (recorded[key], value)
        for key, value in current.items()
        if recorded[key] != value and (key in saved or key != "precision")
    }
    if differ:
        listed = ", ".join(f"{key} {old} (folder) vs {new} (now)" for key, (old, new) in differ.items())
        get_parser().error(
            f"{path}: the runs in {args.output_dir} used another schedule ({listed}); "
            "use another --output_dir, or the same settings to extend the study"
        )


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
    from utils.data_spec import DataSpec
    from utils.datasets.pastis import METADATA_FILE, read_pastis_metadata

    if args.dataset == "folder":
        root = Path(args.data_root)
    else:
        root = pastis_root(DataSpec.from_args(finetune_args(args, [])))
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


def labelled_count(args, budget: float, seed: int, fold: int | None = None) -> int:
    """Size of the labelled subset the fine-tuning script will draw (same code path)."""
    data = labelled_data(args, budget, seed, splits=("train",), fold=fold)
    return len(data.train)


def finetune_args(args, extra: list) -> argparse.Namespace:
    """The fine-tuning script's flags of this study's runs, plus ``extra``."""
    from utils import finetune

    return finetune.parse_args(args.dataset, "fine-tuning", [str(a) for a in common_args(args) + extra])


def labelled_data(args, budget: float, seed: int, splits, fold: int | None = None):
    from utils.data import build_finetune_data, resolve_data_spec

    ft_args = finetune_args(args, split_args(args, fold)[1] + label_args(budget) + ["--seed", seed])
    return build_finetune_data(resolve_data_spec(ft_args), splits=splits)


def label_args(budget: float) -> list:
    return ["--label_subset", "ratio", "--label_ratio", f"{budget / 100:g}"]


def schedule(args, n_labelled: int) -> tuple[int, int]:
    """(epochs, validate every N epochs) giving at least --steps steps and --min_epochs epochs."""
    steps_per_epoch = math.ceil(n_labelled / args.batch_size)
    epochs = max(args.min_epochs, math.ceil(args.steps / steps_per_epoch))
    return epochs, max(1, epochs // args.validations)


def make_run(
    args,
    arm: str,
    budget: float,
    seed: int,
    lr: float,
    n_labelled: int,
    fold: int | None = None,
    labels: list | None = None,
    out: Path | None = None,
) -> Run:
    """The fine-tuning run of ``arm`` at one budget, seed, lr (and --cv fold). ``labels``/``out``: the labelled
    subset's flags and the run folder, when not the ratio draw of ``budget`` and runs/<arm>/b.._s.._lr.. (the
    rounds of --selection, :mod:`experiments.label_efficiency.selection`)."""
    out = out or args.output_dir / "runs" / arm / f"b{budget:g}_s{seed}{fold_suffix(fold)}_lr{lr:g}"
    epochs, val_every = schedule(args, n_labelled)
    argv = (
        common_args(args)
        + split_args(args, fold)[1]
        + (labels if labels is not None else label_args(budget))
        + [
            "--seed",
            seed,
            "--lr",
            lr,
            "--epochs",
            epochs,
            "--val_every",
            val_every,
            "--batch_size",
            args.batch_size,
            "--val_limit",
            args.val_limit,
            "--test_limit",
            args.test_limit,
            "--eval_batch_size",
            16 if not args.paper_padding else 1,
            "--save_every",
            1,
            "--n_maps",
            0,
            "--output_dir",
            out,
        ]
    )  # last.tar every epoch: an interrupted run resumes
    if args.augment:
        argv += ["--augment"]
    if arm.startswith("wp_"):
        argv += ["--pretrain_pth", backbone_path(args, arm[3:], backbone_fold(args, fold))]
    if arm == "probe_wp":
        argv += ["--pretrain_pth", backbone_path(args, PROBE_BACKBONE, backbone_fold(args, fold))]
    if arm.startswith("probe_"):
        argv += ["--freeze_backbone"]
    return Run(arm, budget, seed, lr, out, epochs, argv, fold)


def needed_modes(arms: list[str]) -> list[str]:
    modes = [arm[3:] for arm in arms if arm.startswith("wp_")]
    if "probe_wp" in arms and PROBE_BACKBONE not in modes:
        modes.append(PROBE_BACKBONE)
    return modes
