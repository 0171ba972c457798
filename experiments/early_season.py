"""Cross-year early-season curve: pre-train on MTLCC 2016, fine-tune on 2017 from February to each month.

    python -m experiments.early_season --data_root data/MTLCC/480
    python -m experiments.early_season --data_root data/MTLCC/480 --pretrain_pth checkpoints/authors/checkpoint_99.utae.tar
    python -m experiments.early_season --smoke

For every cut-off month M (March..October) both STCLN and STCLN_wp are fine-tuned and tested on
2017 tiles using only the dates from 1 February to the end of month M (``--temporal window:2-M``),
with the authors' 6 tiles per class. Writes results.md (a table per month) and curve.png
(mIoU against cut-off month), the figure of the authors' README.
"""

from pathlib import Path

from experiments.common import (METRICS, SMOKE_ARGS, data_args, experiment_parser, mtlcc_2016_backbone, run_finetune,
                                write_markdown)
from utils.figures import early_season_figure, save_figure
from utils.report import format_table

MONTHS = range(3, 11)  # March .. October
SMOKE_MONTHS = (9, 10)  # smoke tiles hold only 6-10 dates: windows ending later always contain some


def main(argv: list[str] | None = None) -> None:
    parser = experiment_parser(__doc__, "MTLCC root with data16/ and data17/")
    args = parser.parse_args(argv)
    out = args.output_dir or Path("checkpoints/early_season")
    data = data_args(parser, args, "mtlcc") + ["--crop_size", "0"]
    smoke = SMOKE_ARGS if args.smoke else []
    backbone = mtlcc_2016_backbone(args, data, out, smoke)
    rows = []
    for month in SMOKE_MONTHS if args.smoke else MONTHS:
        finetune = data + ["--year", "2017", "--temporal", f"window:2-{month}", "--label_subset", "authors",
                           "--epochs", args.epochs] + smoke + ["--n_dates", "0"]  # every date of the window
        row = {"cut-off month": month}
        for method, extra in (("STCLN", []), ("STCLN_wp", ["--pretrain_pth", backbone])):
            metrics = run_finetune("mtlcc", finetune + ["--output_dir", out / f"{method.lower()}_m{month:02d}"] + extra)
            row |= {f"{method} {m}": metrics[m] for m in METRICS}
        rows.append(row)
    table = format_table(rows, list(rows[0]))
    write_markdown(out / "results.md", "Early season, MTLCC 2017 (February to cut-off month)", table)
    save_figure(early_season_figure(rows), out / "curve.png", dpi=120)
    print(table)


if __name__ == "__main__":
    main()
