"""The study's report: results.md (tables) and the figures, from the records of the finished runs."""

import json
import logging
from pathlib import Path


from experiments.label_efficiency.design import ARM_NAMES, PAIRS
from experiments.label_efficiency.runs import PRETEXT_TAGS
from experiments.label_efficiency.statistics import mean_std, paired_difference

log = logging.getLogger("stcln")


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
            row = {
                "budget %": f"{b:g}",
                "labelled crops": crops[0] if not folds or min(crops) == max(crops) else f"{min(crops)}-{max(crops)}",
            }
            for arm in arms:
                values = [r["test"][metric] for r in runs if r["arm"] == arm and r["budget"] == b]
                if values:
                    mean, std = mean_std(values)
                    row[arm] = f"{mean:.3f} ± {std:.3f}" if std == std else f"{mean:.3f}"
                    if len(values) < n_units:
                        row[arm] += f" (n={len(values)})"  # units not finished yet (--report)
            rows.append(row)
        lines.append(
            f"Test {metric} (mean ± std over {units}, stcln protocol):\n\n"
            + format_table(rows, ["budget %", "labelled crops", *arms])
        )
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
        lines.append(
            f"Pooled test mIoU per seed (the confusion matrices of the {len(folds)} test folds summed, then "
            "scored; a seed counts once all its rotations have finished), mean ± std over seeds:\n\n"
            + format_table(rows, ["budget %", *arms])
        )
    pairs = {
        (a, b, budget): paired_difference(runs, a, b, budget)
        for a, b in PAIRS
        if a in arms and b in arms
        for budget in budgets
    }  # each computed once, for both tables
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
        lines.append(
            f"Paired test-mIoU difference over {units}: mean [95 % CI] ({units} where the first arm wins):\n\n"
            + format_table(rows, ["difference", *[f"{b:g} %" for b in budgets]])
        )
    rows = [
        {
            "difference": f"{a} − {b}",
            "budget %": f"{budget:g}",
            f"per {unit}": ", ".join(
                f"{unit_label(s, f)} {v:+.3f}"
                for s, f, v in zip(d["seeds"], d.get("folds", [None] * d["n"]), d["diffs"])
            ),
            "t test p": f"{d['p_t']:.3g}",
            "Wilcoxon p": f"{d['p_wilcoxon']:.3g}",
            "detectable (80 % power)": f"{d['detectable']:.3f}",
        }
        for (a, b, budget), d in pairs.items()
        if d is not None and d["n"] > 1
    ]
    if rows:
        lines.append(
            f"Per-{unit} differences and two-sided p values against no difference (one-sample t test; exact "
            "Wilcoxon signed-rank, smallest possible p 2/2^n), uncorrected for the several budgets and arms; "
            f"detectable: the smallest true mean difference the t test on these {units} would find 4 times in 5 "
            f"if the per-{unit} differences spread as these did"
            + (" (the test folds are disjoint, their training folds overlap)" if folds else "")
            + ":\n\n"
            + format_table(
                rows, ["difference", "budget %", f"per {unit}", "t test p", "Wilcoxon p", "detectable (80 % power)"]
            )
        )
    lr_rows = [
        {"arm": arm, "chosen lr": f"{lr:g}", **{f"val mIoU @ lr {k}": v for k, v in results["lr_sweep"][arm].items()}}
        for arm, lr in results["lr_chosen"].items()
    ]
    if lr_rows:
        columns = ["arm", "chosen lr", *[f"val mIoU @ lr {k}" for k in next(iter(results["lr_sweep"].values()))]]
        lines.append(
            f"Learning rate per arm (best validation mIoU at the sweep budget, first seed{', first rotation' if folds else ''}):\n\n"
            + format_table(lr_rows, columns)
        )
    logged = {mode: stats for mode, stats in results["pretrain"].items() if stats}
    copied = [mode for mode, stats in results["pretrain"].items() if not stats]
    if logged:
        pre_rows = [{"mode": mode, **stats} for mode, stats in logged.items()]
        columns = ["mode", *sorted({k for stats in logged.values() for k in stats})]
        lines.append(
            "Pre-training, last epoch (masked-cell MSE of the model and of the non-learned baselines):\n\n"
            + format_table(pre_rows, columns)
        )
    if copied:
        lines.append(
            f"Backbones copied in, pre-trained elsewhere (no pre-training log in this folder): {', '.join(copied)}.\n"
        )
    history = results.get("pretrain_history", {})
    rows = [{"mode": mode, **epoch} for mode, epochs in history.items() for epoch in epochs]
    if rows:
        lines.append(
            "Pre-training per epoch (training loss; masked-cell MSE of the model, the same-date 3x3 neighbour "
            "mean and per-pixel temporal interpolation):\n\n" + format_table(rows, ["mode", "epoch", *PRETEXT_TAGS])
        )
    return "\n".join(lines)


def write_outputs(out: Path, results: dict, budgets: list[float], arms: list[str]) -> None:
    from utils.report import write_text_atomic
    from utils.figures import label_efficiency_figure, pretext_curves_figure, save_figure, training_curves_figure

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(results, indent=1, default=float))
    body = markdown(results, budgets, arms)
    settings = results["settings"]
    header = (
        f"# Label efficiency of masked pre-training ({settings['dataset']})\n\n"
        f"{seeds_text(results)}, budgets {', '.join(f'{b:g}' for b in budgets)} % of the training crops, "
        f"preset {settings['preset']}, >= {settings['steps']} fine-tuning steps of batch {settings['batch_size']}, "
        f"{settings['pretrain_epochs']} pre-training epochs"
        f"{', --fast (bf16 autocast + fast dropout in every run)' if settings.get('fast') else ''}. "
        + (
            f"{results['minutes']:.0f} min in this command (runs finished before it are not re-run).\n\n"
            if not settings.get("report")
            else "Written by --report (no run was started by it).\n\n"
        )
    )
    done = results.get("finished", {})
    if done and done["runs"] < done["of"]:
        header += (
            f"**Partial: {done['runs']} of {done['of']} runs have finished** (a cell with fewer seeds says n=...; "
            "the paired differences use the seeds both arms have).\n\n"
        )
        unfinished = [
            f"{r['arm']} {r['budget']:g} % seed {r['seed']}{fold_text(r.get('fold'))}: {r['epoch']} of {r['of']} epochs"
            for r in results.get("unfinished", [])
        ]
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


def selection_records(runs: list[dict], arm: str) -> list[dict]:
    """The runs of ``arm`` with each strategy in the place of the arm: the records paired_difference pairs."""
    return [r | {"arm": r["strategy"]} for r in runs if r["arm"] == arm]


def selection_markdown(results: dict, arms: list[str], strategies: list[str]) -> str:
    """--selection: per arm, test mIoU per strategy and round, and each strategy minus random, paired by unit."""
    from utils.report import format_table

    folds = results.get("folds")
    budgets = results["settings"]["budgets"]
    n_units = len(results["seeds"]) * len(folds or [None])
    units = "seed x test fold units" if folds else "seeds"
    lines = [
        "Rounds: the smallest budget's count drawn at random (the same set for every strategy and arm; kcenter: "
        "the k-center pick on the cell-pre-trained backbone's features), then at each larger budget the "
        "strategy adds samples using the previous round's fine-tuned model; every round fine-tunes the arm from "
        "its initial weights on every label so far (experiments/label_efficiency/selection.py).\n"
    ]
    verdicts = []
    for arm in arms:
        records = selection_records(results["runs"], arm)
        if not records:
            continue
        rows = []
        for b in budgets:
            counts = results["labelled_samples"][f"{b:g}"]
            row = {
                "budget %": f"{b:g}",
                "labelled samples": counts[0] if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}",
            }
            for strategy in strategies:
                values = [r["test"]["mIoU"] for r in records if r["arm"] == strategy and r["budget"] == b]
                if values:
                    mean, std = mean_std(values)
                    row[strategy] = f"{mean:.3f} ± {std:.3f}" if std == std else f"{mean:.3f}"
                    if len(values) < n_units:
                        row[strategy] += f" (n={len(values)})"
            rows.append(row)
        lines.append(
            f"**{arm}** ({ARM_NAMES[arm]}): test mIoU (mean ± std over {units}, stcln protocol):\n\n"
            + format_table(rows, ["budget %", "labelled samples", *strategies])
        )
        rows = []
        for strategy in strategies:
            if strategy == "random":
                continue
            row = {"difference": f"{strategy} − random"}
            for b in budgets:
                d = paired_difference(records, strategy, "random", b)
                if d is None:
                    continue
                ci = f" [{d['low']:+.3f}, {d['high']:+.3f}]" if d["low"] == d["low"] else ""
                p = f", p {d['p_t']:.2g}" if d["p_t"] == d["p_t"] else ""
                row[f"{b:g} %"] = f"{d['mean']:+.3f}{ci} ({d['wins']}/{d['n']}{p})"
                if d["low"] > 0 or d["high"] < 0:
                    side = "above" if d["low"] > 0 else "below"
                    verdicts.append(f"{arm} {strategy} {side} random at {b:g} % ({d['mean']:+.3f}{ci})")
            rows.append(row)
        if rows:
            lines.append(
                f"**{arm}**: paired test-mIoU difference, strategy − random at equal label count, over {units}: "
                f"mean [95 % t CI] ({units} where the strategy wins, two-sided t-test p; uncorrected for the "
                "several strategies and budgets):\n\n"
                + format_table(rows, ["difference", *[f"{b:g} %" for b in budgets]])
            )
    if verdicts:
        lines.append("95 % intervals that exclude zero: " + "; ".join(verdicts) + ".\n")
    elif results["runs"]:
        lines.append("No strategy's 95 % interval against random excludes zero at any budget.\n")
    return "\n".join(lines)


def write_selection_outputs(out: Path, results: dict, arms: list[str], strategies: list[str]) -> None:
    """--selection: results.json, results.md and selection_curves.png in ``out``."""
    from utils.figures import save_figure, selection_curves_figure
    from utils.report import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(results, indent=1, default=float))
    settings = results["settings"]
    header = (
        f"# Which samples to label: selection strategies against random at equal label count ({settings['dataset']})\n\n"
        f"{seeds_text(results)}, budgets {', '.join(f'{b:g}' for b in settings['budgets'])} % of the training "
        f"samples, strategies {', '.join(strategies)}, preset {settings['preset']}, >= {settings['steps']} "
        f"fine-tuning steps of batch {settings['batch_size']} per round, lr {results['lr']:g}, "
        f"{settings['pretrain_epochs']} pre-training epochs"
        f"{', --fast' if settings.get('fast') else ''}. "
        + (
            f"{results['minutes']:.0f} min in this command.\n\n"
            if not settings.get("report")
            else "Written by --report (no run was started by it).\n\n"
        )
    )
    done = results["finished"]
    if done["runs"] < done["of"]:
        header += f"**Partial: {done['runs']} of {done['of']} chain rounds have finished.**\n\n"
        unfinished = [
            f"{r['arm']} {r['strategy']} {r['budget']:g} % seed {r['seed']}{fold_text(r.get('fold'))}: "
            f"{r['epoch']} of {r['of']} epochs"
            for r in results.get("unfinished", [])
        ]
        if unfinished:
            header += f"Selected, not finished (epochs trained so far): {'; '.join(unfinished)}.\n\n"
    body = selection_markdown(results, arms, strategies)
    write_text_atomic(out / "results.md", header + body)
    titles = {arm: f"{arm}: {ARM_NAMES[arm]}" for arm in arms}
    save_figure(selection_curves_figure(results["runs"], arms, strategies, titles), out / "selection_curves.png")
    print(header + body)
    print(f"written to {out / 'results.md'}, {out / 'results.json'} and {out / 'selection_curves.png'}")
