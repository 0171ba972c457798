"""Paired differences between two label-efficiency study folders that differ only in their sources, fusion or
clouds (a study folder holds one kind of run, so S2 and S1+S2 live in two folders).

    python results/multisource/compare.py checkpoints/multisource/s2 checkpoints/multisource/s2s1_late

For every arm and budget both folders ran, the per-seed test differences (second folder - first) with a 95 % t
interval, the seeds won and the exact Wilcoxon p (experiments.label_efficiency.statistics.paired_difference).
A seed is a fair pair across the folders: it draws the same labelled crops in both (the draw reads labels and
seed only), which is checked here from each folder's ``labelled_crops``. Prints a Markdown table; ``--json``
also writes the numbers. ``--per_class ARM`` adds, for that learned arm at every budget, each class's test IoU in
both folders and its paired difference (read from every run's ``test_<protocol>/metrics.json``): where the
difference comes from.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the one sys.path edit: allows `python results/...`

from experiments.label_efficiency.design import SCHEDULE_KEYS  # noqa: E402
from experiments.label_efficiency.statistics import paired_difference  # noqa: E402
from utils.errors import DataError  # noqa: E402

KINDS = ("sources", "fusion", "cloud_fraction", "positions")  # what may differ between the two folders


def read_study(folder: Path) -> dict:
    """The folder's results.json, with the precision its study.json records (bf16/fp32; None if not recorded)."""
    path = folder / "results.json"
    try:
        study = json.loads(path.read_text())
        schedule = json.loads((folder / "study.json").read_text()) if (folder / "study.json").is_file() else {}
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable study results ({err}); run the study or its --report first") from None
    study["settings"]["precision"] = schedule.get("precision")
    return study


def paired_means(records: list[dict], arm: str, budget: float, metric: str, seeds: list[int]) -> list[float]:
    """The first and second folder's mean ``metric`` of ``arm`` at ``budget`` over the paired ``seeds``."""
    return [
        float(
            np.mean(
                [
                    r["test"][metric]
                    for r in records
                    if r["arm"] == f"{k}:{arm}" and r["budget"] == budget and r["seed"] in seeds
                ]
            )
        )
        for k in (1, 2)
    ]


def compare(first: dict, second: dict, metric: str = "mIoU") -> list[dict]:
    """Rows (arm, budget, the two settings' means, the paired difference second - first) of every arm and
    budget both studies ran. Refuses studies of different schedules or labelled draws."""
    a, b = first["settings"], second["settings"]
    schedule = [key for key in (*SCHEDULE_KEYS, "precision") if key not in KINDS and a.get(key) != b.get(key)]
    if schedule:
        raise DataError(f"the two studies differ in {', '.join(schedule)}: not a comparison of sources alone")
    records = [dict(r, arm=f"1:{r['arm']}") for r in first["runs"]] + [
        dict(r, arm=f"2:{r['arm']}") for r in second["runs"]
    ]
    rows = []
    for budget in sorted({r["budget"] for r in first["runs"]} & {r["budget"] for r in second["runs"]}):
        counts = [study["labelled_crops"].get(f"{budget:g}") for study in (first, second)]
        if counts[0] != counts[1]:
            raise DataError(
                f"budget {budget:g} %: labelled crops per seed {counts[0]} vs {counts[1]}: not the same draws"
            )
        arms = [
            arm
            for arm in dict.fromkeys(r["arm"] for r in first["runs"])
            if any(r["arm"] == arm and r["budget"] == budget for r in second["runs"])
        ]
        for arm in arms:
            diff = paired_difference(records, f"2:{arm}", f"1:{arm}", budget, metric)
            if diff is None:
                continue
            means = paired_means(records, arm, budget, metric, diff["seeds"])
            rows.append({"arm": arm, "budget": budget, "first": means[0], "second": means[1], **diff})
    return rows


def per_class(folders: tuple[Path, Path], studies: tuple[dict, dict], arm: str, protocol: str = "stcln") -> list[dict]:
    """Rows (budget, class, the two folders' mean test IoU, the paired difference second - first) of every class
    scored in both folders' runs of the learned ``arm``, per budget both ran, read from each run's
    ``test_<protocol>/metrics.json``; the pairing is :func:`compare`'s (same seeds, same labelled draws)."""
    records = []
    for k, (folder, study) in enumerate(zip(folders, studies), start=1):
        learned = dict.fromkeys(
            run["arm"] for run in study["runs"] if run.get("dir")
        )  # runs with a folder of their own
        if arm not in learned:
            raise DataError(f"{folder}: no learned arm {arm!r} to compare per class (it has: {', '.join(learned)})")
        for run in study["runs"]:
            if run["arm"] != arm:
                continue
            path = folder / "runs" / arm / Path(run.get("dir", "")).name / f"test_{protocol}" / "metrics.json"
            try:
                classes = json.loads(path.read_text())["metrics"]["per_class"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(f"{path}: no per-class test metrics of {arm} ({err})") from None
            for row in classes:
                if row.get("support") and row.get("IoU") is not None:  # a class absent from the test pixels: no IoU
                    records.append(
                        {
                            "arm": f"{k}:{row['name']}",
                            "budget": run["budget"],
                            "seed": run["seed"],
                            "test": {"IoU": row["IoU"]},
                        }
                    )
    rows = []
    for budget in sorted({r["budget"] for r in records}):
        for name in dict.fromkeys(r["arm"][2:] for r in records if r["budget"] == budget):
            diff = paired_difference(records, f"2:{name}", f"1:{name}", budget, "IoU")
            if diff is None:
                continue
            means = paired_means(records, name, budget, "IoU", diff["seeds"])
            rows.append({"arm": arm, "budget": budget, "class": name, "first": means[0], "second": means[1], **diff})
    return sorted(rows, key=lambda row: (row["budget"], row["mean"]))


def markdown(rows: list[dict], names: tuple[str, str], metric: str) -> str:
    lines = [
        f"| arm | budget | {names[0]} {metric} | {names[1]} {metric} | difference [95 % CI] | seeds won | Wilcoxon p |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arm']} | {row['budget']:g} % | {row['first']:.3f} | {row['second']:.3f} | "
            f"{row['mean']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] | {row['wins']}/{row['n']} | "
            f"{row['p_wilcoxon']:.3g} |"
        )
    return "\n".join(lines)


def per_class_markdown(rows: list[dict], names: tuple[str, str]) -> str:
    lines = [
        f"| budget | class | {names[0]} IoU | {names[1]} IoU | difference [95 % CI] | seeds won |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['budget']:g} % | {row['class']} | {row['first']:.3f} | {row['second']:.3f} | "
            f"{row['mean']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] | {row['wins']}/{row['n']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="a study folder (its results.json), e.g. the S2 one")
    parser.add_argument("second", type=Path, help="the folder compared with it, e.g. the S1+S2 one")
    parser.add_argument("--metric", default="mIoU", choices=("mIoU", "OA", "mF1"))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--per_class",
        metavar="ARM",
        default=None,
        help="also each class's test IoU of this learned arm (e.g. scratch), paired by seed",
    )
    parser.add_argument("--protocol", default="stcln", help="the test protocol whose metrics --per_class reads")
    args = parser.parse_args(argv)
    names = (args.first.name, args.second.name)
    try:
        studies = (read_study(args.first), read_study(args.second))
        rows = compare(*studies, args.metric)
        classes = per_class((args.first, args.second), studies, args.per_class, args.protocol) if args.per_class else []
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(rows, names, args.metric))
    if args.per_class:
        print(f"\nPer class, {args.per_class} (test IoU, {args.protocol} protocol):\n")
        print(per_class_markdown(classes, names))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "per_class": classes} if args.per_class else rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
