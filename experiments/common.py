"""Helpers shared by the experiment commands: run the entry scripts in-process, print tables."""

import json
import sys
from pathlib import Path

import pretrain_STCLN
from utils import finetune
from utils.report import format_table

SMOKE_ARGS = ["--smoke", "--epochs", "1", "--no_progress", "--num_workers", "0"]
METRICS = ("OA", "mIoU", "mF1")


def run_pretrain(argv: list[str]) -> None:
    status = pretrain_STCLN.main([str(a) for a in argv])
    if status != 0:
        sys.exit(status)


def run_finetune(dataset: str, argv: list[str]) -> dict:
    """Fine-tune + test; return the test metrics of summary.json."""
    argv = [str(a) for a in argv]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n{body}\n")
