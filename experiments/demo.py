"""The headline experiment on the embedded synthetic data set (what `make demo` runs).

    python -m experiments.demo            # ~10 minutes on 2 CPU cores
    python -m experiments.demo --smoke    # seconds (CI)

1. pre-train a tiny STCLN with spatiotemporal masking on the unlabelled training folds 1-3;
2. fine-tune with 2% of the labelled 16x16 crops of folds 1-3, from scratch (STCLN) and from
   the pre-trained backbone (STCLN_wp), selecting the epoch on fold 5;
3. test both on the full patches of fold 4 and print OA / mIoU / mF1 (stcln protocol).
The same seed, data and schedule are used for both fine-tunes; only the initialisation differs.
"""

import argparse
import time
from pathlib import Path

from experiments.common import SMOKE_ARGS, comparison_table, export_path, run_finetune, run_pretrain, write_markdown

COMMON = ["--dataset", "synthetic", "--preset", "tiny", "--dropout", "0", "--crop_size", "16", "--num_workers", "1", "--no_progress"]
PRETRAIN = ["--folds", "1", "2", "3", "--batch_size", "8", "--lr", "1e-3", "--save_every", "100"]
FINETUNE = ["--label_subset", "ratio", "--label_ratio", "0.02", "--train_folds", "1", "2", "3", "--val_folds", "5",
            "--test_folds", "4", "--batch_size", "4", "--lr", "1e-3", "--save_every", "100"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=Path("checkpoints/demo"))
    parser.add_argument("--pretrain_epochs", type=int, default=10)
    parser.add_argument("--finetune_epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one epoch each (CI)")
    args = parser.parse_args(argv)
    out = args.output_dir
    smoke = SMOKE_ARGS if args.smoke else []
    seed = ["--seed", str(args.seed)]
    start = time.perf_counter()
    run_pretrain(COMMON + PRETRAIN + seed + ["--epochs", args.pretrain_epochs, "--output_dir", out / "pretrain"] + smoke)
    backbone = export_path(out / "pretrain")
    results = {
        "STCLN": run_finetune("pastis", COMMON + FINETUNE + seed + ["--epochs", args.finetune_epochs,
                                                                    "--output_dir", out / "stcln"] + smoke),
        "STCLN_wp": run_finetune("pastis", COMMON + FINETUNE + seed + ["--epochs", args.finetune_epochs,
                                                                       "--output_dir", out / "stcln_wp",
                                                                       "--pretrain_pth", backbone] + smoke),
    }
    table = comparison_table(results)
    minutes = (time.perf_counter() - start) / 60
    note = (f"Synthetic data set, 2% labels (16x16 crops of folds 1-3), test on full fold-4 patches, "
            f"stcln protocol (background and void excluded). {minutes:.1f} min.")
    write_markdown(out / "results.md", "STCLN vs STCLN_wp on the synthetic demo", f"{note}\n\n{table}")
    print(f"\n{note}\n\n{table}\n\nwritten to {out / 'results.md'}")


if __name__ == "__main__":
    main()
