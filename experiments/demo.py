"""The demo (what `make demo` runs): a reduced run of the label-efficiency study on the synthetic benchmark.

    python -m experiments.demo            # 12-19 min on 2 CPU cores (12 min 15 s with AVX-512, 18 min 55 s without)
    python -m experiments.demo --smoke    # seconds (CI)

Pre-trains a tiny STCLN with the paper's spatiotemporal (cell) masking on the unlabelled pool
(synthetic folds 1, 2, 3, 5), then fine-tunes from scratch (STCLN) and from the pre-trained
backbone (STCLN_wp) with 1 % and 5 % of the labelled crops of folds 1-3, three seeds each (a seed
draws the labelled crops and the initialisation, the same for both arms), selects on fold 5 and
tests on fold 4. A per-pixel random forest and the majority class on the same labelled pixels are
the anchors. Prints mean +- std per budget and the paired difference STCLN_wp - STCLN with its
95 % confidence interval. The full study (all budgets, seeds, masking modes and linear probes) is
`python -m experiments.label_efficiency`; see the README for its results.
"""

import argparse
from pathlib import Path

from experiments import label_efficiency

# Reduced from the full study only in size (budgets, seeds, arms, steps, pre-training epochs); the
# learning rates are the ones the full study's sweep chose (README, "Label efficiency").
# 48 steps and one pre-training epoch keep it within 15 minutes on 2 CPU cores: the learned arms are
# far from converged there (the README says what the numbers mean).
DEMO = ["--budgets", "1", "5", "--sweep_budget", "5", "--seeds", "3", "--arms", "scratch", "wp_cell", "rf", "majority",
        "--lrs", "3e-3", "--steps", "48", "--min_epochs", "1", "--validations", "3", "--val_limit", "24",
        "--test_limit", "48", "--pretrain_epochs", "1", "--jobs", "2"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=Path("checkpoints/demo"))
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch per run (CI)")
    args = parser.parse_args(argv)
    extra = ["--smoke", "--jobs", "1"] if args.smoke else []
    label_efficiency.main(DEMO + extra + ["--output_dir", str(args.output_dir)])


if __name__ == "__main__":
    main()
