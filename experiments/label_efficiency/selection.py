"""Selection as a factor of the study (--selection): rounds of (select, fine-tune) per arm, strategy, seed
and --cv test fold, from the smallest budget to the largest.

A chain's round 0 labels the smallest budget's count of training samples: a uniform random draw seeded by
(seed, test fold), the same set for every strategy and arm (the paired start), except for kcenter, whose
start is the k-center pick on the features of the cell-pre-trained backbone (it needs no label). Round r
then adds count(r) - count(r - 1) samples chosen by the strategy: random draws among the unlabelled ones
(nested random sets, the baseline at equal label count); kcenter, entropy, margin and badge read the model
fine-tuned in round r - 1 (its best.tar), kcenter and badge with the labelled samples as picked centres
(utils.select_labels.select_samples). Each round fine-tunes the arm from its initial weights (scratch or the
pre-trained backbone, never the previous round's model) on every label so far, with the arm's recipe
(steps, lr, schedule) as every other run of the study. No candidate's label is read to choose: the
candidates are the training split's samples (grid crops, or patches at --crop_size 0, the unit the study
labels), never a validation, test or buffer sample, and no class stratification is made (the labels of
the selected samples train the model, which then scores the others).

Folders: runs/<arm>/select_<strategy>/b<budget>_s<seed>[_f<fold>]_lr<lr> per round's run, and next to it
b<budget>_s<seed>[_f<fold>].selection.json, the round's selection (new ids with their scores, every id
labelled so far, the model that scored them): the fine-tuning run's --label_ids. Round 0 of random,
entropy, margin and badge is one run, random's.
"""

import json
import logging
import time
from pathlib import Path

import numpy as np

from experiments.label_efficiency.design import (
    LEARNED,
    PROBE_BACKBONE,
    SCRIPTS,
    Run,
    backbone_fold,
    backbone_path,
    finetune_args,
    fold_suffix,
    make_run,
    needed_modes,
    rotations,
    split_args,
    unit_fold,
)
from experiments.label_efficiency.report import fold_text, write_selection_outputs
from experiments.label_efficiency.runs import Executor, pretrain_diagnostics, pretrain_tasks, read_run, run_tasks

log = logging.getLogger("stcln")


START = "random"  # the strategy whose round 0 is the start of every strategy but kcenter


SELECTION_BATCH = 16  # windows per forward pass of a selection (the study's evaluation batch; no window is padded)


def round_owner(strategy: str, round_index: int) -> str:
    """The strategy whose selection and run a chain's round is: round 0 of every strategy but kcenter is random's."""
    return strategy if round_index > 0 or strategy == "kcenter" else START


def strategy_dir(args, arm: str, strategy: str) -> Path:
    return args.output_dir / "runs" / arm / f"select_{strategy}"


def round_name(budget: float, seed: int, fold: int | None) -> str:
    return f"b{budget:g}_s{seed}{fold_suffix(fold)}"


def round_file(args, arm: str, strategy: str, round_index: int, seed: int, fold: int | None) -> Path:
    """The round's selection.json (the labelled ids the round's run trains on)."""
    name = round_name(args.budgets[round_index], seed, fold)
    return strategy_dir(args, arm, round_owner(strategy, round_index)) / f"{name}.selection.json"


def round_seed(seed: int, fold: int | None, round_index: int) -> int:
    """The seed of a round's draws (random, badge): a function of (seed, test fold, round), not of the arm or
    strategy, so the random start and the random rounds are the same sets for every arm."""
    entropy = [seed, 0 if fold is None else fold + 1, round_index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def candidate_pool(args, fold: int | None):
    """(every training sample of rotation ``fold`` in the study's crops, the data's DataInfo, the training folds):
    the candidates.
    The same grid set as the fine-tuning runs read, so sample ids match their --label_ids."""
    from utils.data import build_finetune_data, resolve_data_spec

    spec = resolve_data_spec(finetune_args(args, split_args(args, fold)[1] + ["--label_subset", "all"]))
    data = build_finetune_data(spec, splits=("train",))
    return data.train, data.info, spec.split_folds("train_folds")


def round_counts(args, n_samples: int, fold: int | None) -> list[int]:
    """Labelled samples after each round: round(budget % x the training samples), at least 1, strictly growing."""
    from utils.errors import DataError

    counts = [max(1, round(budget / 100 * n_samples)) for budget in args.budgets]
    for (low, a), (high, b) in zip(zip(args.budgets, counts), zip(args.budgets[1:], counts[1:])):
        if b <= a:
            raise DataError(
                f"--budgets {low:g} and {high:g} % both give {a} of the {n_samples} training samples"
                f"{fold_text(fold)}: a round would add none (choose budgets further apart)"
            )
    return counts


def round_run(args, arm: str, strategy: str, round_index: int, seed: int, fold: int | None, counts: dict) -> Run:
    """The fine-tuning run of a chain's round: the arm's recipe on the round's labelled samples."""
    budget, lr = args.budgets[round_index], args.lrs[0]
    owner = round_owner(strategy, round_index)
    out = strategy_dir(args, arm, owner) / f"{round_name(budget, seed, fold)}_lr{lr:g}"
    labels = ["--label_subset", "ids", "--label_ids", round_file(args, arm, strategy, round_index, seed, fold)]
    return make_run(args, arm, budget, seed, lr, counts[fold][round_index], fold, labels=labels, out=out)


def select_round(args, arm, strategy, round_index, seed, fold, pool, counts, device) -> None:
    """Write the round's selection.json, unless it exists (a round's set, once chosen, is never chosen again)."""
    from utils.report import write_json
    from utils.select_labels import SCORES, select_samples

    path = round_file(args, arm, strategy, round_index, seed, fold)
    if path.is_file():
        return
    dataset, info, train_folds = pool
    owner = round_owner(strategy, round_index)
    ids = dataset.sample_ids
    position = {sample_id: k for k, sample_id in enumerate(ids)}
    before = (
        json.loads(round_file(args, arm, strategy, round_index - 1, seed, fold).read_text())["labelled"]
        if round_index
        else []
    )
    if owner == "random":
        checkpoint, model = None, None
    elif round_index == 0:  # kcenter's start: the pre-trained backbone, no label
        checkpoint = backbone_path(args, PROBE_BACKBONE, backbone_fold(args, fold))
        model = f"the {PROBE_BACKBONE}-pre-trained backbone"
    else:
        checkpoint = round_run(args, arm, strategy, round_index - 1, seed, fold, counts).out / "best.tar"
        model = "the previous round's fine-tuned model (best.tar)"
    n_new = counts[fold][round_index] - len(before)
    draw_seed = round_seed(seed, fold, round_index)
    picks, scores = select_samples(
        owner,
        n_new,
        draw_seed,
        dataset,
        [position[i] for i in before],
        checkpoint,
        info,
        device=device,
        batch_size=SELECTION_BATCH,
    )
    record = {
        "arm": arm,
        "strategy": owner,
        "seed": seed,
        **unit_fold(fold),
        "round": round_index,
        "budget": args.budgets[round_index],
        "count": counts[fold][round_index],
        "draw_seed": draw_seed if owner in ("random", "badge") else None,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "model": model,
        "score": SCORES[owner],
        "candidate_folds": train_folds,
        "n_training_samples": len(ids),
        "n_candidates": len(ids) - len(before),
        "new": [{"rank": rank, "id": ids[k], "score": score} for rank, (k, score) in enumerate(zip(picks, scores), 1)],
        "labelled": before + [ids[k] for k in picks],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    log.info(
        "%s %s round %d%s: %d new samples (%d labelled)",
        arm,
        owner,
        round_index,
        fold_text(fold),
        n_new,
        len(record["labelled"]),
    )


def check_rounds(args, chains: list[tuple]) -> None:
    """The folder's round files must be the rounds of these budgets: budgets may grow above the largest one
    (the chains go on), but a budget inserted below it would renumber the rounds written before."""
    from utils.errors import DataError

    for arm, strategy, seed, fold in chains:
        for r in range(len(args.budgets)):
            path = round_file(args, arm, strategy, r, seed, fold)
            if path.is_file() and json.loads(path.read_text()).get("round") != r:
                raise DataError(
                    f"{path}: written as another round than round {r} of --budgets "
                    f"{' '.join(f'{b:g}' for b in args.budgets)}; budgets may only be added above the folder's largest"
                )


def selection_study(args) -> dict:
    """Every chain's rounds, one wave of runs per round (its selections first, in this process), then the
    report; with --report only the report of the rounds finished so far."""
    from utils.distributed import resolve_device

    start = time.perf_counter()
    executor = Executor(args.jobs)
    script = SCRIPTS[args.dataset]
    seeds = sorted(set(args.only_seeds)) if args.only_seeds else list(range(args.seeds))
    folds = rotations(args)
    units = [(s, f) for s in seeds for f in folds]
    arms = [arm for arm in args.arms if arm in LEARNED]
    strategies = args.selection
    pools = {fold: candidate_pool(args, fold) for fold in folds}
    counts = {fold: round_counts(args, len(pools[fold][0]), fold) for fold in folds}
    log.info(
        "labelled samples per round%s: %s of %d training samples",
        fold_text(folds[0]),
        counts[folds[0]],
        len(pools[folds[0]][0]),
    )
    chains = [(arm, strategy, s, f) for s, f in units for arm in arms for strategy in strategies]
    modes = needed_modes(arms)
    if "kcenter" in strategies and PROBE_BACKBONE not in modes:
        modes.append(PROBE_BACKBONE)  # kcenter's start reads the pre-trained backbone, whatever the arm
    check_rounds(args, chains)
    device = resolve_device(args.device)
    if not args.report:
        executor.map(pretrain_tasks(args, modes))
    rounds = range(len(args.budgets))
    for r in rounds:
        if args.report:
            break
        for arm, strategy, s, f in chains:
            select_round(args, arm, strategy, r, s, f, pools[f], counts, device)
        runs = {str(run.out): run for run in (round_run(args, *chain[:2], r, *chain[2:], counts) for chain in chains)}
        executor.map(run_tasks(list(runs.values()), script))
    records, unfinished = [], []
    for arm, strategy, s, f in chains:
        for r in rounds:
            run = round_run(args, arm, strategy, r, s, f, counts)
            if run.done:
                record = read_run(run)
                records.append(record | {"strategy": strategy, "round": r, "labelled": counts[f][r]})
            elif round_file(args, arm, strategy, r, s, f).is_file():
                unfinished.append(run.progress() | {"strategy": strategy})
    results = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seeds": seeds,
        **({"folds": folds} if args.cv else {}),
        "selection": strategies,
        "training_samples": {str(f): len(pools[f][0]) for f in folds},
        "labelled_samples": {f"{b:g}": [counts[f][r] for _, f in units] for r, b in enumerate(args.budgets)},
        "lr": args.lrs[0],
        "pretrain": {
            f"{mode}{fold_suffix(f)}": pretrain_diagnostics(args, mode, f)
            for mode in modes
            for f in dict.fromkeys(backbone_fold(args, f) for f in folds)
        },
        "runs": records,
        "finished": {"runs": len(records), "of": len(chains) * len(rounds)},
        "unfinished": unfinished,
        "minutes": (time.perf_counter() - start) / 60,
    }
    write_selection_outputs(args.output_dir, results, arms, strategies)
    return results
