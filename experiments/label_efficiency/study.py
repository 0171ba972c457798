"""The study itself: resolve the flags, run the waves of pre-training and fine-tuning, collect and report."""

import argparse
import logging
import sys
import time
from pathlib import Path


from experiments.label_efficiency.anchors import anchor_done, baselines
from experiments.label_efficiency.design import (
    ARMS,
    LEARNED,
    SCRIPTS,
    SMOKE,
    SMOKE_SELECTION,
    backbone_fold,
    check_schedule,
    data_folds,
    fold_suffix,
    get_parser,
    labelled_count,
    make_run,
    needed_modes,
    pretrain_dir,
    rotations,
    study_crop,
)
from experiments.label_efficiency.report import write_outputs
from experiments.label_efficiency.runs import (
    Stopped,
    Executor,
    pretrain_diagnostics,
    pretrain_history,
    pretrain_tasks,
    read_run,
    run_tasks,
)
from experiments.label_efficiency.selection import selection_study
from experiments.label_efficiency.statistics import pooled_scores

log = logging.getLogger("stcln")


def main(argv: list[str] | None = None) -> dict:
    """The study; returns its results. A bad flag (argparse) or a data error (one ``error: ...`` line on
    stderr, no traceback) stops it with exit status 2 (SystemExit)."""
    from utils.runner import one_line_errors

    results = {}
    try:
        status = one_line_errors(lambda: results.update(study(resolve_args(argv))))
    except (KeyboardInterrupt, Stopped) as stop:  # the running runs saved their last epoch and stopped too
        name = "Ctrl-C" if isinstance(stop, KeyboardInterrupt) else str(stop)
        print(
            f"stopped by {name}: finished runs are kept and stopped ones resume from their last epoch; run the "
            "same command again to continue",
            file=sys.stderr,
        )
        sys.exit(130 if isinstance(stop, KeyboardInterrupt) else stop.exit_status)
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
        for key, value in (SMOKE | (SMOKE_SELECTION if args.selection else {})).items():
            setattr(args, key, value)
    if args.arms is None:  # the default: every arm, with --selection the core pair
        args.arms = ["scratch", "wp_cell"] if args.selection else list(ARMS)
    check_sources(parser, args)
    if args.selection:
        check_selection_flags(parser, args)
    if args.dataset != "synthetic" and args.data_root is None and (args.dataset == "folder" or not args.smoke):
        parser.error(f"--dataset {args.dataset} needs --data_root (only --smoke runs on the synthetic data set)")
    bad_budgets = [b for b in args.budgets if not 0 < b <= 100]
    if bad_budgets:
        parser.error(
            f"--budgets must be in (0, 100] (% of the training crops), got {', '.join(f'{b:g}' for b in bad_budgets)}"
        )
    for name in ("seeds", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.crop_size is not None and args.crop_size < 0:
        parser.error(f"--crop_size must be >= 0 (0 = whole patches), got {args.crop_size}")
    if args.only_seeds and not set(args.only_seeds) <= set(range(args.seeds)):
        parser.error(
            f"--only_seeds {args.only_seeds} must be among the seeds 0..{args.seeds - 1} of --seeds {args.seeds}"
        )
    if args.sweep_budget not in args.budgets and not args.selection:
        parser.error(f"--sweep_budget {args.sweep_budget:g} must be one of --budgets {args.budgets}")
    if args.cv and args.dataset == "mtlcc":
        parser.error("--cv needs a data set split in folds (synthetic, pastis, folder); MTLCC is split by tile lists")
    given = args.crop_size
    args.crop_size = study_crop(args)  # from here on the crop of every run (and of study.json)
    if given and args.dataset == "folder":
        from utils.data_folder import folder_patch_size

        patch = folder_patch_size(args.data_root)
        if given > patch:
            raise DataError(
                f"--crop_size {given} does not fit the {patch}x{patch} patches of {args.data_root} "
                f"(at most {patch}; 0 = whole patches)"
            )
    args.cv_folds = data_folds(args) if args.cv else None
    if args.cv and len(rotations(args)) < 3:
        raise DataError(
            f"--cv needs at least 3 labelled folds (test, validation, training): {args.data_root or 'the data set'} "
            f"has folds {args.cv_folds} (fold 0: unlabelled buffer)"
        )
    return args


def check_sources(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--sources expanded (aliases) in place, so that study.json records the same list for 'S1' and
    'S1A S1D'; --fusion and --cloud_fraction checked as the scripts check them (one line, exit 2)."""
    from utils.args import check_sources as check_names  # the scripts' check: aliases, unknown names, MTLCC

    check_names(parser, args)
    if args.fusion == "merged" and (len(args.sources) < 2 or args.positions != "doy"):
        parser.error("--fusion merged needs two or more --sources and --positions doy")
    if len(args.sources) < 2:
        args.fusion = "late"  # one source: nothing is fused, so every single-source folder records the same
    if args.cloud_fraction is not None and (args.dataset != "synthetic" or not 0 <= args.cloud_fraction <= 1):
        parser.error("--cloud_fraction (in [0, 1]) applies to the synthetic data set only")


def check_selection_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--selection: rounds need two budgets or more (sorted here), one lr (the arm's recipe in every round),
    the random baseline, learned arms and PASTIS-layout samples with ids."""
    if "random" not in args.selection:
        parser.error("--selection needs 'random' among its strategies: the baseline at equal label count")
    args.selection = list(dict.fromkeys(args.selection))
    anchors = [arm for arm in args.arms if arm not in LEARNED]
    if anchors:
        parser.error(f"--selection runs learned arms only (fine-tuned in rounds), not {' '.join(anchors)}")
    if len(args.budgets) < 2:
        parser.error("--selection needs at least two --budgets: the start (the smallest) and a round after it")
    args.budgets = sorted(set(args.budgets))
    if len(args.lrs) != 1:
        parser.error("--selection takes one lr (--lrs LR): every round and strategy fine-tunes with the arm's recipe")
    if args.dataset == "mtlcc":
        parser.error("--selection needs PASTIS-layout samples (synthetic, pastis, folder), not MTLCC tiles")


def study(args: argparse.Namespace) -> dict:
    """Runs (or with --report, reads) every run of the study and writes the report; returns the results."""
    check_schedule(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    if args.selection:
        return selection_study(args)
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
    log.info(
        "labelled crops per budget (seed %d%s): %s",
        seeds[0],
        f", test fold {folds[0]}" if args.cv else "",
        {b: counts[(b, *units[0])] for b in args.budgets},
    )

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
        return [
            make_run(args, arm, *sweep_key[:2], lr, counts[sweep_key], sweep_key[2]) for arm in arms for lr in args.lrs
        ]

    def study_runs(arms):
        return [
            make_run(args, arm, b, s, chosen[arm], counts[(b, s, f)], f)
            for b in args.budgets
            for s, f in units
            for arm in arms
        ]

    def choose(arms):
        for arm in arms:
            if args.report and len(args.lrs) > 1 and not all(run.done for run in sweep_runs([arm])):
                log.info("%s: its lr sweep has not finished, so it has no chosen lr and no row yet", arm)
                continue
            scores = {run.lr: read_run(run)["best_val_mIoU"] for run in sweep_runs([arm])} if len(args.lrs) > 1 else {}
            sweep[arm] = scores
            chosen[arm] = (
                max(scores, key=lambda lr: (scores[lr] if scores[lr] == scores[lr] else -1.0, -lr))
                if scores
                else args.lrs[0]
            )
            if scores:
                log.info("lr sweep %s: %s -> %g", arm, {f"{k:g}": round(v, 4) for k, v in scores.items()}, chosen[arm])

    # The non-learned anchors (random forest, majority class) need no backbone: they take a slot
    # of the first wave instead of running alone at the end.
    anchors = [arm for arm in args.arms if arm in ("rf", "majority")]
    anchor_tasks = (
        [(baselines, (args, b, s, anchors, f), None) for b in args.budgets for s, f in units] if anchors else []
    )
    if args.report:
        choose(learned)
    elif len(args.lrs) == 1:
        choose(learned)
        pretraining = pretrain_tasks(args, needed_modes(args.arms))
        first = no_backbone if pretraining else learned
        executor.map(pretraining + anchor_tasks + run_tasks(study_runs(first), script))
    else:
        executor.map(
            pretrain_tasks(args, needed_modes(args.arms)) + anchor_tasks + run_tasks(sweep_runs(no_backbone), script)
        )
        choose(no_backbone)
        executor.map(run_tasks(sweep_runs(with_backbone) + study_runs(no_backbone), script))
        choose(with_backbone)
    runs = study_runs([arm for arm in learned if arm in chosen])
    if not args.report:
        executor.map(run_tasks(runs, script))
    records = [read_run(run) for run in runs if run.done]
    for b in args.budgets:
        for s, f in units:  # cached by the first wave (--report: those cached so far)
            records += baselines(
                args, b, s, [arm for arm in anchors if not args.report or anchor_done(args, arm, b, s, f)], f
            )
    backbones = {
        f"{mode}{fold_suffix(f)}": (mode, f)
        for mode in needed_modes(args.arms)
        for f in dict.fromkeys(backbone_fold(args, f) for f in folds)
        if not args.report or (pretrain_dir(args, mode, f) / "last.tar").is_file()
    }

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
