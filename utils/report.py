"""Test-result files: metrics.json/.md and Markdown tables (the figures: :mod:`utils.figures`).

Every file is written to a temporary name in the target folder and moved into place with
``os.replace`` (utils/atomic.py), so a crash never leaves a half-written result.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.atomic import write_atomic, write_text_atomic

FLOAT_FORMAT = ".4f"
MISSING_VALUE = "n/a"
SCALAR_KEYS = ("OA", "mIoU", "mF1", "kappa")
PER_CLASS_KEYS = ("IoU", "F1", "precision", "recall", "support")


write_file_atomic = write_atomic  # the name other modules import (utils/atomic.py is the one writer)


def write_json(path: str | Path, data) -> None:
    """Strict JSON (NaN/inf become ``null``), written atomically."""
    write_text_atomic(Path(path), json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def _json_safe(value):
    """Plain JSON types; NaN/inf become ``null`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _format_value(value, float_format: str = FLOAT_FORMAT) -> str:
    if value is None:
        return MISSING_VALUE
    if isinstance(value, (float, np.floating)):
        return MISSING_VALUE if math.isnan(value) else format(float(value), float_format)
    return str(value)


def format_table(rows: list[dict], columns: Sequence[str], float_format: str = FLOAT_FORMAT) -> str:
    """Markdown table of ``rows`` restricted to ``columns`` (floats formatted, NaN/None as ``n/a``).

    Example: ``format_table([{"model": "STCLN", "mIoU": 0.41}, {"model": "STCLN_wp", "mIoU": 0.45}],
    ["model", "mIoU"])``.
    """
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_format_value(row.get(c, ""), float_format) for c in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


def metrics_markdown(metrics: dict, protocol: str, run_info: dict) -> str:
    """The ``metrics.md`` text: run info, the four headline scores, then the per-class table."""
    lines = [f"# Test results ({protocol} protocol)", ""]
    if metrics.get("protocol_description"):
        lines += [metrics["protocol_description"], ""]
    lines += [f"- {key}: {value}" for key, value in run_info.items()]
    lines += [f"- scored pixels: {metrics.get('n_pixels', MISSING_VALUE)}", ""]
    lines.append(format_table([{key: metrics.get(key) for key in SCALAR_KEYS}], SCALAR_KEYS))
    lines.append(format_table(metrics.get("per_class", []), ("index", "name", *PER_CLASS_KEYS)))
    return "\n".join(lines)


def write_results(out_dir: str | Path, metrics: dict, cm, class_names: Sequence[str], protocol: str,
                  run_info: dict) -> tuple[Path, Path]:
    """Write ``metrics.json`` (every number + the raw confusion matrix) and ``metrics.md``.

    The JSON holds ``protocol``, ``run_info``, ``class_names``, ``metrics`` (NaN written as null) and
    ``confusion_matrix`` (the raw K x K counts, rows = truth), so the metrics can be recomputed with
    :func:`utils.metrics.evaluate_protocol` or :func:`utils.metrics.compute_metrics` (use the stored
    ``metrics.eval_classes`` after zeroing ``metrics.zeroed_classes``).

    Returns:
        The paths of ``metrics.json`` and ``metrics.md``.
    """
    out_dir = Path(out_dir)
    matrix = np.asarray(cm.detach().cpu().numpy() if hasattr(cm, "detach") else cm, dtype=np.int64)
    payload = {"protocol": protocol, "run_info": run_info, "class_names": list(class_names),
               "metrics": metrics, "confusion_matrix": matrix}
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    write_text_atomic(json_path, json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")
    write_text_atomic(md_path, metrics_markdown(metrics, protocol, _json_safe(run_info)))
    return json_path, md_path


def read_results(path: str | Path) -> dict:
    """Load a ``metrics.json``; ``confusion_matrix`` comes back as an int64 array."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    payload["confusion_matrix"] = np.asarray(payload["confusion_matrix"], dtype=np.int64)
    return payload


def read_scalars(log_dir: str | Path, tags: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from every TensorBoard event file in ``log_dir`` (a resumed run
    adds a file; a step written again after a restart keeps its latest value). Missing tags map to []."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # not its "Directory watcher advancing" lines
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0 = keep every point
    events.Reload()
    present = set(events.Tags().get("scalars", []))
    out = {}
    for tag in tags:
        latest = {e.step: e.value for e in events.Scalars(tag)} if tag in present else {}  # files load oldest first
        out[tag] = sorted(latest.items())
    return out
