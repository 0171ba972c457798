"""README 'What it found': the table and results/label_efficiency_synthetic/label_efficiency_summary.png (a forest plot) of every
comparison the label-efficiency study has made, from the per-seed test mIoU recorded in
results/label_efficiency_synthetic/label_efficiency_summary.json. The paired differences are computed by the study's own function
(experiments.label_efficiency.paired_difference), so the table checks the numbers quoted in the record.
A second table says what each comparison could detect: the spread of its per-seed differences, the
smallest true difference its seeds find with 80 % power, and how many seeds would find its own mean.

    python results/label_efficiency_synthetic/label_efficiency_summary.py
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.label_efficiency import PAIRS, paired_difference, seeds_needed  # noqa: E402
from utils.figures import paired_differences_figure, save_figure  # noqa: E402
from utils.report import format_table  # noqa: E402

DOCS = Path(__file__).parent
MODES = [a for a, b in PAIRS if b == "scratch"]  # the pre-trained arms, as the study pairs them


def records(setting: dict) -> list[dict]:
    """The setting's per-seed values as the study's run records (seed numbers from ``seeds``, else 0..n-1)."""
    out = []
    for arm, values in setting["runs"].items():
        seeds = setting.get("seeds", list(range(len(values))))
        out += [
            {"arm": arm, "budget": setting["budget"], "seed": s, "test": {"mIoU": v}} for s, v in zip(seeds, values)
        ]
    return out


def main() -> None:
    settings = json.loads((DOCS / "label_efficiency_summary.json").read_text())["settings"]
    table, points, power = [], [], []
    for setting in settings:
        runs = records(setting)
        label = f"{setting['budget']:g} % · {setting['fine_tune']} · {setting['backbone']} backbone"
        if setting.get("note"):
            label += f" ({setting['note']})"
        row = {
            "fine-tune": setting["fine_tune"],
            "backbone": setting["backbone"],
            "budget": f"{setting['budget']:g} %",
            "seeds": len(setting["runs"]["scratch"]),
            "scratch": f"{np.mean(setting['runs']['scratch']):.3f}",
            "random forest": f"{np.mean(setting['runs']['rf']):.3f}" if "rf" in setting["runs"] else "–",
        }
        for mode in MODES:
            d = paired_difference(runs, mode, "scratch", setting["budget"]) if mode in setting["runs"] else None
            row[f"{mode} − scratch"] = (
                f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] ({d['wins']}/{d['n']}), t p {d['p_t']:.2g}"
                if d
                else "–"
            )
            if d:
                points.append({"label": label, "arm": mode, "mean": d["mean"], "low": d["low"], "high": d["high"]})
                power.append(
                    {
                        "setting": label,
                        "arm": mode,
                        "seeds": d["n"],
                        "mean": f"{d['mean']:+.3f}",
                        "sd of differences": f"{d['sd']:.3f}",
                        "detectable (80 % power)": f"{d['detectable']:.3f}",
                        "seeds to find this mean": seeds_needed(d["mean"], d["sd"]) if d["mean"] else "–",
                    }
                )
        table.append(row)
    print(format_table(table, list(table[0])))
    print("What each comparison could detect (paired t test, two-sided 5 %, 80 % power, at its own spread):\n")
    print(format_table(power, list(power[0])))
    save_figure(paired_differences_figure(points), DOCS / "label_efficiency_summary.png", dpi=120, bbox_inches="tight")
    print(f"written to {DOCS / 'label_efficiency_summary.png'}")


if __name__ == "__main__":
    main()
