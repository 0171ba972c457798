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

--selection random kcenter entropy margin badge: which samples to label, against random at equal label
count. Per arm (default scratch and wp_cell), seed, --cv fold and strategy, one round per budget (smallest
first): round 0 a random draw shared by every strategy and arm (kcenter: the k-center pick on the
cell-pre-trained backbone), then each round adds samples chosen with the previous round's fine-tuned model
(utils.select_labels) and fine-tunes the arm from its initial weights on every label so far (one --lrs
value). Folders runs/<arm>/select_<strategy>/b<budget>_s<seed>[_f<fold>]_lr<lr>, each round's selection in
b<budget>_s<seed>[_f<fold>].selection.json beside it; report: results.md (mean +- std per strategy and
budget, each strategy minus random paired by unit) and selection_curves.png. Budgets may be added above
the largest (the chains go on). docs/label_efficiency.md, "Which samples to label".

The package, one job per file: ``design`` (arms, splits, schedule, flags, run folders, argv),
``runs`` (running the tasks, progress, reading results), ``anchors`` (random forest, majority
class), ``statistics`` (differences, intervals, tests, power, pooled scores), ``report``
(results.md and the figures), ``selection`` (the rounds of --selection), ``study`` (the command: waves of
runs, then the report).
"""

import os  # noqa: F401  (tests patch os.cpu_count through this package)

from experiments.label_efficiency import study as study_module  # noqa: F401  (the command's namespace)

from experiments.label_efficiency.design import (  # noqa: F401
    REPO,
    SPLITS,
    SCRIPTS,
    ARMS,
    LEARNED,
    ARM_NAMES,
    PAIRS,
    PROBE_BACKBONE,
    SCHEDULE_KEYS,
    LATER_KEYS,
    SMOKE,
    Run,
    unit_fold,
    get_parser,
    common_args,
    study_crop,
    check_schedule,
    run_precision,
    rotations,
    data_folds,
    split_args,
    backbone_fold,
    pretrain_folds,
    fold_suffix,
    pretrain_dir,
    backbone_path,
    labelled_count,
    finetune_args,
    labelled_data,
    label_args,
    schedule,
    make_run,
    needed_modes,
)
from experiments.label_efficiency.runs import (  # noqa: F401
    STOP_STATUSES,
    Stopped,
    _execute,
    Executor,
    task_name,
    task_result,
    Progress,
    pretrain_tasks,
    run_tasks,
    read_run,
    pretrain_diagnostics,
    PRETEXT_TAGS,
    pretrain_history,
)
from experiments.label_efficiency.anchors import (  # noqa: F401
    RF_MAX_PIXELS,
    RF_DAY_STEP,
    RF_TREES,
    rf_grid,
    pixel_features,
    clear_pixel_features,
    collect_pixels,
    rf_threads,
    anchor_dir,
    anchor_done,
    baselines,
)
from experiments.label_efficiency.statistics import (  # noqa: F401
    confusion_of,
    pooled_scores,
    mean_std,
    paired_difference,
    t_test_power,
    detectable_difference,
    seeds_needed,
)
from experiments.label_efficiency.report import (  # noqa: F401
    seeds_text,
    fold_text,
    unit_label,
    markdown,
    write_outputs,
)
from experiments.label_efficiency.study import (  # noqa: F401
    main,
    resolve_args,
    study,
)

__all__ = [
    "STOP_STATUSES",
    "Stopped",
    "REPO",
    "SPLITS",
    "SCRIPTS",
    "ARMS",
    "LEARNED",
    "ARM_NAMES",
    "PAIRS",
    "PROBE_BACKBONE",
    "SCHEDULE_KEYS",
    "LATER_KEYS",
    "SMOKE",
    "Run",
    "unit_fold",
    "get_parser",
    "common_args",
    "study_crop",
    "check_schedule",
    "run_precision",
    "rotations",
    "data_folds",
    "split_args",
    "backbone_fold",
    "pretrain_folds",
    "fold_suffix",
    "pretrain_dir",
    "backbone_path",
    "labelled_count",
    "finetune_args",
    "labelled_data",
    "label_args",
    "schedule",
    "make_run",
    "needed_modes",
    "_execute",
    "Executor",
    "task_name",
    "task_result",
    "Progress",
    "pretrain_tasks",
    "run_tasks",
    "read_run",
    "pretrain_diagnostics",
    "PRETEXT_TAGS",
    "pretrain_history",
    "RF_MAX_PIXELS",
    "RF_DAY_STEP",
    "RF_TREES",
    "rf_grid",
    "pixel_features",
    "clear_pixel_features",
    "collect_pixels",
    "rf_threads",
    "anchor_dir",
    "anchor_done",
    "baselines",
    "confusion_of",
    "pooled_scores",
    "mean_std",
    "paired_difference",
    "t_test_power",
    "detectable_difference",
    "seeds_needed",
    "seeds_text",
    "fold_text",
    "unit_label",
    "markdown",
    "write_outputs",
    "main",
    "resolve_args",
    "study",
]
