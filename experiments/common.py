"""Helpers shared by the experiment commands: run the entry scripts in-process, print tables."""

import argparse
import json
import sys
from pathlib import Path

import pretrain_STCLN
from utils import finetune
from utils.report import format_table

SMOKE_ARGS = ["--smoke", "--epochs", "1", "--no_progress", "--num_workers", "0"]
METRICS = ("OA", "mIoU", "mF1")


def run_pretrain(argv: list[str]) -> None:
    """Pre-train in-process. An experiment re-run starts its runs over (``--overwrite``)."""
    status = pretrain_STCLN.main([str(a) for a in argv] + ["--overwrite"])
    if status != 0:
        sys.exit(status)


def run_finetune(dataset: str, argv: list[str]) -> dict:
    """Fine-tune + test; return the test metrics of summary.json."""
    argv = [str(a) for a in argv] + ["--overwrite"]  # an experiment re-run starts its runs over
    status = finetune.main(dataset, f"{dataset} fine-tuning", argv)
    if status != 0:
        sys.exit(status)
    out = Path(argv[argv.index("--output_dir") + 1])
    return json.loads((out / "summary.json").read_text())["test"]


def export_path(pretrain_dir: Path) -> Path:
    """The newest backbone export written by pre-training in ``pretrain_dir``."""
    exports = sorted(pretrain_dir.glob("checkpoint_*.*.tar"), key=lambda p: int(p.name.split("_")[1].split(".")[0]))
    if not exports:
        sys.exit(f"error: {pretrain_dir}: no checkpoint_<epoch>.<name>.tar export found")
    return exports[-1]


def comparison_table(results: dict[str, dict], reference: dict[str, dict] | None = None) -> str:
    """Markdown table of OA/mIoU/mF1 per method (plus the paper's numbers where given)."""
    rows = []
    for method, metrics in results.items():
        row = {"method": method} | {m: f"{metrics[m]:.4f}" for m in METRICS}
        if reference and method in reference:
            row |= {f"paper {m}": f"{reference[method][m]:.4f}" for m in METRICS}
        rows.append(row)
    columns = list(rows[0])
    for row in rows:
        for c in columns:
            row.setdefault(c, "")
    return format_table(rows, columns)


def write_markdown(path: Path, title: str, body: str) -> None:
    from utils.atomic import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, f"# {title}\n\n{body}\n")


def experiment_parser(doc: str, data_help: str) -> argparse.ArgumentParser:
    """The flags every experiment command shares."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data_root", type=Path, default=None,
                        help=f"{data_help}; required unless --smoke (which runs on the embedded synthetic data set)")
    parser.add_argument("--pretrain_pth", type=Path, default=None,
                        help="start STCLN_wp from this backbone (e.g. the authors' release) instead of pre-training here")
    parser.add_argument("--output_dir", type=Path, default=None, help="where every run of the experiment goes")
    parser.add_argument("--epochs", type=int, default=100, help="pre-training and fine-tuning epochs (paper: 100)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, synthetic data, one epoch (CI)")
    return parser


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """--sources and --fusion, passed to every pre-training and fine-tuning run (the scripts' flags)."""
    parser.add_argument("--sources", nargs="+", default=["S2"],
                        help="image sources of every run, primary first: S2, S1A, S1D ('S1' = 'S1A S1D'), e.g. "
                             "--sources S2 S1 (PASTIS-R layout; MTLCC holds S2 only)")
    parser.add_argument("--fusion", choices=("late", "merged"), default="late",
                        help="with several --sources, how they meet (docs/model.md 'Several sources'); merged runs "
                             "with --positions doy, so an authors' --pretrain_pth (date indices) does not load into it")


def source_flags(parser: argparse.ArgumentParser, args) -> list:
    """The runs' --sources/--fusion flags (none for S2 alone: the runs' argv are those of before), checked as the
    scripts check them, in one line (exit 2): MTLCC data hold Sentinel-2 only."""
    from utils.args import check_sources

    check_sources(parser, args)  # aliases expanded in place; unknown names and radar on MTLCC refused
    if len(args.sources) < 2:
        if args.fusion == "merged":
            parser.error("--fusion merged needs two or more --sources (nothing to fuse)")
        return [] if args.sources == ["S2"] else ["--sources", *args.sources]
    return ["--sources", *args.sources, "--fusion", args.fusion] + (["--positions", "doy"] if args.fusion == "merged" else [])


def data_args(parser: argparse.ArgumentParser, args, dataset: str) -> list:
    """The entry scripts' data flags: ``--dataset <dataset> --data_root R``, or, with ``--smoke`` and no
    ``--data_root``, ``--dataset synthetic`` (the embedded set, written in the MTLCC format by the MTLCC
    scripts and by pre-training with ``--synthetic_format mtlcc``)."""
    if args.data_root is not None:
        return ["--dataset", dataset, "--data_root", args.data_root]
    if args.smoke and dataset != "folder":
        return ["--dataset", "synthetic"]
    parser.error(f"--data_root is required for {dataset} data (only --smoke runs on the embedded synthetic data set)")


def mtlcc_2016_backbone(args, data: list, out: Path, smoke: list) -> Path:
    """The cross-year backbone: ``--pretrain_pth`` or a pre-training on MTLCC 2016 with 30 dates (mask 0.4)."""
    if args.pretrain_pth is not None:
        return args.pretrain_pth
    run_pretrain(data + ["--synthetic_format", "mtlcc", "--year", "2016", "--n_dates", "6" if args.smoke else "30",
                         "--mask_ratio", "0.4", "--epochs", args.epochs, "--output_dir", out / "pretrain_2016"] + smoke)
    return export_path(out / "pretrain_2016")
