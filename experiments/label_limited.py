"""The main label-limited runs with the authors' subsets: STCLN vs STCLN_wp on PASTIS or MTLCC.

    python -m experiments.label_limited --dataset pastis --data_root data/PASTIS
    python -m experiments.label_limited --dataset mtlcc --data_root data/MTLCC/480
    python -m experiments.label_limited --dataset pastis --data_root data/PASTIS --pretrain_pth checkpoints/authors/checkpoint_99.sttrans.tar
    python -m experiments.label_limited --dataset pastis --smoke
    python -m experiments.label_limited --dataset folder --data_root data/my_region   # your own data (README)
    python -m experiments.label_limited --dataset pastis --data_root data/PASTIS-R --sources S2 S1   # + Sentinel-1

PASTIS: pre-train on fold 5 (all 16 32x32 crops of every patch), fine-tune on the authors' ~2% of
fold 1 (76 patch ids, crops (0,0) and (1,1)), select on their fold-2 list, test on full fold-4
patches. MTLCC: pre-train on 2016 train_fold0 (30 dates), fine-tune on their 6 tiles per class,
select on their test_fold0 tiles, test on eval. 100 epochs, Adam 1e-4. The abstract reports
STCLN_wp +6.49 mIoU (PASTIS) and +4.04 mIoU (MTLCC) over the previous state of the art.
--dataset folder uses the folds of its dataset.json and all its labels. --smoke runs on synthetic data
(PASTIS-format synthetic data has no authors' ids, so a 2% ratio
subset replaces them there). --sources S2 S1 (PASTIS-R layout, folder data with further sources, or the
synthetic set's radar) and --fusion late|merged reach every pre-training and fine-tuning run; MTLCC data
hold Sentinel-2 only (refused in one line).
"""

from pathlib import Path

from experiments.common import (SMOKE_ARGS, add_source_flags, comparison_table, data_args, experiment_parser,
                                export_path, run_finetune, run_pretrain, source_flags, write_markdown)

SETTINGS = {
    "pastis": {"pretrain": ["--folds", "5", "--crop_size", "32"], "finetune": ["--crop_size", "32"]},
    "folder": {"pretrain": ["--crop_size", "32"], "finetune": ["--crop_size", "32"]},  # folds: dataset.json splits
    "mtlcc": {"pretrain": ["--synthetic_format", "mtlcc", "--year", "2016", "--n_dates", "30", "--crop_size", "0"],
              "finetune": ["--year", "2016", "--n_dates", "30", "--crop_size", "0"]},
}


def main(argv: list[str] | None = None) -> None:
    parser = experiment_parser(__doc__, "dataset root")
    parser.add_argument("--dataset", choices=sorted(SETTINGS), required=True)
    add_source_flags(parser)
    args = parser.parse_args(argv)
    out = args.output_dir or Path("checkpoints/label_limited") / args.dataset
    data = data_args(parser, args, args.dataset) + source_flags(parser, args)
    smoke = SMOKE_ARGS if args.smoke else []
    synthetic_pastis = args.dataset == "pastis" and args.data_root is None  # --smoke: the synthetic set in PASTIS format
    subset = ["--label_subset", "ratio", "--label_ratio", "0.02"] if synthetic_pastis else ["--label_subset", "authors"]
    if args.dataset == "folder":
        subset = ["--label_subset", "all"]  # your own labels are the few labels
    if args.smoke and args.dataset == "mtlcc":
        smoke = smoke + ["--n_dates", "6"]
    backbone = args.pretrain_pth
    if backbone is None:
        run_pretrain(data + SETTINGS[args.dataset]["pretrain"] + ["--epochs", args.epochs, "--output_dir", out / "pretrain"] + smoke)
        backbone = export_path(out / "pretrain")
    finetune = data + SETTINGS[args.dataset]["finetune"] + subset + ["--epochs", args.epochs] + smoke
    results = {
        "STCLN": run_finetune(args.dataset, finetune + ["--output_dir", out / "stcln"]),
        "STCLN_wp": run_finetune(args.dataset, finetune + ["--output_dir", out / "stcln_wp", "--pretrain_pth", backbone]),
    }
    table = comparison_table(results)
    write_markdown(out / "results.md", f"Label-limited {args.dataset.upper()} with the authors' subsets", table)
    print(table)


if __name__ == "__main__":
    main()
