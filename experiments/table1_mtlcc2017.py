"""Table 1 of the authors' README: MTLCC 2017 with 12 dates, STCLN vs STCLN_wp.

    python -m experiments.table1_mtlcc2017 --data_root data/MTLCC/480
    python -m experiments.table1_mtlcc2017 --data_root data/MTLCC/480 --pretrain_pth checkpoints/authors/checkpoint_99.utae.tar
    python -m experiments.table1_mtlcc2017 --smoke

STCLN_wp starts from a backbone pre-trained on MTLCC 2016 with 30 dates per tile (mask ratio 0.4):
ours (pre-trained here unless --pretrain_pth is given) or the authors' released file. Both models
are fine-tuned on 2017 with the authors' 6 tiles per class and 12 dates per tile (random 12 in
training, 12 evenly spaced at validation/test: the released code does not say how the 12 were
chosen), Adam 1e-4 for 100 epochs, and tested on the eval tiles.
"""

from pathlib import Path

from experiments.common import (SMOKE_ARGS, comparison_table, data_args, experiment_parser, mtlcc_2016_backbone,
                                run_finetune, write_markdown)

PAPER = {"STCLN": {"OA": 0.7674, "mIoU": 0.3896, "mF1": 0.4881}, "STCLN_wp": {"OA": 0.8018, "mIoU": 0.4870, "mF1": 0.5914}}


def main(argv: list[str] | None = None) -> None:
    parser = experiment_parser(__doc__, "MTLCC root with data16/ and data17/")
    args = parser.parse_args(argv)
    out = args.output_dir or Path("checkpoints/table1_mtlcc2017")
    data = data_args(parser, args, "mtlcc") + ["--crop_size", "0"]
    smoke = SMOKE_ARGS if args.smoke else []
    backbone = mtlcc_2016_backbone(args, data, out, smoke)
    finetune = data + ["--year", "2017", "--n_dates", "6" if args.smoke else "12", "--label_subset", "authors",
                       "--epochs", args.epochs] + smoke
    results = {
        "STCLN": run_finetune("mtlcc", finetune + ["--output_dir", out / "stcln"]),
        "STCLN_wp": run_finetune("mtlcc", finetune + ["--output_dir", out / "stcln_wp", "--pretrain_pth", backbone]),
    }
    table = comparison_table(results, PAPER)
    write_markdown(out / "results.md", "MTLCC 2017, 12 dates (authors' README Table 1)", table)
    print(table)


if __name__ == "__main__":
    main()
