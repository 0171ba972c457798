"""The demo's step rule (results/demo/commands.sh) applied to a study's results.json: the smallest multiple of 50 steps
after which no later validation of scratch or wp_cell rises more than 0.02 mIoU above its value there."""

import json
import sys

r = json.load(open(sys.argv[1]))
curves = {}
for run in r["runs"]:
    if run["arm"] not in ("scratch", "wp_cell"):
        continue
    c = [(h["steps"], h["val_mIoU"]) for h in run["history"] if "val_mIoU" in h]
    curves[(run["arm"], run["budget"])] = c
    print(run["arm"], run["budget"], "test %.3f" % run["test"]["mIoU"], " ".join("%d:%.3f" % x for x in c))


def flat_from(c, i):
    return max(v for _, v in c[i:]) - c[i][1] <= 0.02


for S in range(50, 10000, 50):
    ok = True
    for c in curves.values():
        idx = [i for i, (s, _) in enumerate(c) if s >= S]
        if not idx or not flat_from(c, idx[0]):
            ok = False
    if ok:
        print("S =", S)
        break
else:
    print("no S within the measured steps")
