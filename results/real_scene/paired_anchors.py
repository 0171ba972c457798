"""Paired test-mIoU differences of the learned arms against the forest and the majority class, per budget, over the
seed x test-fold units of results.json (t interval). Run from the repository root after the study: python results/real_scene/paired_anchors.py
(reads checkpoints/real_scene/B/results.json; results/real_scene/results.json holds the same scores)."""

import json
import numpy as np
from scipy import stats
import sys

r = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/real_scene/B/results.json"))
score = {}
for run in r["runs"]:
    if run.get("test"):
        score[(run["arm"], run["budget"], run["seed"], run["fold"])] = run["test"]["mIoU"]
for a, b in (("wp_cell", "rf"), ("scratch", "rf"), ("wp_cell", "majority"), ("scratch", "majority")):
    for budget in (5.0, 10.0, 25.0):
        units = sorted(k[2:] for k in score if k[0] == a and k[1] == budget and (b, budget, *k[2:]) in score)
        d = np.array([score[(a, budget, *u)] - score[(b, budget, *u)] for u in units])
        if len(d) < 2:
            continue
        h = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        print(
            f"{a} - {b} {budget:g}%: {d.mean():+.3f} [{d.mean() - h:+.3f}, {d.mean() + h:+.3f}] ({(d > 0).sum()}/{len(d)})"
        )
