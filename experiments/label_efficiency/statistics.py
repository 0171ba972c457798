"""The study's statistics: mean +- std, paired differences over units with t intervals and tests,
power and the seeds a difference needs, and pooled scores of cross-validation."""

import json
import logging
import math
from pathlib import Path

import numpy as np

from experiments.label_efficiency.anchors import anchor_dir
from experiments.label_efficiency.design import finetune_args

log = logging.getLogger("stcln")


def confusion_of(args, record: dict) -> np.ndarray | None:
    """The raw (K, K) test confusion matrix of a run record (a learned run's test_stcln/metrics.json, an
    anchor's summary.json), or None where it was not written (an anchor cached before it was)."""
    from utils.report import read_results

    if record["lr"] is not None:
        return read_results(Path(record["dir"]) / "test_stcln" / "metrics.json")["confusion_matrix"]
    summary = json.loads(
        (
            anchor_dir(args, record["arm"], record["budget"], record["seed"], record.get("fold")) / "summary.json"
        ).read_text()
    )
    return np.asarray(summary["confusion_matrix"], dtype=np.int64) if "confusion_matrix" in summary else None


def pooled_scores(args, records: list[dict], folds: list[int]) -> list[dict]:
    """--cv: per arm, budget and seed whose every rotation has finished, the test folds' confusion matrices
    summed, then scored (stcln protocol): one score of the whole labelled scene per seed."""
    from utils.data import info_for
    from utils.data_spec import DataSpec
    from utils.metrics import evaluate_protocol

    info = info_for(DataSpec.from_args(finetune_args(args, [])))
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["arm"], record["budget"], record["seed"]), []).append(record)
    pooled = []
    for (arm, budget, seed), units in groups.items():
        if sorted(r["fold"] for r in units) != sorted(folds):
            continue  # a rotation has not finished (--report)
        matrices = [confusion_of(args, r) for r in units]
        if any(m is None for m in matrices):
            continue
        metrics = evaluate_protocol(
            np.sum(matrices, axis=0), info.protocols["stcln"], info.classes
        )  # n x (K, K) -> (K, K)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        pooled.append({"arm": arm, "budget": budget, "seed": seed, "folds": sorted(folds), "test": scalars})
    return pooled


def mean_std(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def paired_difference(results: list[dict], a: str, b: str, budget: float, metric: str = "mIoU") -> dict | None:
    """Mean of per-unit differences a - b with a 95 % t confidence interval (None if no common unit).

    A unit is a seed, or under --cv a (seed, test fold) pair: the records' ``(seed, fold)`` (fold None
    without --cv). Also the per-unit differences and two two-sided p values against "no difference": the
    one-sample t test (the interval's test) and the exact Wilcoxon signed-rank test, which assumes no
    normality (with n units its smallest p is 2 / 2**n: 0.0625 for 5). Neither corrects for the several
    budgets and arms of one study. ``sd`` is the spread of the per-unit differences and ``detectable`` the
    smallest true mean difference the t test on these n units finds with 80 % power at that spread.
    ``seeds`` lists each unit's seed (and ``folds`` its test fold, under --cv), in the order of ``diffs``.
    """
    from scipy import stats

    by_unit = {
        arm: {
            (r["seed"], r.get("fold")): r["test"][metric] for r in results if r["arm"] == arm and r["budget"] == budget
        }
        for arm in (a, b)
    }
    units = sorted(set(by_unit[a]) & set(by_unit[b]), key=lambda unit: (unit[0], -1 if unit[1] is None else unit[1]))
    if not units:
        return None
    diff = np.array([by_unit[a][u] - by_unit[b][u] for u in units])
    out = {
        "mean": float(diff.mean()),
        "low": float("nan"),
        "high": float("nan"),
        "n": len(diff),
        "wins": int((diff > 0).sum()),
        "seeds": [seed for seed, _ in units],
        "diffs": diff.tolist(),
        "p_t": float("nan"),
        "p_wilcoxon": float("nan"),
        "sd": float("nan"),
        "detectable": float("nan"),
    }
    if any(fold is not None for _, fold in units):
        out["folds"] = [fold for _, fold in units]
    if len(diff) < 2:
        return out
    sd = float(diff.std(ddof=1))  # the spread of the differences: the interval, the t test and the power use it
    half = float(stats.t.ppf(0.975, len(diff) - 1) * sd / math.sqrt(len(diff)))
    out.update(low=out["mean"] - half, high=out["mean"] + half, sd=sd)
    if sd > 0:
        out["p_t"] = float(stats.ttest_1samp(diff, 0.0).pvalue)
        out["detectable"] = detectable_difference(len(diff), sd)
    if np.any(diff != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(diff, zero_method="wilcox", method="exact").pvalue)
    return out


def t_test_power(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t test at level alpha on n paired differences of standard
    deviation sd whose true mean is effect (the noncentral t distribution; Cohen 1988, ch. 2)."""
    from scipy import stats

    df, nc = n - 1, effect * math.sqrt(n) / sd
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, nc) + stats.nct.sf(critical, df, -nc))  # P(T > c) + P(T < -c)


def detectable_difference(n: int, sd: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true mean difference the paired t test on n seeds finds with this power, if the
    per-seed differences spread by sd: what a study of n seeds can and cannot tell apart from zero."""
    from scipy.optimize import brentq

    high = sd
    while t_test_power(n, high, sd, alpha) < power:
        high *= 2
    return float(brentq(lambda effect: t_test_power(n, effect, sd, alpha) - power, 0.0, high, xtol=1e-9 * sd))


def seeds_needed(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """How many seeds the paired t test needs to find a true mean difference effect with this power,
    if the per-seed differences spread by sd (smallest n, at least 2; power grows with n)."""
    if effect == 0:
        raise ValueError("no number of seeds finds a true difference of zero")
    low, high = 1, 2  # power(low) < power <= power(high) once the doubling stops
    while t_test_power(high, abs(effect), sd, alpha) < power:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if t_test_power(middle, abs(effect), sd, alpha) < power else (low, middle)
    return high
