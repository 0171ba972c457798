"""Per-run time of each kind of run of results/multisource/commands.sh (S2, S2+S1 late, S2+S1 merged; --fast, tiny),
measured on the real synthetic data, for the cost estimates written there.

    OMP_NUM_THREADS=1 python results/multisource/time_runs.py finetune --output_dir /tmp/mstime
    OMP_NUM_THREADS=1 python results/multisource/time_runs.py pretrain --kinds S2 "S2+S1 late" --output_dir /tmp/mstime

finetune: the study's scratch run at 1 % (seed 0), once with 2 and once with 10 epochs (one validation at the end):
the difference gives the seconds per step, the rest the fixed cost (data, validation, test); a 900-step run is
their sum. pretrain: one epoch of the study's cell pre-training on fold 1 only (a quarter of folds 1 2 3 5);
10 epochs of the four folds is 40 times it. Writes <output_dir>/<what>.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the one sys.path edit: allows `python results/...`

import pretrain_STCLN  # noqa: E402
from experiments import label_efficiency as le  # noqa: E402
from utils import finetune  # noqa: E402

RECIPE = [
    "--budgets",
    "1",
    "5",
    "--seeds",
    "5",
    "--sweep_budget",
    "1",
    "--lrs",
    "3e-3",
    "--steps",
    "900",
    "--min_epochs",
    "1",
    "--validations",
    "4",
    "--val_limit",
    "32",
    "--test_limit",
    "100",
    "--pretrain_epochs",
    "10",
    "--positions",
    "doy",
    "--fast",
]  # commands.sh's $RECIPE (its arms and --jobs do not change a run)
KINDS = {
    "S2": [],
    "S2+S1 late": ["--sources", "S2", "S1", "--fusion", "late"],
    "S2+S1 merged": ["--sources", "S2", "S1", "--fusion", "merged"],
}


def time_finetune(args) -> dict:
    n = le.labelled_count(args, 1.0, 0)
    seconds = {}
    for epochs in (2, 10):
        argv = [str(a) for a in le.make_run(args, "scratch", 1.0, 0, 3e-3, n).argv]
        argv[argv.index("--epochs") + 1] = argv[argv.index("--val_every") + 1] = str(epochs)
        argv[argv.index("--output_dir") + 1] += f"_e{epochs}"
        start = time.perf_counter()
        if finetune.main("pastis", "fine-tuning", argv + ["--overwrite"]) != 0:
            raise SystemExit(f"the fine-tune {argv} failed")
        seconds[epochs] = time.perf_counter() - start
    steps = -(-n // args.batch_size)  # per epoch
    per_step = (seconds[10] - seconds[2]) / (8 * steps)
    fixed = seconds[2] - 2 * steps * per_step
    return {"labelled": n, "s_per_step": per_step, "fixed_s": fixed, "run_900_steps_min": (fixed + 900 * per_step) / 60}


def time_pretrain(args) -> dict:
    argv = [str(a) for a in le.pretrain_tasks(args, ["cell"])[0][1]]
    first = argv.index("--folds")
    last = next(i for i in range(first + 1, len(argv)) if argv[i].startswith("--"))
    argv = argv[:first] + ["--folds", "1"] + argv[last:]
    argv[argv.index("--epochs") + 1] = "1"
    start = time.perf_counter()
    if pretrain_STCLN.main(argv + ["--overwrite"]) != 0:
        raise SystemExit(f"the pre-training {argv} failed")
    seconds = time.perf_counter() - start
    return {"epoch_fold1_s": seconds, "est_10_epochs_4_folds_min": seconds * 4 * 10 / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("finetune", "pretrain"))
    parser.add_argument("--kinds", nargs="+", choices=tuple(KINDS), default=list(KINDS))
    parser.add_argument(
        "--data_root", default=None, help="the synthetic set's cache folder (default: under data_cache/)"
    )
    parser.add_argument("--output_dir", type=Path, required=True)
    options = parser.parse_args()
    root = ["--data_root", options.data_root] if options.data_root else []
    out = {}
    for kind in options.kinds:
        folder = options.output_dir / kind.replace(" ", "_").replace("+", "")
        args = le.resolve_args(RECIPE + KINDS[kind] + root + ["--output_dir", str(folder)])
        out[kind] = time_finetune(args) if options.what == "finetune" else time_pretrain(args)
        print(kind, out[kind], flush=True)
    (options.output_dir / f"{options.what}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
